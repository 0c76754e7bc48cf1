"""End to end: `mcl.run` on the micro stream, its outputs, determinism, resume and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CONF, MICRO, compose_config
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from mcl.backbones.llava import LlavaBackbone
from mcl.data.coast import MissingDataError
from mcl.run import run

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_leaves_every_output(tmp_path):
    results = run(compose_config(MICRO), tmp_path)
    for name in ("config.yaml", "results.json", "timings.json", "matrix.csv", "matrix.png",
                 "checkpoints/task_001.pt"):
        assert (tmp_path / name).exists(), name
    # trainer.keep_task_checkpoints=1: only the last task's, which is all that resume needs.
    assert not (tmp_path / "checkpoints" / "task_000.pt").exists()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["completed_tasks"] == 2 and saved["tasks"] == results["tasks"]
    matrix = np.array(saved["matrix"], dtype=float)
    assert matrix.shape == (3, 2) and not np.isnan(matrix).any()
    assert set(saved["metrics"]) >= {"last", "avg_incremental", "forgetting", "bwt", "fwt",
                                     "transfer"}
    assert saved["versions"]["torch"] and saved["seed"] == 0
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert [t["task"] for t in timings] == ["zero-shot", *saved["tasks"]]
    assert "timings" not in saved  # wall-clock times would make identical runs differ
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_fixed_seed_gives_identical_results_and_resume_equals_uninterrupted(tmp_path):
    cfg = compose_config([*MICRO, "trainer.keep_task_checkpoints=null"])
    first = run(cfg, tmp_path / "a")
    second = run(cfg, tmp_path / "b")
    assert first["matrix"] == second["matrix"]
    # Pretend the run died after its first task: results say 1 task done, last row unknown.
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    saved["completed_tasks"] = 1
    saved["matrix"][2] = [None, None]
    (tmp_path / "b" / "results.json").write_text(json.dumps(saved))
    (tmp_path / "b" / "checkpoints" / "task_001.pt").unlink()
    resumed = run(cfg, tmp_path / "b")
    assert resumed["matrix"] == first["matrix"]


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(MissingConfigException) as err:
        compose_config(["method=nope"])
    assert "finetune" in str(err.value) and "lora" in str(err.value)


def test_unknown_stream_lists_the_valid_ones():
    with pytest.raises(MissingConfigException) as err:
        compose_config(["stream=nope"])
    assert "toy_domain" in str(err.value) and "toy_capability" in str(err.value)


@pytest.fixture()
def no_backbone_loading(monkeypatch):
    """Bad input must be caught before any weights are loaded or pre-trained."""

    def refuse(*args, **kwargs):
        raise AssertionError("the backbone was loaded before the input was checked")

    monkeypatch.setattr(LlavaBackbone, "load", classmethod(refuse))


def test_coast_without_data_says_where_and_how(tmp_path, no_backbone_loading):
    cfg = compose_config([*MICRO, "stream=coast_domain", f"data_root={tmp_path}"])
    with pytest.raises(MissingDataError) as err:
        run(cfg, tmp_path / "run")
    message = str(err.value)
    assert str(tmp_path / "coast" / "domain") in message
    assert "data_root=" in message and "toy_domain" in message


@pytest.mark.parametrize("override,expected", [
    ("method.epochs=0", "method.epochs must be a positive integer"),
    ("method.epochs=-2", "method.epochs must be a positive integer"),
    ("stream.tasks=[]", "lists no tasks"),
    ("stream.train_size=0", "must be positive"),
])
def test_invalid_values_are_rejected_before_training(tmp_path, no_backbone_loading, override,
                                                     expected):
    with pytest.raises(ValueError, match=expected):
        run(compose_config([*MICRO, override]), tmp_path)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcl.run", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=None)


def test_cli_help_lists_the_choices(tmp_path):
    out = _cli("--help", cwd=ROOT).stdout
    for choice in ("finetune", "lora", "joint", "zero_shot", "toy_domain", "toy_capability",
                   "toy_dataset", "tiny_llava", "wandb", "tensorboard", "csv"):
        assert choice in out


def test_cli_cfg_job_prints_the_composed_config():
    out = _cli("method=lora", "--cfg", "job", cwd=ROOT).stdout
    assert "name: lora" in out and "r: 8" in out


def test_cli_multirun_gives_each_run_its_own_directory(tmp_path):
    micro = [o for o in MICRO if not o.startswith("method.")]  # zero_shot has no epochs
    result = _cli("-m", *micro, "method=zero_shot,finetune", "seed=0,1",
                  f"hydra.sweep.dir={tmp_path}", cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    found = sorted(str(p.parent.relative_to(tmp_path)) for p in tmp_path.glob("**/results.json"))
    assert found == [f"tiny_llava_micro/toy_micro/{m}/seed{s}"
                     for m in ("finetune", "zero_shot") for s in (0, 1)]
    a = json.loads((tmp_path / found[0] / "results.json").read_text())
    b = json.loads((tmp_path / found[1] / "results.json").read_text())
    assert a["seed"] == 0 and b["seed"] == 1
    # The seed reaches the data and the training: the two finetune runs end with other weights.
    import torch

    wa, wb = (torch.load(tmp_path / f / "checkpoints" / "task_001.pt")["strategy"]["params"]
              for f in found[:2])
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_impossible_method_backbone_pair_fails_before_loading(no_backbone_loading):
    """A method for another family, or one needing a capability the backbone lacks, is refused
    with the reason, before any weights are loaded."""
    from mcl.compatibility import backbone_spec, check_run
    from mcl.strategies.base import ContinualStrategy

    options = {"lr": 1e-3, "weight_decay": 0.0, "epochs": 1, "batch_size": 8}

    class ClassifierOnly(ContinualStrategy):
        name = "classifier_only"
        families = frozenset({"classification"})

    class NeedsHead(ContinualStrategy):
        name = "needs_head"
        requires = frozenset({"classification_head"})

    backbone_cfg = compose_config(MICRO).backbone
    with pytest.raises(ValueError, match="supports \\['classification'\\] backbones.*instruction"):
        check_run(ClassifierOnly(**options), backbone_spec(backbone_cfg))
    with pytest.raises(ValueError, match="needs the capabilities \\['classification_head'\\]"):
        check_run(NeedsHead(**options), backbone_spec(backbone_cfg))


def test_cli_logs_to_wandb_offline_and_tensorboard(tmp_path):
    """Per-task accuracy, the matrix as a table and the heatmap as an image reach the loggers;
    W&B stays offline."""
    result = _cli(*MICRO, "logger=[csv,tensorboard,wandb]", f"hydra.run.dir={tmp_path}",
                  cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = (tmp_path / "logs" / "metrics.csv").read_text()
    assert "acc/capability_recognition" in metrics and "final/last" in metrics
    assert list((tmp_path / "tb").glob("**/events.out.tfevents.*"))
    offline = list((tmp_path / "wandb").glob("offline-run-*"))
    assert offline, "no offline W&B run was written"
    files = {p.name for p in offline[0].glob("files/**/*")}
    assert any(n.startswith("accuracy_matrix") for n in files), files
    assert any(n.startswith("accuracy_heatmap") and n.endswith(".png") for n in files), files


def test_sweep_goes_on_past_a_failed_run_and_the_report_marks_it(tmp_path):
    micro = [o for o in MICRO if not o.startswith("stream=")]
    result = _cli("-m", *micro, "stream=coast_domain,toy_micro", f"data_root={tmp_path}/none",
                  f"hydra.sweep.dir={tmp_path}", cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    # The overrides that can change a result name the directory (method.epochs, data_root).
    from mcl.run import run_suffix

    suffix = "seed0" + run_suffix(f"data_root={tmp_path}/none+method.epochs=1")
    failed = tmp_path / "tiny_llava_micro" / "coast_domain" / "finetune" / suffix
    assert "MissingDataError" in json.loads((failed / "failed.json").read_text())["error"]
    assert (tmp_path / "tiny_llava_micro" / "toy_micro" / "finetune" / suffix /
            "results.json").exists()  # the job after the failed one ran
    report = subprocess.run([sys.executable, "-m", "mcl.report", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert "MissingDataError" in report.stdout and "coast_domain" in report.stdout


@pytest.mark.parametrize("launcher,target,field,value", [
    ("basic", "BasicLauncher", None, None),
    ("parallel", "ParallelLauncher", "n_jobs", None),
    ("slurm", "SlurmLauncher", "max_num_timeout", 3),
])
def test_launchers_compose(launcher, target, field, value):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if field:
        assert cfg.hydra.launcher[field] == value


def test_every_cell_leaves_predictions_that_recompute_its_score(tmp_path):
    from mcl.results import load_predictions

    results = run(compose_config(MICRO), tmp_path)
    cfg = compose_config(MICRO)
    for i, row in enumerate(results["matrix"]):
        for j, value in enumerate(row):
            records = load_predictions(tmp_path, i, j)
            assert [r["id"] for r in records] == list(range(cfg.stream.test_size))
            assert all({"prediction", "references", "score"} <= set(r) for r in records)
            # The cell's accuracy, recomputed from the stored answers: exactly.
            assert sum(r["score"] for r in records) / len(records) == pytest.approx(value,
                                                                                    abs=1e-15)
    # A re-run with one other override is a run of other settings: refused before any work,
    # naming the key, and nothing of the first run is reported or touched.
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    from mcl.results import RunDirectoryMismatch

    with pytest.raises(RunDirectoryMismatch, match=r"method\.lr: 0\.001 there, 1e-05 now.*"
                                                   r"resume=false"):
        run(compose_config([*MICRO, "method.lr=1e-5"]), tmp_path)
    assert before == {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    # Run-only settings are not part of it: another progress bar or logger resumes.
    resumed = run(compose_config([*MICRO, "trainer.progress_bar=true"]), tmp_path)
    assert resumed["matrix"] == results["matrix"]


def test_sweep_jobs_get_their_own_directories_and_a_differing_job_is_refused(tmp_path):
    micro = [o for o in MICRO if not o.startswith("method.")]  # zero_shot has no epochs
    result = _cli("-m", *micro, "method=zero_shot", "stream.test_size=4,8",
                  f"hydra.sweep.dir={tmp_path}", cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    found = sorted(p.parent.name for p in tmp_path.glob("**/results.json"))
    assert found == ["seed0_stream.test_size=4", "seed0_stream.test_size=8"]
    # A job sent into a directory of other settings (here: one fixed subdir) fails, naming the
    # key; the sweep goes on and the directory keeps its own results.
    fixed = tmp_path / "fixed"
    first = _cli("-m", *micro, "method=zero_shot", "stream.test_size=4", f"hydra.sweep.dir={fixed}",
                 "hydra.sweep.subdir=job", cwd=ROOT)
    assert first.returncode == 0, first.stderr[-2000:]
    kept = (fixed / "job" / "results.json").read_bytes()
    second = _cli("-m", *micro, "method=zero_shot", "stream.test_size=8",
                  f"hydra.sweep.dir={fixed}", "hydra.sweep.subdir=job", cwd=ROOT)
    assert second.returncode == 0, second.stderr[-2000:]
    error = json.loads((fixed / "job" / "failed.json").read_text())["error"]
    assert "RunDirectoryMismatch" in error and "stream.test_size: 4 there, 8 now" in error
    assert (fixed / "job" / "results.json").read_bytes() == kept
    assert "already finished" not in second.stdout


def test_a_resumed_run_refuses_other_pretrained_weights_of_the_same_config(tmp_path):
    """The cached toy backbone is named by its config's hash, but a second pre-training (on a
    GPU, another machine) gives other weights: results.json records their digest, and a resume
    on other weights is refused before any work, saying what to do."""
    from mcl.results import RunDirectoryMismatch

    results = run(compose_config(MICRO), tmp_path)
    weights = results["backbone_weights"]
    assert weights["cache"].startswith("tiny_llava/") and len(weights["sha256"]) == 64
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["backbone_weights"] == weights
    stored["backbone_weights"]["sha256"] = "0" * 64  # as if pre-trained elsewhere
    (tmp_path / "results.json").write_text(json.dumps(stored))
    before = (tmp_path / "results.json").read_bytes()
    with pytest.raises(RunDirectoryMismatch, match=r"other pre-trained backbone weights.*"
                                                   r"sha256 000000000000 there.*MCL_CACHE"):
        run(compose_config(MICRO), tmp_path)
    assert (tmp_path / "results.json").read_bytes() == before


def test_weights_digest_follows_the_weight_bytes(tmp_path):
    from mcl.backbones.tiny_llava import DIGEST_FILE, cached_weights, weights_digest

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    first = weights_digest(tmp_path)
    assert (tmp_path / DIGEST_FILE).read_text().strip() == first  # kept beside the weights
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"weightz")
    (other / "config.json").write_text('{"changed": true}')
    assert weights_digest(other) != first
    (other / "model.safetensors").write_bytes(b"weights")
    (other / DIGEST_FILE).unlink()
    assert weights_digest(other) == first  # the weights alone, not the config beside them
    assert cached_weights(tmp_path) is None  # not under mcl's cache: the config names it
    assert cached_weights("llava-hf/llava-1.5-7b-hf") is None


def test_a_finished_run_is_kept_as_it_is_without_its_checkpoints(tmp_path):
    """A finished run's tree restored from its results alone (no checkpoints, as a sweep's
    results are carried to another machine) resumes as done: nothing re-run, nothing rewritten
    (results.json keeps the revision and environment that produced it)."""
    run(compose_config(MICRO), tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "checkpoints")
    stored = json.loads((tmp_path / "results.json").read_text())
    stored["git_revision"] = "the revision that ran it"
    (tmp_path / "results.json").write_text(json.dumps(stored))
    before = (tmp_path / "results.json").read_bytes()
    again = run(compose_config(MICRO), tmp_path)
    assert again["git_revision"] == "the revision that ran it"
    assert (tmp_path / "results.json").read_bytes() == before
    assert not (tmp_path / "checkpoints").exists()  # no task trained again


def test_pretraining_runs_with_deterministic_kernels_and_restores_the_flags(tmp_path):
    """GPU pre-training of one config gives the same weights on every machine of one kind only
    with deterministic kernels; the flags are the caller's again afterwards."""
    import torch

    from mcl.backbones.tiny_llava import ensure_cached

    seen = {}

    def pretrain(out):
        seen["deterministic"] = torch.are_deterministic_algorithms_enabled()
        seen["cudnn"] = torch.backends.cudnn.deterministic
        (out / "model.safetensors").write_bytes(b"w")
        return {}

    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic
    ensure_cached(tmp_path / "cache", pretrain)
    assert seen == {"deterministic": True, "cudnn": True}
    assert (torch.are_deterministic_algorithms_enabled(),
            torch.backends.cudnn.deterministic) == before


