"""Fwd-Prompt's subspaces measured on a backbone (issue 15, ablation a): the dimensions of the
pre-trained subspace (SVD of the input-embedding table), of the protected subspace after each
task (image-feature and instruction rows, GPM's energy criterion) and of the allowed subspace
each task's prompts may move in, next to the embedding width.

    python experiments/ablate_fwd_prompt.py backbone=tiny_llava stream=toy_dataset
    python experiments/ablate_fwd_prompt.py --untrained backbone=small_llava stream=toy_dataset

--untrained builds the backbone's architecture without pre-training it (a small tier on a CPU
where pre-training it would take too long): the embedding table is then random, which bounds the
pre-trained subspace by the vocabulary's size just the same. Prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mcl.run import CONFIG_DIR, build, build_method


def load_backbone(cfg, untrained: bool):
    if not untrained:
        return build(cfg.backbone, _convert_="all")
    from mcl.backbones import tiny_llava
    from mcl.backbones.llava import LlavaBackbone

    tiny = OmegaConf.to_container(cfg.backbone.tiny, resolve=True)
    processor = tiny_llava.build_processor(tiny["vision"]["image_size"],
                                           tiny["vision"]["patch_size"])
    return LlavaBackbone(tiny_llava.build_model(tiny, processor), processor,
                         name=f"{cfg.backbone.name} (untrained)")


def subspace_rows(cfg, untrained: bool) -> list[str]:
    L.seed_everything(cfg.seed, verbose=False)
    strategy = build_method(cfg)
    stream = build(cfg.stream, seed=cfg.seed)
    backbone = load_backbone(cfg, untrained)
    strategy.setup(backbone)
    width = backbone.input_embeddings().weight.shape[1]
    vocab = backbone.input_embeddings().weight.shape[0]
    rows = []
    for index, task in enumerate(stream.tasks):
        before = strategy.protected.shape[1]
        strategy.before_task(task, index)  # allowed for this task, then this task protected
        rows.append(f"| {backbone.name} | {width} | {vocab} | {task.name} | "
                    f"{strategy.pretrained.shape[1]} | {before} | {strategy.allowed.shape[1]} | "
                    f"{strategy.protected.shape[1]} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--untrained", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(Path(CONFIG_DIR).resolve()), version_base="1.3"):
        cfg = compose(config_name="config",
                      overrides=["experiment=fwd_prompt_tiny", *args.overrides])
    print(f"method.task_threshold {cfg.method.task_threshold}, "
          f"method.pretrained_threshold {cfg.method.pretrained_threshold}")
    print("| backbone | width d | vocabulary | task | pre-trained dims | protected before task "
          "| allowed while training it | protected after it |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    print("\n".join(subspace_rows(cfg, args.untrained)))


if __name__ == "__main__":
    main()
