"""Heatmap figure of a continual-learning accuracy matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mcl.io import atomic_write
from mcl.metrics.continual import check_matrix


def _row_labels(task_names: list[str]) -> list[str]:
    return ["zero-shot"] + [f"after {name}" for name in task_names]


def plot_matrix(R: np.ndarray, task_names: list[str], path: str | Path, title: str = "") -> None:
    """Save a PNG heatmap of the accuracy matrix ``R`` (shape ``(T + 1, T)``) to ``path``.

    Rows are "zero-shot", "after <task 1>", ...; columns are the tasks. Cells show accuracy as a
    percentage on a 0-1 colour scale, NaN (not evaluated) cells are grey and blank, and the
    just-trained cells ``R[i + 1, i]`` are outlined. The figure is built with
    ``matplotlib.figure.Figure`` and the Agg canvas so pyplot's global state is untouched, and
    written to a temporary file in the target directory then moved with ``os.replace`` so
    readers never see a half-written image.

    Raises:
        ValueError: if ``R`` is not ``(T + 1, T)`` or ``task_names`` does not have ``T`` names.
    """
    arr = check_matrix(R)
    n_rows, n_tasks = arr.shape
    if len(task_names) != n_tasks:
        raise ValueError(
            f"expected {n_tasks} task names for R of shape {arr.shape}, got {len(task_names)}"
        )

    # Grow the canvas with the number of tasks so annotations stay legible.
    fig = Figure(figsize=(2.0 + 0.9 * n_tasks, 1.5 + 0.6 * n_rows), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    # In %, as the cells are written: the colour bar and the numbers read alike.
    image = ax.imshow(np.ma.masked_invalid(100 * arr), cmap=cmap, vmin=0.0, vmax=100.0,
                      aspect="auto")
    fig.colorbar(image, ax=ax, label="accuracy (%)")

    ax.set_xticks(range(n_tasks), labels=task_names, rotation=45, ha="right")
    ax.set_yticks(range(n_rows), labels=_row_labels(task_names))
    ax.set_xlabel("evaluated task")
    if title:
        ax.set_title(title)

    for i in range(n_rows):
        for j in range(n_tasks):
            value = arr[i, j]
            if np.isnan(value):
                continue
            # viridis is dark at the low end: white text there, black on the bright end.
            colour = "white" if value < 0.6 else "black"
            ax.text(j, i, f"{100 * value:.1f}", ha="center", va="center", color=colour, fontsize=8)
    for j in range(n_tasks):
        ax.add_patch(
            Rectangle((j - 0.5, j + 0.5), 1.0, 1.0, fill=False, edgecolor="red", linewidth=2.0)
        )
    fig.tight_layout()

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
