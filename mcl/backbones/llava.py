"""LLaVA-1.5 backbones: `mcl.backbones.vlm.VlmBackbone` on a `LlavaForConditionalGeneration`.

One loading path serves every size: `from_pretrained` on a Hugging Face id (`llava-hf/...`) or a
local directory. The built-in `tiny_llava` is that same path on a directory that
`mcl.backbones.tiny_llava` builds and pre-trains once on the toy world and then caches.
LLaVA-1.5's own behaviour is the generic class's: its processor's chat template, and the
pad-to-square of its training (`pad_to_square: true` in the llava_1_5 presets).
"""

from __future__ import annotations

import torch

from mcl.backbones.base import IGNORE_INDEX
from mcl.backbones.vlm import VlmBackbone
from mcl.generation import GreedyDecoder

__all__ = ["IGNORE_INDEX", "LlavaBackbone"]


class LlavaBackbone(VlmBackbone):
    """A `LlavaForConditionalGeneration` with its processor: parts `vision`, `projector`,
    `llm`, a fixed number of image tokens per image."""

    model_types = ("llava",)
    tiny_builder = "mcl.backbones.tiny_llava"  # builds + pre-trains the tiny model (mcl.pretrain)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # "static": mcl.generation's static cache + CUDA graphs (LLaVA's plain 1-D positions make
        # its prefill generate's, tested token for token); "hf": transformers' generate (its
        # dynamic cache), the reference path. Chosen by `evaluation.backend` (mcl.engines).
        self.decoding = "static"
        self._decoder: GreedyDecoder | None = None

    @torch.no_grad()
    def generate(self, batch: dict, **kwargs) -> list[str]:
        """Greedy answers for a left-padded batch, decoded without special tokens."""
        return self._decode(self._new_tokens(batch["attention_mask"], input_ids=batch["input_ids"],
                                             **self.model_inputs(batch), **kwargs))

    @torch.no_grad()
    def generate_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                        **kwargs) -> list[str]:
        """Greedy answers from left-padded input embeddings (see `embed`)."""
        return self._decode(self._new_tokens(attention_mask, inputs_embeds=inputs_embeds,
                                             **kwargs))

    def _new_tokens(self, attention_mask: torch.Tensor, min_new_tokens: int = 0,
                    **inputs) -> torch.Tensor:
        """The generated token ids alone, by the decoding path `self.decoding` names."""
        if self.decoding == "hf":
            out = self.model.generate(attention_mask=attention_mask,
                                      min_new_tokens=min_new_tokens, **self._greedy(), **inputs)
            # With only embeddings given, generate returns the new tokens alone.
            return out if "input_ids" not in inputs else out[:, inputs["input_ids"].shape[1] :]
        if self._decoder is None:
            self._decoder = GreedyDecoder(self.model, self.model.model.language_model,
                                          self.model.lm_head, self.tokenizer.eos_token_id,
                                          self.tokenizer.pad_token_id)
        return self._decoder.generate(attention_mask, self.max_new_tokens, min_new_tokens,
                                      **inputs)
