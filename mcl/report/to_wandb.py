"""Log a report (table and figures) to a Weights & Biases run, offline unless told otherwise."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path


def log_report(table_csv: str, images: list[Path], out: Path) -> str:
    """Log the CSV table as a wandb.Table and each image; return the run's local directory.

    Offline by default, like the run loggers; an explicit WANDB_MODE wins. Files go to
    WANDB_DIR when it is set, else to ``out``.
    """
    import wandb  # lazily: the report itself does not need wandb installed

    rows = list(csv.reader(io.StringIO(table_csv)))
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "mcl"), job_type="report",
                     mode=os.environ.get("WANDB_MODE", "offline"),
                     dir=os.environ.get("WANDB_DIR", str(out)))
    try:
        data = {"report/table": wandb.Table(columns=rows[0], data=rows[1:])}
        for path in images:
            # Keys mirror the file layout (plots/<backbone>/<stream>/<name>).
            key = path.relative_to(out).with_suffix("").as_posix()
            data[key] = wandb.Image(str(path))
        run.log(data)
        return str(run.dir)
    finally:
        run.finish()
