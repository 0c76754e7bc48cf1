"""`OnLoraOrFinetune`: what replay, EWC and LwF train, chosen by `method.base`.

These methods add a mechanism (a memory, a penalty, a teacher) on top of sequential training,
and their MCIT peers run them on LoRA (Prism's replay_lora and ewc, MCITlib's Replay) while the
original papers fine-tune the whole network: `base: lora` trains one peft LoRA adapter on the
linear layers of the chosen parts (`mcl.strategies.lora`), `base: finetune` the parts themselves
(`mcl.strategies.finetune`); the head of a classifier without pre-trained weights (ViT's) is
trained beside either. Default parts per family are per base (`family_parts.<base>` in the
method's YAML).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mcl.backbones.base import Backbone
from mcl.strategies.base import PartsStrategy
from mcl.strategies.finetune import unfreeze_parts
from mcl.strategies.lora import add_lora

BASES = ("lora", "finetune")


class OnLoraOrFinetune(PartsStrategy):
    """A method whose trained parameters are a LoRA adapter or whole parts (`base`)."""

    families = frozenset({"instruction", "classification"})

    def __init__(self, *, base: str, family_parts: dict[str, dict[str, Sequence[str]]],
                 r: int, alpha: float, dropout: float, **kwargs) -> None:
        if base not in BASES:
            raise ValueError(f"method.base must be one of {list(BASES)} (what the method "
                             f"trains: a LoRA adapter or whole parts), got {base!r}")
        if base == "lora" and r <= 0:
            raise ValueError(f"method.r (the LoRA rank) must be positive, got {r}")
        super().__init__(family_parts=dict(family_parts[base]), **kwargs)
        self.base, self.r, self.alpha, self.dropout = base, r, alpha, dropout
        # LoRA wraps linear layers; fine-tuning unfreezes parts.
        self.requires = frozenset({"linear_layers" if base == "lora" else "parts"})
        self._params: list[nn.Parameter] = []

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        if self.base == "lora":
            self._params = add_lora(backbone, self.linear_layers_of_parts(backbone), self.r,
                                    self.alpha, self.dropout)
        else:
            self._params = unfreeze_parts(backbone, self.parts_for(backbone))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self._params
