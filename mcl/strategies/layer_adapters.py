"""Adapters a strategy owns and adds to backbone linear layers through forward hooks.

For methods whose adapter is not peft's LoRA (MoE-LoRA's routed experts, O-LoRA's frozen old
subspaces): the strategy keeps one adapter per wrapped layer in an `nn.ModuleList` (its child, so
device moves, modes, checkpoints and DDP see it), and a forward hook on each layer adds the
adapter's output of the layer's input to the layer's output. The layers themselves are
untouched (their weights stay frozen parameters), as `mcl.strategies.continual_llava` does.
An adapter is called as `adapter(x, training)` with the wrapped layer's mode, so that its dropout
is on exactly when the backbone trains, as a LoRA inside the layer would be.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mcl.backbones.base import Backbone


def hook_adapters(backbone: Backbone, names: Sequence[str],
                  make: Callable[[nn.Linear], nn.Module]) -> nn.ModuleList:
    """One adapter `make(layer)` per named linear layer (on its weight's device and dtype),
    added to that layer's output from now on; returns them in the order of `names`."""
    adapters = nn.ModuleList()
    for name in names:
        layer = backbone.linear_layer(name)
        adapter = make(layer).to(device=layer.weight.device, dtype=layer.weight.dtype)
        layer.register_forward_hook(_add(adapter))
        adapters.append(adapter)
    return adapters


def _add(adapter: nn.Module) -> Callable:
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + adapter(args[0], module.training).to(output.dtype)

    return hook
