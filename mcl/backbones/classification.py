"""What the classification backbones (CLIP, ViT) share: data handling, label spaces, prompting.

A classification sample is `Sample(image, prompt="", answer=<class name>)`. Every encoded item
carries `classes`, the ordered label space its prediction is chosen from: by default the sorted
class names of the samples encoded together (one task's, or the union of the tasks a training set
mixes); the loop replaces it at evaluation time with the scenario's label space
(`mcl.data.label_space`). A batch's items share one label space, so `batch["classes"]` is one list.

`forward(batch)` returns `ClassifierOutput(loss, logits)`: cross-entropy of
`logits(encode_image(pixels), batch["classes"])` against the answers' positions in that list;
`generate(batch)` returns the top-scoring class name of every item, which the loop scores by exact
match like any generated answer. So the loop, the strategies and evaluation treat both families
alike.

Prompting API (for L2P / DualPrompt / CODA-Prompt / VPT, capability `vision_prompts`):

- `query(pixel_values) -> [B, D]`: the image feature of the frozen backbone, no prompts, no grad.
- `encode_image(pixel_values, prompts=None, prefixes=None) -> [B, D]`: the pooled (CLS) image
  feature the classifier reads. `prompts` [B, P, H] are P extra tokens inserted right after the
  CLS token in the token sequence that enters the first transformer layer (VPT-shallow / L2P:
  after the position embeddings, which the prompts do not get; for CLIP before its pre-layernorm).
  `prefixes = {layer: (key_prefix, value_prefix)}`, each [B, Lp, H], are prepended to that
  layer's self-attention keys and values after their projections (prefix tuning as DualPrompt and
  CODA-Prompt implement it: softmax(q [p_k; k]^T / sqrt(d_head)) [p_v; v], split over heads like k
  and v). Layers are numbered from 0.
- `hidden_size` (H, token width of the vision transformer), `num_layers`, `feature_dim` (D).

Classifier API (both backbones): `logits(features [B, D], classes) -> [B, C]` (CLIP: scaled cosine
to the label prompts' text features; ViT: the head rows of those classes), `predict(logits,
classes) -> names`, `head_parameters()` (weights without a pre-trained value that every training
method must train: ViT's head; none for CLIP). Generic capabilities: `parts()` (`part_names`
lists them before loading), `part_parameters(names)`, `linear_layer_names(names)` (relative to
`.model`, for LoRA-style wrapping). Batches: `collate_train` gives `pixel_values`, `labels`
(positions in `classes`) and `classes`; `collate_generate` gives `pixel_values`, `classes`,
`answers`, `match`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mcl.backbones.base import Backbone, Prefixes
from mcl.data.images import load_image
from mcl.data.label_space import training_label_space
from mcl.data.task import Sample

__all__ = ["ClassificationBackbone", "ClassifierOutput", "LayerView", "Prefixes"]


@dataclass
class ClassifierOutput:
    """What `forward` returns: the loss over the batch's label space and the logits."""

    loss: torch.Tensor | None
    logits: torch.Tensor


@dataclass
class LayerView:
    """The pieces of one pre-norm transformer layer, under family-neutral names."""

    norm1: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    out: nn.Linear
    norm2: nn.Module
    mlp: nn.Module
    heads: int


