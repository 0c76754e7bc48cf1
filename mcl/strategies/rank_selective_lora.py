"""CoDyRA: continual LoRA whose ranks are gated, sparsified and merged after every task.

Lu et al., "Adaptive Rank, Reduced Forgetting: Knowledge Retention in Continual Learning
Vision-Language Models with Dynamic Rank-Selective LoRA", arXiv 2412.01004; official code
Artificer-AI-Lab/CoDyRA (loralib/codyra.py, models/codyra.py).

Every wrapped linear layer W gets the update B diag(g) A (scale 1) with one learnable importance
gate g_i per rank. The task loss trains A, B and g; after each optimiser step a proximal step for
an l1 penalty on g drives gates exactly to zero (`proximal`, below). kappa is 0 during a dense
warm-up (the first half of the task's steps), then climbs a
staircase of `kappa_levels` values up to `max_kappa`. After the task the ranks whose gate is zero
are dropped, the rest is merged into W, and a fresh adapter (A Kaiming, B = 0, g ~ N(0, 1)) waits
for the next task; between tasks the adapter is switched off, so inference runs the plain layers.

The proximal step (`proximal`). The paper's equation is the soft threshold, the proximal operator
of kappa ||g||_1: g <- sign(g) max(|g| - kappa, 0) (`proximal: soft`). The official training loop
(models/codyra.py, `train_model`, after `optimizer.step()`) applies three in-place masks instead:
g > kappa gets g - kappa, then g < -kappa gets g + kappa, then every gate whose magnitude is now
below kappa becomes 0. The last mask reads the already-shrunk values, so a gate with
kappa < |g| < 2 kappa, which the soft threshold keeps at sign(g)(|g| - kappa), becomes exactly 0,
and a gate with |g| = kappa exactly is left as it is. The published numbers come from that code,
so it is the default (`proximal: official`).

As in the official training loop: the proximal step follows every optimiser step
(`after_optimizer_step`), the kappa staircase spans the task's optimiser steps (the loop passes
their number to `configure_optimizer`), and the optimiser is AdamW with betas (0.9, 0.9999) under
a cosine learning-rate schedule without warm-up (main.py: warmup_length=0).
"""

from __future__ import annotations

import torch
from torch import nn

from mcl.adapters.gated_lora import GatedLoRA, adapter_of, inject, merge
from mcl.data.task import Task
from mcl.strategies.base import (
    PartsStrategy,
    cosine_schedule,
    parameters_of,
    register,
)


def soft_threshold(x: torch.Tensor, kappa: float) -> torch.Tensor:
    """The proximal operator of kappa * ||x||_1: shrink by kappa, exactly 0 where |x| <= kappa."""
    return torch.where(x.abs() > kappa, x - kappa * x.sign(), torch.zeros_like(x))


def official_proximal(x: torch.Tensor, kappa: float) -> torch.Tensor:
    """The official code's three masks (see the module docstring): shrink by kappa where
    |x| > kappa, then zero whatever is now below kappa in magnitude. So |x| < kappa and
    kappa < |x| < 2 kappa give 0, |x| >= 2 kappa gives sign(x)(|x| - kappa), |x| = kappa stays."""
    shrunk = torch.where(x.abs() > kappa, x - kappa * x.sign(), x)
    return torch.where(shrunk.abs() < kappa, torch.zeros_like(x), shrunk)


PROXIMAL = {"official": official_proximal, "soft": soft_threshold}


def kappa_schedule(step: int, total: int, max_kappa: float, dense_fraction: float,
                   levels: int) -> float:
    """Threshold of the proximal step after optimiser step `step` (0-based) of `total`: zero
    through the dense warm-up, then `levels` equal stairs from 0 to `max_kappa` over the rest
    (as the official training loop steps `np.linspace(0, max_kappa, lambda_num)`)."""
    dense = dense_fraction * total
    if step <= dense:
        return 0.0
    level = min(levels - 1, 1 + int((step - dense) * levels / (total - dense)))
    return max_kappa * level / (levels - 1)


