"""The backbone interface: everything a strategy may ask of a model, and nothing else.

A backbone is an `nn.Module` that turns `Sample`s into batches, runs them, answers, and exposes
named capabilities. Strategies use only the members below (never `backbone.model`, a processor,
a config path, getattr or hasattr), so a method written once runs on every backbone that has the
capabilities it declares, and a new backbone family (another VLM through transformers' Auto
classes, with its own chat template and any number of image tokens per sample) serves every
method by implementing these members.

Class-level, known before any weight is loaded (the compatibility check, `mcl.compatibility`,
reads them from the backbone class a config names; `BackboneSpec.of(cls, name)` holds them):

- `family: Family`: "instruction" (answers in generated text) or "classification" (scores a
  label space).
- `capabilities: frozenset[Capability]`: which optional groups of members below it implements.
- `part_names: tuple[str, ...]`: its parts, e.g. ("vision", "projector", "llm") or
  ("vision", "text", "head").
- `IGNORE_INDEX`: the label value a teacher-forced loss skips (prompt, image and padding
  positions).

Every backbone (abstract here):

- `name: str`; `encode(samples, with_answer) -> list[dict]` (one item per sample: tokenised
  prompt, pixels, answer, scorer); `collate_train(items) -> dict` and
  `collate_generate(items) -> dict` (batches; a generation batch keeps `answers`, `match` and
  optionally `references`); `forward(batch)` (an output with `.loss`, and `.logits` for
  classification); `generate(batch) -> list[str]`.
- `extra_state() -> dict` / `load_extra_state(state)`: backbone state beyond parameters that
  every strategy checkpoint carries (ViT: which head row is which class). Default: none.
- `head_parameters() -> list[nn.Parameter]`: weights without a pre-trained value that every
  training method trains beside its own (ViT's head). Default: none.

`Capability.PARTS`: `parts() -> dict[str, list[nn.Module]]` (by role), `part_parameters(names)`.

`Capability.LINEAR_LAYERS` (LoRA-style methods): `linear_layer_names(parts) -> list[str]`, the
nn.Linear layers inside those parts (an output head excluded), named relative to
`adapter_root()`, the module an adapter library injects into (peft's
`inject_adapter_in_model(config, backbone.adapter_root())`); `linear_layer(name) -> nn.Linear`.

`Capability.INPUT_EMBEDDINGS`: `input_embeddings() -> nn.Embedding` (the language model's token
table); `tokenizer` (decodes `input_ids`).

`Capability.EMBEDS` (prompts in the language model's input, instruction family): where prompts
go is the input-embedding sequence. `embed(batch) -> [B, L, H]` gives it with the image features
already in place of the image tokens (as many as the model uses for each image: LLaVA-1.5 a fixed
576, others vary per image: a strategy never assumes a count, it reads positions from the masks);
`forward_embeds(inputs_embeds, attention_mask, labels=None)` and
`generate_embeds(inputs_embeds, attention_mask) -> list[str]` run a (possibly extended)
sequence. Labels are IGNORE_INDEX outside the answer. `text_context_length` (positions the
language model takes).

`Capability.TOKEN_MASKS` (instruction family): `instruction_mask(batch)` is True at the prompt's
text tokens (no image block, padding or answer token), `image_mask(batch)` at the image-feature
positions. Separate from EMBEDS: a backbone that cannot run from input embeddings (Qwen2-VL) can
still say which tokens are the instruction.

`limitations` (class-level, {capability: why}): why a backbone lacks a capability, for the
compatibility check's refusal.

`Capability.DECODER_LAYERS`: `decoder_layers() -> nn.ModuleList`, the language model's layers in
order (for methods that hook or wrap a projection of every layer).

`Capability.VISION_PROMPTS` (classification family; prompt / prefix tuning of the image tower):
`hidden_size` (token width), `num_layers`, `feature_dim` (D), `image_size` (pixels per side the
processor gives), `image_processor`; `query(pixels) -> [B, D]` (frozen, no prompts, no grad);
`encode_image(pixels, prompts=None, prefixes=None) -> [B, D]`, `prompts` [B, P, H] inserted
after CLS before the first layer, `prefixes = {layer: (key, value)}` each [B, Lp, H] prepended to
that layer's attention keys and values (see `mcl.backbones.classification`);
`logits(features, classes) -> [B, C]`; `predict(logits, classes) -> list[str]`.

`Capability.LABEL_PROMPTS` (a text tower over class names, CLIP): `encode_text(classes,
context=None) -> [C, D]` (`context` [M, H_text]: CoOp vectors replacing the template words),
`text_hidden_size`, `text_context_length` (positions of the text tower), `logit_scale`,
`tokenizer`.

A member of a capability a backbone lacks raises `MissingCapability` naming it; strategies
declare what they need in `requires`, so the check refuses the pair before that can happen.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from mcl.data.task import Sample

IGNORE_INDEX = -100  # label value the loss skips (prompt, image and padding positions)

Family = Literal["instruction", "classification"]
FAMILIES: tuple[Family, ...] = ("instruction", "classification")
Prefixes = dict[int, tuple[torch.Tensor, torch.Tensor]]


class Capability(StrEnum):
    """Optional groups of backbone members (see the module docstring). A StrEnum: a member
    equals its string, so `requires = frozenset({"parts"})` still means `Capability.PARTS`."""

    PARTS = "parts"
    LINEAR_LAYERS = "linear_layers"
    INPUT_EMBEDDINGS = "input_embeddings"
    EMBEDS = "embeds"
    TOKEN_MASKS = "token_masks"
    DECODER_LAYERS = "decoder_layers"
    GENERATE = "generate"
    VISION_PROMPTS = "vision_prompts"
    LABEL_PROMPTS = "label_prompts"


# The members each capability promises (a backbone that declares one overrides all of them).
CAPABILITY_MEMBERS: dict[Capability, tuple[str, ...]] = {
    Capability.PARTS: ("parts",),
    Capability.LINEAR_LAYERS: ("adapter_root",),
    Capability.INPUT_EMBEDDINGS: ("input_embeddings", "tokenizer"),
    Capability.EMBEDS: ("embed", "forward_embeds", "generate_embeds", "text_context_length"),
    Capability.TOKEN_MASKS: ("instruction_mask", "image_mask"),
    Capability.DECODER_LAYERS: ("decoder_layers",),
    Capability.GENERATE: (),
    Capability.VISION_PROMPTS: ("hidden_size", "num_layers", "feature_dim", "image_size",
                                "query", "encode_image", "logits"),
    Capability.LABEL_PROMPTS: ("encode_text", "text_hidden_size", "text_context_length",
                               "logit_scale", "tokenizer"),
}


class MissingCapability(NotImplementedError):
    """A strategy used a member of a capability its backbone does not have."""


@dataclass(frozen=True)
class BackboneSpec:
    """What is known of a backbone before its weights load: enough for every check."""

    name: str
    family: Family
    capabilities: frozenset[str]
    part_names: tuple[str, ...]
    limitations: tuple[tuple[str, str], ...] = ()  # (capability, why it is missing)

    @classmethod
    def of(cls, backbone_cls: type[Backbone], name: str) -> BackboneSpec:
        if not (isinstance(backbone_cls, type) and issubclass(backbone_cls, Backbone)):
            raise ValueError(f"backbone {name!r}: {backbone_cls!r} is not an mcl backbone "
                             "(a subclass of mcl.backbones.base.Backbone)")
        return cls(name, backbone_cls.family, frozenset(backbone_cls.capabilities),
                   tuple(backbone_cls.part_names),
                   tuple(sorted(backbone_cls.limitations.items())))

    @classmethod
    def of_target(cls, target: str, name: str) -> BackboneSpec:
        """The spec of the backbone a config's `_target_` (`Class.load`) names."""
        from hydra.utils import get_method

        try:
            loader = get_method(target)
        except Exception as err:
            raise ValueError(f"backbone {name!r}: _target_ {target!r} cannot be imported: "
                             f"{err}") from err
        return cls.of(getattr(loader, "__self__", loader), name)


