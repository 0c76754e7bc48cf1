"""End-of-run logging of the accuracy matrix to whichever loggers the run uses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from mcl.results import row_label


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
