"""CLIP backbones (Radford et al. 2021): an image tower and a text tower in one embedding space.

The classifier is the text tower: the logits of an image for a label space are
`logit_scale * cos(image feature, text feature of "a photo of a {class}.")`, so any class, trained
or not, can be scored from its name (zero-shot), which is what makes FWT and MTIL's Transfer
measurable. One loading path serves every size: `from_pretrained` on a Hub id
(`openai/clip-vit-base-patch16`) or a local directory; the built-in `tiny_clip` is that path on the
directory `mcl.backbones.tiny_clip` pre-trains once (contrastively, on toy-world captions) and
caches.

API beyond `mcl.backbones.classification` (capability `label_prompts`):

- `encode_text(class_names, context=None) -> [C, D]`: text features of the label prompts
  "a photo of a {name}."; with `context` [n_ctx, H_text], CoOp's learnable context vectors (Zhou
  et al. 2022, "Learning to Prompt for Vision-Language Models", Sec. 3.2: [SOS][V]_1..[V]_M
  [CLASS][.][EOS]) replace the template words before the class name tokens.
- `logit_scale` (the exp of the learned log temperature), `text_hidden_size` (H_text).
- Parts: `vision` (vision tower + visual projection), `text` (text tower + text projection) and
  `head`, the same modules as `text` (CLIP's classifier is its text tower).

Text features of a label space are cached while the backbone is in eval mode and no gradient is
taken; `train()` clears the cache (call `clear_text_cache()` after changing text weights by hand).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoProcessor, CLIPModel

from mcl.backbones.base import Capability
from mcl.backbones.classification import ClassificationBackbone, LayerView
from mcl.backbones.weights import load_weights

TEMPLATE = "a photo of a {}."  # CLIP's ImageNet prompt (Radford et al. 2021, Sec. 3.1.4)


class ClipBackbone(ClassificationBackbone):
    """A transformers `CLIPModel` with its processor, seen through capabilities."""

    capabilities = frozenset({Capability.PARTS, Capability.LINEAR_LAYERS,
                              Capability.VISION_PROMPTS, Capability.LABEL_PROMPTS})
    part_names = ("vision", "text", "head")
    tiny_builder = "mcl.backbones.tiny_clip"  # builds + pre-trains the tiny model (mcl.pretrain)

    def __init__(self, model: CLIPModel, processor, name: str) -> None:
        super().__init__(model, processor.image_processor, name)
        self.processor = processor
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    # ------------------------------------------------------------------ image tower

    @property
    def hidden_size(self) -> int:
        return self.model.config.vision_config.hidden_size

    @property
    def text_hidden_size(self) -> int:
        return self.model.config.text_config.hidden_size

    @property
    def feature_dim(self) -> int:
        return self.model.config.projection_dim

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def text_context_length(self) -> int:
        """Positions of the text tower (label prompt + CoOp context must fit)."""
        return int(self.model.config.text_config.max_position_embeddings)

    def layer_views(self) -> list[LayerView]:
        return [LayerView(norm1=layer.layer_norm1, q=layer.self_attn.q_proj,
                          k=layer.self_attn.k_proj, v=layer.self_attn.v_proj,
                          out=layer.self_attn.out_proj, norm2=layer.layer_norm2, mlp=layer.mlp,
                          heads=layer.self_attn.num_heads)
                for layer in self.model.vision_model.encoder.layers]

    def embed_patches(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.vision_model.embeddings(pixel_values.to(self.model.dtype))

    def pre_layer_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.vision_model.pre_layrnorm(tokens)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.visual_projection(self.model.vision_model.post_layernorm(hidden[:, 0]))

    def plain_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model.get_image_features(pixel_values=pixel_values.to(self.model.dtype))
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    # ------------------------------------------------------------------ text tower

    def clear_text_cache(self) -> None:
        self._text_cache.clear()

    def train(self, mode: bool = True) -> ClipBackbone:
        self._text_cache.clear()
        return super().train(mode)

    def _tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        device = self.model.logit_scale.device
        tokens = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        return {k: tokens[k].to(device) for k in ("input_ids", "attention_mask")}

    def encode_text(self, class_names: Sequence[str], context: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Text features [C, D] of the label prompts (see the module docstring)."""
        if context is not None:
            return self._encode_with_context(class_names, context)
        key = tuple(class_names)
        cacheable = not self.training and not torch.is_grad_enabled()
        if cacheable and key in self._text_cache:
            return self._text_cache[key]
        out = self.model.get_text_features(**self._tokens([TEMPLATE.format(c)
                                                            for c in class_names]))
        features = out if isinstance(out, torch.Tensor) else out.pooler_output
        if cacheable:
            self._text_cache[key] = features
        return features

    def _encode_with_context(self, class_names: Sequence[str], context: torch.Tensor
                             ) -> torch.Tensor:
        """CoOp: [SOS] context [name tokens] [.] [EOS], pooled at EOS like the text tower."""
        text = self.model.text_model
        tokens = self._tokens([f"{c}." for c in class_names])
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        n, n_ctx = ids.shape[0], context.shape[0]
        words = text.embeddings.token_embedding(ids)
        embeds = torch.cat([words[:, :1], context.to(words.dtype).expand(n, -1, -1),
                            words[:, 1:]], dim=1)
        mask = torch.cat([mask[:, :1], mask.new_ones(n, n_ctx), mask[:, 1:]], dim=1)
        hidden = text.embeddings(inputs_embeds=embeds)
        length = hidden.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=hidden.device).tril()
        allowed = causal[None, None] & mask[:, None, None, :].bool()
        additive = torch.zeros(allowed.shape, dtype=hidden.dtype, device=hidden.device)
        additive = additive.masked_fill(~allowed, torch.finfo(hidden.dtype).min)
        hidden = text.encoder(inputs_embeds=hidden, attention_mask=additive).last_hidden_state
        hidden = text.final_layer_norm(hidden)
        eos = (ids == self.tokenizer.eos_token_id).int().argmax(-1) + n_ctx
        return self.model.text_projection(hidden[torch.arange(n, device=hidden.device), eos])

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    def logits(self, features: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """Scaled cosine similarity of image features and the classes' label prompts."""
        text = F.normalize(self.encode_text(classes), dim=-1)
        return self.logit_scale * F.normalize(features, dim=-1) @ text.T

    # ------------------------------------------------------------------ capabilities

    def parts(self) -> dict[str, list[nn.Module]]:
        text = [self.model.text_model, self.model.text_projection]
        return {"vision": [self.model.vision_model, self.model.visual_projection],
                "text": text, "head": text}

    @classmethod
    def load(cls, name: str, pretrained: str | None = None, tiny: dict | None = None,
             dtype: str = "float32") -> ClipBackbone:
        """A CLIP backbone from a Hub id or local directory, or the cached tiny toy-world CLIP
        (`pretrained=None`: built and pre-trained the first time, then cached)."""
        model, processor = load_weights(
            name, pretrained, tiny, dtype, "mcl.backbones.tiny_clip",
            lambda source, torch_dtype: (CLIPModel.from_pretrained(source, dtype=torch_dtype),
                                         AutoProcessor.from_pretrained(source)))
        return cls(model.eval(), processor, name=name)
