"""experiments/archive_runs.py and run_timings.py: a sweep's finished runs carried to another
machine (only on the same pre-trained weights) and where their time went."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from archive_runs import archive, restore  # noqa: E402
from run_timings import timing_rows  # noqa: E402

from mcl.results import is_finished  # noqa: E402


def fake_run(root: Path, name: str, completed: int, sha: str, train_s: float = 1.0) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "task_001.pt").write_bytes(b"big")
    (run / "results.json").write_text(json.dumps({
        "tasks": ["a", "b"], "completed_tasks": completed, "method": name.split("/")[0],
        "stream": "s", "backbone_weights": {"cache": "small_llava/abc", "sha256": sha}}))
    (run / "timings.json").write_text(json.dumps(
        [{"task": "zero-shot", "train_s": 0.0, "eval_s": 2.0},
         {"task": "a", "train_s": train_s, "eval_s": 1.0},
         {"task": "b", "train_s": train_s, "eval_s": 1.0}]))
    if completed == 2:
        (run / "matrix.csv").write_text("m")
    return run


def test_only_finished_runs_go_in_and_only_on_the_same_weights_come_back(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    fake_run(sweep, "lora/seed0", 2, "w1")
    fake_run(sweep, "lora/seed1", 2, "w2")  # began on another pre-training
    fake_run(sweep, "ewc/seed0", 1, "w1")  # partial: it could not resume without checkpoints
    assert archive(sweep, tmp_path / "runs.tar.gz") == 2

    cache = tmp_path / "cache"
    (cache / "small_llava" / "abc").mkdir(parents=True)
    (cache / "small_llava" / "abc" / "weights.sha256").write_text("w1\n")
    monkeypatch.setenv("MCL_CACHE", str(cache))
    other = tmp_path / "other"
    assert restore(tmp_path / "runs.tar.gz", other) == (1, 1)
    assert (other / "lora" / "seed0" / "matrix.csv").exists()
    assert not (other / "lora" / "seed0" / "checkpoints").exists()
    assert not (other / "lora" / "seed1").exists() and not (other / "ewc").exists()
    # A run already there stays as it is.
    (other / "lora" / "seed0" / "matrix.csv").write_text("newer")
    assert restore(tmp_path / "runs.tar.gz", other) == (0, 1)
    assert (other / "lora" / "seed0" / "matrix.csv").read_text() == "newer"


def test_timings_are_medians_of_finished_runs_per_method_and_stream(tmp_path):
    fake_run(tmp_path, "lora/seed0", 2, "w", train_s=10.0)
    fake_run(tmp_path, "lora/seed1", 2, "w", train_s=30.0)
    fake_run(tmp_path, "lora/seed2", 2, "w", train_s=40.0)
    fake_run(tmp_path, "ewc/seed0", 1, "w", train_s=99.0)  # unfinished: left out
    # train: 2 tasks x 30 (the median seed); eval: 2 + 1 + 1
    assert timing_rows(tmp_path) == [("lora", "s", 3, 60.0, 4.0, 64.0)]


def test_a_run_is_finished_only_with_every_task_done_and_matrix_csv_written(tmp_path):
    assert is_finished(fake_run(tmp_path, "lora/seed0", 2, "w"))
    assert not is_finished(fake_run(tmp_path, "lora/seed1", 1, "w"))  # one of two tasks
    killed = fake_run(tmp_path, "lora/seed2", 2, "w")
    (killed / "matrix.csv").unlink()  # killed between the final results.json and matrix.csv
    assert not is_finished(killed)
    assert not is_finished(tmp_path / "never_started")
