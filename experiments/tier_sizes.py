"""Parameter counts of the tiny and small toy-world tiers (untrained builds; no pre-training).

    python experiments/tier_sizes.py
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from mcl.backbones import tiny_clip, tiny_llava, tiny_vit

CONF = Path(__file__).resolve().parents[1] / "conf" / "backbone"


def tiny_section(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml").tiny, resolve=True)


def millions(module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f}M"


def main() -> None:
    print("| backbone | parameters | of which |")
    print("|---|---:|---|")
    for tier in ("tiny", "small"):
        c = tiny_section(f"{tier}_llava")
        model = tiny_llava.build_model(c, tiny_llava.build_processor(c["vision"]["image_size"],
                                                                     c["vision"]["patch_size"]))
        print(f"| {tier}_llava | {millions(model)} | vision {millions(model.model.vision_tower)}"
              f", LM {millions(model.model.language_model)} |")
        c = tiny_section(f"{tier}_clip")
        clip = tiny_clip.build_model(c, tiny_clip.build_processor(c["vision"]["image_size"]))
        print(f"| {tier}_clip | {millions(clip)} | vision {millions(clip.vision_model)}, "
              f"text {millions(clip.text_model)} |")
        print(f"| {tier}_vit | {millions(tiny_vit.build_model(tiny_section(f'{tier}_vit')))} | |")


if __name__ == "__main__":
    main()
