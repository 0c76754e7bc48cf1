"""LLaVA-style backbones: a vision tower, a projector and a language model that answers in text.

One loading path serves every size: `from_pretrained` on a Hugging Face id (`llava-hf/...`) or a
local directory. The built-in `tiny_llava` is that same path on a directory that
`mcl.backbones.tiny_llava` builds and pre-trains once on the toy world and then caches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from transformers import AutoProcessor, LlavaForConditionalGeneration

from mcl.backbones.base import IGNORE_INDEX, Backbone, Capability
from mcl.backbones.weights import load_weights
from mcl.data.images import load_image
from mcl.data.task import Sample
from mcl.generation import GreedyDecoder

__all__ = ["IGNORE_INDEX", "LlavaBackbone"]


class LlavaBackbone(Backbone):
    """A `LlavaForConditionalGeneration` with its processor, seen through the backbone interface
    (`mcl.backbones.base`): parts `vision`, `projector`, `llm`, their linear layers, the input
    embeddings with the image features in place, the decoder layers."""

    family = "instruction"
    capabilities = frozenset({Capability.PARTS, Capability.LINEAR_LAYERS,
                              Capability.INPUT_EMBEDDINGS, Capability.EMBEDS,
                              Capability.DECODER_LAYERS, Capability.GENERATE})
    part_names = ("vision", "projector", "llm")
    tiny_builder = "mcl.backbones.tiny_llava"  # builds + pre-trains the tiny model (mcl.pretrain)

    def __init__(self, model: LlavaForConditionalGeneration, processor, name: str,
                 max_new_tokens: int = 8, pad_to_square: bool = False) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.pad_to_square = pad_to_square
        # "static": mcl.generation's static cache + CUDA graphs; "hf": transformers' generate
        # (its dynamic cache), today's reference path. Chosen by `evaluation.backend`.
        self.decoding = "static"
        self._decoder: GreedyDecoder | None = None

    # ------------------------------------------------------------------ capabilities

    def parts(self) -> dict[str, list[nn.Module]]:
        """The model's parts by role; `llm` includes the output head."""
        inner = self.model.model
        return {
            "vision": [inner.vision_tower],
            "projector": [inner.multi_modal_projector],
            "llm": [inner.language_model, self.model.lm_head],
        }

    def adapter_root(self) -> nn.Module:
        return self.model

    def output_head(self) -> nn.Module:
        return self.model.lm_head

    def decoder_layers(self) -> nn.ModuleList:
        """The language model's decoder layers, in order."""
        return self.model.model.language_model.layers

    @property
    def text_context_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def embed(self, batch: dict) -> torch.Tensor:
        """The language model's input embeddings for a batch, image features already in place
        of the image tokens: what a prompt method extends before `forward_embeds`."""
        input_ids = batch["input_ids"]
        embeds = self.model.get_input_embeddings()(input_ids)
        config = self.model.config
        features = self.model.model.get_image_features(
            pixel_values=batch["pixel_values"].to(self.model.dtype),
            vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy)
        if not isinstance(features, torch.Tensor):  # some versions return a list or an output
            features = getattr(features, "pooler_output", features)
            features = torch.cat(list(features)) if isinstance(features, list | tuple) else features
        mask = (input_ids == config.image_token_id).unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(mask, features.to(embeds.dtype))

    def forward_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                       labels: torch.Tensor | None = None, **kwargs):
        """Teacher-forced forward from input embeddings (see `embed`)."""
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                          labels=labels, **kwargs)

    @torch.no_grad()
    def generate_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                        **kwargs) -> list[str]:
        """Greedy answers from left-padded input embeddings (see `embed`)."""
        return self._decode(self._new_tokens(attention_mask, inputs_embeds=inputs_embeds,
                                             **kwargs))

    def image_mask(self, batch: dict) -> torch.Tensor:
        """True at the image-feature positions of the input sequence."""
        return batch["attention_mask"].bool() & (batch["input_ids"]
                                                 == self.model.config.image_token_id)

    def instruction_mask(self, batch: dict) -> torch.Tensor:
        """True at the prompt's text tokens (not image, padding, or answer tokens)."""
        mask = batch["attention_mask"].bool() & (batch["input_ids"]
                                                 != self.model.config.image_token_id)
        if "labels" in batch:
            mask &= batch["labels"] == IGNORE_INDEX
        return mask

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    # ------------------------------------------------------------------ data

    def prompt_text(self, prompt: str) -> str:
        """The instruction wrapped in the model's chat template, ready for the answer."""
        conversation = [{"role": "user",
                         "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True)

    def encode(self, samples: Sequence[Sample], with_answer: bool) -> list[dict]:
        """Tokenise samples: prompt ids (image tokens expanded), answer ids, pixels (image files
        are decoded here, see `mcl.data.images.load_image`)."""
        if not samples:
            return []
        texts = [self.prompt_text(s.prompt) for s in samples]
        images = [load_image(s.image) for s in samples]
        if self.pad_to_square:
            images = [self._pad_to_square(image) for image in images]
        batch = self.processor(images=images, text=texts, return_tensors="pt", padding=True)
        eos = self.tokenizer.eos_token_id
        answers = self.tokenizer([s.answer for s in samples], add_special_tokens=False).input_ids
        encoded = []
        for i, sample in enumerate(samples):
            prompt_ids = batch["input_ids"][i][batch["attention_mask"][i].bool()]
            item = {"prompt_ids": prompt_ids, "pixel_values": batch["pixel_values"][i],
                    "answer": sample.answer, "match": sample.match,
                    "reference": sample.scored_against}
            if with_answer:
                item["answer_ids"] = torch.tensor([*answers[i], eos], dtype=torch.long)
            encoded.append(item)
        return encoded

    def _pad_to_square(self, image: np.ndarray) -> np.ndarray:
        """LLaVA-1.5's `expand2square` (llava/mm_utils.py, used with image_aspect_ratio="pad"
        in its fine-tuning and evaluation): centre the image on a square of the processor's
        mean colour, so nothing is cropped away (grounding boxes refer to this square)."""
        h, w = image.shape[:2]
        if h == w:
            return image
        side = max(h, w)
        mean = getattr(self.processor.image_processor, "image_mean", None) or [0.5, 0.5, 0.5]
        square = np.empty((side, side, 3), dtype=np.uint8)
        square[:] = np.round(np.asarray(mean) * 255).astype(np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        square[top : top + h, left : left + w] = image
        return square

    def collate_train(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Right-padded prompt + answer; labels only on the answer tokens."""
        pad = self.tokenizer.pad_token_id
        seqs = [torch.cat([it["prompt_ids"], it["answer_ids"]]) for it in items]
        length = max(len(s) for s in seqs)
        input_ids = torch.full((len(items), length), pad, dtype=torch.long)
        labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)
        for i, (it, seq) in enumerate(zip(items, seqs, strict=True)):
            input_ids[i, : len(seq)] = seq
            attention_mask[i, : len(seq)] = 1
            labels[i, len(it["prompt_ids"]) : len(seq)] = it["answer_ids"]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "pixel_values": torch.stack([it["pixel_values"] for it in items])}

    def collate_generate(self, items: Sequence[dict]) -> dict:
        """Left-padded prompts (generation appends on the right); references kept beside."""
        pad = self.tokenizer.pad_token_id
        length = max(len(it["prompt_ids"]) for it in items)
        input_ids = torch.full((len(items), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)
        for i, it in enumerate(items):
            n = len(it["prompt_ids"])
            input_ids[i, length - n :] = it["prompt_ids"]
            attention_mask[i, length - n :] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "pixel_values": torch.stack([it["pixel_values"] for it in items]),
                "answers": [it["answer"] for it in items], "match": [it["match"] for it in items],
                "references": [it["reference"] for it in items]}

    # ------------------------------------------------------------------ compute

    def forward(self, batch: dict[str, torch.Tensor], **kwargs):
        """Teacher-forced forward; returns the model output with `.loss` on the answer tokens."""
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          pixel_values=batch["pixel_values"].to(self.model.dtype),
                          labels=batch.get("labels"), **kwargs)

    @torch.no_grad()
    def generate(self, batch: dict, **kwargs) -> list[str]:
        """Greedy answers for a left-padded batch, decoded without special tokens."""
        return self._decode(self._new_tokens(
            batch["attention_mask"], input_ids=batch["input_ids"],
            pixel_values=batch["pixel_values"].to(self.model.dtype), **kwargs))

    def _new_tokens(self, attention_mask: torch.Tensor, min_new_tokens: int = 0,
                    **inputs) -> torch.Tensor:
        """The generated token ids alone, by the decoding path `self.decoding` names."""
        if self.decoding == "hf":
            out = self.model.generate(
                attention_mask=attention_mask, max_new_tokens=self.max_new_tokens,
                min_new_tokens=min_new_tokens, do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id, **inputs)
            # With only embeddings given, generate returns the new tokens alone.
            return out if "input_ids" not in inputs else out[:, inputs["input_ids"].shape[1] :]
        if self._decoder is None:
            self._decoder = GreedyDecoder(self.model, self.model.model.language_model,
                                          self.model.lm_head, self.tokenizer.eos_token_id,
                                          self.tokenizer.pad_token_id)
        return self._decoder.generate(attention_mask, self.max_new_tokens, min_new_tokens,
                                      **inputs)

    def _decode(self, tokens: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]

    @classmethod
    def load(cls, name: str, pretrained: str | None = None, tiny: dict | None = None,
             dtype: str = "float32", max_new_tokens: int = 8,
             attn_implementation: str = "sdpa", pad_to_square: bool = False,
             gradient_checkpointing: bool = False) -> LlavaBackbone:
        """Load a LLaVA backbone from a Hub id or local path, or the cached tiny toy-world model.

        With `pretrained=None` the tiny model described by `tiny` is used; it is built and
        pre-trained on the toy world the first time (`python -m mcl.pretrain`) and cached.
        `gradient_checkpointing` recomputes activations in the backward pass: more compute for a
        fraction of the activation memory (large models, long sequences).
        """
        model, processor = load_weights(
            name, pretrained, tiny, dtype, "mcl.backbones.tiny_llava",
            lambda source, torch_dtype: (
                LlavaForConditionalGeneration.from_pretrained(
                    source, dtype=torch_dtype, attn_implementation=attn_implementation),
                AutoProcessor.from_pretrained(source)))
        if gradient_checkpointing:
            # Non-reentrant: gradients still reach prompts and adapters when the base is frozen.
            model.gradient_checkpointing_enable({"use_reentrant": False})
        return cls(model, processor, name=name, max_new_tokens=max_new_tokens,
                   pad_to_square=pad_to_square)