def attention(view: LayerView, x: torch.Tensor,
              prefix: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Multi-head self-attention of a normalised input x [B, L, H], with optional key/value
    prefixes [B, Lp, H] prepended after the key and value projections (prefix tuning)."""
    q, k, v = view.q(x), view.k(x), view.v(x)
    if prefix is not None:
        key_prefix, value_prefix = prefix
        k = torch.cat([key_prefix.to(k.dtype), k], dim=1)
        v = torch.cat([value_prefix.to(v.dtype), v], dim=1)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (view.heads, -1)).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))  # scale 1/sqrt(d_head)
    return view.out(out.transpose(1, 2).flatten(2))


def run_layer(view: LayerView, h: torch.Tensor,
              prefix: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """One pre-norm layer: h + attn(norm1(h)), then + mlp(norm2(.)) (CLIP's and ViT's order)."""
    h = h + attention(view, view.norm1(h), prefix)
    return h + view.mlp(view.norm2(h))


def insert_prompts(tokens: torch.Tensor, prompts: torch.Tensor | None) -> torch.Tensor:
    """The token sequence with `prompts` [B, P, H] right after the CLS token (position 0)."""
    if prompts is None:
        return tokens
    if prompts.shape[0] != tokens.shape[0] or prompts.shape[-1] != tokens.shape[-1]:
        raise ValueError(f"prompts must be [batch={tokens.shape[0]}, P, hidden={tokens.shape[-1]}]"
                         f", got {list(prompts.shape)}")
    return torch.cat([tokens[:, :1], prompts.to(tokens.dtype), tokens[:, 1:]], dim=1)


class ClassificationBackbone(Backbone):
    """Shared behaviour of `ClipBackbone` and `VitBackbone`; subclasses give the model parts,
    `encode_image` and `logits`."""

    family = "classification"

    def __init__(self, model: nn.Module, image_processor, name: str) -> None:
        super().__init__()
        self.model = model
        self.image_processor = image_processor
        self.name = name

    # ------------------------------------------------------------------ per-family pieces

    def layer_views(self) -> list[LayerView]:
        raise NotImplementedError

    def embed_patches(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The token sequence (CLS first, position embeddings added) before the first layer."""
        raise NotImplementedError

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """The image feature from the last layer's tokens (CLS, normalised, projected)."""
        raise NotImplementedError

    def plain_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The model's own forward to the image feature (no prompts)."""
        raise NotImplementedError

    def logits(self, features: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """[B, C] class scores of image features for the label space `classes`."""
        raise NotImplementedError

    def parts(self) -> dict[str, list[nn.Module]]:
        raise NotImplementedError

    def pre_layer_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    # ------------------------------------------------------------------ prompting API

    @property
    def num_layers(self) -> int:
        return len(self.layer_views())

    @torch.no_grad()
    def query(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen image feature (no prompts, no gradient): the query of prompt pools."""
        return self.plain_image_features(pixel_values)

    def encode_image(self, pixel_values: torch.Tensor, prompts: torch.Tensor | None = None,
                     prefixes: Prefixes | None = None) -> torch.Tensor:
        """The pooled image feature [B, D]; see the module docstring for prompts and prefixes."""
        if prompts is None and not prefixes:
            return self.plain_image_features(pixel_values)
        views = self.layer_views()
        bad = [i for i in (prefixes or {}) if not 0 <= i < len(views)]
        if bad:
            raise ValueError(f"prefix layers {bad} do not exist; the vision tower has layers "
                             f"0..{len(views) - 1}")
        h = self.pre_layer_norm(insert_prompts(self.embed_patches(pixel_values), prompts))
        for i, view in enumerate(views):
            h = run_layer(view, h, (prefixes or {}).get(i))
        return self.pool(h)

    # ------------------------------------------------------------------ capabilities

    def adapter_root(self) -> nn.Module:
        return self.model

    # ------------------------------------------------------------------ data

    def encode(self, samples: Sequence[Sample], with_answer: bool) -> list[dict]:
        """Pixels of every sample once; the label space defaults to the samples' class names."""
        if not samples:
            return []
        pixels = self.image_processor([load_image(s.image) for s in samples],
                                      return_tensors="pt")["pixel_values"]
        classes = training_label_space(samples)
        return [{"pixel_values": pixels[i], "answer": s.answer, "match": s.match,
                 "classes": classes} for i, s in enumerate(samples)]

    @staticmethod
    def _label_space(items: Sequence[dict]) -> list[str]:
        classes = items[0]["classes"]
        if any(it["classes"] != classes for it in items):
            raise ValueError("a batch mixes items with different label spaces; give every item "
                             "of one encoded set the same `classes`")
        return list(classes)

    def collate_train(self, items: Sequence[dict]) -> dict:
        """Pixels, the label space and each answer's position in it."""
        classes = self._label_space(items)
        index = {c: i for i, c in enumerate(classes)}
        missing = sorted({it["answer"] for it in items} - set(index))
        if missing:
            raise ValueError(f"training answers {missing[:5]} are not in the label space "
                             f"{classes[:10]}")
        return {"pixel_values": torch.stack([it["pixel_values"] for it in items]),
                "labels": torch.tensor([index[it["answer"]] for it in items]),
                "classes": classes}

    def collate_generate(self, items: Sequence[dict]) -> dict:
        return {"pixel_values": torch.stack([it["pixel_values"] for it in items]),
                "classes": self._label_space(items),
                "answers": [it["answer"] for it in items], "match": [it["match"] for it in items]}

    # ------------------------------------------------------------------ compute

    def forward(self, batch: dict) -> ClassifierOutput:
        """Logits over the batch's label space, with the cross-entropy loss when labelled."""
        logits = self.logits(self.encode_image(batch["pixel_values"]), batch["classes"])
        labels = batch.get("labels")
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ClassifierOutput(loss, logits)

    @torch.no_grad()
    def generate(self, batch: dict) -> list[str]:
        """The best-scoring class name of every image."""
        return self.predict(self.forward({k: v for k, v in batch.items() if k != "labels"})
                            .logits, batch["classes"])
