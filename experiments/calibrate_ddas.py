"""MoE-Adapters' DDAS on a toy stream: each task's autoencoder's reconstruction error on every
task's test images (rows: autoencoder, columns: test images), with the quantiles a threshold
must separate: in-distribution (diagonal) vs the other tasks' images.

    python experiments/calibrate_ddas.py                      # tiny_clip, toy_mtil
    python experiments/calibrate_ddas.py stream.train_size=50 stream.test_size=20

It also prints how often each task's own test images, and other tasks' images, fall above the
preset's per-autoencoder thresholds (conf/experiment/moe_adapters_clip.yaml).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]


def main(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["backbone=tiny_clip", "stream=toy_mtil",
                                                       "experiment=moe_adapters_clip",
                                                       *overrides])
    torch.manual_seed(0)
    backbone = instantiate(cfg.backbone, _convert_="all")
    stream = instantiate(cfg.stream, seed=cfg.seed, _convert_="all")
    from mcl.strategies.base import build_strategy

    options = {k: v for k, v in dict(cfg.method).items() if k != "name"}
    strategy = build_strategy("moe_adapters", **options)
    strategy.setup(backbone)
    for i, task in enumerate(stream.tasks):
        strategy.before_task(task, i)
        strategy._train_selector(task, i)
    errors = []
    for task in stream.tasks:
        items = backbone.encode(task.test, with_answer=False)
        x = strategy.ddas_features(torch.stack([it["pixel_values"] for it in items]))
        with torch.no_grad():
            errors.append(torch.stack([auto.error(x) for auto in strategy.selectors]))
    names = [t.name for t in stream.tasks]
    print("mean error | " + " | ".join(names))
    inside, outside = [], []
    for a, name in enumerate(names):
        row = [errors[t][a] for t in range(len(names))]
        print(f"{name} | " + " | ".join(f"{r.mean():.4g}" for r in row))
        inside.append(row[a])
        outside += [r for t, r in enumerate(row) if t != a]
    inside, outside = torch.cat(inside), torch.cat(outside)
    print(f"in-distribution error: median {inside.median():.4g}, 95% {inside.quantile(0.95):.4g}")
    print(f"other tasks' images:   5% {outside.quantile(0.05):.4g}, median {outside.median():.4g}")
    for name, task in zip(names, stream.tasks, strict=True):
        items = backbone.encode(task.test, with_answer=False)
        routes = strategy.routes(torch.stack([it["pixel_values"] for it in items]))
        print(f"{name}: DDAS routes of its test images: "
              f"{torch.bincount(routes + 1, minlength=len(names) + 1).tolist()} "
              "(zero-shot, task 0, task 1, ...)")


if __name__ == "__main__":
    main(sys.argv[1:])
