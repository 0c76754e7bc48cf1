"""The Hydra callback (conf/config.yaml: hydra.callbacks) that prints a sweep's summary when its
last job ends. Instantiated for every command, so it imports the report only when needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mcl.report.sweep import is_sweep, summary

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if is_sweep(sweep_dir):
            print(summary(sweep_dir), end="")
