"""What a run leaves behind: results.json, matrix.csv, matrix.png, timings.json, predictions/
and per-task checkpoints.

results.json doubles as the resume manifest: `completed_tasks` says how many tasks are finished,
and `fingerprint` which settings produced them. It holds nothing that differs between two runs of
the same command (wall-clock times are in timings.json), so identical runs give identical files.
Every file is written atomically.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np

from mcl.eval_policy import not_measured
from mcl.heatmap import plot_matrix
from mcl.io import atomic_write, save_torch, write_json, write_text
from mcl.metrics.continual import METRIC_DEFINITIONS, compute_metrics

PACKAGES = ("torch", "transformers", "lightning", "peft", "hydra-core", "omegaconf",
            "torchmetrics", "wandb", "datasets", "numpy")


def git_state(directory: Path) -> dict:
    """The git revision of the checkout holding `directory`, and whether its tracked files
    differ from that revision (`git_dirty`: then the revision alone does not name the code that
    ran); both None outside a checkout (an installed wheel)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True,
                                  cwd=directory, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    revision = (git("rev-parse", "HEAD") or "").strip() or None
    changes = git("status", "--porcelain", "--untracked-files=no") if revision else None
    return {"git_revision": revision, "git_dirty": None if changes is None else bool(changes)}


def environment() -> dict:
    """Package versions, Python, platform and the git state of the code that ran."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"versions": versions, "python": platform.python_version(),
            "platform": platform.platform(), **git_state(Path(__file__).parent)}


# Settings that cannot change a result: left out of the fingerprint (and of the default run
# directory's name, conf/config.yaml). A key names itself and everything below it.
RUN_ONLY = ("resume", "predictions", "logger", "trainer.progress_bar",
            "trainer.log_every_n_steps", "trainer.checkpoint_every_n_steps",
            "trainer.checkpoint_every_minutes", "trainer.keep_task_checkpoints")


class RunDirectoryMismatch(ValueError):
    """The run directory holds results of other settings than this run's."""


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict) and node:
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def fingerprint(config: dict) -> dict:
    """Every setting of the resolved config that can change a result, as {dotted key: value}
    (backbone, method, stream, seed, data_root, trainer precision and devices, ...), without the
    `RUN_ONLY` ones."""
    def run_only(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in RUN_ONLY)
    # Through JSON, so that a fingerprint compares equal to the one read back from results.json.
    flat = json.loads(json.dumps(_flatten(config), default=str))
    return {k: v for k, v in sorted(flat.items()) if not run_only(k)}


def check_fingerprint(run_dir: Path, settings: dict) -> None:
    """Refuse, before any work, to continue in `run_dir` a run of other settings: name the keys
    that differ and the two ways out. Nothing to check where no results.json is yet."""
    path = Path(run_dir) / "results.json"
    if not path.exists():
        return
    stored = json.loads(path.read_text()).get("fingerprint")
    if stored is None:
        raise RunDirectoryMismatch(
            f"{run_dir} holds results without a record of the settings that produced them "
            "(written by an older mcl), so they cannot be resumed safely. Start over there with "
            "resume=false, or choose another directory (hydra.run.dir=...)")
    differ = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
    if differ:
        shown = "; ".join(f"{k}: {stored.get(k, '(unset)')!r} there, {settings.get(k, '(unset)')!r}"
                          f" now" for k in differ[:8])
        more = f" and {len(differ) - 8} more" if len(differ) > 8 else ""
        raise RunDirectoryMismatch(
            f"{run_dir} holds a run of other settings ({len(differ)} differ: {shown}{more}); "
            "nothing of it is reused. Start over there with resume=false, or choose another "
            "directory (hydra.run.dir=...; the default directory already tells runs with "
            "other overrides apart)")


