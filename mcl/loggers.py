"""End-of-run logging of the accuracy matrix to whichever loggers the run uses, and a CSV logger
that keeps a resumed run's earlier lines."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from mcl.results import row_label


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer without deleting the file it finds: its columns are read back, so
    new ones (the next task's loss) widen the table around the earlier lines."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class ResumableCSVLogger(CSVLogger):
    """`lightning.pytorch.loggers.CSVLogger` that, with `append`, continues an existing
    metrics.csv (a resumed run keeps its finished tasks' training logs) instead of deleting it.
    Lines of steps that a resume trains again (after its last step checkpoint) appear twice."""

    def __init__(self, *args, append: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.append = append

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            if self.append:
                self._experiment = _AppendingWriter(log_dir=self.log_dir)
            else:
                self._experiment = ExperimentWriter(log_dir=self.log_dir)
        return self._experiment


def hyperparameters(results: dict) -> dict:
    """What a run compares by: the method's options, the stream, the backbone, the seed."""
    config = results.get("config") or {}
    return {"method": config.get("method", {}),
            "stream": (config.get("stream") or {}).get("name", results.get("stream")),
            "backbone": (config.get("backbone") or {}).get("name", results.get("backbone")),
            "seed": config.get("seed", results.get("seed"))}


def log_final(loggers: Sequence, results: dict, heatmap: Path) -> None:
    """The hyperparameters with the final metrics (TensorBoard's HPARAMS tab), the metrics as
    scalars everywhere; the matrix as a table and the heatmap as an image where the logger can
    show them (W&B, TensorBoard)."""
    metrics = {f"final/{k}": v for k, v in results["metrics"].items() if v is not None}
    params = hyperparameters(results)
    names = results["tasks"]
    rows = [[row_label(i, names), *row]
            for i, row in enumerate(results["matrix"])]
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics)
        else:
            logger.log_hyperparams(params)
        logger.log_metrics(metrics, step=len(names))
        if isinstance(logger, WandbLogger):
            import wandb

            logger.log_table("accuracy_matrix", columns=["after", *names], data=rows)
            logger.experiment.log({"accuracy_heatmap": wandb.Image(str(heatmap))})
        elif isinstance(logger, TensorBoardLogger):
            import numpy as np
            from PIL import Image

            image = np.asarray(Image.open(heatmap).convert("RGB"))
            logger.experiment.add_image("accuracy_heatmap", image, dataformats="HWC")
        logger.save()
        logger.finalize("success")