@register("rank_selective_lora")
class RankSelectiveLora(PartsStrategy):
    """Gated LoRA on every linear layer of `parts`, pruned by a proximal step, merged per task."""

    requires = frozenset({"linear_layers"})
    families = frozenset({"instruction", "classification"})
    # Parts per family: every linear layer of every part (paper, Takeaway 1), in the YAML.

    def __init__(self, *, r: int, max_kappa: float, dense_fraction: float, kappa_levels: int,
                 proximal: str, **kwargs) -> None:
        super().__init__(**kwargs)
        if r <= 0:
            raise ValueError(f"method.r (the LoRA rank) must be positive, got {r}")
        if max_kappa < 0:
            raise ValueError(f"method.max_kappa must be non-negative, got {max_kappa}")
        if not 0 <= dense_fraction < 1:
            raise ValueError(f"method.dense_fraction must lie in [0, 1), got {dense_fraction}")
        if kappa_levels < 2:
            raise ValueError(f"method.kappa_levels must be at least 2, got {kappa_levels}")
        if proximal not in PROXIMAL:
            raise ValueError(f"method.proximal must be one of {sorted(PROXIMAL)} (official: the "
                             f"official code's masks; soft: the paper's soft threshold), got "
                             f"{proximal!r}")
        self.r = r
        self.proximal = proximal
        self.max_kappa, self.dense_fraction, self.kappa_levels = (max_kappa, dense_fraction,
                                                                  kappa_levels)
        self.layers: dict[str, nn.Linear] = {}
        self.active_ranks: list[dict[str, int]] = []  # per task: ranks kept per layer
        self._steps = self._total_steps = 0

    def setup(self, backbone) -> None:
        super().setup(backbone)
        for name in self.linear_layers_of_parts(backbone):
            layer = backbone.linear_layer(name)
            # The weight becomes a buffer (merging rewrites it, no gradient reaches it), saved in
            # extra_state; the adapter is the layer's child (mcl.adapters.gated_lora).
            inject(layer, self.r)
            self.layers[name] = layer
        for p in self.trainable_parameters():
            p.requires_grad_(True)

    def adapters(self) -> list[GatedLoRA]:
        """The adapter of every wrapped layer, in `self.layers` order."""
        return [adapter_of(layer) for layer in self.layers.values()]

    def trainable_parameters(self) -> list[nn.Parameter]:
        head = self.backbone.head_parameters() if self.backbone is not None else []
        return [*parameters_of(self.adapters()), *head]

    def describe(self) -> str:
        # The wrapped weights are buffers now; count them in the model's size all the same.
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = (sum(p.numel() for p in self.backbone.parameters())
                 + sum(layer.weight.numel() for layer in self.layers.values()))
        return (f"method {self.name}: {trainable:,} trainable parameters of {total:,} "
                f"({100 * trainable / total:.2f}%); {len(self.layers)} layers wrapped, "
                f"rank {self.r}")

    # ------------------------------------------------------------------ task hooks

    def before_task(self, task: Task, index: int) -> None:
        self._steps = 0
        for layer in self.layers.values():
            adapter_of(layer).attach(layer)

    def after_task(self, task: Task, index: int) -> None:
        kept = {}
        for name, layer in self.layers.items():
            kept[name] = merge(layer)
            adapter_of(layer).reset()
            adapter_of(layer).detach()
        self.active_ranks.append(kept)
        print(f"rank_selective_lora: {task.name}: merged {sum(kept.values())} of "
              f"{self.r * len(kept)} ranks into {len(kept)} layers")

    # ------------------------------------------------------------------ step hooks

    def configure_optimizer(self, params: list[nn.Parameter], total_steps: int):
        """AdamW(betas 0.9, 0.9999) under CoDyRA's per-step cosine (`cosine_schedule`):
        models/codyra.py train_model calls utils.py `cosine_lr(optimizer, lr, warmup_length=0,
        total_iterations)` with the iteration before every optimiser step, so step s of T runs
        at lr * (1 + cos(pi s / T)) / 2. T is the task's optimiser steps here, the fixed
        `--iterations` there. The code clips no gradients: trainer.gradient_clip_val=null."""
        self._total_steps = total_steps  # the kappa staircase spans exactly these steps
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay,
                                      betas=(0.9, 0.9999))
        return optimizer, cosine_schedule(optimizer, total_steps)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """The proximal step for the l1 penalty on the gates, at this step's kappa (`proximal`)."""
        kappa = kappa_schedule(self._steps, self._total_steps, self.max_kappa,
                               self.dense_fraction, self.kappa_levels)
        self._steps += 1
        if kappa > 0:
            step = PROXIMAL[self.proximal]
            for adapter in self.adapters():
                adapter.gate.copy_(step(adapter.gate, kappa))

    # ------------------------------------------------------------------ state

    def extra_state(self) -> dict:
        """The merged weights of the wrapped layers, the ranks kept after each task and the
        proximal steps taken in the running task (where a resumed task's kappa continues)."""
        return {"weights": {n: layer.weight.detach().cpu().clone()
                            for n, layer in self.layers.items()},
                "active_ranks": [dict(k) for k in self.active_ranks], "steps": self._steps}

    def load_extra_state(self, state: dict) -> None:
        with torch.no_grad():
            for name, weight in state["weights"].items():
                self.layers[name].weight.copy_(weight)
        self.active_ranks = [dict(k) for k in state["active_ranks"]]
        self._steps = state.get("steps", 0)
