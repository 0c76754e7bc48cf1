"""Shared fixtures: an isolated model cache, Hydra composition, the micro backbone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
MICRO = ["backbone=tiny_llava_micro", "stream=toy_micro", "logger=none",
         "trainer.progress_bar=false", "method.epochs=1"]


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test pre-trains into (and reads from) its own cache, never the user's."""
    path = tmp_path_factory.mktemp("mcl-cache")
    os.environ["MCL_CACHE"] = str(path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WANDB_MODE"] = "offline"
    return path


def compose_config(overrides: list[str]) -> DictConfig:
    """The config `python -m mcl.run <overrides>` would run with."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


# Strategy options for the micro backbones (2 layers, width 16) where the paper's, in
# conf/method/<name>.yaml, do not fit them; every other option comes from that YAML.
MICRO_METHOD = {
    "coda_prompt": {"pool_size": 4, "num_tasks": 2, "layers": [0, 1], "prompt_length": 2},
    "dualprompt": {"pool_size": 2, "g_layers": [0], "e_layers": [1], "e_length": 5},
    # The Booster on CLIP's own tower (no ViT-B download); with the official text layout's M "X"
    # placeholders, 2 x 8 tokens + a class name fit the micro text tower's 32 positions.
    "prompt_fusion": {"booster": None, "context_length": 8},
    # Width 16: rank 2 leaves free dimensions after two tasks (the paper's 10 of 768).
    "inflora": {"r": 2, "num_tasks": 2},
    "moe_adapters": {"bottleneck": 4, "experts": 4, "top_k": 2},
}


def method_options(name: str, **overrides) -> dict:
    """A method's options from its YAML, with the micro sizes above and `overrides`."""
    from mcl.strategies.base import method_defaults

    return method_defaults(name) | MICRO_METHOD.get(name, {}) | overrides


@pytest.fixture(scope="session")
def micro_tiny() -> dict:
    return OmegaConf.to_container(compose_config(MICRO).backbone.tiny, resolve=True)


@pytest.fixture()
def micro_backbone(micro_tiny: dict):
    """A fresh copy of the micro tiny_llava (pre-trained once per session, then cached)."""
    from mcl.backbones.llava import LlavaBackbone

    return LlavaBackbone.load("tiny_llava_micro", tiny=micro_tiny)


def schedule_rates(make_schedule, lr: float, steps: int) -> list[float]:
    """The learning rate at each of `steps` optimiser steps under the schedule
    `make_schedule(optimizer)` builds, stepped once after every step (Lightning's 'step')."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = make_schedule(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates
