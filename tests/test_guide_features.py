"""The routing / selection features of hide_llava and modal_prompt: pooled embeddings and CLIP."""

import pytest
import torch
from conftest import method_options

from mcl.backbones import tiny_clip
from mcl.data import toy_world
from mcl.data.task import Task
from mcl.strategies.guide_features import ClipGuide, guide_features
from mcl.strategies.hide_llava import HideLlava
from mcl.strategies.modal_prompt import ModalPrompt

MICRO_CLIP = {"vision": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
              "text": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2},
              "projection_dim": 16, "pretrain": {"seed": 0}}


def _batch(backbone, n: int = 3) -> dict:
    samples = toy_world.generate("capability_recognition", n, 0, "train")
    return backbone.collate_train(backbone.encode(samples, with_answer=True))


def _clip_dir(tmp_path, projection_dim: int = 16):
    processor = tiny_clip.build_processor(32)
    model = tiny_clip.build_model(dict(MICRO_CLIP, projection_dim=projection_dim), processor)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    return str(tmp_path)


def test_pooled_features_are_the_mean_embeddings_of_image_and_instruction(micro_backbone):
    batch = _batch(micro_backbone)
    embeds = micro_backbone.embed(batch)
    image, text = guide_features(micro_backbone, batch)
    for b in range(3):
        img = micro_backbone.image_mask(batch)[b]
        ins = micro_backbone.instruction_mask(batch)[b]
        assert img.any() and ins.any() and not (img & ins).any()
        torch.testing.assert_close(image[b], embeds[b, img].mean(0))
        torch.testing.assert_close(text[b], embeds[b, ins].mean(0))


def test_clip_features_are_its_image_embedding_and_pooled_instruction_text(micro_backbone,
                                                                             tmp_path):
    guide = ClipGuide(_clip_dir(tmp_path))
    batch = _batch(micro_backbone)
    image, text = guide(micro_backbone, batch)
    model = guide.model
    with torch.no_grad():
        expected_image = model.visual_projection(
            model.vision_model(pixel_values=batch["pixel_values"]).pooler_output)
        mask = micro_backbone.instruction_mask(batch)
        words = [micro_backbone.tokenizer.decode(ids[m], skip_special_tokens=True).strip()
                 for ids, m in zip(batch["input_ids"], mask, strict=True)]
        tokens = guide.tokenizer(words, padding="longest", return_tensors="pt")
        expected_text = model.text_model(**tokens).pooler_output
    torch.testing.assert_close(image, expected_image)
    torch.testing.assert_close(text, expected_text)
    assert guide.dims(micro_backbone) == (16, 16)


def test_both_methods_run_on_clip_features_and_refuse_a_missing_directory(micro_backbone,
                                                                          tmp_path):
    path = _clip_dir(tmp_path / "clip")
    hide = HideLlava(**method_options("hide_llava", max_tasks=2, clip_encoder=path))
    hide.setup(micro_backbone)
    train = toy_world.generate("capability_recognition", 4, 0, "train")
    hide.after_task(Task("a", train, []), 0)
    assert hide.image_anchors.shape == (2, 16)
    assert hide.routing(_batch(micro_backbone)).shape == (3, 1)
    with pytest.raises(FileNotFoundError, match="method.clip_encoder=.*not a directory"):
        ModalPrompt(**method_options("modal_prompt", clip_encoder=str(tmp_path / "none")))
    other = _clip_dir(tmp_path / "wide", projection_dim=24)  # image 24 wide, text 16
    prompt = ModalPrompt(**method_options("modal_prompt", max_tasks=2, clip_encoder=other))
    with pytest.raises(ValueError, match="same width"):
        prompt.setup(micro_backbone)
