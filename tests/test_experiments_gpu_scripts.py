"""The GPU scripts run at a toy size on the CPU (what the lead runs on the GPU at 7B)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": str(ROOT)}


def run_script(*args: str) -> str:
    import os

    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **ENV}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_decode_benchmark_tiny_compares_both_paths(tmp_path):
    out = tmp_path / "decode.md"
    run_script("experiments/bench_gpu.py", "--tiny", "--gen-batch", "3", "--text", "4",
               "--new-tokens", "3", "5", "--rounds", "1", "--out", str(out))
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "/ 3 |" in line]
    assert len(rows) == 2  # N = 3 and N = 5
    assert all(row.endswith("| 3 / 3 |") for row in rows)  # fp32 CPU: identical answers
    assert "one decode step" in text and "prefill" in text


def test_end_to_end_script_tiny_records_where_the_time_goes(tmp_path):
    stdout = run_script("experiments/e2e_gpu_7b.py", "--tiny", "--out", str(tmp_path),
                        "--tasks", "2", "--train", "4", "--test", "2", "--max-new-tokens", "2")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["tasks"] == ["ScienceQA", "TextVQA"] and results["method"] == "lora"
    assert results["config"]["backbone"]["pretrained"] == str(tmp_path / "model")
    timings = json.loads((tmp_path / "run" / "timings.json").read_text())
    for timing in timings[1:]:
        assert {"train_s", "eval_s", "checkpoint_s", "checkpoint_bytes"} <= set(timing)
    # The last task's checkpoint is kept (trainer.keep_task_checkpoints=1): its size as recorded.
    checkpoint = tmp_path / "run" / "checkpoints" / f"task_{len(timings) - 2:03d}.pt"
    assert timings[-1]["checkpoint_bytes"] == checkpoint.stat().st_size
    assert "| total |" in (tmp_path / "e2e.md").read_text() and "| total |" in stdout