def _missing(backbone: Backbone, member: str, capability: Capability) -> MissingCapability:
    return MissingCapability(f"backbone {backbone.name!r} has no {member!r}: it lacks the "
                             f"capability {capability.value!r}")


class Backbone(nn.Module, ABC):
    """The interface every backbone implements (documented in the module docstring)."""

    family: ClassVar[Family]
    capabilities: ClassVar[frozenset[str]] = frozenset()
    part_names: ClassVar[tuple[str, ...]] = ()
    limitations: ClassVar[dict[str, str]] = {}
    IGNORE_INDEX: ClassVar[int] = IGNORE_INDEX
    name: str

    @property
    def spec(self) -> BackboneSpec:
        return BackboneSpec.of(type(self), self.name)

    # ------------------------------------------------------------------ every backbone

    @abstractmethod
    def encode(self, samples: Sequence[Sample], with_answer: bool) -> list[dict]: ...

    @abstractmethod
    def collate_train(self, items: Sequence[dict]) -> dict: ...

    @abstractmethod
    def collate_generate(self, items: Sequence[dict]) -> dict: ...

    @abstractmethod
    def forward(self, batch: dict) -> Any: ...

    @abstractmethod
    def generate(self, batch: dict) -> list[str]: ...

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what `extra_state` returned."""

    def head_parameters(self) -> list[nn.Parameter]:
        return []

    # ------------------------------------------------------------------ PARTS

    def parts(self) -> dict[str, list[nn.Module]]:
        raise _missing(self, "parts", Capability.PARTS)

    def part_parameters(self, names: Sequence[str]) -> Iterator[nn.Parameter]:
        """The parameters of the named parts (a ValueError naming the valid ones)."""
        valid = self.parts()
        for name in names:
            if name not in valid:
                raise ValueError(f"unknown backbone part {name!r} of {self.name!r}; valid parts: "
                                 f"{sorted(valid)}")
            for module in valid[name]:
                yield from module.parameters()

    # ------------------------------------------------------------------ LINEAR_LAYERS

    def adapter_root(self) -> nn.Module:
        raise _missing(self, "adapter_root", Capability.LINEAR_LAYERS)

    def output_head(self) -> nn.Module | None:
        """A linear output layer inside the parts that adapters leave alone (an LM head)."""
        return None

    def linear_layer_names(self, parts: Sequence[str]) -> list[str]:
        """Names (relative to `adapter_root()`) of the nn.Linear layers inside `parts`, the output
        head excluded: the layers a LoRA-style method may wrap."""
        valid = self.parts()
        unknown = [p for p in parts if p not in valid]
        if unknown:
            raise ValueError(f"unknown backbone parts {unknown} of {self.name!r}; valid parts: "
                             f"{sorted(valid)}")
        wanted = {id(m) for part in parts for module in valid[part]
                  for m in module.modules() if isinstance(m, nn.Linear)}
        head = self.output_head()
        if head is not None:
            wanted.discard(id(head))
        return [n for n, m in self.adapter_root().named_modules() if id(m) in wanted]

    def linear_layer(self, name: str) -> nn.Module:
        """The layer `linear_layer_names` calls `name`."""
        return self.adapter_root().get_submodule(name)

    # ------------------------------------------------------------------ INPUT_EMBEDDINGS

    def input_embeddings(self) -> nn.Embedding:
        raise _missing(self, "input_embeddings", Capability.INPUT_EMBEDDINGS)

    @property
    def tokenizer(self):
        raise _missing(self, "tokenizer", Capability.INPUT_EMBEDDINGS)

    # ------------------------------------------------------------------ EMBEDS

    def embed(self, batch: dict) -> torch.Tensor:
        raise _missing(self, "embed", Capability.EMBEDS)

    def forward_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                       labels: torch.Tensor | None = None, **kwargs) -> Any:
        raise _missing(self, "forward_embeds", Capability.EMBEDS)

    def generate_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                        **kwargs) -> list[str]:
        raise _missing(self, "generate_embeds", Capability.EMBEDS)

    def instruction_mask(self, batch: dict) -> torch.Tensor:
        raise _missing(self, "instruction_mask", Capability.TOKEN_MASKS)

    def image_mask(self, batch: dict) -> torch.Tensor:
        raise _missing(self, "image_mask", Capability.TOKEN_MASKS)

    def decoder_layers(self) -> nn.ModuleList:
        raise _missing(self, "decoder_layers", Capability.DECODER_LAYERS)

    @property
    def text_context_length(self) -> int:
        raise _missing(self, "text_context_length", Capability.EMBEDS)

    # ------------------------------------------------------------------ VISION_PROMPTS

    @property
    def hidden_size(self) -> int:
        raise _missing(self, "hidden_size", Capability.VISION_PROMPTS)

    @property
    def num_layers(self) -> int:
        raise _missing(self, "num_layers", Capability.VISION_PROMPTS)

    @property
    def feature_dim(self) -> int:
        raise _missing(self, "feature_dim", Capability.VISION_PROMPTS)

    @property
    def image_size(self) -> int:
        raise _missing(self, "image_size", Capability.VISION_PROMPTS)

    def query(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise _missing(self, "query", Capability.VISION_PROMPTS)

    def encode_image(self, pixel_values: torch.Tensor, prompts: torch.Tensor | None = None,
                     prefixes: Prefixes | None = None) -> torch.Tensor:
        raise _missing(self, "encode_image", Capability.VISION_PROMPTS)

    def logits(self, features: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        raise _missing(self, "logits", Capability.VISION_PROMPTS)

    def predict(self, logits: torch.Tensor, classes: Sequence[str]) -> list[str]:
        """Class names of the arg-max logits."""
        return [classes[i] for i in logits.argmax(-1).tolist()]

    # ------------------------------------------------------------------ LABEL_PROMPTS

    def encode_text(self, class_names: Sequence[str], context: torch.Tensor | None = None
                    ) -> torch.Tensor:
        raise _missing(self, "encode_text", Capability.LABEL_PROMPTS)

    @property
    def text_hidden_size(self) -> int:
        raise _missing(self, "text_hidden_size", Capability.LABEL_PROMPTS)

    @property
    def logit_scale(self) -> torch.Tensor:
        raise _missing(self, "logit_scale", Capability.LABEL_PROMPTS)
