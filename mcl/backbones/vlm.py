"""Any transformers VLM as an instruction backbone: `AutoModelForImageTextToText` with its
`AutoProcessor` and the processor's chat template, seen through the backbone interface
(`mcl.backbones.base`).

One class serves every family whose processor and model follow transformers' common API; a
family differs only in small hooks (class attributes of a subclass, chosen by the checkpoint's
`model_type`):

- `image_rows`: processor outputs whose first dimension runs over images or patches rather than
  samples (Qwen2-VL's `pixel_values` and `image_grid_thw`, InternVL's tiles). Batches keep every
  tensor sample-first (padded, with the rows of each sample in `<key>_rows`), and the model
  receives them concatenated, as its processor would give them for the batch.
- `capabilities` / `limitations`: a family whose computation cannot be reproduced from input
  embeddings alone lacks `Capability.EMBEDS` (Qwen2-VL: M-RoPE positions come from the image
  grid in `input_ids`), so the compatibility check refuses prompt methods before loading.

Any number of image tokens per sample works (LLaVA-NeXT / OneVision anyres tiles, Qwen2-VL's
dynamic resolution, Idefics3's splitting): every sample is processed on its own, tensors of
different shapes are padded as the family's processor pads a batch (zeros, which the models
skip), and masks are read from the tokens, never from a fixed count.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
from transformers.processing_utils import ProcessorMixin
from transformers.utils import is_torchvision_available

from mcl.backbones.base import IGNORE_INDEX, Backbone, Capability
from mcl.backbones.weights import load_weights
from mcl.data.images import load_image
from mcl.data.task import Sample

ALL = frozenset({Capability.PARTS, Capability.LINEAR_LAYERS, Capability.INPUT_EMBEDDINGS,
                 Capability.EMBEDS, Capability.TOKEN_MASKS, Capability.DECODER_LAYERS,
                 Capability.GENERATE})
TEXT_KEYS = ("input_ids", "attention_mask", "labels", "answers", "match", "references")
# Where the families keep their parts (model.model.<name>).
VISION = ("vision_tower", "vision_model", "visual")
PROJECTOR = ("multi_modal_projector", "connector")
LANGUAGE = ("language_model", "text_model")


@contextmanager
def images_only() -> Iterator[None]:
    """Processors without their video part where torchvision is missing.

    transformers' video processors need torchvision (its PyPI wheel needs a CUDA torch), so
    without it the processors of video-capable families (Qwen2-VL, InternVL, LLaVA-OneVision)
    cannot even be built, though mcl gives them images only. Here a processor's sub-processors
    are listed without the video one, so it is built, saved and loaded from its other parts."""
    if is_torchvision_available():
        yield
        return
    listed = ProcessorMixin.__dict__["get_attributes"]
    ProcessorMixin.get_attributes = classmethod(
        lambda cls: [a for a in listed.__func__(cls) if "video" not in a])
    try:
        yield
    finally:
        ProcessorMixin.get_attributes = listed


def _first(module: nn.Module, names: Sequence[str]) -> nn.Module | None:
    return next((getattr(module, n) for n in names if hasattr(module, n)), None)


def _image_features(output) -> torch.Tensor:
    """`get_image_features`' result as one [tokens, H] tensor, images in batch order."""
    features = getattr(output, "pooler_output", output)
    if isinstance(features, list | tuple):
        return torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
    return features.reshape(-1, features.shape[-1])


