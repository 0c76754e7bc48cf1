"""The comparison table: one row per (backbone, stream, method), mean ± std over seeds."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from mcl.report.runs import COMPLETE, FAILED, INCOMPLETE, Run

METRICS = ("last", "avg_incremental", "forgetting", "bwt", "fwt", "transfer", "mtil_average")


@dataclass
class Row:
    """Aggregated metrics of the finished runs of one (backbone, stream, method)."""

    backbone: str
    stream: str
    method: str
    runs: list[Run] = field(default_factory=list)

    @property
    def complete(self) -> list[Run]:
        return [r for r in self.runs if r.status == COMPLETE]

    @property
    def problems(self) -> list[Run]:
        return [r for r in self.runs if r.status != COMPLETE]

    def values(self, metric: str) -> np.ndarray:
        """The metric of each finished run, as a fraction; NaN where a run has none."""
        return np.array([np.nan if r.metrics.get(metric) is None else r.metrics[metric]
                         for r in self.complete], dtype=float)

    def mean_std(self, metric: str) -> tuple[float, float]:
        """Mean and population std (ddof=0, as compare_toy.py) over seeds; NaN if no value."""
        v = self.values(metric)
        v = v[~np.isnan(v)]
        return (float(v.mean()), float(v.std())) if v.size else (float("nan"), float("nan"))

    def status(self) -> str:
        counts = [(sum(r.status == s for r in self.runs), s) for s in (INCOMPLETE, FAILED)]
        return ", ".join(f"{n} {s}" for n, s in counts if n)


def build_rows(runs: list[Run]) -> list[Row]:
    """Group runs by (backbone, stream, method), sorted; failed groups keep a row of their own."""
    groups: dict[tuple[str, str, str], Row] = defaultdict(lambda: Row("", "", ""))
    for run in runs:
        row = groups[run.key]
        row.backbone, row.stream, row.method = run.key
        row.runs.append(run)
    return [groups[k] for k in sorted(groups)]


def _pct(value: float) -> str:
    return "" if np.isnan(value) else f"{100 * value:.1f}"


def _cell(row: Row, metric: str) -> str:
    mean, std = row.mean_std(metric)
    return "n/a" if np.isnan(mean) else f"{_pct(mean)} ± {_pct(std)}"


def markdown(rows: list[Row]) -> str:
    """The table in Markdown (percentages), then the list of incomplete and failed runs."""
    lines = ["| backbone | stream | method | seeds | " + " | ".join(METRICS) + " | status |",
             "|---|---|---|---:|" + "---:|" * len(METRICS) + "---|"]
    for row in rows:
        lines.append(f"| {row.backbone} | {row.stream} | {row.method} | {len(row.complete)} | "
                     + " | ".join(_cell(row, m) for m in METRICS)
                     + f" | {row.status() or 'ok'} |")
    lines += ["", "Mean ± std (population, over seeds) in %; only finished runs are averaged."]
    if any(r.variant for row in rows for r in row.runs):
        lines += ["", "Runs of one method whose settings differ in more than the seed are "
                  "reported apart, the settings that differ in brackets."]
    problems = [run for row in rows for run in row.problems]
    if problems:
        lines += ["", "Incomplete or failed runs (not averaged):", ""]
        lines += [f"- **{r.status}** `{r.path}`: {r.reason}" for r in problems]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row]) -> str:
    """The table as CSV: percentages with one decimal, separate mean and std columns."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["backbone", "stream", "method", "seeds", "incomplete", "failed",
                     *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "problem_runs"])
    for row in rows:
        stats = [_pct(x) for m in METRICS for x in row.mean_std(m)]
        problems = "; ".join(f"{r.status}: {r.path}" for r in row.problems)
        writer.writerow([row.backbone, row.stream, row.method, len(row.complete),
                         sum(r.status == INCOMPLETE for r in row.runs),
                         sum(r.status == FAILED for r in row.runs), *stats, problems])
    return out.getvalue()
