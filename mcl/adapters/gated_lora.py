"""Gated LoRA: a low-rank update B diag(gate) A with one importance gate per rank, put into a
linear layer and merged back into its weight, in peft's vocabulary (`get_delta_weight`, `merge`).

CoDyRA (`mcl.strategies.rank_selective_lora`) trains the gates sparse and merges after every
task; the layer surgery and the merge live here so that any gated- or merged-LoRA method reuses
them. `inject(layer, r)` turns the layer's weight into a buffer (merging rewrites it, no gradient
reaches it, so the parameters a method does not train stay frozen) and adds the adapter as its
child `ADAPTER`; `GatedLoRA.attach(layer)` starts adding the update to the layer's output (a
forward hook), `detach` stops it; `merge(layer)` folds the update of the ranks with a non-zero
gate into the weight and returns how many were kept.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ADAPTER = "codyra"  # name of the adapter child module added to every wrapped linear layer


class GatedLoRA(nn.Module):
    """The update B diag(gate) A of one linear layer, added by a forward hook while a task trains.

    The hook exists only while active: after the merge it is removed, so inference calls the
    plain layer with no per-call Python overhead (merged CoDyRA = the base model's speed)."""

    def __init__(self, in_features: int, out_features: int, r: int, like: torch.Tensor) -> None:
        super().__init__()
        self.lora_A = nn.Parameter(like.new_empty(r, in_features))
        self.lora_B = nn.Parameter(like.new_empty(out_features, r))
        self.gate = nn.Parameter(like.new_empty(r))
        self._hook: torch.utils.hooks.RemovableHandle | None = None
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """A fresh adapter as the official code makes one: B = 0, so it starts with no effect."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)
        nn.init.normal_(self.gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The update's output, B diag(gate) A x, without forming the weight update."""
        return ((x @ self.lora_A.T) * self.gate) @ self.lora_B.T

    def get_delta_weight(self) -> torch.Tensor:
        """The weight update of the ranks whose gate is not zero (the pruned ones dropped)."""
        keep = self.gate != 0
        return (self.lora_B[:, keep] * self.gate[keep]) @ self.lora_A[keep]

    @property
    def active(self) -> bool:
        return self._hook is not None

    def attach(self, layer: nn.Module) -> None:
        """Start adding the update to `layer`'s output."""
        if self._hook is None:
            self._hook = layer.register_forward_hook(self.add_to)

    def detach(self) -> None:
        """Stop adding the update: `layer` is a plain linear layer again."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def add_to(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook on the wrapped layer."""
        return output + self(args[0])


def inject(layer: nn.Linear, r: int) -> GatedLoRA:
    """Give `layer` a fresh rank-`r` gated adapter (its child `ADAPTER`), its weight a buffer."""
    weight = layer.weight.detach()
    del layer.weight
    layer.register_buffer("weight", weight)
    adapter = GatedLoRA(layer.in_features, layer.out_features, r, weight)
    layer.add_module(ADAPTER, adapter)
    return adapter


def adapter_of(layer: nn.Module) -> GatedLoRA:
    """The adapter `inject` gave `layer`."""
    return layer.get_submodule(ADAPTER)


@torch.no_grad()
def merge(layer: nn.Module) -> int:
    """Fold the update of the ranks with a non-zero gate into the layer's weight; returns how
    many ranks were kept."""
    adapter = adapter_of(layer)
    kept = int((adapter.gate != 0).sum())
    layer.weight += adapter.get_delta_weight()
    return kept
