"""COAST (Cao et al. 2024, "Continual LLaVA", arXiv 2411.02564): domain-, capability- and
dataset-incremental instruction tuning.

This release checks for the data and says where it belongs; reading the annotation files is
future work (the real loaders), so a present data root is reported as not yet supported rather
than silently mis-read.
"""

from __future__ import annotations

from pathlib import Path

from mcl.data.task import Stream

CONFIGS = ("domain", "capability", "dataset")


class MissingDataError(FileNotFoundError):
    """The data a stream needs is not where mcl looks for it."""


def coast_stream(name: str, config: str, data_root: str, seed: int) -> Stream:
    """The COAST stream `config` read from `<data_root>/coast/<config>`."""
    if config not in CONFIGS:
        raise ValueError(f"unknown COAST configuration {config!r}; valid: {CONFIGS}")
    where = Path(data_root).expanduser().resolve() / "coast" / config
    if not where.is_dir():
        raise MissingDataError(
            f"stream {name!r} needs the COAST-{config} data, expected at {where}. Download the "
            "COAST annotations and images as published with Continual LLaVA (arXiv 2411.02564) "
            f"and place them under {where}, or point data_root=<dir> (or the MCL_DATA_ROOT "
            "environment variable) at a directory holding coast/{config}. The built-in toy "
            f"stream stream=toy_{config} runs without any download.")
    raise NotImplementedError(
        f"found {where}, but this mcl release cannot read COAST files yet; use "
        f"stream=toy_{config} meanwhile")
