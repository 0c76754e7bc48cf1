"""What the comparison scripts share: one Hydra multirun of mcl.run, then mcl.report on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mcl.report.cli import main as report

ROOT = Path(__file__).resolve().parents[1]

# The backbone tiers of the toy world: tiny (the CPU default) and small (issue 15: width 512,
# for GPU tables). At the small tier a method runs with its `_small` preset where its recipe
# must scale (conf/experiment/*_small.yaml say by which rule), else with its tiny one.
TIERS = ("tiny", "small")


def tier_presets(tier: str, presets: tuple[str, ...]) -> tuple[str, ...]:
    """The preset suffixes to try, first match wins: at the small tier each of `presets` is
    tried with `_small` appended first (e.g. `_clip_small` before `_clip`, `_small` before
    `_tiny`)."""
    if tier == "tiny":
        return presets
    small = []
    for suffix in presets:
        candidate = suffix.removesuffix("_tiny") + "_small"
        if candidate not in small:
            small.append(candidate)
    return (*small, *presets)


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
