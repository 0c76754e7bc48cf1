"""Report figures: seed-averaged heatmaps, accuracy over the stream, metric bars (PNG, Agg)."""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mcl.heatmap import plot_matrix
from mcl.io import atomic_write
from mcl.report.table import Row

BAR_METRICS = {"last": "Last", "forgetting": "Forgetting", "bwt": "BWT", "fwt": "FWT"}


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG atomically."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "_"


def _matrices(row: Row) -> tuple[list[str], np.ndarray] | None:
    """Task names and the stacked matrices (seeds, T + 1, T) of the row's finished runs."""
    runs = row.complete
    if not runs:
        return None
    tasks = runs[0].tasks
    same = [r for r in runs if r.tasks == tasks and r.matrix is not None
            and r.matrix.shape == (len(tasks) + 1, len(tasks))]
    return (tasks, np.stack([r.matrix for r in same])) if same else None


def _nanmean(stack: np.ndarray, axis: int = 0) -> np.ndarray:
    """nanmean without numpy's all-NaN warning (never-evaluated cells stay NaN)."""
    counts = (~np.isnan(stack)).sum(axis=axis)
    sums = np.nansum(stack, axis=axis)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def seen_accuracy(R: np.ndarray) -> np.ndarray:
    """``A_i = mean_{j<i} R[i, j]`` for i = 1..T: accuracy on the tasks seen so far."""
    return np.array([_nanmean(R[i, :i][None], axis=1)[0] for i in range(1, R.shape[0])])


def _colours(rows: list[Row]) -> dict[str, tuple]:
    """One colour per method, the same in every figure of the report."""
    methods = sorted({row.method for row in rows})
    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def plot_seen_accuracy(rows: list[Row], path: Path, colours: dict[str, tuple]) -> bool:
    """Lines of mean seen-task accuracy after each task, one per method, shaded ± std."""
    series = [(row, m) for row in rows if (m := _matrices(row)) is not None]
    if not series:
        return False
    tasks = series[0][1][0]
    fig = Figure(figsize=(3.5 + 0.9 * len(tasks), 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for row, (names, stack) in series:
        if names != tasks:
            continue  # another task list cannot share this x axis
        acc = 100 * np.stack([seen_accuracy(R) for R in stack])
        mean, std = acc.mean(axis=0), acc.std(axis=0)
        x = np.arange(1, len(tasks) + 1)
        ax.plot(x, mean, marker="o", color=colours[row.method],
                label=f"{row.method} (n={len(stack)})")
        ax.fill_between(x, mean - std, mean + std, color=colours[row.method], alpha=0.15)
    ax.set_xticks(np.arange(1, len(tasks) + 1), labels=tasks, rotation=30, ha="right")
    ax.set_xlabel("after training task")
    ax.set_ylabel("mean accuracy on seen tasks (%)")
    ax.set_ylim(-3, 103)  # a margin so lines at 0 % or 100 % stay visible
    ax.grid(alpha=0.3)
    ax.set_title(f"{rows[0].stream} ({rows[0].backbone}): accuracy on the tasks seen so far")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="method")
    fig.tight_layout()
    save_figure(fig, path)
    return True


def plot_metric_bars(rows: list[Row], path: Path, colours: dict[str, tuple]) -> bool:
    """Grouped bars: one group per metric, one bar per method, error bars = std over seeds."""
    rows = [row for row in rows if row.complete]
    if not rows:
        return False
    fig = Figure(figsize=(4.0 + 0.35 * len(rows) * len(BAR_METRICS) / 2, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(rows)
    x = np.arange(len(BAR_METRICS))
    for k, row in enumerate(rows):
        stats = np.array([row.mean_std(m) for m in BAR_METRICS]) * 100
        ax.bar(x - 0.4 + (k + 0.5) * width, stats[:, 0], width, yerr=stats[:, 1], capsize=2,
               color=colours[row.method], label=f"{row.method} (n={len(row.complete)})")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels=list(BAR_METRICS.values()))
    ax.set_xlabel("metric")
    ax.set_ylabel("% (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{rows[0].stream} ({rows[0].backbone}): metrics per method")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="method")
    fig.tight_layout()
    save_figure(fig, path)
    return True


def make_plots(rows: list[Row], out: Path) -> list[Path]:
    """All figures under ``out/plots/<backbone>/<stream>/``; returns the files written."""
    written: list[Path] = []
    colours = _colours(rows)
    by_stream: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        by_stream[row.backbone, row.stream].append(row)
    for (backbone, stream), stream_rows in sorted(by_stream.items()):
        folder = Path(out) / "plots" / _safe(backbone) / _safe(stream)
        for row in stream_rows:
            found = _matrices(row)
            if found is None:
                continue
            tasks, stack = found
            if len(stack) < len(row.complete):
                print(f"warning: {backbone}/{stream}/{row.method}: "
                      f"{len(row.complete) - len(stack)} run(s) of other tasks left out of the "
                      "plots", file=sys.stderr)
            path = folder / f"heatmap_{_safe(row.method)}.png"
            # Two lines: plot_matrix sizes the figure by the task count, not by the title.
            title = f"{row.method} on {stream}\n{backbone}, mean of {len(stack)} seed(s)"
            plot_matrix(_nanmean(stack), tasks, path, title=title)
            written.append(path)
        for name, plot in (("seen_accuracy", plot_seen_accuracy), ("metrics", plot_metric_bars)):
            if plot(stream_rows, folder / f"{name}.png", colours):
                written.append(folder / f"{name}.png")
    return written
