"""WiSE-FT: robust fine-tuning of zero-shot models (Wortsman et al., CVPR 2022, arXiv 2109.01903;
official code mlfoundations/wise-ft), used sequentially as in MTIL (Zheng et al. 2023).

Each task fine-tunes the trained parts end to end from where the previous task left them
(`finetune`'s parts and loss); after the task the weights are interpolated in weight space,
    theta <- (1 - alpha) * theta_anchor + alpha * theta_task,
the paper's Eq. 1 (wise_ft.py `_merge`: `(1 - alpha) * theta_0[key] + alpha * theta_1[key]` over
every fine-tuned key), and the next task starts from the interpolated weights. `anchor: zero_shot`
(the default) interpolates towards the pre-trained weights, as the paper does; `anchor: previous`
towards the weights the task started from, as ZSCL's MTIL baseline runs it
(Thunderbeee/ZSCL mtil/scripts/WiSE_finetune.sh: --wise_ft_model n --wise_ft_alpha 0.8, where
model_fix is the loaded previous model). The optimiser is the official one: AdamW with a cosine
schedule after a linear warm-up (wise-ft src/models/utils.py `cosine_lr`, `warmup_cosine` below).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mcl.data.task import Task
from mcl.strategies.base import register
from mcl.strategies.finetune import Finetune

ANCHORS = ("zero_shot", "previous")


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
                  ) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step learning rate of wise-ft's `cosine_lr` (also ZSCL's): base * (step + 1) / warmup
    during the warm-up, then 0.5 * (1 + cos(pi * e / es)) * base, e = step - warmup,
    es = total - warmup."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        e, es = step - warmup_steps, max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(e, es) / es))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def interpolate(anchor: torch.Tensor, task: torch.Tensor, alpha: float) -> torch.Tensor:
    """WiSE-FT's weight-space ensemble (1 - alpha) * anchor + alpha * task (paper Eq. 1)."""
    return (1 - alpha) * anchor.to(task) + alpha * task


@register("wise_ft")
class WiseFT(Finetune):
    """Sequential fine-tuning, each task's weights interpolated to the anchor after the task."""

    def __init__(self, *, alpha: float, anchor: str, warmup_steps: int, label_smoothing: float,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 <= alpha <= 1:
            raise ValueError(f"method.alpha (the fine-tuned weights' share) must lie in [0, 1], "
                             f"got {alpha}")
        if anchor not in ANCHORS:
            raise ValueError(f"method.anchor must be one of {ANCHORS} (zero_shot: the paper; "
                             f"previous: ZSCL's MTIL baseline), got {anchor!r}")
        if warmup_steps < 0:
            raise ValueError(f"method.warmup_steps must be >= 0, got {warmup_steps}")
        self.alpha, self.anchor, self.warmup_steps = alpha, anchor, warmup_steps
        self.label_smoothing = label_smoothing
        self._anchor: list[torch.Tensor] = []  # CPU copies of the trained parameters

    def setup(self, backbone) -> None:
        super().setup(backbone)
        self._anchor = self._snapshot()  # the zero-shot weights (a fresh backbone on resume)

    def _snapshot(self) -> list[torch.Tensor]:
        return [p.detach().cpu().clone() for p in self.trainable_parameters()]

    def before_task(self, task: Task, index: int) -> None:
        if self.anchor == "previous":
            self._anchor = self._snapshot()

    @torch.no_grad()
    def after_task(self, task: Task, index: int) -> None:
        for p, anchor in zip(self.trainable_parameters(), self._anchor, strict=True):
            p.copy_(interpolate(anchor, p, self.alpha))

    def loss(self, batch: dict, outputs) -> torch.Tensor:
        if not self.label_smoothing or self.backbone.family != "classification":
            return outputs.loss
        return nn.functional.cross_entropy(outputs.logits, batch["labels"],
                                           label_smoothing=self.label_smoothing)

    def configure_optimizer(self, params: list[nn.Parameter], total_steps: int):
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        return optimizer, warmup_cosine(optimizer, self.warmup_steps, total_steps)

    def extra_state(self) -> dict:
        # With anchor=previous a resumed task needs the weights it started from.
        return {"anchor": self._anchor if self.anchor == "previous" else None}

    def load_extra_state(self, state: dict) -> None:
        if state.get("anchor") is not None:
            self._anchor = [t.clone() for t in state["anchor"]]
