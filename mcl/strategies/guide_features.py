"""Per-sample image and instruction features that route or select (HiDe-LLaVA, ModalPrompt).

Both official codes (Ghy0501/HiDe-LLaVA and AuroraZengfh/ModalPrompt, llava/model/llava_arch.py
`prepare_inputs_labels_for_multimodal`, from the same group) take two frozen features per
sample: CLIP ViT-L/14-336's projected image embedding of the image, and CLIP's text-tower pooled
output of the instruction (the decoded prompt without the chat template's system line and the
answer). mcl's backbone interface has no second CLIP model, so both methods use what the
interface exposes (`Capability.EMBEDS`): the mean of the language model's input embeddings over
the image-feature positions (the projected vision features LLaVA feeds its LM) and over the
instruction's text tokens. Both are frozen (the projector and the token table are not trained by
these methods), so, as the CLIP features there, they do not move while a task trains.
"""

from __future__ import annotations

import torch


def masked_mean(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `embeds` [B, L, H] over the True positions of `mask` [B, L] (zero where none)."""
    weights = mask.unsqueeze(-1).to(embeds.dtype)
    return (embeds * weights).sum(1) / weights.sum(1).clamp_min(1.0)


@torch.no_grad()
def guide_features(backbone, batch: dict, embeds: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(image [B, H], instruction [B, H]) features of a batch, in float32; `embeds` is the
    batch's `backbone.embed(batch)` where the caller has it already."""
    if embeds is None:
        embeds = backbone.embed(batch)
    embeds = embeds.detach().float()
    return (masked_mean(embeds, backbone.image_mask(batch)),
            masked_mean(embeds, backbone.instruction_mask(batch)))
