"""The small tier (issue 15): backbone configs of width >= 512 built by the tiny builders, the
CLIP text positions a config may set (tiny keeps 32), and `--tier small` selecting the small
backbones and presets."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from mcl.backbones import tiny_clip

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))


def tiny_section(name: str) -> dict:
    cfg = OmegaConf.load(ROOT / "conf" / "backbone" / f"{name}.yaml")
    return OmegaConf.to_container(cfg.tiny, resolve=True)


def test_small_backbones_are_wide_with_64_image_tokens() -> None:
    for name in ("small_llava", "small_clip", "small_vit"):
        tiny = tiny_section(name)
        assert tiny["vision"]["hidden_size"] >= 512
        assert (tiny["vision"]["image_size"] // tiny["vision"]["patch_size"]) ** 2 == 64
        assert tiny_section(name) != tiny_section(name.replace("small", "tiny"))
    assert tiny_section("small_llava")["text"]["hidden_size"] >= 512


def test_clip_text_positions_default_32_and_settable() -> None:
    micro = tiny_section("tiny_clip_micro")
    processor = tiny_clip.build_processor(micro["vision"]["image_size"])
    assert tiny_clip.build_model(micro, processor).config.text_config.max_position_embeddings \
        == 32
    micro["text"]["max_position_embeddings"] = 77
    assert tiny_clip.build_model(micro, processor).config.text_config.max_position_embeddings \
        == 77


def test_small_tier_selects_small_presets_first() -> None:
    from sweep import method_choices, tier_presets

    assert tier_presets("tiny", ("_clip", "_tiny")) == ("_clip", "_tiny")
    assert tier_presets("small", ("_clip", "_tiny")) == ("_clip_small", "_small", "_clip",
                                                         "_tiny")
    # Classification: CoDyRA's and PromptFusion's small presets; L2P keeps its tiny one.
    assert method_choices(["rank_selective_lora", "prompt_fusion", "l2p", "zero_shot"],
                          tier_presets("small", ("_clip", "_tiny"))) == [
        "method=zero_shot",
        "experiment=rank_selective_lora_clip_small,prompt_fusion_small,l2p_tiny"]
    # Instruction: CoDyRA's small preset, Fwd-Prompt's tiny one (no small preset).
    assert method_choices(["rank_selective_lora", "fwd_prompt"], tier_presets("small", ("_tiny",))
                          ) == ["experiment=rank_selective_lora_small,fwd_prompt_tiny"]


def _fake_run(root: Path, name: str, overrides: list[str], tasks: list[str],
              matrix: list[list], predictions: dict) -> Path:
    """A run directory as mcl.run leaves it: results.json, .hydra/overrides.yaml, predictions."""
    import gzip
    import json

    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    done = sum(all(x is not None for x in row) for row in matrix[1:])
    (run / "results.json").write_text(json.dumps({
        "tasks": tasks, "completed_tasks": done, "matrix": matrix,
        "metrics": {"last": None if done < len(tasks) else 0.5, "avg_incremental": 0.25}}))
    (run / "predictions").mkdir()
    for (row, task), records in predictions.items():
        with gzip.open(run / "predictions" / f"row{row:03d}_task{task:03d}.jsonl.gz", "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    return run


def test_ablation_table_names_runs_by_overrides_and_keeps_unfinished_tasks(tmp_path, capsys):
    import ablation_table

    _fake_run(tmp_path, "a..1f", ["backbone=small_llava", "trainer=gpu", "method.projection=none"],
              ["t0", "t1"], [[0.1, 0.0], [0.8, 0.0], [None, None]], {})
    sys.argv = ["ablation_table.py", str(tmp_path)]
    ablation_table.main()
    row = capsys.readouterr().out.splitlines()[2]
    assert "`backbone=small_llava method.projection=none`" in row and "trainer" not in row
    assert "| 1/2 |" in row and row.endswith("| 80, - |")  # a task not trained yet: '-'


def test_ablation_table_names_the_seed_only_where_runs_differ_in_it(tmp_path, capsys):
    import ablation_table

    for seed in (0, 1):  # a comparison's tree: two seeds of one method
        _fake_run(tmp_path / "cmp", f"s{seed}", [f"seed={seed}", "method=lora"], ["t0"],
                  [[0.0], [0.5]], {})
    _fake_run(tmp_path / "abl", "a", ["seed=0", "method.lr=1"], ["t0"], [[0.0], [0.5]], {})
    _fake_run(tmp_path / "abl", "b", ["seed=0", "method.lr=2"], ["t0"], [[0.0], [0.5]], {})
    rows = {}
    for tree in ("cmp", "abl"):
        sys.argv = ["ablation_table.py", str(tmp_path / tree)]
        ablation_table.main()
        rows[tree] = [r.split("|")[1].strip() for r in capsys.readouterr().out.splitlines()[2:]]
    assert rows["cmp"] == ["`seed=0 method=lora`", "`seed=1 method=lora`"]
    assert rows["abl"] == ["`method.lr=1`", "`method.lr=2`"]  # one seed: not named


def test_future_task_predictions_counts_answers_with_trained_labels(tmp_path, capsys):
    import future_task_predictions

    rec = lambda p, r: {"prediction": p, "references": r, "score": float(p == r)}  # noqa: E731
    run = _fake_run(tmp_path, "pf/seed0", [], ["t0", "t1"], [[0.5, 0.5], [1.0, 0.25], [1, 1]],
                    {(1, 0): [rec("cat", "cat"), rec("dog", "dog")],
                     (1, 1): [rec("cat", "cow"), rec("dog", "pig"), rec("cat", "cow"),
                              rec("pig", "pig")]})
    sys.argv = ["future_task_predictions.py", str(run)]
    future_task_predictions.main()
    rows = capsys.readouterr().out.splitlines()[2:]
    assert rows == ["| pf/seed0 | 0 | 1 | 75% | 25% |"]  # 3 of 4 answered "cat" or "dog"


def test_just_trained_predictions_count_answers_with_an_older_tasks_label(tmp_path, capsys):
    import future_task_predictions

    rec = lambda p, r: {"prediction": p, "references": r, "score": float(p == r)}  # noqa: E731
    old = [rec("cat", "cat"), rec("dog", "dog")]
    run = _fake_run(tmp_path, "l2p/seed0", [], ["t0", "t1", "t2"],
                    [[0.5] * 3, [1, 0, 0], [1, 0.25, 0], [1, 1, 0.5]],
                    {(2, 0): old, (3, 0): old, (3, 1): [rec("cow", "cow")] * 2,
                     # right after t1: 3 of 4 of its images answered with t0's classes
                     (2, 1): [rec("cat", "cow"), rec("dog", "pig"), rec("cat", "cow"),
                              rec("pig", "pig")],
                     # right after t2: its own class, t1's and t0's
                     (3, 2): [rec("ant", "ant"), rec("cow", "ant"), rec("dog", "bee"),
                              rec("bee", "bee")]})
    sys.argv = ["future_task_predictions.py", "--just-trained", str(run)]
    future_task_predictions.main()
    rows = capsys.readouterr().out.splitlines()[2:]
    assert rows == ["| l2p/seed0 | 1 | 1 | 75% | 25% |", "| l2p/seed0 | 2 | 2 | 50% | 50% |"]


def test_comparison_sweeps_run_every_method_of_a_seed_before_the_next_seed(monkeypatch):
    """A sweep stopped at a deadline (small_tier_gpu.sh) then leaves whole tables of the
    first seeds, not all seeds of the first methods."""
    import sweep
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    commands = []

    class Started:
        def __init__(self, cmd, **kwargs):
            commands.append(cmd)

        def wait(self):
            return 0

    monkeypatch.setattr(sweep.subprocess, "Popen", Started)
    monkeypatch.setattr(sweep, "report", lambda args: 0)
    sweep.sweep_and_report(["method=a,b,c"], ["stream=x,y"], [0, 1, 2], Path("/tmp/x"), 1, [])
    swept = [o for o in commands[0][4:] if "," in o]
    jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(swept), None)[0]
    seeds = [next(o for o in job if o.startswith("seed=")) for job in jobs]
    assert seeds == ["seed=0"] * 6 + ["seed=1"] * 6 + ["seed=2"] * 6
    # Within a seed the methods start in the order listed (small_tier_gpu.sh lists the slowest
    # first, so that the sweep's end does not wait on them).
    methods = [next(o for o in job if o.startswith("method=")) for job in jobs[:6]]
    assert methods == ["method=a"] * 2 + ["method=b"] * 2 + ["method=c"] * 2


def test_phases_run_seed_0_of_every_method_first_and_restore_only_once(tmp_path):
    """experiments/small_tier_phases.sh against a stand-in small_tier_gpu.sh that records what
    each phase was asked for: every method's seed 0 (the script's own lists: empty method
    variables), then seeds 0-2 of the seed methods, then of all; RESTORE only in the first."""
    import shutil
    import subprocess

    (tmp_path / "experiments").mkdir()
    shutil.copy(ROOT / "experiments" / "small_tier_phases.sh", tmp_path / "experiments")
    (tmp_path / "experiments" / "small_tier_gpu.sh").write_text(
        'echo "$SEEDS|$TOY_METHODS|$CLS_METHODS|${RESTORE:-}|$ABLATIONS|$*" >> "$LOG"\n')
    log = tmp_path / "phases.log"
    env = {"PATH": "/usr/bin:/bin", "LOG": str(log), "DEADLINE_S": "1000",
           "RESTORE": "runs.tar.gz"}
    subprocess.run(["bash", str(tmp_path / "experiments" / "small_tier_phases.sh"), "--dry"],
                   env=env, check=True, capture_output=True)
    phases = [line.split("|") for line in log.read_text().splitlines()]
    assert [p[0] for p in phases] == ["0", "0 1 2", "0 1 2"]
    assert phases[0][1:3] == ["", ""] and phases[2][1:3] == ["", ""]  # every method
    assert "fwd_prompt" in phases[1][1] and "prompt_fusion" in phases[1][2]
    assert "hide_llava" not in phases[1][1] and "moe_adapters" not in phases[1][2]
    assert [p[3] for p in phases] == ["runs.tar.gz", "", ""]
    assert all(p[4] == "0" and p[5] == "--dry" for p in phases)

    # Out of time: a phase with under two minutes left is skipped.
    log.unlink()
    subprocess.run(["bash", str(tmp_path / "experiments" / "small_tier_phases.sh")],
                   env={**env, "DEADLINE_S": "100"}, check=True, capture_output=True)
    assert not log.exists()


def test_lora_drift_width_rule_runs_every_method_and_seed_at_its_sets_lr(tmp_path):
    """experiments/lora_drift_gpu.sh's RULE_SEEDS sweep, on the micro world on the CPU: every
    method of every RULE_SETS selection, on every seed named, at its own set's lr (two sets, two
    lrs: a method must not get the other set's); with VARIANTS=0 none of the six seed-0
    variants runs again."""
    import json
    import os
    import subprocess

    import yaml

    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"),
           "BACKBONE": "tiny_llava_micro", "STREAM": "toy_micro", "ALONE": "capability_colour",
           "GPU_ARGS": "", "RULE_SEEDS": "0 1", "VARIANTS": "0", "DEADLINE_S": "600",
           "RULE_SETS": "method=lora:1.5e-3 experiment=ewc_tiny,replay_tiny:7e-4",
           "OMP_NUM_THREADS": "1",
           "PYTHON": sys.executable}
    subprocess.run(["bash", str(ROOT / "experiments" / "lora_drift_gpu.sh")], env=env,
                   check=True, capture_output=True)
    runs = set()
    for results in (tmp_path / "work" / "width_rule").rglob("results.json"):
        overrides = yaml.safe_load((results.parent / ".hydra" / "overrides.yaml").read_text())
        cfg = yaml.safe_load((results.parent / ".hydra" / "config.yaml").read_text())
        assert json.loads(results.read_text())["completed_tasks"]
        runs.add((next(o for o in overrides if o.startswith(("method=", "experiment="))),
                  cfg["seed"], cfg["method"]["lr"]))
    assert runs == {(m, s, lr) for s in (0, 1) for m, lr in (
        ("method=lora", 1.5e-3), ("experiment=ewc_tiny", 7e-4), ("experiment=replay_tiny", 7e-4))}
    table = (tmp_path / "out" / "lora_drift.md").read_text()
    assert ("The width rule (each method's tiny lr halved: method=lora:1.5e-3 "
            "experiment=ewc_tiny,replay_tiny:7e-4), seeds 0 1:") in table
    assert not list((tmp_path / "work" / "runs").iterdir())  # no variant ran
    assert "Most frequent answers" in table and "- " in table.split("Most frequent answers")[1]


def test_lora_drift_codyra_subject_runs_its_variants_and_scores_each_answer_word(tmp_path):
    """SUBJECT=codyra: the seven CoDyRA variants, each with its own overrides (the caption task
    alone, no sparsification, the soft threshold, 3x the lr, fp32, the tiny preset), no LoRA
    adapter norms (CoDyRA merges its adapter), and for every run the share of answers whose
    word i is the reference's word i, checked here against the run's prediction file."""
    import gzip
    import json
    import os
    import re
    import subprocess

    import yaml

    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"),
           "BACKBONE": "tiny_llava_micro", "STREAM": "toy_micro", "ALONE": "capability_colour",
           "GPU_ARGS": "", "SUBJECT": "codyra", "DEADLINE_S": "600", "OMP_NUM_THREADS": "1",
           "PYTHON": sys.executable}
    subprocess.run(["bash", str(ROOT / "experiments" / "lora_drift_gpu.sh")], env=env,
                   check=True, capture_output=True)
    runs = tmp_path / "work" / "runs"
    cfg = {d.name: yaml.safe_load((d / "config.yaml").read_text()) for d in runs.iterdir()}
    assert set(cfg) == {"codyra", "codyra_alone", "codyra_fp32", "codyra_dense", "codyra_soft",
                        "codyra_lr_3x", "codyra_tiny"}
    assert all(c["method"]["name"] == "rank_selective_lora" for c in cfg.values())
    assert cfg["codyra"]["method"]["lr"] == 5e-4 and cfg["codyra"]["method"]["epochs"] == 16
    assert cfg["codyra_dense"]["method"]["max_kappa"] == 0
    assert cfg["codyra_soft"]["method"]["proximal"] == "soft"
    assert cfg["codyra_lr_3x"]["method"]["lr"] == 1.5e-3
    assert cfg["codyra_fp32"]["trainer"]["precision"] == "32-true"
    assert cfg["codyra_tiny"]["method"]["lr"] == 3e-3
    assert json.loads((runs / "codyra_alone" / "results.json").read_text())["tasks"] == [
        "capability_colour"]
    table = (tmp_path / "out" / "lora_drift.md").read_text()
    assert table.startswith("# Sequential codyra's last task on toy_micro")
    assert "‖A‖" not in table  # adapter_norms.py reads peft's LoRA pairs only
    lines = dict(re.findall(r"^- (\w+): .*word i right: ([\d ]+)$", table, re.M))
    assert set(lines) == set(cfg)
    records = [json.loads(line) for line in gzip.open(
        runs / "codyra_alone" / "predictions" / "row001_task000.jsonl.gz", "rt")]
    right = sum(r["prediction"].split()[:1] == r["references"].split()[:1] for r in records)
    assert lines["codyra_alone"].split() == [f"{100 * right / len(records):.0f}"]


def _run_dir(root: Path, name: str, method: str, stream: str, seed: int, backbone: str = "b",
             finished: bool = True) -> None:
    """A run folder as mcl.loop leaves it: results.json, and matrix.csv once finished."""
    import json

    run = root / name
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({
        "method": method, "stream": stream, "seed": seed, "backbone": backbone,
        "tasks": ["t0", "t1"], "completed_tasks": 2 if finished else 1}))
    if finished:
        (run / "matrix.csv").write_text("after,t0,t1\n")


def test_missing_runs_names_unfinished_and_absent_runs_by_their_results(tmp_path):
    """ONLY_MISSING=1's helper: a run counts as done only when finished, on the grid's backbone,
    whatever its folder is called; the sweep then covers the missing methods x seeds."""
    from missing_runs import missing_runs, to_sweep

    _run_dir(tmp_path, "x/a/0", "a", "s1", 0)
    _run_dir(tmp_path, "x/a/1", "a", "s1", 1)
    _run_dir(tmp_path, "x/a/2", "a", "s2", 0)
    _run_dir(tmp_path, "y/unrelated_name", "a", "s2", 1)  # found by what it records
    _run_dir(tmp_path, "x/b/0", "b", "s1", 0, finished=False)  # stopped mid-stream
    _run_dir(tmp_path, "x/b/1", "b", "s1", 1, backbone="other")  # another backbone's
    _run_dir(tmp_path, "x/b/2", "b", "s2", 0)
    _run_dir(tmp_path, "x/b/3", "b", "s2", 1)
    missing = missing_runs(tmp_path, "b", ["a", "b", "c"], ["s1", "s2"], [0, 1])
    assert missing == [("b", "s1", 0), ("b", "s1", 1), ("c", "s1", 0), ("c", "s1", 1),
                       ("c", "s2", 0), ("c", "s2", 1)]
    assert to_sweep(missing) == (["b", "c"], [0, 1])
    only_a = missing_runs(tmp_path, "b", ["a"], ["s1", "s2"], [0, 1, 2])
    assert to_sweep(only_a) == (["a"], [2])
    assert missing_runs(tmp_path / "absent", "b", ["a"], ["s1"], [0]) == [("a", "s1", 0)]
    assert to_sweep([]) == ([], [])
