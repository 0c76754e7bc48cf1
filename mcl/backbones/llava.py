"""LLaVA-1.5 backbones: `mcl.backbones.vlm.VlmBackbone` on a `LlavaForConditionalGeneration`.

One loading path serves every size: `from_pretrained` on a Hugging Face id (`llava-hf/...`) or a
local directory. The built-in `tiny_llava` is that same path on a directory that
`mcl.backbones.tiny_llava` builds and pre-trains once on the toy world and then caches.
LLaVA-1.5's own behaviour is the generic class's: its processor's chat template, and the
pad-to-square of its training (`pad_to_square: true` in the llava_1_5 presets).
"""

from __future__ import annotations

from mcl.backbones.base import IGNORE_INDEX
from mcl.backbones.vlm import VlmBackbone

__all__ = ["IGNORE_INDEX", "LlavaBackbone"]


class LlavaBackbone(VlmBackbone):
    """A `LlavaForConditionalGeneration` with its processor: parts `vision`, `projector`,
    `llm`, a fixed number of image tokens per image."""

    model_types = ("llava",)
    tiny_builder = "mcl.backbones.tiny_llava"  # builds + pre-trains the tiny model (mcl.pretrain)
