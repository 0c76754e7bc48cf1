"""The Lightning module calls the strategy's step hooks in the order methods rely on."""

import pytest
import torch
from conftest import method_options, schedule_rates

from mcl.data import toy_world
from mcl.loop import LoopConfig, fit_task
from mcl.strategies.finetune import Finetune


class Recording(Finetune):
    """Finetune that records what the loop tells it (not registered)."""

    name = "recording"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.events: list[str] = []
        self.total_steps = None
        self.rates: list[float] = []

    def configure_optimizer(self, params, total_steps):
        self.total_steps = total_steps
        optimizer = self.optimizer = torch.optim.SGD(params, lr=self.lr)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 ** s)

    def on_after_backward(self) -> None:
        self.before = self._params[0].detach().clone()
        self.events.append("backward")

    def after_optimizer_step(self) -> None:
        updated = not torch.equal(self._params[0].detach(), self.before)
        self.events.append("step" if updated else "step-before-update")
        self.rates.append(self.optimizer.param_groups[0]["lr"])


def test_hooks_run_once_per_step_after_the_update_with_the_strategy_optimizer(micro_backbone,
                                                                           tmp_path):
    strategy = Recording(**method_options("finetune", epochs=2, batch_size=8, lr=1.0))
    strategy.setup(micro_backbone)
    items = micro_backbone.encode(toy_world.generate("capability_colour", 24, 0, "train"),
                                  with_answer=True)
    fit_task(strategy, items, "t", LoopConfig(progress_bar=False), seed=0, loggers=[],
             run_dir=tmp_path)
    assert strategy.total_steps == 6  # 2 epochs x 3 batches
    assert strategy.events == ["backward", "step"] * 6
    assert strategy.rates == [0.5**k for k in range(6)]  # the strategy's schedule, per step


class FusedSGD(Finetune):
    """Finetune with a fused optimiser (as AdamW is on CUDA by default), recording grad norms."""

    name = "fused_sgd"

    def configure_optimizer(self, params, total_steps):
        self.norms: list[float] = []
        return torch.optim.SGD(params, lr=self.lr, fused=True), None

    def after_optimizer_step(self) -> None:
        grads = [p.grad for p in self._params if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))


def test_a_fused_optimizer_is_clipped_under_bf16_mixed_precision(micro_backbone, tmp_path):
    """Lightning's mixed-precision plugin refuses to clip for any fused optimiser; bf16 has no
    loss scale, so mcl clips the (true) gradients itself."""
    strategy = FusedSGD(**method_options("finetune", epochs=1, batch_size=8, lr=1e-3))
    strategy.setup(micro_backbone)
    items = micro_backbone.encode(toy_world.generate("capability_colour", 16, 0, "train"),
                                  with_answer=True)
    fit_task(strategy, items, "t", LoopConfig(progress_bar=False, precision="bf16-mixed",
                                              gradient_clip_val=1e-3),
             seed=0, loggers=[], run_dir=tmp_path)
    assert len(strategy.norms) == 2
    assert max(strategy.norms) <= 1e-3 * 1.01  # clipped to the configured norm


def test_cosine_schedule_falls_from_the_rate_to_zero_over_the_task():
    from mcl.strategies.base import cosine_schedule

    rates = schedule_rates(lambda o: cosine_schedule(o, total_steps=4), 2.0, 5)
    assert rates == pytest.approx([2.0, 1.0 + 2 ** -0.5, 1.0, 1.0 - 2 ** -0.5, 0.0])
