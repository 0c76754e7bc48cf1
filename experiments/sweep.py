"""What the comparison scripts share: one Hydra multirun of mcl.run, then mcl.report on it."""

from __future__ import annotations

import subprocess
import sys
import tempfile
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


def pretrain_once(backbone: str) -> None:
    """Pre-train `backbone` (cached by config hash: nothing to do when cached) before parallel
    jobs would all find the cache empty; Hydra's log of it goes to a temporary directory, not
    among the runs."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-m", "mcl.pretrain", f"backbone={backbone}",
                        f"hydra.run.dir={scratch}"], cwd=ROOT, check=True)


def job_shares(sizes: list[int], jobs: int) -> list[int]:
    """`jobs` slots shared among sweeps of `sizes` methods in proportion, at least one each."""
    return [max(1, round(jobs * n / sum(sizes))) for n in sizes]


def sweep_and_report(selections: list[str], choices: list[str], seeds: list[int], out: Path,
                     jobs: int, overrides: list[str]) -> int:
    """For each of `selections` (e.g. "method=a,b", "experiment=c_tiny"), run every combination
    of it with `choices` (e.g. "stream=x,y") and `seeds` into `out`, then write the report beside
    the runs; returns the report's exit status. The selections run at the same time, `jobs` runs
    at once in all (through hydra/launcher=parallel when `jobs` > 1, shared in proportion to each
    selection's number of methods), so that no slot idles while the last runs of one finish. A
    selection whose sweep fails (a job wrote failed.json) does not stop the others; the report's
    status column names the runs that did not finish. Finished runs resume as done."""
    shares = job_shares([len(s.split("=", 1)[1].split(",")) for s in selections], jobs)
    sweeps = []
    for selection, share in zip(selections, shares, strict=True):
        # Seeds first: Hydra's sweep varies its first override slowest, so every method's
        # seed 0 runs before any seed 1, and a sweep stopped at a deadline leaves a whole table
        # of one seed rather than three seeds of the first methods (run directories' names sort
        # the overrides: unchanged).
        cmd = [sys.executable, "-m", "mcl.run", "-m", f"seed={','.join(map(str, seeds))}",
               selection, *choices, "trainer.progress_bar=false", "logger=none",
               f"hydra.sweep.dir={out}", *overrides]
        if jobs > 1:
            cmd += ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={share}"]
        sweeps.append((selection, subprocess.Popen(cmd, cwd=ROOT)))
    try:
        for selection, process in sweeps:
            if process.wait():
                print(f"sweep {selection} exited {process.returncode}; reporting what finished",
                      file=sys.stderr)
    except KeyboardInterrupt:  # the sweeps got the interrupt too: let them save, then report
        for _, process in sweeps:
            process.wait()
    return report([str(out)])
