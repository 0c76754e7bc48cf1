"""CoDyRA's schedules at a toy task's length (issue 15, ablation b): the learning rate, the
kappa staircase and what the official proximal step alone does to N(0, 1) gates (the gates'
initialisation, mcl/adapters/gated_lora.py) over one task, for the official 500 iterations and
the toy presets' task lengths. No training: the schedule functions of mcl's CoDyRA only.

    python experiments/ablate_codyra_schedule.py

Gradients also move the gates, so "zeroed by shrinkage alone" is what the penalty can remove
unaided; a gate the task needs is pushed back out by its gradient.
"""

from __future__ import annotations

import math

import torch

from mcl.strategies.rank_selective_lora import kappa_schedule, official_proximal

# (what, optimiser steps per task, lr, max_kappa); the presets' own numbers.
CASES = [
    ("official CLIP recipe (runner_codyra.sh: 500 iterations)", 500, 5.0e-4, 5.0e-3),
    ("rank_selective_lora_tiny, toy_dataset (1000 x 3 epochs / 32)", 94, 3.0e-3, 3.0e-2),
    ("rank_selective_lora_clip, toy streams (200 x 5 epochs / 32)", 30, 1.0e-3, 1.0e-2),
    ("official max_kappa at the toy length (94 steps)", 94, 3.0e-3, 5.0e-3),
]


def simulate(steps: int, max_kappa: float, gates: int = 100_000, seed: int = 0) -> tuple:
    """Fraction of N(0, 1) gates the official proximal step zeroes over `steps` steps, the
    first step with kappa > 0, and the sum of kappa over the task."""
    g = torch.randn(gates, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    first, total = None, 0.0
    for step in range(1, steps + 1):  # the strategy counts steps from 1 after each step
        kappa = kappa_schedule(step, steps, max_kappa, 0.5, 50)
        if kappa > 0:
            first = first or step
            total += kappa
            g = official_proximal(g, kappa)
    return float((g == 0).double().mean()), first, total


def main() -> None:
    print("| case | steps/task | lr | max_kappa | lr at 50% / 90% of the task | first step with "
          "kappa>0 | sum of kappa | gates zeroed by shrinkage alone |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for name, steps, lr, max_kappa in CASES:
        zeroed, first, total = simulate(steps, max_kappa)
        lrs = [lr * 0.5 * (1 + math.cos(math.pi * f)) for f in (0.5, 0.9)]
        print(f"| {name} | {steps} | {lr:g} | {max_kappa:g} | {lrs[0]:.2g} / {lrs[1]:.2g} | "
              f"{first} | {total:.3f} | {zeroed:.1%} |")


if __name__ == "__main__":
    main()
