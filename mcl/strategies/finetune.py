"""Sequential fine-tuning: train the trainable part of the model on each task in turn.

The usual lower bound against forgetting (e.g. CoIN, Chen et al. 2024, and COAST, Cao et al.
2024, report it as "Finetune"). Default parts per family: on LLaVA the stage-2 recipe, projector
and language model trained, vision tower frozen (Liu et al. 2023, "Improved Baselines with Visual
Instruction Tuning"); on CLIP both towers (MTIL's "Continual-FT", Zheng et al. 2023, fine-tunes
the whole CLIP), on ViT the network and its head.
"""


from collections.abc import Sequence

from torch import nn

from mcl.backbones.base import Backbone
from mcl.strategies.base import PartsStrategy, register


@register("finetune")
class Finetune(PartsStrategy):
    """Full fine-tuning of the backbone parts named in `parts`, task after task."""

    requires = frozenset({"parts"})
    families = frozenset({"instruction", "classification"})

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._params: list[nn.Parameter] = []

    def setup(self, backbone) -> None:
        super().setup(backbone)
        self._params = unfreeze_parts(backbone, self.parts_for(backbone))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self._params


def unfreeze_parts(backbone: Backbone, parts: Sequence[str]) -> list[nn.Parameter]:
    """Unfreeze the named parts and the backbone's head (a classifier's new head; none for LLaVA,
    CLIP): returns those parameters, each once."""
    params = [*backbone.part_parameters(parts), *backbone.head_parameters()]
    params = list(dict.fromkeys(params))
    for p in params:
        p.requires_grad_(True)
    return params
