"""Sequential fine-tuning: train the trainable part of the model on each task in turn.

The usual lower bound against forgetting (e.g. CoIN, Chen et al. 2024, and COAST, Cao et al.
2024, report it as "Finetune"); by default the LLaVA stage-2 recipe: projector and language
model trained, vision tower frozen (Liu et al. 2023, "Improved Baselines with Visual Instruction
Tuning").
"""

from collections.abc import Sequence

from torch import nn

from mcl.strategies.base import ContinualStrategy, register


@register("finetune")
class Finetune(ContinualStrategy):
    """Full fine-tuning of the backbone parts named in `parts`, task after task."""

    requires = frozenset({"parts"})

    def __init__(self, parts: Sequence[str] = ("projector", "llm"), **kwargs) -> None:
        super().__init__(**kwargs)
        self.parts = list(parts)
        self._params: list[nn.Parameter] = []

    def setup(self, backbone) -> None:
        super().setup(backbone)
        self._params = list(dict.fromkeys(backbone.part_parameters(self.parts)))
        for p in self._params:
            p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self._params
