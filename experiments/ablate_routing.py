"""How well the routing features of HiDe-LLaVA and ModalPrompt tell the toy tasks apart (the
diagnosis of their toy rows, issue 12): per task, the share of its test samples whose nearest
task by HiDe's routing (hide_llava's own `after_task` anchors and `routing`) is its own,
among the tasks trained up to it (what the diagonal cell routes among) and among all of the
stream's tasks (the last row). No training: the features are the frozen backbone's
(`method.clip_encoder=null`).

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
from mcl.run import CONFIG_DIR, build, build_method


@torch.no_grad()
def routing(strategy, task, trained: int, batch_size: int = 64) -> torch.Tensor:
    """[test samples, trained] HiDe's routing weights of `task`'s test samples over the first
    `trained` tasks' anchors."""
    backbone, strategy.trained = strategy.backbone, trained
    items = EncodedSamples(backbone, task.test, with_answer=False)
    return torch.cat([strategy.routing(backbone.collate_generate(list(items[i : i + batch_size])))
                      for i in range(0, len(items), batch_size)])


def main() -> None:
    with initialize_config_dir(config_dir=str(Path(CONFIG_DIR).resolve()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["method=hide_llava", *sys.argv[1:]])
    L.seed_everything(cfg.seed, verbose=False)
    stream = build(cfg.stream, seed=cfg.seed)
    strategy = build_method(cfg)
    strategy.setup(build(cfg.backbone, _convert_="all").eval())
    for index, task in enumerate(stream.tasks):  # the anchors, as after training each task
        strategy.after_task(task, index)
    tasks = len(stream.tasks)
    print(f"{cfg.backbone.name} on {cfg.stream.name}, temperature {cfg.method.temperature}")
    print("| task | routed to itself right after training it | at the end | mean weight on "
          "itself at the end |")
    print("|---|---:|---:|---:|")
    for j, task in enumerate(stream.tasks):
        seen, final = routing(strategy, task, j + 1), routing(strategy, task, tasks)
        print(f"| {task.name} | {100 * (seen.argmax(1) == j).float().mean():.1f}% | "
              f"{100 * (final.argmax(1) == j).float().mean():.1f}% | "
              f"{final[:, j].mean():.2f} |")


if __name__ == "__main__":
    main()
