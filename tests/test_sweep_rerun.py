"""A sweep's summary (every job: finished, failed with its error, incomplete) and its re-run
command, which re-runs exactly the failed and incomplete jobs (also those never started)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import MICRO

from mcl.report.sweep import sweep_jobs

ROOT = Path(__file__).resolve().parents[1]


def _mcl(args: list[str]) -> str:
    result = subprocess.run([sys.executable, "-m", "mcl.run", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _launched(stdout: str) -> set[tuple[str, str]]:
    """(method, seed) of the jobs a launcher started, from its "#<n> : <overrides>" lines."""
    return set(re.findall(r"#\d+ : .*method=(\w+) seed=(\d+)", stdout))


def test_rerun_runs_exactly_the_failed_and_incomplete_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # zero_shot finishes; l2p fails on a LLaVA backbone (before any weights load).
    # Every task checkpoint kept, so that the job made to look stopped after its first task
    # below has that task's checkpoint, as a really stopped one would.
    first = _mcl(["-m", *MICRO[:-1], "trainer.keep_task_checkpoints=null",
                  "method=zero_shot,l2p", "seed=0,1", f"hydra.sweep.dir={sweep}"])
    assert f"Sweep {sweep}: 4 jobs, 2 finished, 2 failed, 0 incomplete" in first
    assert "cannot run on backbone 'tiny_llava_micro'" in first

    # As if the sweep had been stopped: seed 1 of zero_shot after its first task, seed 2 of
    # both methods before they started.
    zero = sweep / "tiny_llava_micro" / "toy_micro" / "zero_shot"
    results = json.loads((zero / "seed1" / "results.json").read_text())
    results["completed_tasks"] = 1
    (zero / "seed1" / "results.json").write_text(json.dumps(results))
    multirun = sweep / "multirun.yaml"
    multirun.write_text(multirun.read_text().replace("- seed=0,1", "- seed=0,1,2"))
    kept = (zero / "seed0" / "results.json").read_bytes()
    kept_time = (zero / "seed0" / "results.json").stat().st_mtime_ns

    jobs = {(j.overrides[-2].split("=")[1], j.overrides[-1]): j for j in sweep_jobs(sweep)}
    assert {k: j.status for k, j in jobs.items()} == {
        ("zero_shot", "seed=0"): "finished", ("zero_shot", "seed=1"): "incomplete",
        ("zero_shot", "seed=2"): "incomplete", ("l2p", "seed=0"): "failed",
        ("l2p", "seed=1"): "failed", ("l2p", "seed=2"): "incomplete"}
    assert jobs["zero_shot", "seed=1"].reason == "1/2 tasks done"
    assert jobs["zero_shot", "seed=2"].reason == "not started"
    assert jobs["l2p", "seed=0"].reason.startswith("ValueError: method 'l2p' cannot run")

    report = subprocess.run([sys.executable, "-m", "mcl.report", str(sweep)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "6 jobs, 1 finished, 2 failed, 3 incomplete" in report.stdout
    command = report.stdout.strip().splitlines()[-1].strip()
    assert command.startswith("python -m mcl.run -m hydra/sweeper=mcl_rerun")

    rerun = _mcl(shlex.split(command)[3:])
    assert "re-running 5 of the 6 jobs" in rerun
    assert _launched(first) == {(m, s) for m in ("zero_shot", "l2p") for s in "01"}
    assert _launched(rerun) == {("zero_shot", "1"), ("zero_shot", "2"), ("l2p", "0"),
                                ("l2p", "1"), ("l2p", "2")}
    assert "1 of 2 tasks already finished" in rerun  # the incomplete job resumed
    assert (zero / "seed0" / "results.json").read_bytes() == kept  # the finished job: untouched
    assert (zero / "seed0" / "results.json").stat().st_mtime_ns == kept_time
    assert f"Sweep {sweep}: 6 jobs, 3 finished, 3 failed, 0 incomplete" in rerun
    assert {j.status for j in sweep_jobs(sweep) if "method=zero_shot" in j.overrides} == {
        "finished"}
