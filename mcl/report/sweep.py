"""A sweep's jobs at a glance: every job with its status (finished, failed with its error,
incomplete), and the one command that re-runs only the failed and incomplete ones.

The job list is the sweep's own: Hydra's multirun.yaml keeps the sweep's overrides, which expand
(as Hydra's basic sweeper expands them) into every job, including those that never started (a
sweep interrupted, a SLURM array cut short); each started job's directory holds its overrides
in .hydra/overrides.yaml. Printed by mcl.report.callback.SweepSummary when the last job ends, and by
`python -m mcl.report <sweep dir>`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from mcl.report.runs import COMPLETE, INCOMPLETE, failed_run, load_run

FINISHED = "finished"  # how the summary names a complete run
# Hydra overrides that the re-run command sets itself.
_REPLACED = ("hydra.sweep.dir", "hydra.mode", "hydra/sweeper", "hydra.sweeper.")


@dataclass
class Job:
    overrides: list[str]
    path: Path | None  # None: the job never started
    status: str
    reason: str = ""


def is_sweep(path: Path) -> bool:
    return (Path(path) / "multirun.yaml").is_file()


def expected_jobs(sweep_dir: Path) -> list[list[str]] | None:
    """Every job's overrides, as Hydra's basic sweeper expanded them; None if multirun.yaml is
    missing or was written by another sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        hydra = OmegaConf.load(Path(sweep_dir) / "multirun.yaml").hydra
        if not str(hydra.sweeper._target_).endswith("BasicSweeper"):
            return None
        params = [f"{k}={v}" for k, v in (hydra.sweeper.get("params") or {}).items()]
        overrides = OverridesParser.create().parse_overrides(params + list(hydra.overrides.task))
    except Exception:  # an unreadable file or a glob() sweep: fall back on the directories
        return None
    return [list(job) for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def _job_dirs(sweep_dir: Path) -> dict[tuple[str, ...], Path]:
    dirs = {}
    for hydra in sorted(Path(sweep_dir).rglob(".hydra")):
        try:
            overrides = yaml.safe_load((hydra / "overrides.yaml").read_text()) or []
        except (OSError, yaml.YAMLError):
            continue
        dirs[tuple(map(str, overrides))] = hydra.parent
    return dirs


def sweep_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job of the sweep in its order, with its status."""
    sweep_dir = Path(sweep_dir)
    dirs = _job_dirs(sweep_dir)
    expected = expected_jobs(sweep_dir)
    keys = [tuple(j) for j in expected] if expected is not None else []
    keys += [k for k in dirs if k not in set(keys)]  # started jobs the expansion does not know
    jobs = []
    for key in keys:
        path = dirs.get(key)
        if path is None:
            jobs.append(Job(list(key), None, INCOMPLETE, "not started"))
            continue
        run = load_run(path / "results.json") if (path / "results.json").exists() \
            else failed_run(path)
        status = FINISHED if run.status == COMPLETE else run.status
        jobs.append(Job(list(key), path, status, run.reason))
    return jobs


def to_rerun(jobs: list[Job], sweep_dir: Path) -> list[list[str]]:
    """The overrides of the failed and incomplete jobs; a started job keeps its directory (so an
    incomplete one resumes there) whatever the sweep's subdir pattern."""
    rerun = []
    for job in jobs:
        if job.status == FINISHED:
            continue
        extra = []
        if job.path is not None:
            subdir = str(job.path.resolve().relative_to(Path(sweep_dir).resolve()))
            extra = ["hydra.sweep.subdir='" + subdir.replace("\\", "\\\\").replace("'", "\\'")
                     + "'"]
        rerun.append([*job.overrides, *extra])
    return rerun


def rerun_command(sweep_dir: str | Path) -> str:
    """`python -m mcl.run -m hydra/sweeper=mcl_rerun ...` with the sweep's own launcher
    settings: it launches exactly the jobs `to_rerun` lists at the time it runs."""
    hydra = OmegaConf.load(Path(sweep_dir) / "multirun.yaml").hydra
    kept = [o for o in hydra.overrides.hydra if not str(o).startswith(_REPLACED)]
    args = ["python", "-m", "mcl.run", "-m", "hydra/sweeper=mcl_rerun", *map(str, kept),
            f"hydra.sweep.dir={sweep_dir}"]
    return " ".join(shlex.quote(a) for a in args)


def _varying(jobs: list[Job]) -> list[list[str]]:
    """Each job's overrides that differ between jobs (the sweep's axes), for a narrow table."""
    common = set.intersection(*(set(j.overrides) for j in jobs)) if len(jobs) > 1 else set()
    return [[o for o in j.overrides if o not in common] for j in jobs]


def summary(sweep_dir: str | Path) -> str:
    """The table of every job and, if any did not finish, the command that re-runs those."""
    sweep_dir = Path(sweep_dir)
    jobs = sweep_jobs(sweep_dir)
    counts = {s: sum(j.status == s for j in jobs) for s in (FINISHED, "failed", INCOMPLETE)}
    lines = [f"Sweep {sweep_dir}: {len(jobs)} jobs, "
             + ", ".join(f"{n} {s}" for s, n in counts.items()), "",
             "| # | job | status | detail | directory |", "|---:|---|---|---|---|"]
    for i, (job, shown) in enumerate(zip(jobs, _varying(jobs), strict=True)):
        where = "" if job.path is None else str(job.path.relative_to(sweep_dir))
        detail = job.reason.replace("|", "\\|")
        lines.append(f"| {i} | {' '.join(shown)} | {job.status} | {detail} | {where} |")
    left = len(jobs) - counts[FINISHED]
    if left and is_sweep(sweep_dir):
        try:
            command = rerun_command(sweep_dir)
        except Exception as error:  # a damaged multirun.yaml: the table still stands
            command = f"(no re-run command: {sweep_dir / 'multirun.yaml'} unreadable: {error})"
        lines += ["", f"Re-run the {left} failed and incomplete jobs (finished ones are left "
                  "alone, incomplete ones resume):", "", "    " + command]
    return "\n".join(lines) + "\n"

