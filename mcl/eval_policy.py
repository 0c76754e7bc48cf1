"""Evaluation policies for long streams: which cells of the accuracy matrix R an evaluation fills,
and on how many samples of each test set.

- `full` (default): every task after every task, on the whole test sets ((T+1) x T cells).
- `seen_next`: the zero-shot row whole (FWT's baseline R[0, j] for every task), then after
  task i the tasks seen so far and the next one (columns 0..i); the final row is complete.
  Enough for last, average incremental accuracy, forgetting, BWT and FWT; MTIL's Transfer and
  Avg. need the untrained upper triangle and are reported as not measured.
- `subset`: every cell, but rows before the last on a fixed seeded subset of `subset_size`
  samples of each test set (the same samples in every row, so differences between rows compare
  like with like); the final row always on the whole test sets.

A metric is "not measured" when its formula reads a cell the policy leaves empty: found by
changing the empty cells and seeing whether the metric moves, so no formula is restated here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcl.metrics.continual import compute_metrics

POLICIES = ("full", "seen_next", "subset")


@dataclass
class EvalConfig:
    """The `evaluation` config group."""

    policy: str = "full"
    subset_size: int = 200  # policy `subset`: samples per test set in the rows before the last
    subset_seed: int = 0
    backend: str = "static"  # static | hf | vllm (mcl.engines)

    def __post_init__(self) -> None:
        from mcl.engines import check_backend

        if self.policy not in POLICIES:
            raise ValueError(f"evaluation.policy={self.policy!r} is not one of {POLICIES}")
        if self.policy == "subset" and self.subset_size < 1:
            raise ValueError(f"evaluation.subset_size must be >= 1, got {self.subset_size}")
        check_backend(self.backend)


def planned_cells(cfg: EvalConfig, num_tasks: int) -> np.ndarray:
    """Boolean (T + 1, T) mask of the cells the policy evaluates."""
    mask = np.ones((num_tasks + 1, num_tasks), dtype=bool)
    if cfg.policy == "seen_next":
        for i in range(1, num_tasks):
            mask[i, i + 1 :] = False
    return mask


def sample_indices(cfg: EvalConfig, row: int, task: int, num_tasks: int, size: int
                   ) -> list[int] | None:
    """Indices of the test samples of `task` evaluated in `row`, or None for all of them."""
    if cfg.policy != "subset" or row == num_tasks or size <= cfg.subset_size:
        return None
    rng = np.random.default_rng([cfg.subset_seed, task])  # one subset per task, every row
    return sorted(rng.choice(size, cfg.subset_size, replace=False).tolist())


def not_measured(planned: np.ndarray) -> list[str]:
    """Names of the metrics whose formula reads a cell outside `planned`."""
    if planned.all():
        return []
    rng = np.random.default_rng(0)
    base = rng.uniform(size=planned.shape)
    other = base.copy()
    other[~planned] = rng.uniform(size=int((~planned).sum())) + 2.0
    a, b = compute_metrics(base), compute_metrics(other)
    return [k for k in a if not (np.isnan(a[k]) and np.isnan(b[k])) and a[k] != b[k]]


def record(cfg: EvalConfig, test_sizes: list[int]) -> dict:
    """What results.json says about the evaluation: the policy and, per cell, how many test
    samples were scored (null: not evaluated)."""
    T = len(test_sizes)
    planned = planned_cells(cfg, T)
    samples = [[None if not planned[i, j] else
                len(sample_indices(cfg, i, j, T, n) or range(n))
                for j, n in enumerate(test_sizes)] for i in range(T + 1)]
    return {"policy": cfg.policy, "subset_size": cfg.subset_size if cfg.policy == "subset"
            else None, "subset_seed": cfg.subset_seed if cfg.policy == "subset" else None,
            "backend": cfg.backend, "samples": samples,
            "metrics_not_measured": not_measured(planned)}