def _pad_stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack tensors of one rank, zero-padding every dimension at its end to the largest."""
    shape = [max(sizes) for sizes in zip(*(t.shape for t in tensors), strict=True)]
    out = tensors[0].new_zeros((len(tensors), *shape))
    for i, t in enumerate(tensors):
        out[(i, *[slice(0, n) for n in t.shape])] = t
    return out


class VlmBackbone(Backbone):
    """An `AutoModelForImageTextToText` with its processor (LLaVA-NeXT, LLaVA-OneVision,
    Idefics3 / SmolVLM here; LLaVA-1.5, Qwen2-VL and InternVL through the subclasses below).
    Parts `vision`, `projector`, `llm`; the input embeddings with the image features in place
    (for any number of image tokens); the decoder layers."""

    family = "instruction"
    capabilities = ALL
    part_names = ("vision", "projector", "llm")
    model_types: ClassVar[tuple[str, ...]] = ("llava_next", "llava_onevision", "idefics3",
                                              "smolvlm")
    image_rows: ClassVar[tuple[str, ...]] = ()
    tiny_builder = "mcl.backbones.standin"  # random stand-ins of each family (`tiny:` configs)

    def __init__(self, model: nn.Module, processor, name: str, max_new_tokens: int = 8,
                 pad_to_square: bool = False) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.pad_to_square = pad_to_square
        config = model.config
        self.image_token_id = int(config.image_token_id)
        # The tokens of an image block: its feature positions and the markers the processor puts
        # around and between them (Idefics3's tile tags, InternVL's <img>, Qwen's vision_start).
        marks = {v for source in (vars(processor), config.to_dict()) for k, v in source.items()
                 if k.endswith("token_id") and ("image" in k or "vision" in k)
                 and "video" not in k and isinstance(v, int)}
        self.register_buffer("_image_block_ids", torch.tensor(sorted(marks | {
            self.image_token_id})), persistent=False)

    # ------------------------------------------------------------------ capabilities

    def parts(self) -> dict[str, list[nn.Module]]:
        """The model's parts by role; `llm` includes the output head."""
        inner = self.model.model
        return {"vision": [_first(inner, VISION)], "projector": [_first(inner, PROJECTOR)],
                "llm": [_first(inner, LANGUAGE), self.model.lm_head]}

    def adapter_root(self) -> nn.Module:
        return self.model

    def output_head(self) -> nn.Module:
        return self.model.lm_head

    def decoder_layers(self) -> nn.ModuleList:
        """The language model's decoder layers, in order."""
        return _first(self.model.model, LANGUAGE).layers

    @property
    def text_context_length(self) -> int:
        return int(self.model.config.get_text_config().max_position_embeddings)

    def input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def model_inputs(self, batch: dict) -> dict[str, torch.Tensor]:
        """The batch's image (and per-token) inputs as the model takes them: `image_rows` keys
        concatenated over the samples, floating tensors in the model's dtype."""
        inputs = {}
        for key, value in batch.items():
            if key in TEXT_KEYS or key.endswith("_rows") or not isinstance(value, torch.Tensor):
                continue
            if key in self.image_rows:
                value = torch.cat([v[:n] for v, n in zip(value, batch[f"{key}_rows"].tolist(),
                                                         strict=True)])
            inputs[key] = value.to(self.model.dtype) if value.is_floating_point() else value
        return inputs

    def embed(self, batch: dict) -> torch.Tensor:
        """The language model's input embeddings for a batch, image features already in place
        of the image tokens (as many as each image has): what a prompt method extends before
        `forward_embeds`. The same placement as the model's own forward (`masked_scatter`)."""
        input_ids = batch["input_ids"]
        embeds = self.model.get_input_embeddings()(input_ids)
        image = {k: v for k, v in self.model_inputs(batch).items()
                 if k not in ("mm_token_type_ids", "token_type_ids")}
        features = _image_features(self.model.model.get_image_features(**image,
                                                                       return_dict=True))
        mask = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
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
        out = self.model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                  **self._greedy(), **kwargs)
        # With only embeddings given, generate returns the new tokens alone.
        return self._decode(out)

    def image_mask(self, batch: dict) -> torch.Tensor:
        """True at the image-feature positions of the input sequence."""
        return batch["attention_mask"].bool() & (batch["input_ids"] == self.image_token_id)

    def _image_block(self, batch: dict) -> torch.Tensor:
        """True from the first to the last image-block token of each row (tile tags and the
        line breaks between tiles included)."""
        ids = batch["input_ids"]
        marked = torch.isin(ids, self._image_block_ids) & batch["attention_mask"].bool()
        positions = torch.arange(ids.shape[1], device=ids.device)
        first = torch.where(marked, positions, ids.shape[1]).min(1, keepdim=True).values
        last = torch.where(marked, positions, -1).max(1, keepdim=True).values
        return (positions >= first) & (positions <= last)

    def instruction_mask(self, batch: dict) -> torch.Tensor:
        """True at the prompt's text tokens (not the image block, padding or answer tokens)."""
        mask = batch["attention_mask"].bool() & ~self._image_block(batch)
        if "labels" in batch:
            mask &= batch["labels"] == IGNORE_INDEX
        return mask

    # ------------------------------------------------------------------ data

    def prompt_text(self, prompt: str) -> str:
        """The instruction wrapped in the model's chat template, ready for the answer."""
        conversation = [{"role": "user",
                         "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True)

    def encode(self, samples: Sequence[Sample], with_answer: bool) -> list[dict]:
        """Tokenise samples one at a time (each with as many image tokens as its image needs):
        prompt ids, answer ids, and the processor's image inputs (image files are decoded
        here, see `mcl.data.images.load_image`)."""
        if not samples:
            return []
        eos = self.tokenizer.eos_token_id
        answers = self.tokenizer([s.answer for s in samples], add_special_tokens=False).input_ids
        encoded = []
        for sample, answer in zip(samples, answers, strict=True):
            image = load_image(sample.image)
            if self.pad_to_square:
                image = self._pad_to_square(image)
            out = self.processor(images=[[image]], text=[self.prompt_text(sample.prompt)],
                                 return_tensors="pt")
            keep = out["attention_mask"][0].bool()
            item = {"prompt_ids": out["input_ids"][0][keep], "answer": sample.answer,
                    "match": sample.match, "reference": sample.scored_against}
            for key, value in out.items():
                if key in TEXT_KEYS or not isinstance(value, torch.Tensor):
                    continue
                if value.shape == out["input_ids"].shape:  # one value per token
                    item.setdefault("token_inputs", {})[key] = value[0][keep]
                else:  # per image rows as they are; per-sample tensors without the batch dim
                    item[key] = value if key in self.image_rows else value[0]
            if with_answer:
                item["answer_ids"] = torch.tensor([*answer, eos], dtype=torch.long)
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

    def _collate_images(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Image inputs of the items, sample-first and zero-padded to one shape."""
        skip = {"prompt_ids", "answer_ids", "answer", "match", "reference", "token_inputs"}
        batch = {}
        for key in [k for k in items[0] if k not in skip]:
            batch[key] = _pad_stack([it[key] for it in items])
            if key in self.image_rows:
                batch[f"{key}_rows"] = torch.tensor([len(it[key]) for it in items])
        return batch

    def _collate_tokens(self, items: Sequence[dict], seqs: Sequence[torch.Tensor],
                        left: bool) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and the per-token inputs, padded on the right (training)
        or the left (generation); per-token inputs are 0 on answer and padding positions."""
        length = max(len(s) for s in seqs)
        keys = list(items[0].get("token_inputs", {}))
        batch = {"input_ids": torch.full((len(items), length), self.tokenizer.pad_token_id,
                                         dtype=torch.long),
                 "attention_mask": torch.zeros((len(items), length), dtype=torch.long)}
        for key in keys:
            batch[key] = torch.zeros((len(items), length),
                                     dtype=items[0]["token_inputs"][key].dtype)
        for i, (it, seq) in enumerate(zip(items, seqs, strict=True)):
            span = slice(length - len(seq), length) if left else slice(0, len(seq))
            batch["input_ids"][i, span] = seq
            batch["attention_mask"][i, span] = 1
            for key in keys:
                values = it["token_inputs"][key]
                batch[key][i, span.start : span.start + len(values)] = values
        return batch

    def collate_train(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Right-padded prompt + answer; labels only on the answer tokens."""
        seqs = [torch.cat([it["prompt_ids"], it["answer_ids"]]) for it in items]
        batch = self._collate_tokens(items, seqs, left=False)
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for i, (it, seq) in enumerate(zip(items, seqs, strict=True)):
            labels[i, len(it["prompt_ids"]) : len(seq)] = it["answer_ids"]
        return {**batch, "labels": labels, **self._collate_images(items)}

    def collate_generate(self, items: Sequence[dict]) -> dict:
        """Left-padded prompts (generation appends on the right); references kept beside."""
        batch = self._collate_tokens(items, [it["prompt_ids"] for it in items], left=True)
        return {**batch, **self._collate_images(items),
                "answers": [it["answer"] for it in items], "match": [it["match"] for it in items],
                "references": [it["reference"] for it in items]}

    # ------------------------------------------------------------------ compute

    def forward(self, batch: dict[str, torch.Tensor], **kwargs):
        """Teacher-forced forward; returns the model output with `.loss` on the answer tokens."""
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch.get("labels"), **self.model_inputs(batch), **kwargs)

    def _greedy(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "do_sample": False,
                "pad_token_id": self.tokenizer.pad_token_id,
                "eos_token_id": self.tokenizer.eos_token_id}

    def _decode(self, new_tokens: torch.Tensor) -> list[str]:
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [t.strip() for t in texts]

    @torch.no_grad()
    def generate(self, batch: dict, **kwargs) -> list[str]:
        """Greedy answers for a left-padded batch, decoded without special tokens."""
        out = self.model.generate(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"],
                                  **self.model_inputs(batch), **self._greedy(), **kwargs)
        return self._decode(out[:, batch["input_ids"].shape[1] :])

    # ------------------------------------------------------------------ loading

    @classmethod
    def for_model_type(cls, model_type: str) -> type[VlmBackbone] | None:
        """The class of mcl's hooks for a checkpoint's `model_type`, if mcl has them."""
        return next((c for c in _families() if model_type in c.model_types), None)

    @classmethod
    def _from_source(cls, name: str, source: str, dtype: torch.dtype,
                     attn_implementation: str) -> tuple:
        model_type = AutoConfig.from_pretrained(source).model_type
        expected = cls.for_model_type(model_type)
        if expected is None:
            known = sorted(t for c in _families() for t in c.model_types)
            raise ValueError(f"backbone {name!r}: mcl has no hooks for model type "
                             f"{model_type!r} (known: {known}); add a subclass of "
                             "mcl.backbones.vlm.VlmBackbone naming it in model_types")
        if expected is not cls:
            raise ValueError(f"backbone {name!r} is a {model_type!r} checkpoint: set its "
                             f"_target_ to {expected.__module__}.{expected.__qualname__}.load "
                             f"(not {cls.__qualname__}), the class whose capabilities the "
                             "compatibility check read")
        model = AutoModelForImageTextToText.from_pretrained(
            source, dtype=dtype, attn_implementation=attn_implementation)
        with images_only():
            processor = AutoProcessor.from_pretrained(source)
        return model, processor

    @classmethod
    def load(cls, name: str, pretrained: str | None = None, tiny: dict | None = None,
             dtype: str = "float32", max_new_tokens: int = 8,
             attn_implementation: str = "sdpa", pad_to_square: bool = False,
             gradient_checkpointing: bool = False) -> VlmBackbone:
        """Load a backbone from a Hub id or local save_pretrained directory (`pretrained`), or
        the tiny model `tiny` describes (built by `tiny_builder` once and cached).

        `gradient_checkpointing` recomputes activations in the backward pass: more compute for a
        fraction of the activation memory (large models, long sequences).
        """
        model, processor = load_weights(
            name, pretrained, tiny, dtype, cls.tiny_builder,
            lambda source, torch_dtype: cls._from_source(name, source, torch_dtype,
                                                         attn_implementation))
        if gradient_checkpointing:
            # Non-reentrant: gradients still reach prompts and adapters when the base is frozen.
            model.gradient_checkpointing_enable({"use_reentrant": False})
        return cls(model, processor, name=name, max_new_tokens=max_new_tokens,
                   pad_to_square=pad_to_square)


def _families() -> list[type[VlmBackbone]]:
    """VlmBackbone and its family subclasses (LlavaBackbone lives in mcl.backbones.llava)."""
    import mcl.backbones.llava  # noqa: F401  (registers LlavaBackbone as a subclass)

    return [VlmBackbone, *VlmBackbone.__subclasses__()]


class Qwen2VlBackbone(VlmBackbone):
    """Qwen2-VL and Qwen2.5-VL: dynamic resolution (pixel rows per image, `image_grid_thw`),
    the merger inside the vision tower as the projector. No `Capability.EMBEDS`: the language
    model's M-RoPE positions are computed from `input_ids` and the image grid
    (`get_rope_index`), so a forward from input embeddings alone gives the image tokens text
    positions, a different computation than the model's."""

    capabilities = ALL - {Capability.EMBEDS}
    limitations = {Capability.EMBEDS: "Qwen2-VL's M-RoPE positions come from input_ids and the "
                   "image grid, which a forward from input embeddings does not have"}
    model_types = ("qwen2_vl", "qwen2_5_vl")
    image_rows = ("pixel_values", "image_grid_thw")
    # The interface's refusals (MissingCapability) in place of the generic embeddings path.
    embed, forward_embeds = Backbone.embed, Backbone.forward_embeds
    generate_embeds, text_context_length = Backbone.generate_embeds, Backbone.text_context_length

    def parts(self) -> dict[str, list[nn.Module]]:
        visual = self.model.model.visual
        return {"vision": [m for n, m in visual.named_children() if n != "merger"],
                "projector": [visual.merger],
                "llm": [self.model.model.language_model, self.model.lm_head]}


class InternVlBackbone(VlmBackbone):
    """InternVL (transformers-native, e.g. OpenGVLab/InternVL3-*-hf): a variable number of
    448 px tiles per image, concatenated over the batch."""

    model_types = ("internvl",)
    image_rows = ("pixel_values",)
