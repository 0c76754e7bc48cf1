"""The small tier (issue 15): backbone configs of width >= 512 built by the tiny builders, the
CLIP text positions a config may set (tiny keeps 32), and `--tier small` selecting the small
backbones and presets."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from mcl.backbones import tiny_clip

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))


def tiny_section(name: str) -> dict:
    cfg = OmegaConf.load(ROOT / "conf" / "backbone" / f"{name}.yaml")
    return OmegaConf.to_container(cfg.tiny, resolve=True)


def test_small_backbones_are_wide_with_64_image_tokens() -> None:
    for name in ("small_llava", "small_clip", "small_vit"):
        tiny = tiny_section(name)
        assert tiny["vision"]["hidden_size"] >= 512
        assert (tiny["vision"]["image_size"] // tiny["vision"]["patch_size"]) ** 2 == 64
        assert tiny_section(name) != tiny_section(name.replace("small", "tiny"))
    assert tiny_section("small_llava")["text"]["hidden_size"] >= 512


def test_clip_text_positions_default_32_and_settable() -> None:
    micro = tiny_section("tiny_clip_micro")
    processor = tiny_clip.build_processor(micro["vision"]["image_size"])
    assert tiny_clip.build_model(micro, processor).config.text_config.max_position_embeddings \
        == 32
    micro["text"]["max_position_embeddings"] = 77
    assert tiny_clip.build_model(micro, processor).config.text_config.max_position_embeddings \
        == 77


def test_small_tier_selects_small_presets_first() -> None:
    from sweep import method_choices, tier_presets

    assert tier_presets("tiny", ("_clip", "_tiny")) == ("_clip", "_tiny")
    assert tier_presets("small", ("_clip", "_tiny")) == ("_clip_small", "_small", "_clip",
                                                         "_tiny")
    # Classification: CoDyRA's and PromptFusion's small presets; L2P keeps its tiny one.
    assert method_choices(["rank_selective_lora", "prompt_fusion", "l2p", "zero_shot"],
                          tier_presets("small", ("_clip", "_tiny"))) == [
        "method=zero_shot",
        "experiment=rank_selective_lora_clip_small,prompt_fusion_small,l2p_tiny"]
    # Instruction: CoDyRA's small preset, Fwd-Prompt's tiny one (no small preset).
    assert method_choices(["rank_selective_lora", "fwd_prompt"], tier_presets("small", ("_tiny",))
                          ) == ["experiment=rank_selective_lora_small,fwd_prompt_tiny"]
