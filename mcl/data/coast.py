"""COAST (Cao et al. 2024, "Continual LLaVA", arXiv 2411.02564): domain-, capability- and
dataset-incremental instruction tuning, read from `<data_root>/coast/<config>/`.

The authors' repository (github.com/mengcaopku/Continual-LLaVA, checked 2026-11) holds only a
README: no data, annotation format or split files are published. mcl therefore reads COAST in
the LLaVA-1.5 formats its code base (LLaVA) uses, laid out as
`<data_root>/coast/<config>/<Task>/{train,test}.json` with image paths relative to
`<data_root>/coast/images/` (see `mcl.data.instruct` for the two accepted entry formats); the
task lists and order live in conf/stream/coast_*.yaml with what is and is not verified.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mcl.data.instruct import instruction_stream, prepare_command
from mcl.data.task import MissingDataError, Stream

__all__ = ["CONFIGS", "MissingDataError", "coast_stream"]

CONFIGS = ("domain", "capability", "dataset")


def coast_stream(name: str, config: str, data_root: str, tasks: Sequence[dict], seed: int = 0,
                 skip_bad_images: bool = False, manifest: dict | None = None) -> Stream:
    """The COAST stream `config`: `tasks` (in order) read from `<data_root>/coast/<config>/`
    (`manifest` is for `python -m mcl.data prepare`)."""
    del manifest
    if config not in CONFIGS:
        raise ValueError(f"unknown COAST configuration {config!r}; valid: {CONFIGS}")
    where = Path(data_root).expanduser().resolve() / "coast" / config
    if not where.is_dir():
        raise MissingDataError(
            f"stream {name!r} needs the COAST-{config} data, expected at {where} (one folder "
            f"per task with train.json and test.json, images under {where.parent / 'images'}). "
            f"Run `{prepare_command('coast', data_root)}` to check it once in place, or point "
            "data_root=<dir> (or the MCL_DATA_ROOT environment variable) at a directory holding "
            f"coast/{config}. The built-in toy stream stream=toy_{config} needs no download.")
    in_config = [{**t, "train": f"{config}/{t['train']}", "test": f"{config}/{t['test']}"}
                 for t in tasks]
    return instruction_stream(name, "coast", data_root, in_config, seed, images="images",
                              skip_bad_images=skip_bad_images)
