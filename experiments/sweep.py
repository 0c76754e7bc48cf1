"""What the comparison scripts share: one Hydra multirun of mcl.run, then mcl.report on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mcl.report.cli import main as report

ROOT = Path(__file__).resolve().parents[1]


def sweep_and_report(choices: list[str], seeds: list[int], out: Path, jobs: int,
                     overrides: list[str]) -> int:
    """Run every combination of `choices` (e.g. "method=a,b") and `seeds` into `out` (up to
    `jobs` at once through hydra/launcher=parallel when `jobs` > 1, each run on GPUs of its own;
    finished runs resume as done), then write the report beside the runs; returns the report's
    exit status."""
    cmd = [sys.executable, "-m", "mcl.run", "-m", *choices,
           f"seed={','.join(map(str, seeds))}", "trainer.progress_bar=false", "logger=none",
           f"hydra.sweep.dir={out}", *overrides]
    if jobs > 1:
        cmd += ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={jobs}"]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return report([str(out)])
