"""The scripts that keep and compare the comparison tables (experiments/)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from sweep import job_shares  # noqa: E402

HEADER = ("| backbone | stream | method | seeds | last | forgetting | status |\n"
          "|---|---|---|---:|---:|---:|---|\n")


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_diff_reports_lists_only_the_moved_means_and_the_new_rows(tmp_path):
    old, new = tmp_path / "old.md", tmp_path / "new.md"
    old.write_text("# t\n\n" + HEADER + "| b | s | lora | 3 | 10.0 ± 1.0 | 40.0 ± 2.0 | ok |\n")
    new.write_text(HEADER + "| b | s | lora | 3 | 12.5 ± 0.5 | 40.2 ± 9.0 | ok |\n"
                   "| b | s | ewc | 3 | 20.0 ± 1.0 | 30.0 ± 1.0 | ok |\n")
    out = run("experiments/diff_reports.py", str(old), str(new))
    row = next(line for line in out.splitlines() if line.startswith("| b | s | lora"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "10.0 → 12.5 (+2.5)"
    assert cells[4] == ""  # 40.0 -> 40.2 moved less than 0.5 points; std changes do not count
    assert "ewc on s" in out


def test_collect_matrices_keeps_every_runs_matrix(tmp_path):
    for seed in (0, 1):
        run_dir = tmp_path / "b" / "s" / "lora" / f"seed{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps({
            "backbone": "b", "stream": "s", "method": "lora", "seed": seed, "tasks": ["x"],
            "completed_tasks": 1, "matrix": [[0.0], [0.5 + seed / 10]],
            "metrics": {"last": 0.5 + seed / 10}}))
    (tmp_path / "b" / "s" / "lora" / "seed0" / "matrix.csv").write_text("")
    out = tmp_path / "runs.json"
    run("experiments/collect_matrices.py", str(tmp_path / "b"), str(out))
    runs = json.loads(out.read_text())
    assert [r["seed"] for r in runs] == [0, 1]
    assert runs[1]["matrix"] == [[0.0], [0.6]] and runs[1]["run"] == "s/lora/seed1"
    # Seed 1 has every task's results but was killed before finalizing (no matrix.csv).
    assert [r["finished"] for r in runs] == [True, False]


def test_runs_of_other_settings_than_the_seed_are_variants_in_runs_json_and_the_summary(
        tmp_path):
    from summary_table import summary_rows

    for seed, init in ((0, "pytorch_port"), (1, "pytorch_port"), (2, "official")):
        run_dir = tmp_path / "b" / "s" / "l2p" / f"seed{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps({
            "backbone": "b", "stream": "s", "method": "l2p", "seed": seed, "tasks": ["x"],
            "completed_tasks": 1, "matrix": [[0.0], [0.2 * (seed + 1)]],
            "metrics": {"last": 0.2 * (seed + 1)},
            "fingerprint": {"seed": seed, "method.prompt_init": init}}))
        (run_dir / "matrix.csv").write_text("")
    out = tmp_path / "runs.json"
    run("experiments/collect_matrices.py", str(tmp_path / "b"), str(out))
    runs = json.loads(out.read_text())
    assert [r["variant"] for r in runs] == ["method.prompt_init=pytorch_port"] * 2 + [
        "method.prompt_init=official"]
    _, rows = summary_rows(runs, "b", ["last"], ["l2p"], None)  # the name expands to both
    assert rows == [["l2p [method.prompt_init=official]", "1", "60.0"],
                    ["l2p [method.prompt_init=pytorch_port]", "2", "30.0"]]


def test_job_shares_split_the_slots_in_proportion_with_one_each_at_least():
    assert job_shares([6, 11], 14) == [5, 9]
    assert job_shares([1, 1], 2) == [1, 1]
    assert job_shares([1, 20], 4) == [1, 4]


def test_summary_table_averages_finished_runs_only_per_stream_and_metric():
    from summary_table import summary_rows

    def entry(method, stream, seed, last, done=True):
        return {"backbone": "b", "method": method, "stream": stream, "seed": seed,
                "finished": done, "matrix": [], "metrics": {"last": last, "bwt": None}}
    runs = [entry("lora", "toy_x", 0, 0.2), entry("lora", "toy_x", 1, 0.4),
            entry("lora", "toy_x", 2, 0.9, done=False),  # unfinished: its 90 % stays out
            entry("lora", "toy_y", 0, 0.5), entry("ewc", "toy_x", 0, 0.1)]
    header, rows = summary_rows(runs, "b", ["last", "bwt"], ["lora", "ewc"], None)
    assert header == ["method", "seeds", "x last", "x bwt", "y last", "y bwt"]
    assert rows == [["lora", "1-2", "30.0", "-", "50.0", "-"],
                    ["ewc", "0-1", "10.0", "-", "-", "-"]]


def test_adapter_norms_sum_every_lora_pair_and_scale_the_update():
    import torch
    from adapter_norms import adapter_norms

    a = torch.tensor([[3.0, 0.0]])           # r = 1, in = 2
    b = torch.tensor([[1.0], [0.0], [0.0]])  # out = 3
    params = {"l1.lora_A.default.weight": a, "l1.lora_B.default.weight": b,
              "l2.lora_A.default.weight": 2 * a, "l2.lora_B.default.weight": b,
              "head.weight": torch.ones(5, 5)}  # not an adapter: left out
    norm_a, norm_b, delta = adapter_norms(params, scale=2.0)
    # ||A||^2 = 9 + 36; ||B||^2 = 1 + 1; B A = [[3, 0], 0, 0] and twice that: 2 * sqrt(9 + 36)
    assert (round(norm_a ** 2, 6), round(norm_b ** 2, 6)) == (45.0, 2.0)
    assert abs(delta - 2 * 45 ** 0.5) < 1e-9
