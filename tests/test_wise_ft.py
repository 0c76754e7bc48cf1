"""WiSE-FT: after a task the trained weights are exactly (1 - alpha) anchor + alpha task weights,
with the zero-shot anchor (the paper) or the task's starting weights (ZSCL's MTIL baseline)."""

import pytest
import torch
from conftest import compose_config, method_options, schedule_rates
from hydra.utils import instantiate

from mcl.data import toy_classes
from mcl.strategies.wise_ft import WiseFT, warmup_cosine

TASKS = toy_classes.toy_classification_stream(
    "wise", "class_incremental", ["shapes"], train_size=8, test_size=4, seed=0,
    styles=["clean"], num_tasks=2).tasks


def _strategy(**kwargs) -> WiseFT:
    backbone = instantiate(compose_config(["backbone=tiny_clip_micro"]).backbone, _convert_="all")
    strategy = WiseFT(**method_options("wise_ft", **kwargs))
    strategy.setup(backbone)
    return strategy


@torch.no_grad()
def _move(strategy, seed: int) -> list[torch.Tensor]:
    """Stand-in for a task's training: shift every trained weight; return the shifted values."""
    generator = torch.Generator().manual_seed(seed)
    for p in strategy.trainable_parameters():
        p.add_(torch.randn(p.shape, generator=generator))
    return [p.detach().clone() for p in strategy.trainable_parameters()]


@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_merged_weights_are_the_interpolation_to_the_zero_shot_weights(alpha):
    strategy = _strategy(alpha=alpha)
    zero_shot = [p.detach().clone() for p in strategy.trainable_parameters()]
    for index, task in enumerate(TASKS):
        strategy.before_task(task, index)
        trained = _move(strategy, seed=index)
        strategy.after_task(task, index)
        for p, z, t in zip(strategy.trainable_parameters(), zero_shot, trained, strict=True):
            torch.testing.assert_close(p, (1 - alpha) * z + alpha * t, rtol=0, atol=1e-6)


def test_anchor_previous_interpolates_to_the_weights_the_task_started_from():
    strategy = _strategy(alpha=0.8, anchor="previous")
    _move(strategy, seed=5)  # somewhere other than zero-shot, as after a first task
    start = [p.detach().clone() for p in strategy.trainable_parameters()]
    strategy.before_task(TASKS[1], 1)
    trained = _move(strategy, seed=6)
    strategy.after_task(TASKS[1], 1)
    for p, s, t in zip(strategy.trainable_parameters(), start, trained, strict=True):
        torch.testing.assert_close(p, 0.2 * s + 0.8 * t, rtol=0, atol=1e-6)


def test_warmup_cosine_is_wise_ft_cosine_lr():
    rates = schedule_rates(lambda o: warmup_cosine(o, warmup_steps=4, total_steps=12), 2.0, 12)
    assert rates[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])  # base * (step + 1) / warmup
    assert rates[4] == pytest.approx(2.0)  # cos(0)
    assert rates[8] == pytest.approx(1.0)  # half-way through the cosine: e / es = 4 / 8


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        WiseFT(**method_options("wise_ft", alpha=1.5))
    with pytest.raises(ValueError, match="anchor"):
        WiseFT(**method_options("wise_ft", anchor="average"))
