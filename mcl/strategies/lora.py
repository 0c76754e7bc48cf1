"""Sequential LoRA: one low-rank adapter (peft) trained on each task in turn, never merged.

LoRA: Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models". Defaults
r=8, alpha=16, dropout=0.05 on every linear layer of the language model, as in LLaVA-1.5's LoRA
recipe scaled down (its scripts use r=128, alpha=256 for the 7B model); the sequential use is the
"LoRA-FT" baseline of CoIN (Chen et al. 2024). On classification backbones the default parts are
both CLIP towers (the LoRA baseline of CoDyRA, Lu et al. 2024) or the ViT; a head without
pre-trained weights (ViT's) is trained beside the adapter.
"""


from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from mcl.backbones.base import Backbone
from mcl.strategies.base import PartsStrategy, register


@register("lora")
class Lora(PartsStrategy):
    """A peft LoRA adapter on the linear layers of the named backbone parts."""

    requires = frozenset({"linear_layers"})
    families = frozenset({"instruction", "classification"})

    def __init__(self, *, r: int, alpha: float, dropout: float, **kwargs) -> None:
        super().__init__(**kwargs)
        if r <= 0:
            raise ValueError(f"method.r (the LoRA rank) must be positive, got {r}")
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self._params: list[nn.Parameter] = []

    def setup(self, backbone) -> None:
        super().setup(backbone)
        self._params = add_lora(backbone, self.linear_layers_of_parts(backbone), self.r,
                                self.alpha, self.dropout)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self._params


def add_lora(backbone: Backbone, targets: list[str], r: int, alpha: float, dropout: float
             ) -> list[nn.Parameter]:
    """Inject a peft LoRA adapter into the `targets` layers of `backbone.adapter_root()` and
    unfreeze it and the backbone's head: returns the parameters trained (adapter, then head)."""
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    # In place (no PeftModel wrapper), so the backbone keeps its interface and names.
    root = backbone.adapter_root()
    inject_adapter_in_model(config, root)
    params = [p for n, p in root.named_parameters() if "lora_" in n]
    params += backbone.head_parameters()
    for p in params:
        p.requires_grad_(True)
    return params