def test_a_finished_run_on_an_uncached_model_is_kept_without_loading_it(tmp_path, monkeypatch):
    """A sweep started again restarts each finished run: on a model mcl does not cache (a Hub
    id or a directory: results.json records no weights digest) the run is kept before the
    model loads (for a 7B backbone, the bulk of a finished run's restart). Other tasks than it
    recorded are still refused, and a cached toy backbone's digest is still checked (the test
    above)."""
    from mcl.results import RunDirectoryMismatch

    first = run(compose_config(MICRO), tmp_path)
    stored = json.loads((tmp_path / "results.json").read_text())
    stored["backbone_weights"] = None  # as a Hub model's run records it
    (tmp_path / "results.json").write_text(json.dumps(stored))
    before = (tmp_path / "results.json").read_bytes()

    import mcl.run

    built = mcl.run.build

    def no_loading(node, **kwargs):
        if node is not None and str(node.get("_target_", "")).endswith("LlavaBackbone.load"):
            raise AssertionError("the backbone was loaded for a finished run")
        return built(node, **kwargs)

    monkeypatch.setattr(mcl.run, "build", no_loading)
    again = run(compose_config(MICRO), tmp_path)
    assert again["matrix"] == first["matrix"] and again["backbone_weights"] is None
    assert (tmp_path / "results.json").read_bytes() == before

    stored["tasks"] = ["another", "stream"]
    (tmp_path / "results.json").write_text(json.dumps(stored))
    with pytest.raises(RunDirectoryMismatch, match="other tasks"):
        run(compose_config(MICRO), tmp_path)

    (tmp_path / "matrix.csv").unlink()  # killed before finalize: not finished, so it loads
    stored["tasks"] = first["tasks"]
    (tmp_path / "results.json").write_text(json.dumps(stored))
    with pytest.raises(AssertionError, match="loaded for a finished run"):
        run(compose_config(MICRO), tmp_path)
