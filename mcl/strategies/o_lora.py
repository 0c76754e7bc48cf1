"""O-LoRA: Orthogonal Subspace Learning for Language Model Continual Learning (Wang et al. 2023,
arXiv 2310.14152; cmnfriend/O-LoRA, src/uie_trainer_lora.py, src/peft/tuners/lora.py,
src/peft/utils/save_and_load.py, scripts/order_*.sh).

Each task trains a new LoRA (A_new, B_new) on every wrapped linear layer while the adapters of
all earlier tasks stay frozen and keep adding their update: as the official code, they are kept,
not merged (its `lora_A` / `lora_B` hold the earlier tasks' A and B concatenated along the rank,
`loranew_A` / `loranew_B` the current task's; a layer computes
W x + s B_old A_old dropout(x) + s B_new A_new dropout(x), s = alpha / r). After a task its
adapter joins the old ones (`save_and_load.py`: torch.cat along the rank) and a fresh one,
A kaiming-uniform and B zero (`reset_lora_parameters`), is trained next. The loss is

    L = L_task + lambda_1 * sum_layers sum_{j,k} |(A_old A_new^T)_{jk}| + lambda_2 * sum ||P||_2

(`training_step`: `torch.abs(torch.mm(lora_A, loranew_A.T)).sum()` per layer, and the Frobenius
norm, not squared, of every new A and B). The code's orthogonality term is the sum of absolute
values; the paper's Eq. is the sum of squares, the squared Frobenius norm ||A_old A_new^T||_F^2:
`orthogonality: squared` gives it. As in mcl's `lora` the adapters wrap every linear layer of
the language model (O-LoRA's peft default wraps the attention's query and value projections).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from mcl.strategies.base import PartsStrategy, register
from mcl.strategies.layer_adapters import hook_adapters

ORTHOGONALITY = ("abs", "squared")


class OrthogonalLoRA(nn.Module):
    """The frozen earlier adapters (buffers, rank growing by r per task) and the new one."""

    def __init__(self, in_features: int, out_features: int, r: int, alpha: float,
                 dropout: float) -> None:
        super().__init__()
        self.new_A = nn.Parameter(torch.empty(r, in_features))
        self.new_B = nn.Parameter(torch.empty(out_features, r))
        self.register_buffer("old_A", torch.zeros(0, in_features))
        self.register_buffer("old_B", torch.zeros(out_features, 0))
        self.dropout = dropout
        self.scaling = alpha / r
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """A fresh new adapter, as `reset_lora_parameters`: A kaiming-uniform, B zero."""
        nn.init.kaiming_uniform_(self.new_A, a=math.sqrt(5))
        nn.init.zeros_(self.new_B)

    def forward(self, x: torch.Tensor, training: bool = False) -> torch.Tensor:
        """The update for input `x`; dropout on it when `training` (the wrapped layer's mode)."""
        h = F.dropout(x, self.dropout, training)
        out = (h @ self.new_A.T) @ self.new_B.T
        if self.old_A.shape[0]:
            out = out + (h @ self.old_A.T) @ self.old_B.T
        return out * self.scaling

    @torch.no_grad()
    def freeze_new(self) -> None:
        """The new adapter joins the old ones (concatenated along the rank); a fresh one
        replaces it."""
        self.old_A = torch.cat([self.old_A, self.new_A.detach()], 0)
        self.old_B = torch.cat([self.old_B, self.new_B.detach()], 1)
        self.reset()


def orthogonality_loss(old_A: torch.Tensor, new_A: torch.Tensor, kind: str) -> torch.Tensor:
    """sum |A_old A_new^T| (the official code, `abs`) or ||A_old A_new^T||_F^2 (the paper,
    `squared`); A's rows are the ranks."""
    overlap = old_A @ new_A.T
    return overlap.abs().sum() if kind == "abs" else overlap.pow(2).sum()


@register("o_lora")
class OLora(PartsStrategy):
    """A new LoRA per task, kept orthogonal to the frozen earlier ones."""

    requires = frozenset({"linear_layers"})
    families = frozenset({"instruction", "classification"})
    # The loss multiplies every layer's new A with its old ones outside any layer's forward:
    # under FSDP those are shards; not verified there, so refused.
    shardable = False

    def __init__(self, *, r: int, alpha: float, dropout: float, lambda_1: float,
                 lambda_2: float, orthogonality: str, **kwargs) -> None:
        super().__init__(**kwargs)
        if r <= 0:
            raise ValueError(f"method.r (the LoRA rank per task) must be positive, got {r}")
        if orthogonality not in ORTHOGONALITY:
            raise ValueError(f"method.orthogonality must be one of {list(ORTHOGONALITY)} (abs: "
                             f"the official code, squared: the paper), got {orthogonality!r}")
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self.lambda_1, self.lambda_2, self.orthogonality = lambda_1, lambda_2, orthogonality
        self.adapters: nn.ModuleList | None = None
        self._head: list[nn.Parameter] = []

    def setup(self, backbone) -> None:
        super().setup(backbone)
        self.adapters = hook_adapters(
            backbone, self.linear_layers_of_parts(backbone),
            lambda layer: OrthogonalLoRA(layer.in_features, layer.out_features, self.r,
                                         self.alpha, self.dropout))
        self._head = backbone.head_parameters()
        for p in self._head:
            p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*(p for a in self.adapters for p in (a.new_A, a.new_B)), *self._head]

    def regulariser(self) -> torch.Tensor:
        """lambda_1 * orthogonality to the old subspaces + lambda_2 * L2 of the new adapters."""
        total = self.adapters[0].new_A.new_zeros(())
        for a in self.adapters:
            if self.lambda_1 and a.old_A.shape[0]:
                total = total + self.lambda_1 * orthogonality_loss(a.old_A, a.new_A,
                                                                   self.orthogonality)
            if self.lambda_2:
                total = total + self.lambda_2 * (a.new_A.norm() + a.new_B.norm())
        return total

    def loss(self, batch: dict, outputs) -> torch.Tensor:
        return outputs.loss + self.regulariser()

    def after_task(self, task, index: int) -> None:
        for a in self.adapters:
            a.freeze_new()

    def extra_state(self) -> dict:
        return {"old_A": [a.old_A.cpu().clone() for a in self.adapters],
                "old_B": [a.old_B.cpu().clone() for a in self.adapters]}

    def load_extra_state(self, state: dict) -> None:
        for a, old_A, old_B in zip(self.adapters, state["old_A"], state["old_B"], strict=True):
            a.old_A = old_A.to(a.new_A)
            a.old_B = old_B.to(a.new_B)
