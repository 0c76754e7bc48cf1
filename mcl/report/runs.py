"""Find the runs under some directories: finished, incomplete and failed ones."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from mcl.metrics.continual import METRIC_DEFINITIONS, compute_metrics
from mcl.results import is_finished, matrix_from_json

COMPLETE, INCOMPLETE, FAILED = "complete", "incomplete", "failed"
UNKNOWN = "?"


class ReportError(Exception):
    """Bad input for a report: a missing path, or no run to report on."""


@dataclass
class Run:
    """One run directory as the report sees it."""

    path: Path
    status: str
    backbone: str = UNKNOWN
    stream: str = UNKNOWN
    method: str = UNKNOWN
    seed: int | None = None
    tasks: list[str] = field(default_factory=list)
    completed: int = 0
    matrix: np.ndarray | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    reason: str = ""
    # The recorded settings but the seed (results.json's fingerprint); None: not recorded.
    settings: dict | None = None
    # Where runs of one method differ in more than the seed: the settings that tell them apart.
    variant: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        method = f"{self.method} [{self.variant}]" if self.variant else self.method
        return (self.backbone, self.stream, method)


def current_metrics(data: dict, matrix: np.ndarray, completed: int) -> dict:
    """The stored metrics, with every one stored under another definition than today's
    (`metric_definitions`, e.g. MTIL Transfer before ZSCL's per-task formula) computed again
    from the matrix: a corrected formula reaches old runs without retraining."""
    metrics = dict(data.get("metrics") or {})
    stored = data.get("metric_definitions") or {}
    stale = [k for k, text in stored.items() if METRIC_DEFINITIONS.get(k, text) != text]
    if stale and completed:
        values = compute_metrics(matrix[: completed + 1, :completed])
        metrics.update({k: None if np.isnan(values[k]) else values[k] for k in stale})
    return metrics


def load_run(results: Path) -> Run:
    """The run whose results.json is ``results``; unreadable files make a failed run."""
    path = results.parent
    try:
        data = json.loads(results.read_text())
        tasks = list(data["tasks"])
        completed = int(data["completed_tasks"])
        matrix = matrix_from_json(data["matrix"])
        run = Run(path=path, status=COMPLETE, backbone=str(data.get("backbone", UNKNOWN)),
                  stream=str(data.get("stream", UNKNOWN)), method=str(data.get("method", UNKNOWN)),
                  seed=data.get("seed"), tasks=tasks, completed=completed, matrix=matrix,
                  metrics=current_metrics(data, matrix, completed))
        if isinstance(data.get("fingerprint"), dict):
            run.settings = {k: v for k, v in data["fingerprint"].items() if k != "seed"}
    except (OSError, ValueError, KeyError, TypeError) as error:
        # A truncated or foreign results.json is a broken run, not a reason to stop the report.
        return Run(path=path, status=FAILED, reason=f"unreadable results.json ({error})")
    if completed < len(tasks):
        run.status = INCOMPLETE
        run.reason = f"{completed}/{len(tasks)} tasks done"
    elif not is_finished(path):  # killed between the final results.json and matrix.csv
        run.status = INCOMPLETE
        run.reason = "every task done but not finalized (no matrix.csv): run it again to finish"
    return run


def failed_run(path: Path) -> Run:
    """A Hydra job directory without results.json; its names come from .hydra/config.yaml.
    It failed if it left failed.json (mcl.run's record of its error); else it was stopped
    before its first result (killed, timed out) or is still running: incomplete."""
    run = Run(path=path, status=INCOMPLETE,
              reason="no results.json: stopped before its first result, or still running")
    try:
        run.reason = json.loads((path / "failed.json").read_text())["error"].splitlines()[0]
        run.status = FAILED
    except (OSError, ValueError, KeyError, IndexError):
        pass
    try:
        cfg = yaml.safe_load((path / ".hydra" / "config.yaml").read_text()) or {}
        run.backbone = str(cfg["backbone"]["name"])
        run.stream = str(cfg["stream"]["name"])
        run.method = str(cfg["method"]["name"])
        run.seed = cfg.get("seed")
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        pass  # keep "?" names: the path alone still tells the user where to look
    return run


def find_runs(dirs: Iterable[str | Path]) -> list[Run]:
    """Every run under ``dirs``: each results.json, and each ``.hydra`` folder without one.

    Raises:
        ReportError: if a path is not a directory or no results.json is found under any.
    """
    dirs = [Path(d) for d in dirs]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise ReportError(f"no such directory: {', '.join(missing)}")
    runs: dict[Path, Run] = {}
    found = 0
    for root in dirs:
        for results in sorted(root.rglob("results.json")):
            found += 1
            # resolve() so that overlapping arguments (a dir and its parent) count a run once.
            runs.setdefault(results.parent.resolve(), load_run(results))
        for hydra in sorted(root.rglob(".hydra")):
            if hydra.is_dir() and not (hydra.parent / "results.json").exists():
                runs.setdefault(hydra.parent.resolve(), failed_run(hydra.parent))
    if not found:
        raise ReportError(f"no results.json found under {', '.join(str(d) for d in dirs)}")
    label_variants(list(runs.values()))
    return sorted(runs.values(), key=lambda r: (r.key, str(r.seed), str(r.path)))


def label_variants(runs: list[Run], shown: int = 3) -> None:
    """Give runs of one (backbone, stream, method) that differ in more than the seed (another
    default since, an override) a `variant` naming the settings that differ, so that the table
    reports them apart rather than averaging them as seeds of one configuration."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        if run.status != FAILED:
            groups.setdefault(run.key, []).append(run)
    for group in groups.values():
        recorded = [r.settings for r in group if r.settings is not None]
        keys = sorted({k for s in recorded for k in s
                       if len({json.dumps(t.get(k), sort_keys=True) for t in recorded}) > 1})
        if not keys and len(recorded) in (0, len(group)):
            continue  # one configuration (or none recorded at all): seeds of it
        for run in group:
            if run.settings is None:
                run.variant = "settings not recorded"
                continue
            named = [f"{k}={run.settings.get(k, '(unset)')}" for k in keys[:shown]]
            more = f" +{len(keys) - shown} more" if len(keys) > shown else ""
            run.variant = ", ".join(named) + more
