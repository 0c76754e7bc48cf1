"""`python -m mcl.pretrain`: pre-train (or re-train with force=true) the tiny backbone and cache it.

`python -m mcl.run` does this by itself when the cache is empty; this entry point lets it happen
ahead of time, e.g. before a sweep.
"""

from __future__ import annotations

import importlib

import hydra
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from mcl.run import CONFIG_DIR


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    tiny = cfg.backbone.get("tiny")
    if tiny is None:
        raise SystemExit(f"backbone {cfg.backbone.name!r} is loaded from "
                         f"{cfg.backbone.pretrained!r}; only tiny backbones are pre-trained by mcl")
    builder = importlib.import_module(get_method(cfg.backbone._target_).__self__.tiny_builder)
    path = builder.ensure_pretrained(OmegaConf.to_container(tiny, resolve=True),
                                     force=bool(cfg.get("force", False)))
    print(path)


if __name__ == "__main__":
    main()
