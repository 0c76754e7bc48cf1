"""InfLoRA: the update B A of a new task has no component in the old tasks' gradient space
(<= 1e-6 relative), whatever B learns; DualGPM's memory grows with the tasks; the merge is
exact."""

import math

import pytest
import torch
from conftest import compose_config, method_options, schedule_rates
from hydra.utils import instantiate

from mcl.data import toy_classes
from mcl.strategies.inflora import (
    REMOVE,
    RETAIN,
    InfLoRA,
    design_a,
    inflora_cosine,
    old_space,
    update_dual_gpm,
)

TASKS = toy_classes.toy_classification_stream(
    "inflora", "mtil", ["shapes", "digits"], train_size=12, test_size=4, seed=0,
    styles=["clean"]).tasks


def _strategy(**kwargs) -> InfLoRA:
    backbone = instantiate(compose_config(["backbone=tiny_clip_micro"]).backbone, _convert_="all")
    strategy = InfLoRA(**method_options("inflora", **kwargs))
    strategy.setup(backbone)
    return strategy


def test_new_task_update_has_no_component_in_the_old_gradient_space():
    strategy = _strategy()
    strategy.before_task(TASKS[0], 0)
    with torch.no_grad():
        for update in strategy.updates.values():
            update.lora_B.normal_()  # stand-in for training
    strategy.after_task(TASKS[0], 0)
    strategy.before_task(TASKS[1], 1)
    generator = torch.Generator().manual_seed(0)
    for name in strategy.layers:
        update = strategy.update(name)
        noise = torch.randn(update.lora_B.shape, generator=generator)
        update.lora_B.requires_grad_(False).copy_(noise)
        delta = update.delta_weight().double()
        old = old_space(*strategy.memory[name]).to(delta)
        assert old.shape[1] >= 1
        assert (delta @ old).norm() <= 1e-6 * delta.norm(), name


@pytest.mark.parametrize("kind", [REMOVE, RETAIN])
def test_designed_a_rows_lie_outside_the_old_space_for_both_memory_kinds(kind):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(200, 12, generator=generator, dtype=torch.float64)
    covariance = x.T @ x / 200
    old = torch.linalg.qr(torch.randn(12, 8 if kind == RETAIN else 3, generator=generator,
                                      dtype=torch.float64))[0]
    # REMOVE stores the old space itself, RETAIN its (smaller) complement, the free space.
    stored = old if kind == REMOVE else torch.linalg.svd(old)[0][:, old.shape[1]:]
    a = design_a(covariance, 3, stored, kind)
    assert torch.allclose(old_space(stored, kind) @ old_space(stored, kind).T, old @ old.T)
    assert (a @ old).norm() <= 1e-10 * a.norm()
    assert torch.allclose(a @ a.T, torch.eye(3, dtype=a.dtype) / 3)  # top vectors / sqrt(3)


def test_dual_gpm_keeps_the_fewest_directions_reaching_the_threshold():
    # Covariance with energies (squared singular values) 0.6, 0.3, 0.1 of the total.
    values = torch.tensor([0.6, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64).sqrt()
    covariance = torch.diag(values)
    # r = #(cumsum of energies < threshold), as the official (no +1): cumsum 0.6, 0.9, 1.0.
    basis, kind = update_dual_gpm(None, None, covariance, threshold=0.85)
    assert kind == REMOVE and basis.shape[1] == 1
    basis, kind = update_dual_gpm(None, None, covariance, threshold=0.95)
    assert kind == REMOVE and basis.shape[1] == 2
    # A second task adds the fewest new directions that bring the captured energy to threshold.
    second = torch.diag(torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0],
                                     dtype=torch.float64).sqrt())
    grown, kind = update_dual_gpm(basis, kind, second, threshold=0.95)
    assert grown.shape[1] == 4 and kind == REMOVE  # 4 of 8 is not more than half
    third = torch.diag(torch.tensor([0.0] * 5 + [1.0, 0.0, 0.0], dtype=torch.float64))
    grown, kind = update_dual_gpm(grown, kind, third, threshold=0.95)
    # 5 of 8 directions: the official stores the 3-dimensional complement instead.
    assert kind == RETAIN and grown.shape[1] == 3
    assert old_space(grown, kind).shape[1] == 5
    assert (old_space(grown, kind).T @ torch.eye(8, dtype=torch.float64)[:, 5]).norm() == (
        pytest.approx(1.0))


def test_merge_keeps_the_outputs_and_the_next_task_starts_from_zero_update():
    strategy = _strategy()
    backbone = strategy.backbone.eval()
    batch = backbone.collate_train(backbone.encode(TASKS[0].test, with_answer=True))
    with torch.no_grad():
        plain = strategy.forward(batch).logits
    strategy.before_task(TASKS[0], 0)
    with torch.no_grad():
        for update in strategy.updates.values():
            update.lora_B.normal_(std=0.1)
        before = strategy.forward(batch).logits
        strategy.after_task(TASKS[0], 0)
        after = strategy.forward(batch).logits
    assert not torch.allclose(before, plain, atol=1e-3)  # the update is visible
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    strategy.before_task(TASKS[1], 1)
    assert all(u.lora_B.abs().sum() == 0 for u in strategy.updates.values())


def test_official_cosine_schedule_per_epoch():
    rates = schedule_rates(lambda o: inflora_cosine(o, epochs=3, total_steps=6), 1.0, 6)
    expected = [math.cos(99 * math.pi * e / 400) for e in (0, 0, 1, 1, 2, 2)]
    assert rates == pytest.approx(expected)
