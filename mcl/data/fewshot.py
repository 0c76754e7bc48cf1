"""k-shot training sets: `shots` training items of each class, drawn with a recorded seed.

How the published few-shot CLIP continual-learning protocols draw their shots:
- 5-shot MTIL (MoE-Adapters, Yu et al. CVPR 2024, JiazuoYu/MoE-Adapters4CL
  mtil/src/models/finetune.py, `--few_shot=5` in its few-shot scripts): one pass over ZSCL's
  shuffled full training split, keeping the first 5 images of each class; a class with fewer
  keeps all of them. Test splits are complete. Later
  work compares on this protocol (CoDyRA, Lu et al. 2024, reports a 5-shot MTIL table).
- X-TAIL (RAIL, Xu et al. NeurIPS 2024, linghan1997/Regression-based-Analytic-Incremental-
  Learning; CoDyRA's main.py, the same protocol): 16 shots per class, `random.sample` per class
  (CoOp's `generate_fewshot_dataset`, or `np.random.choice` for MNIST); a class with fewer than
  16 is filled by drawing 16 with replacement (CoOp's `repeat=True`).

mcl draws the same way from a generator of its own (`shots_seed`), not any repository's exact
draw (theirs hang on the global RNG state after model loading): a seeded permutation of the
training split, the first `shots` items of each class in it (MoE-Adapters' rule); with
`repeat`, a class short of `shots` gets `shots` draws with replacement from its items (CoOp's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def few_shot(items: Sequence[tuple], shots: int, seed: int, repeat: bool = False) -> list:
    """`shots` items (image, class name, ...) of each class, kept in listing order; a class
    with fewer keeps all its items, or with `repeat` gets `shots` draws with replacement from
    them. A pure function of (items, shots, seed, repeat)."""
    if shots <= 0:
        raise ValueError(f"train_shots must be a positive number of images per class, got "
                         f"{shots}; use train_shots=null for the full training split")
    rng = np.random.default_rng(seed)
    kept: dict[str, list[int]] = {}
    by_class: dict[str, list[int]] = {}
    for i in rng.permutation(len(items)).tolist():
        name = items[i][1]
        by_class.setdefault(name, []).append(i)
        if len(kept.setdefault(name, [])) < shots:
            kept[name].append(i)
    chosen = []
    for name, picks in kept.items():
        if repeat and len(picks) < shots:
            picks = rng.choice(by_class[name], size=shots, replace=True).tolist()
        chosen.extend(picks)
    return [items[i] for i in sorted(chosen)]


def shots_meta(shots: int | None, seed: int, repeat: bool) -> dict:
    """What a task records of its draw (meta["train_shots"]): None for the full split."""
    return {"train_shots": None if shots is None else
            {"per_class": shots, "seed": seed, "repeat": repeat}}
