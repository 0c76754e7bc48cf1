"""A run killed with SIGKILL at a random point, then re-run, ends with the uninterrupted run's
matrix; and no reader ever sees a half-written results.json."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import MICRO

ROOT = Path(__file__).resolve().parents[1]
# Long enough tasks (24 steps each) that a kill lands inside training most of the time.
ARGS = [*MICRO[:-1], "method.epochs=3", "stream.train_size=256", "logger=none"]


def _command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "mcl.run", *ARGS, f"hydra.run.dir={run_dir}"]


def _read_results(path: Path) -> dict | None:
    """results.json as a reader sees it now; it must always be whole JSON."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return json.loads(text)  # a half-written file would raise here


def test_sigkill_mid_task_then_rerun_equals_uninterrupted(tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_command(reference), cwd=ROOT, check=True, capture_output=True, timeout=600)
    done = json.loads((reference / "results.json").read_text())
    expected = done["matrix"]
    training_s = sum(t["train_s"] for t in done["timings"])

    killed = tmp_path / "killed"
    process = subprocess.Popen(_command(killed), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    # Wait for the zero-shot row (training of task 1 starts next), then kill at a random moment.
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        state = _read_results(killed / "results.json")
        if state is not None:
            break
        time.sleep(0.05)
    delay = random.uniform(0.0, 0.6 * training_s)  # inside the training of some task
    end = time.time() + delay
    while time.time() < end and process.poll() is None:
        _read_results(killed / "results.json")
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = _read_results(killed / "results.json")
    print(f"killed after {delay:.2f}s of {training_s:.2f}s training, "
          f"{partial['completed_tasks']} tasks finished")
    assert partial["completed_tasks"] < 2, "the kill came after the run had finished"

    subprocess.run(_command(killed), cwd=ROOT, check=True, capture_output=True, timeout=600)
    assert json.loads((killed / "results.json").read_text())["matrix"] == expected
