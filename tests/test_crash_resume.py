"""Runs are reproducible and survive interrupts, for methods with random initial state too.

- The same command in two fresh processes gives byte-identical results.json and predictions
  (lora, fwd_prompt_tiny, rank_selective_lora_tiny, finetune), and the same zero-shot row 0.
- A run killed with SIGKILL at a random point mid-task, then re-run, ends with the uninterrupted
  run's matrix; the re-run continues the interrupted task from its latest step checkpoint (not
  from the task's start); no reader ever sees a half-written results.json or step checkpoint.
- SIGTERM mid-task writes a step checkpoint of that step, says how to resume and exits with 143;
  the re-run continues from it and keeps the first task's training log.
"""

import csv
import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import MICRO

from mcl.checkpointing import step_checkpoint_path
from mcl.results import load_predictions

ROOT = Path(__file__).resolve().parents[1]
# Tasks of 8 steps (2 epochs of 4 batches), a step checkpoint every 2 steps: the kill lands
# after one (mid-epoch or at an epoch's end) in either task.
ARGS = [*MICRO[:-1], "method.epochs=2", "stream.train_size=128", "logger=none",
        "trainer.checkpoint_every_n_steps=2", "method.batch_size=32"]
# Methods with a random initial state (adapters, prompts, gates), run twice; finetune once, as
# the SIGKILL and SIGTERM tests' reference.
SEEDED = ["lora", "fwd_prompt_tiny", "rank_selective_lora_tiny"]
METHODS = ["finetune", *SEEDED]


def _command(run_dir: Path, method: str, *extra: str) -> list[str]:
    # A scale preset (conf/experiment/<method>_tiny.yaml) selects its method itself.
    choice = f"experiment={method}" if method.endswith("_tiny") else f"method={method}"
    return [sys.executable, "-m", "mcl.run", choice, *ARGS, *extra,
            f"hydra.run.dir={run_dir}"]


def _read_results(path: Path) -> dict | None:
    """results.json as a reader sees it now; it must always be whole JSON."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return json.loads(text)  # a half-written file would raise here


_RUNS: dict[str, tuple[Path, ...]] = {}


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Every method run uninterrupted, the seeded ones twice, each time in a fresh process; each
    method's runs are made when a test first asks for them (so `-k lora` makes only lora's)."""
    def runs(method: str) -> tuple[Path, ...]:
        if method not in _RUNS:
            pair = tuple(tmp_path_factory.mktemp(f"{method}_{k}")
                         for k in ("ab" if method in SEEDED else "a"))
            for run_dir in pair:
                subprocess.run(_command(run_dir, method), cwd=ROOT, check=True,
                               capture_output=True, timeout=600)
            _RUNS[method] = pair
        return _RUNS[method]
    return runs


def _answers(run_dir: Path, row: int, task: int) -> list[str]:
    return [r["prediction"] for r in load_predictions(run_dir, row, task)]


