"""End-of-run logging of the accuracy matrix to whichever loggers the run uses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from mcl.results import row_label


def log_final(loggers: Sequence, results: dict, heatmap: Path) -> None:
    """The metrics as scalars everywhere; the matrix as a table and the heatmap as an image where
    the logger can show them (W&B, TensorBoard)."""
    metrics = {f"final/{k}": v for k, v in results["metrics"].items() if v is not None}
    names = results["tasks"]
    rows = [[row_label(i, names), *row]
            for i, row in enumerate(results["matrix"])]
    for logger in loggers:
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
