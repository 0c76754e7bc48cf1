"""What the comparison scripts share: one Hydra multirun of mcl.run, then mcl.report on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mcl.report.cli import main as report

ROOT = Path(__file__).resolve().parents[1]


def method_choices(methods: list[str], presets: tuple[str, ...]) -> list[str]:
    """How to select each method, grouped for one multirun each: its first scale preset that
    exists (`experiment=<method><suffix>`, conf/experiment/), else its own config (`method=`)."""
    plain, experiments = [], []
    for method in methods:
        found = [f"{method}{s}" for s in presets
                 if (ROOT / "conf" / "experiment" / f"{method}{s}.yaml").exists()]
        if found:
            experiments.append(found[0])
        else:
            plain.append(method)
    return ([f"method={','.join(plain)}"] if plain else []) + (
        [f"experiment={','.join(experiments)}"] if experiments else [])


def sweep_and_report(selections: list[str], choices: list[str], seeds: list[int], out: Path,
                     jobs: int, overrides: list[str]) -> int:
    """For each of `selections` (e.g. "method=a,b", "experiment=c_tiny"), run every combination
    of it with `choices` (e.g. "stream=x,y") and `seeds` into `out` (up to `jobs` at once through
    hydra/launcher=parallel when `jobs` > 1, each run on GPUs of its own; finished runs resume as
    done), then write the report beside the runs; returns the report's exit status."""
    for selection in selections:
        cmd = [sys.executable, "-m", "mcl.run", "-m", selection, *choices,
               f"seed={','.join(map(str, seeds))}", "trainer.progress_bar=false", "logger=none",
               f"hydra.sweep.dir={out}", *overrides]
        if jobs > 1:
            cmd += ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={jobs}"]
        subprocess.run(cmd, cwd=ROOT, check=True)
    return report([str(out)])
