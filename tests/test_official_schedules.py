"""Each method's learning-rate schedule against its official training loop's formula, at the
first, a middle and the last optimiser step of a task: PromptFusion (train_pf.py,
CosineAnnealingLR(T_max=epochs) stepped per epoch), CODA-Prompt (utils/schedulers.py
CosineSchedule as learners/default.py steps it), CoDyRA (utils.py cosine_lr per iteration, no
warm-up), L2P and DualPrompt (constant Adam at lr * batch / 256, train_continual.py)."""

import math

import pytest
import torch
from torch import nn

from mcl.strategies import build_strategy

EPOCHS, PER_EPOCH = 3, 4
STEPS = EPOCHS * PER_EPOCH
CHOSEN = (0, STEPS // 2, STEPS - 1)  # first, middle, last step of the task


def rates(strategy, total_steps: int = STEPS) -> list[float]:
    """The learning rate of every optimiser step, stepping the schedule as the loop does
    (Lightning's interval 'step': once after every optimiser step)."""
    optimizer, schedule = strategy.configure_optimizer([nn.Parameter(torch.zeros(1))],
                                                       total_steps)
    out = []
    for _ in range(total_steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if schedule is not None:
            schedule.step()
    return out


def promptfusion_official(lr: float, epochs: int, per_epoch: int) -> list[float]:
    """train_pf.py: AdamW + torch CosineAnnealingLR(T_max=epochs), scheduler.step() after each
    epoch's batches."""
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    out = []
    for _ in range(epochs):
        for _ in range(per_epoch):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
        scheduler.step()
    return out


def coda_official(lr: float, epochs: int, per_epoch: int) -> list[float]:
    """utils/schedulers.py CosineSchedule(K) under learners/default.py: the constructor sets
    the rate for last_epoch 0 and then leaves last_epoch at -1; `if epoch > 0: step()`."""
    last_epoch = -1
    rate = lr * math.cos(99 * math.pi * 0 / (200 * (epochs - 1)))
    out = []
    for epoch in range(epochs):
        if epoch > 0:
            last_epoch += 1
            rate = lr * math.cos(99 * math.pi * last_epoch / (200 * (epochs - 1)))
        out += [rate] * per_epoch
    return out


def codyra_official(lr: float, total: int) -> list[float]:
    """utils.py cosine_lr(optimizer, lr, warmup_length=0, total) called with each iteration."""
    return [0.5 * (1 + math.cos(math.pi * i / total)) * lr for i in range(total)]


def test_prompt_fusion_steps_its_cosine_once_per_epoch_like_train_pf():
    s = build_strategy("prompt_fusion", booster=None, lr=2e-3, epochs=EPOCHS)
    got, official = rates(s), promptfusion_official(2e-3, EPOCHS, PER_EPOCH)
    for step in CHOSEN:
        assert got[step] == pytest.approx(official[step], rel=1e-9)
    # the three epochs at x1, x0.75, x0.25 (not a per-step decay)
    assert [got[e * PER_EPOCH] / 2e-3 for e in range(EPOCHS)] == pytest.approx([1, 0.75, 0.25])
    assert len(set(got[PER_EPOCH:2 * PER_EPOCH])) == 1
    step = rates(build_strategy("prompt_fusion", booster=None, lr=2e-3, epochs=EPOCHS,
                                lr_schedule="step_cosine"))
    assert step[1] < step[0] and step[-1] == pytest.approx(2e-3 * 0.5 * (1 + math.cos(
        math.pi * (STEPS - 1) / STEPS)))


@pytest.mark.parametrize("epochs", [3, 50])
def test_coda_prompt_schedule_is_the_official_cosine_schedule_one_epoch_late(epochs):
    s = build_strategy("coda_prompt", lr=1e-3, epochs=epochs)
    got = rates(s, epochs * PER_EPOCH)
    official = coda_official(1e-3, epochs, PER_EPOCH)
    last = epochs * PER_EPOCH - 1
    for step in (0, last // 2, last):
        assert got[step] == pytest.approx(official[step], rel=1e-9)
    assert got[PER_EPOCH] == pytest.approx(1e-3)  # the second epoch still at the full rate
    if epochs == 50:
        assert got[-1] / 1e-3 == pytest.approx(0.0474, abs=1e-4)  # the 0.047
        assert sum(got) / len(got) / 1e-3 == pytest.approx(0.66, abs=0.005)


def test_codyra_schedule_is_the_official_per_iteration_cosine():
    s = build_strategy("rank_selective_lora", lr=5e-4)
    got, official = rates(s), codyra_official(5e-4, STEPS)
    for step in CHOSEN:
        assert got[step] == pytest.approx(official[step], rel=1e-9)
    assert got[1] < got[0]  # it changes every step, not every epoch


@pytest.mark.parametrize("method", ["l2p", "dualprompt"])
def test_l2p_and_dualprompt_train_at_a_constant_rate_scaled_to_a_batch_of_256(method):
    got = rates(build_strategy(method, lr=0.03, batch_size=128, epochs=EPOCHS))
    for step in CHOSEN:  # train_continual.py: base_learning_rate = lr * global_batch / 256
        assert got[step] == pytest.approx(0.03 * 128 / 256)
    unscaled = rates(build_strategy(method, lr=0.03, batch_size=128, lr_reference_batch=None))
    assert unscaled == pytest.approx([0.03] * STEPS)


def test_unknown_schedules_and_layouts_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="lr_schedule must be one of.*epoch_cosine"):
        build_strategy("prompt_fusion", booster=None, lr_schedule="cosine")
    with pytest.raises(ValueError, match="text_layout must be one of.*official.*coop"):
        build_strategy("prompt_fusion", booster=None, text_layout="plain")
    with pytest.raises(ValueError, match="lr_schedule must be one of.*coda_cosine"):
        build_strategy("coda_prompt", lr_schedule="epoch_cosine")
    with pytest.raises(ValueError, match="gram_schmidt must be one of"):
        build_strategy("coda_prompt", gram_schmidt="modified")
    with pytest.raises(ValueError, match="lr_reference_batch must be a positive"):
        build_strategy("l2p", lr_reference_batch=0)