@pytest.mark.parametrize("method", SEEDED)
def test_same_command_in_fresh_processes_gives_identical_files(references, method):
    a, b = references(method)
    assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes()
    cells = sorted(p.name for p in (a / "predictions").iterdir())
    assert len(cells) == 3 * 2  # every (row, task) of the 2-task stream
    assert cells == sorted(p.name for p in (b / "predictions").iterdir())
    for name in cells:
        assert (a / "predictions" / name).read_bytes() == (b / "predictions" / name).read_bytes()
    assert not list((a / "checkpoints").glob("*.step.ckpt"))  # removed once finished
    weights = [torch.load(d / "checkpoints" / "task_001.pt", weights_only=False)["strategy"]
               ["params"] for d in (a, b)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # The comparison can fail: training changed the answers (the micro model's accuracy stays
    # near 0, so the text, not the score, shows it).
    assert _answers(a, 2, 0) != _answers(a, 0, 0)


def test_row_zero_is_the_backbones_zero_shot_for_every_method(references):
    rows = {m: json.loads((references(m)[0] / "results.json").read_text()) for m in METHODS}
    assert len({json.dumps(r["matrix"][0]) for r in rows.values()}) == 1
    # A method that answers through its own (untrained) prompts records that apart.
    assert "initial" in rows["fwd_prompt_tiny"] and "initial" not in rows["finetune"]
    assert len(rows["fwd_prompt_tiny"]["initial"]) == 2


def _kill_at_a_random_step(killed: Path, method: str) -> tuple[dict, int] | None:
    """Start the run and SIGKILL it at a random point inside a random task: once its step
    checkpoint has reached a random step (every read of it must be whole), after a further
    random fraction of a step or two. The run's state as it was left (results.json, the step
    of its step checkpoint), or None when the kill fell between two tasks' training (a micro
    task's last steps and its evaluation can pass within that fraction), with no step checkpoint
    to resume from."""
    process = subprocess.Popen(_command(killed, method), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    task, step = random.randrange(2), random.choice([2, 4])
    checkpoint = step_checkpoint_path(killed, task)
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline:
        try:
            if torch.load(checkpoint, weights_only=False)["global_step"] >= step:
                break
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 0.1))
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = _read_results(killed / "results.json")
    assert partial["completed_tasks"] < 2, "the kill came after the run had finished"
    checkpoint = step_checkpoint_path(killed, partial["completed_tasks"])
    if not checkpoint.exists():
        return None
    return partial, torch.load(checkpoint, weights_only=False)["global_step"]  # whole


@pytest.mark.parametrize("method", METHODS)
def test_sigkill_mid_task_then_rerun_equals_uninterrupted(references, tmp_path, method):
    expected = json.loads((references(method)[0] / "results.json").read_bytes())["matrix"]
    for attempt in range(4):  # a kill between two tasks' training is tried again elsewhere
        killed = tmp_path / f"killed{attempt}"
        landed = _kill_at_a_random_step(killed, method)
        if landed is not None:
            break
    assert landed is not None, "four kills in a row fell between tasks, none inside training"
    partial, step = landed
    print(f"killed in task {partial['completed_tasks']} after step {step}")

    rerun = subprocess.run(_command(killed, method), cwd=ROOT, check=True, capture_output=True,
                           text=True, timeout=600)
    resumed = re.search(r"resuming from the step checkpoint at step (\d+)", rerun.stdout)
    assert resumed is not None, rerun.stdout[-2000:]
    assert int(resumed.group(1)) == step > 0  # continued there, not from the task's start
    assert json.loads((killed / "results.json").read_text())["matrix"] == expected
    assert not list((killed / "checkpoints").glob("*.step.ckpt"))
    assert not list((killed / "checkpoints").glob(".*"))  # no temporary file left behind


def test_sigterm_saves_the_step_resumes_there_and_keeps_the_first_tasks_log(references,
                                                                             tmp_path):
    run_dir = tmp_path / "terminated"
    # A step checkpoint every step, so that the test sees when the second task is training
    # (signalled between two tasks, a run stops before the next one, with nothing to save);
    # the signal's own checkpoint is the one whose step the run reports.
    command = _command(run_dir, "finetune", "logger=csv", "trainer.log_every_n_steps=1",
                       "trainer.checkpoint_every_n_steps=1",
                       "trainer.checkpoint_every_minutes=null")
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if step_checkpoint_path(run_dir, 1).exists():  # the second task is training now
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-2000:]
    said = re.search(r"step checkpoint of task 'capability_colour' at step (\d+)", stderr)
    assert said is not None, stderr[-2000:]
    assert "Resume with the same command: python -m mcl.run" in stderr
    checkpoint = step_checkpoint_path(run_dir, 1)
    step = torch.load(checkpoint, weights_only=False)["global_step"]
    assert step == int(said.group(1)) >= 1
    assert _read_results(run_dir / "results.json")["completed_tasks"] == 1

    rerun = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True,
                           timeout=600)
    assert f"resuming from the step checkpoint at step {step}" in rerun.stdout
    expected = json.loads((references("finetune")[0] / "results.json").read_bytes())["matrix"]
    assert json.loads((run_dir / "results.json").read_text())["matrix"] == expected
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    first = [r for r in rows if r.get("train_loss/capability_recognition")]
    second = [r for r in rows if r.get("train_loss/capability_colour")]
    assert first and second  # the first task's lines survived the resume
