"""MoELoRA as CoIN uses it (Chen et al. 2024, "CoIN: A Benchmark of Continual Instruction
tuNing for Multimodel Large Language Model", arXiv 2403.08350; zackschen/CoIN,
CoIN/peft/tuners/coinmoelora.py and scripts/LLaVA/Train_MOE/*.sh).

Every wrapped linear layer W gets `expert_num` LoRA experts, each of rank r / expert_num, and a
router, a bias-free linear map of the layer's input to one logit per expert. For every token x:

    y = W x + (alpha / r) * sum_e g_e(x) B_e A_e dropout(x),   g(x) = softmax(W_router x),

dense soft routing over all experts (no top-k), as `CoINMOELoraLinear.forward` computes it (the
router reads x before dropout; the scaling is lora_alpha / r with r the total rank). A_e starts
N(0, 0.01^2), B_e at zero (`reset_lora_parameters`), the router at nn.Linear's own
initialisation. One set of experts and routers is trained through the whole stream, task after
task (CoIN's scripts start each task from the previous task's model); nothing is merged.

As in mcl's `lora`, the experts wrap every linear layer of the language model; the schedule is
mcl's constant AdamW (CoIN's scripts use cosine decay with 3% warm-up), and the projector stays
frozen (CoIN also trains it at --mm_projector_lr 2e-5). On a classification backbone the
experts wrap the chosen parts' linear layers and a ViT's head is trained beside them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mcl.strategies.base import PartsStrategy, register
from mcl.strategies.layer_adapters import hook_adapters


class MoELoRA(nn.Module):
    """`experts` LoRA experts of rank `r // experts` on one linear layer, mixed per token by a
    softmax router over the layer's input."""

    def __init__(self, in_features: int, out_features: int, experts: int, r: int, alpha: float,
                 dropout: float) -> None:
        super().__init__()
        rank = r // experts
        self.router = nn.Linear(in_features, experts, bias=False)  # nn.Linear's init, as CoIN
        self.lora_A = nn.Parameter(torch.empty(experts, rank, in_features).normal_(std=0.01))
        self.lora_B = nn.Parameter(torch.zeros(experts, out_features, rank))
        self.dropout = dropout
        self.scaling = alpha / r

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """Each token's weights over the experts [..., E] (they sum to 1)."""
        return torch.softmax(self.router(x), dim=-1)

    def forward(self, x: torch.Tensor, training: bool = False) -> torch.Tensor:
        """The update for input `x`; dropout on it when `training` (the wrapped layer's mode)."""
        experts, rank, _ = self.lora_A.shape
        gate = self.routing(x)  # [..., E]
        # All experts' A at once: [..., E * rank], then each expert's block scaled by its weight.
        low = F.dropout(x, self.dropout, training) @ self.lora_A.reshape(experts * rank, -1).T
        low = low * gate.repeat_interleave(rank, dim=-1)
        up = self.lora_B.permute(1, 0, 2).reshape(self.lora_B.shape[1], experts * rank)
        return (low @ up.T) * self.scaling


@register("moe_lora")
class MoELora(PartsStrategy):
    """Routed LoRA experts on the linear layers of the named parts, trained task after task."""

    requires = frozenset({"linear_layers"})
    families = frozenset({"instruction", "classification"})

    def __init__(self, *, expert_num: int, r: int, alpha: float, dropout: float,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if expert_num <= 0 or r <= 0 or r % expert_num:
            raise ValueError(f"method.r ({r}) must be a positive multiple of method.expert_num "
                             f"({expert_num}): each expert has rank r / expert_num (CoIN "
                             "asserts the same)")
        self.expert_num, self.r, self.alpha, self.dropout = expert_num, r, alpha, dropout
        self.experts: nn.ModuleList | None = None
        self._head: list[nn.Parameter] = []

    def setup(self, backbone) -> None:
        super().setup(backbone)
        names = self.linear_layers_of_parts(backbone)
        self.experts = hook_adapters(backbone, names, lambda layer: MoELoRA(
            layer.in_features, layer.out_features, self.expert_num, self.r, self.alpha,
            self.dropout))
        self._head = backbone.head_parameters()
        for p in self._head:
            p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*self.experts.parameters(), *self._head]

