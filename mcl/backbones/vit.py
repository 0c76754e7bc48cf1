"""ViT backbones (Dosovitskiy et al. 2021) with a linear head over the stream's classes.

The image feature is the final-layer-normalised CLS token (D = hidden size), as
`ViTForImageClassification` reads it. The head is one `nn.Linear(D, max_classes)` whose rows are
handed to class names in the order the classes are first scored (`register_classes`, called by
`logits` on the label space `mcl.data.label_space` decides), so the head grows with the stream up
to `max_classes`; rows start at zero, so a class never trained scores 0 (a ViT has no zero-shot
ability). The logits of a label space are the rows of its classes; the row map travels with every
strategy checkpoint (`extra_state`). One loading path serves every size: `ViTModel.from_pretrained`
on a Hub id (`google/vit-base-patch16-224-in21k`) or a local directory; the built-in `tiny_vit` is
that path on the directory `mcl.backbones.tiny_vit` pre-trains once (supervised, on toy scenes)
and caches.

Parts: `vision` (the ViT) and `head` (the linear head, whose parameters `head_parameters()` also
returns: every training method trains them). The prompting API is that of
`mcl.backbones.classification`. Dropout is not applied on the prompted path (ViT checkpoints
fine-tune with dropout 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import AutoImageProcessor, ViTModel

from mcl.backbones.base import Capability
from mcl.backbones.classification import ClassificationBackbone, LayerView
from mcl.backbones.weights import load_weights


class VitBackbone(ClassificationBackbone):
    """A transformers `ViTModel` (no pooler) and a growing linear head."""

    capabilities = frozenset({Capability.PARTS, Capability.LINEAR_LAYERS,
                              Capability.VISION_PROMPTS})
    part_names = ("vision", "head")
    tiny_builder = "mcl.backbones.tiny_vit"  # builds + pre-trains the tiny model (mcl.pretrain)

    def __init__(self, model: ViTModel, image_processor, name: str, max_classes: int = 256
                 ) -> None:
        super().__init__(model, image_processor, name)
        self.head = nn.Linear(model.config.hidden_size, max_classes, dtype=model.dtype)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.class_rows: dict[str, int] = {}

    # ------------------------------------------------------------------ image tower

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def feature_dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    def layer_views(self) -> list[LayerView]:
        return [LayerView(norm1=layer.layernorm_before, q=layer.attention.q_proj,
                          k=layer.attention.k_proj, v=layer.attention.v_proj,
                          out=layer.attention.o_proj, norm2=layer.layernorm_after, mlp=layer.mlp,
                          heads=layer.attention.num_attention_heads)
                for layer in self.model.layers]

    def embed_patches(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.embeddings(pixel_values.to(self.model.dtype))

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.layernorm(hidden)[:, 0]

    def plain_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values.to(self.model.dtype)).last_hidden_state[:, 0]

    # ------------------------------------------------------------------ head

    def register_classes(self, classes: Sequence[str]) -> None:
        """Give every new class name the next free row of the head."""
        for name in classes:
            if name not in self.class_rows:
                if len(self.class_rows) == self.head.out_features:
                    raise ValueError(
                        f"backbone {self.name!r} has a head for {self.head.out_features} classes "
                        f"and the stream brings more; raise backbone.max_classes")
                self.class_rows[name] = len(self.class_rows)

    def logits(self, features: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """The head rows of `classes` applied to the features."""
        self.register_classes(classes)
        rows = torch.tensor([self.class_rows[c] for c in classes], device=features.device)
        return features @ self.head.weight[rows].T + self.head.bias[rows]

    def extra_state(self) -> dict:
        """Which head row is which class: saved with every checkpoint (strategies add it)."""
        return {"class_rows": dict(self.class_rows)}

    def load_extra_state(self, state: dict) -> None:
        self.class_rows = dict(state["class_rows"])

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    # ------------------------------------------------------------------ capabilities

    def parts(self) -> dict[str, list[nn.Module]]:
        return {"vision": [self.model], "head": [self.head]}

    @classmethod
    def load(cls, name: str, pretrained: str | None = None, tiny: dict | None = None,
             dtype: str = "float32", max_classes: int = 256) -> VitBackbone:
        """A ViT from a Hub id or local directory, or the cached tiny toy-world ViT
        (`pretrained=None`: built and pre-trained the first time, then cached)."""
        model, processor = load_weights(
            name, pretrained, tiny, dtype, "mcl.backbones.tiny_vit",
            lambda source, torch_dtype: (
                ViTModel.from_pretrained(source, dtype=torch_dtype, add_pooling_layer=False),
                AutoImageProcessor.from_pretrained(source)))
        return cls(model.eval(), processor, name=name, max_classes=max_classes)
