"""Per-sample image and instruction features that route or select (HiDe-LLaVA, ModalPrompt).

Both official codes (Ghy0501/HiDe-LLaVA and AuroraZengfh/ModalPrompt, llava/model/llava_arch.py
`prepare_inputs_labels_for_multimodal`, from the same group) take two frozen features per
sample: CLIP ViT-L/14-336's projected image embedding of the image, and CLIP's text-tower pooled
output of the instruction (the decoded prompt without the chat template's system line and the
answer). mcl's backbone interface has no second CLIP model, so both methods use what the
interface exposes (`Capability.EMBEDS`): the mean of the language model's input embeddings over
the image-feature positions (the projected vision features LLaVA feeds its LM) and over the
instruction's text tokens (`PooledGuide`, the default). Both are frozen (the projector and the
token table are not trained by these methods), so, as the CLIP features there, they do not move
while a task trains. `ClipGuide` is the papers' version: a frozen CLIP read from a local
directory (the official runs use openai/clip-vit-large-patch14-336, the tower LLaVA-1.5 is built
on, so the LLaVA processor's pixels are CLIP's own), the image feature its projected image
embedding (CLIPVisionModelWithProjection.image_embeds) and the text feature its text tower's
pooled output (CLIPTextModel.pooler_output) of the decoded instruction tokens; where the official
code strips the chat template's system line and the assistant turn from the decoded prompt, mcl
decodes the instruction-mask tokens, which still hold the template's fixed words (the same for
every sample).
"""

from __future__ import annotations

from pathlib import Path

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


class PooledGuide:
    """The default features: pooled LM input embeddings (`guide_features`)."""

    def dims(self, backbone) -> tuple[int, int]:
        width = backbone.input_embeddings().embedding_dim
        return width, width

    def __call__(self, backbone, batch: dict, embeds: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        return guide_features(backbone, batch, embeds)


class ClipGuide:
    """A frozen CLIP from a local `save_pretrained` directory (model + tokenizer): the projected
    image embedding of the batch's pixels and the text tower's pooled output of the decoded
    instruction. Kept outside the strategy's modules: neither trained nor checkpointed."""

    def __init__(self, path: str) -> None:
        if not Path(path).is_dir():
            raise FileNotFoundError(
                f"method.clip_encoder={path!r} is not a directory; give a local CLIP saved with "
                "save_pretrained (model + tokenizer, e.g. openai/clip-vit-large-patch14-336), or "
                "null to use the language model's own embeddings")
        from transformers import AutoTokenizer, CLIPModel

        self.model = CLIPModel.from_pretrained(path).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        config = self.model.config
        self.image_size = int(config.vision_config.image_size)
        # CLIP's 77-token context (the official max_length=77, truncation=True).
        self.max_length = min(77, int(config.text_config.max_position_embeddings))

    def dims(self, backbone) -> tuple[int, int]:
        config = self.model.config
        return int(config.projection_dim), int(config.text_config.hidden_size)

    @torch.no_grad()
    def __call__(self, backbone, batch: dict, embeds: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = batch["pixel_values"]
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            raise ValueError(f"method.clip_encoder reads {self.image_size}px images, but the "
                             f"backbone's processor gives {tuple(pixels.shape[-2:])}: use the "
                             "CLIP tower the backbone's processor is made for")
        device = pixels.device
        if next(self.model.parameters()).device != device:
            self.model.to(device)  # follows the backbone, which Lightning moves after setup
        dtype = next(self.model.parameters()).dtype
        vision = self.model.vision_model(pixel_values=pixels.to(dtype))
        image = self.model.visual_projection(vision.pooler_output)
        decode = backbone.tokenizer.decode
        mask = backbone.instruction_mask(batch)
        texts = [decode(ids[keep], skip_special_tokens=True).strip()
                 for ids, keep in zip(batch["input_ids"], mask, strict=True)]
        tokens = self.tokenizer(texts, padding="longest", max_length=self.max_length,
                                truncation=True, return_tensors="pt").to(device)
        text = self.model.text_model(input_ids=tokens["input_ids"],
                                     attention_mask=tokens["attention_mask"]).pooler_output
        return image.float(), text.float()


def make_guide(clip_encoder: str | None) -> PooledGuide | ClipGuide:
    """The features a method's `clip_encoder` option asks for."""
    return PooledGuide() if clip_encoder is None else ClipGuide(clip_encoder)
