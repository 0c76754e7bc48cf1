"""How well the routing features of HiDe-LLaVA and ModalPrompt tell the toy tasks apart (the
diagnosis of their toy rows, issue 12): per task, the share of its test samples whose nearest
task by HiDe's routing (mean of the image and instruction cosines to each task's anchors, the
anchors being its training samples' mean features) is its own, among the tasks trained right
after it (what the diagonal cell routes among) and among all of the stream's tasks (the last
row). No training: the features are the frozen backbone's (`method.clip_encoder=null`).

    python experiments/ablate_routing.py backbone=tiny_llava stream=toy_dataset

Prints a markdown table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from mcl.data.task import EncodedSamples
from mcl.run import CONFIG_DIR, build
from mcl.strategies.guide_features import PooledGuide
from mcl.strategies.hide_llava import routing_weights


def features(backbone, items: EncodedSamples, collate, batch_size: int = 64):
    guide, image, text = PooledGuide(), [], []
    for start in range(0, len(items), batch_size):
        batch = collate(list(items[start : start + batch_size]))
        i, t = guide(backbone, batch)
        image.append(i)
        text.append(t)
    return torch.cat(image), torch.cat(text)


def main() -> None:
    with initialize_config_dir(config_dir=str(Path(CONFIG_DIR).resolve()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["method=hide_llava", *sys.argv[1:]])
    L.seed_everything(cfg.seed, verbose=False)
    stream = build(cfg.stream, seed=cfg.seed)
    backbone = build(cfg.backbone, _convert_="all").eval()
    anchors, tests = [], []
    for task in stream.tasks:
        image, text = features(backbone, EncodedSamples(backbone, task.train, with_answer=True),
                               backbone.collate_train)
        anchors.append((image.mean(0), text.mean(0)))
        tests.append(features(backbone, EncodedSamples(backbone, task.test, with_answer=False),
                              backbone.collate_generate))
    image_anchors = torch.stack([a[0] for a in anchors])
    text_anchors = torch.stack([a[1] for a in anchors])
    print(f"{cfg.backbone.name} on {cfg.stream.name}, temperature {cfg.method.temperature}")
    print("| task | routed to itself right after training it | at the end | mean weight on "
          "itself at the end |")
    print("|---|---:|---:|---:|")
    for j, (image, text) in enumerate(tests):
        seen = routing_weights(image, text, image_anchors[: j + 1], text_anchors[: j + 1],
                               cfg.method.temperature)
        final = routing_weights(image, text, image_anchors, text_anchors, cfg.method.temperature)
        print(f"| {stream.tasks[j].name} | {100 * (seen.argmax(1) == j).float().mean():.1f}% | "
              f"{100 * (final.argmax(1) == j).float().mean():.1f}% | "
              f"{final[:, j].mean():.2f} |")


if __name__ == "__main__":
    main()
