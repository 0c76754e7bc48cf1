"""What a run leaves behind: results.json, matrix.csv, matrix.png and per-task checkpoints.

results.json doubles as the resume manifest: `completed_tasks` says how many tasks are finished.
Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np

from mcl.eval_policy import not_measured
from mcl.io import save_torch, write_json, write_text
from mcl.metrics.continual import METRIC_DEFINITIONS, compute_metrics
from mcl.report.heatmap import plot_matrix

PACKAGES = ("torch", "transformers", "lightning", "peft", "hydra-core", "omegaconf",
            "torchmetrics", "wandb", "datasets", "numpy")


def environment() -> dict:
    """Package versions, Python, platform and the git revision of the code that ran."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        revision = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                  cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        revision = None
    return {"versions": versions, "python": platform.python_version(),
            "platform": platform.platform(), "git_revision": revision}


def checkpoint_path(run_dir: Path, task_index: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"task_{task_index:03d}.pt"


def save_checkpoint(run_dir: Path, task_index: int, state: dict) -> None:
    save_torch(checkpoint_path(run_dir, task_index), state)


def _matrix_to_json(R: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(v) else float(v) for v in row] for row in R]


def matrix_from_json(rows: list[list[float | None]]) -> np.ndarray:
    """The matrix as results.json stores it (null = not evaluated) back to floats with NaN."""
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


def save_progress(run_dir: Path, names: list[str], R: np.ndarray, completed: int,
                  timings: list[dict], meta: dict | None) -> dict:
    """Write results.json for a run in progress (or finished) and return its content."""
    # Metrics of the finished prefix of the stream (the first `completed` tasks); those whose
    # cells the evaluation policy leaves empty are not measured (null), never partial means.
    prefix = compute_metrics(R[: completed + 1, :completed]) if completed else {}
    samples = (meta or {}).get("evaluation", {}).get("samples")
    skipped = [] if samples is None or not completed else not_measured(
        np.array([[n is not None for n in row[:completed]] for row in samples[: completed + 1]]))
    metrics = {k: (None if np.isnan(v) or k in skipped else v) for k, v in prefix.items()}
    data = {"tasks": names, "completed_tasks": completed, "matrix": _matrix_to_json(R),
            "metrics": metrics, "metrics_not_measured": skipped,
            "metric_definitions": METRIC_DEFINITIONS, "timings": timings, **(meta or {})}
    write_json(Path(run_dir) / "results.json", data)
    return data


def load_progress(run_dir: Path, names: list[str]) -> dict | None:
    """The finished part of an earlier run in `run_dir`, or None if there is none."""
    path = Path(run_dir) / "results.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("tasks") != names:
        raise ValueError(f"{run_dir} holds a run of other tasks ({data.get('tasks')}); "
                         "use another output directory or resume=false to start over")
    return {"completed_tasks": data["completed_tasks"], "timings": data["timings"],
            "matrix": matrix_from_json(data["matrix"])}


def row_label(i: int, names: list[str]) -> str:
    """Name of row i of the matrix: before any training, or after task i."""
    return "zero-shot" if i == 0 else names[i - 1]


def matrix_csv(R: np.ndarray, names: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["after", *names])
    for i, row in enumerate(R):
        writer.writerow([row_label(i, names), *("" if np.isnan(v) else f"{v:.4f}" for v in row)])
    return out.getvalue()


def finalize(run_dir: Path, names: list[str], R: np.ndarray, timings: list[dict],
             meta: dict | None) -> dict:
    """Write the final results.json, matrix.csv and matrix.png; return the results."""
    data = save_progress(run_dir, names, R, len(names), timings, meta)
    write_text(Path(run_dir) / "matrix.csv", matrix_csv(R, names))
    title = " / ".join(str((meta or {}).get(k, "")) for k in ("method", "stream", "backbone"))
    plot_matrix(R, names, Path(run_dir) / "matrix.png", title=title)
    return data


def summary_table(data: dict) -> str:
    """The accuracy matrix and the metrics as a plain-text table for the terminal."""
    names = data["tasks"]
    R = matrix_from_json(data["matrix"])
    width = max(12, *(len(n) for n in names))
    lines = ["after".ljust(width) + "".join(n[:width].rjust(width + 1) for n in names)]
    for i, row in enumerate(R):
        lines.append(row_label(i, names)[:width].ljust(width) +
                     "".join(("-" if np.isnan(v) else f"{100 * v:.1f}").rjust(width + 1)
                             for v in row))
    lines.append("")
    skipped = data.get("metrics_not_measured", ())  # by the evaluation policy
    for key, value in data["metrics"].items():
        shown = "n/m" if key in skipped else "n/a" if value is None else f"{100 * value:.2f}"
        lines.append(f"{key:>16}: " + shown)
    if skipped:
        lines.append(f"n/m: not measured by evaluation.policy={data['evaluation']['policy']}")
    return "\n".join(lines)
