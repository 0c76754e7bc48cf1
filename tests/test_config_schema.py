"""The config check: every shipped config passes it; wrong types and unknown keys do not."""

from pathlib import Path

import pytest
from conftest import CONF, compose_config

from mcl.cli import ConfigError, closest
from mcl.config_schema import conforms, validate


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


REQUIRED = {"folder": ["stream.root=/data"], "hf_dataset": ["stream.path=/data"]}


@pytest.mark.parametrize("group", ["method", "stream", "backbone", "trainer"])
def test_every_shipped_config_passes_the_check(group):
    for choice in _choices(group):
        extra = REQUIRED.get(choice, []) if group == "stream" else []
        validate(compose_config([f"{group}={choice}", "logger=none", *extra]))


@pytest.mark.parametrize("override, expected", [
    ("method.lr=abc", "method.lr: expected float, got 'abc' (str)"),
    ("method.epochs=1.5", "method.epochs: expected int, got 1.5"),
    ("+method.learning_rate=0.1", "Did you mean method.lr?"),
    ("stream.train_size=many", "stream.train_size: expected int"),
    ("+backbone.dtyp=float32", "Did you mean backbone.dtype?"),
    ("trainer.progress_bar=3", "trainer.progress_bar: expected bool, got 3"),
    ("+trainer.max_epoch=1", "trainer.max_epoch: no such trainer option"),
    ("seed=x", "seed: expected int"),
])
def test_a_bad_value_or_key_is_named_with_its_type(override, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")
                       .replace("?", r"\?").replace(".", r"\.")):
        validate(compose_config([override, "logger=none"]))


def test_a_required_value_left_out_is_named():
    with pytest.raises(ConfigError, match=r"stream\.root: required"):
        validate(compose_config(["stream=folder", "logger=none"]))


def test_conforms_by_hand():
    assert conforms(1, float) and not conforms(True, int) and not conforms("1", int)
    assert conforms(None, int | None) and not conforms(None, int)
    assert conforms(["a"], list[str]) and not conforms([1], list[str])
    assert conforms({"a": [1]}, dict[str, list[int]]) and not conforms([], dict)
    assert conforms("x", str | Path)


def test_closest_name():
    assert closest("learning_rate", ["lr", "epochs"]) == "lr"
    assert closest("lorra", ["lora", "joint"]) == "lora"
    assert closest("Seed", ["seed"]) == "seed"
    assert closest("zzz", ["lora"]) is None