def check_backbone_weights(run_dir: Path, weights: dict | None) -> None:
    """Refuse to continue in `run_dir` a run that began on other pre-trained weights of the same
    config (mcl's cached toy backbone pre-trained again, e.g. on another GPU machine: GPU
    pre-training is not bit-reproducible). Nothing to compare without a record on both sides."""
    path = Path(run_dir) / "results.json"
    if weights is None or not path.exists():
        return
    stored = json.loads(path.read_text()).get("backbone_weights")
    if stored is not None and stored.get("sha256") != weights["sha256"]:
        raise RunDirectoryMismatch(
            f"{run_dir} holds a run that began on other pre-trained backbone weights (cache "
            f"{stored.get('cache')}, sha256 {stored.get('sha256', '?')[:12]} there; "
            f"{weights['cache']}, sha256 {weights['sha256'][:12]} now): the cached backbone was "
            "pre-trained again since, and nothing of that run is reused. Copy the cache "
            "directory from the machine that began the run into $MCL_CACHE, or start over with "
            "resume=false")


def checkpoint_path(run_dir: Path, task_index: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"task_{task_index:03d}.pt"


def save_checkpoint(run_dir: Path, task_index: int, state: dict, keep: int | None = 1) -> None:
    """Write task `task_index`'s checkpoint and delete the older ones beyond the last `keep`
    (None: keep all). Resume needs only the last finished task's, so 1 is enough for it."""
    save_torch(checkpoint_path(run_dir, task_index), state)
    if keep is not None:
        if keep < 1:
            raise ValueError("trainer.keep_task_checkpoints must be at least 1 (resume needs the "
                             f"last task's checkpoint) or null (keep all), got {keep}")
        for older in range(task_index - keep, -1, -1):
            checkpoint_path(run_dir, older).unlink(missing_ok=True)


def predictions_path(run_dir: Path, row: int, task_index: int) -> Path:
    """Where the per-sample answers of cell R[row, task_index] are kept."""
    return Path(run_dir) / "predictions" / f"row{row:03d}_task{task_index:03d}.jsonl.gz"


def save_predictions(run_dir: Path, row: int, task_index: int, records: list[dict]) -> None:
    """The records (id, prediction, references, score) of one evaluated cell as compressed JSON
    Lines, atomically; identical answers give identical files."""
    lines = "".join(json.dumps(r, default=str) + "\n" for r in records).encode()

    def write(tmp: Path) -> None:
        # No name and a fixed time in gzip's header (it would store the temporary file's).
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb",
                                                   mtime=0) as out:
            out.write(lines)
    atomic_write(predictions_path(run_dir, row, task_index), write)


def load_predictions(run_dir: Path, row: int, task_index: int) -> list[dict]:
    """The records `save_predictions` wrote for cell R[row, task_index]."""
    with gzip.open(predictions_path(run_dir, row, task_index), "rt") as f:
        return [json.loads(line) for line in f]


def drop_predictions(run_dir: Path, keep_rows: set[int]) -> None:
    """Delete the stored answers of every row not in `keep_rows` (predictions=last)."""
    for path in (Path(run_dir) / "predictions").glob("row*_task*.jsonl.gz"):
        if int(re.match(r"row(\d+)_", path.name).group(1)) not in keep_rows:
            path.unlink()


def _matrix_to_json(R: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(v) else float(v) for v in row] for row in R]


def matrix_from_json(rows: list[list[float | None]]) -> np.ndarray:
    """The matrix as results.json stores it (null = not evaluated) back to floats with NaN."""
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


def save_progress(run_dir: Path, names: list[str], R: np.ndarray, completed: int,
                  timings: list[dict], meta: dict | None,
                  initial: np.ndarray | None = None) -> dict:
    """Write results.json (and timings.json) for a run in progress (or finished) and return
    results.json's content. `initial`: the method's own untrained state's accuracies where they
    differ from row 0's (the backbone's zero-shot)."""
    # Metrics of the finished prefix of the stream (the first `completed` tasks); those whose
    # cells the evaluation policy leaves empty are not measured (null), never partial means.
    prefix = compute_metrics(R[: completed + 1, :completed]) if completed else {}
    samples = (meta or {}).get("evaluation", {}).get("samples")
    skipped = [] if samples is None or not completed else not_measured(
        np.array([[n is not None for n in row[:completed]] for row in samples[: completed + 1]]))
    metrics = {k: (None if np.isnan(v) or k in skipped else v) for k, v in prefix.items()}
    data = {"tasks": names, "completed_tasks": completed, "matrix": _matrix_to_json(R),
            "metrics": metrics, "metrics_not_measured": skipped,
            "metric_definitions": METRIC_DEFINITIONS, **(meta or {})}
    if initial is not None:
        data["initial"] = _matrix_to_json(initial[None])[0]
    write_json(Path(run_dir) / "timings.json", timings)
    write_json(Path(run_dir) / "results.json", data)
    return data


def check_tasks(run_dir: str | Path, data: dict, names: list[str]) -> None:
    """Refuse results (`data`, read from `run_dir`) of other tasks than the stream's `names`."""
    if data.get("tasks") != names:
        raise RunDirectoryMismatch(f"{run_dir} holds a run of other tasks ({data.get('tasks')}); "
                                   "use another output directory or resume=false to start over")


def load_progress(run_dir: Path, names: list[str]) -> dict | None:
    """The finished part of an earlier run in `run_dir`, or None if there is none."""
    path = Path(run_dir) / "results.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    check_tasks(run_dir, data, names)
    timings = Path(run_dir) / "timings.json"
    initial = data.get("initial")
    return {"completed_tasks": data["completed_tasks"],
            "timings": json.loads(timings.read_text()) if timings.exists() else [],
            "matrix": matrix_from_json(data["matrix"]),
            "initial": None if initial is None else matrix_from_json([initial])[0]}


def is_finished(run_dir: str | Path) -> bool:
    """Whether the run in `run_dir` finished: results.json says every task is done and
    matrix.csv exists (`finalize` writes it after the final results.json, so a run killed in
    between counts as unfinished and resumes). The one rule for the loop, the report's status
    and the scripts that archive, time or collect runs."""
    path = Path(run_dir) / "results.json"
    if not path.exists() or not (Path(run_dir) / "matrix.csv").exists():
        return False
    data = json.loads(path.read_text())
    return data.get("completed_tasks") == len(data.get("tasks") or [None])


def kept_results(run_dir: str | Path, names: list[str]) -> dict:
    """A finished run's results as they are, the revision and environment that produced them
    included (mcl keeps a finished run; it needs no checkpoint: a tree restored from its
    results alone, e.g. experiments/small_tier_gpu.sh's RESTORE, counts as done). Refused if
    they are of other tasks than `names`."""
    data = json.loads((Path(run_dir) / "results.json").read_text())
    check_tasks(run_dir, data, names)
    print(f"{run_dir} is finished: its results are kept as they are")
    return data


def recorded_weights(run_dir: str | Path) -> dict | None:
    """The cached pre-trained weights a run in `run_dir` recorded (check_backbone_weights);
    None for a model mcl does not cache (a Hub id or a directory, which the config names)."""
    return json.loads((Path(run_dir) / "results.json").read_text()).get("backbone_weights")


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
             meta: dict | None, initial: np.ndarray | None = None) -> dict:
    """Write the final results.json, matrix.csv and matrix.png; return the results."""
    data = save_progress(run_dir, names, R, len(names), timings, meta, initial)
    write_text(Path(run_dir) / "matrix.csv", matrix_csv(R, names))
    title = " / ".join(str((meta or {}).get(k, "")) for k in ("method", "stream", "backbone"))
    plot_matrix(R, names, Path(run_dir) / "matrix.png", title=title)
    return data


def summary_table(data: dict) -> str:
    """The accuracy matrix and the metrics as a plain-text table for the terminal."""
    names = data["tasks"]
    R = matrix_from_json(data["matrix"])
    width = max(12, *(len(n) for n in names))
    lines = ["accuracy (%) on each task (columns) after each task (rows)",
             "after".ljust(width) + "".join(n[:width].rjust(width + 1) for n in names)]
    for i, row in enumerate(R):
        lines.append(row_label(i, names)[:width].ljust(width) +
                     "".join(("-" if np.isnan(v) else f"{100 * v:.1f}").rjust(width + 1)
                             for v in row))
    lines.append("")
    skipped = data.get("metrics_not_measured", ())  # by the evaluation policy
    for key, value in data["metrics"].items():
        shown = ("n/m" if key in skipped else "n/a" if value is None
                 else f"{100 * value:.2f}%")
        lines.append(f"{key:>16}: " + shown)
    if skipped:
        lines.append(f"n/m: not measured by evaluation.policy={data['evaluation']['policy']}")
    return "\n".join(lines)
