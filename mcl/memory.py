"""An exemplar memory for methods that rehearse: which training samples of past tasks are kept.

The memory stores references `(task, index, group)` into the stream's training sets (never a test
sample, never a copy of an image), so its state is a small list that travels with every strategy
checkpoint (`state()` / `load_state()`). Samples are grouped (by class, or one group per task);
`rebalance` gives every group the same share of the budget, keeping each group's samples in the
order given (herding order, random order, ...), as iCaRL-style class-balanced memories do.
`herding_order` is iCaRL's selection (Rebuffi et al. 2017, Alg. 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mcl.data.task import Sample, Task

Entry = list  # [task index, sample index in that task's train split, group name]


class ExemplarMemory:
    """At most `size` references to past training samples, shared equally among groups."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"the memory size must be >= 0, got {size}")
        self.size = size
        self.entries: list[Entry] = []

    def __len__(self) -> int:
        return len(self.entries)

    def samples(self, seen: Sequence[Task]) -> list[Sample]:
        """The kept samples themselves, looked up in the tasks seen so far."""
        return [seen[t].train[i] for t, i, _ in self.entries]

    def groups(self) -> dict[tuple[int, str], list[int]]:
        """{(task, group): sample indices in memory order}."""
        out: dict[tuple[int, str], list[int]] = {}
        for t, i, g in self.entries:
            out.setdefault((t, g), []).append(i)
        return out

    def rebalance(self, new: dict[tuple[int, str], list[int]]) -> None:
        """Add groups (`{(task, group): candidate indices, best first}`) and cut every group, old
        and new, to `size // groups` samples (old groups keep their first ones)."""
        groups = self.groups() | new
        quota = self.size // max(len(groups), 1)
        self.entries = [[t, i, g] for (t, g), rows in groups.items() for i in rows[:quota]]

    def state(self) -> list[Entry]:
        return [list(e) for e in self.entries]

    def load_state(self, state: Sequence[Entry]) -> None:
        self.entries = [list(e) for e in state]


def herding_order(features: torch.Tensor, count: int) -> list[int]:
    """iCaRL's herding (Rebuffi et al. 2017, Alg. 4): greedily pick the samples whose running
    mean of L2-normalised features stays closest to the class mean. Returns row indices."""
    x = F.normalize(features.double(), dim=-1)
    mean = x.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(mean)
    available = torch.ones(len(x), dtype=torch.bool)
    for k in range(1, min(count, len(x)) + 1):
        distance = (mean - (total + x) / k).norm(dim=1)
        distance[~available] = math.inf
        i = int(distance.argmin())
        chosen.append(i)
        available[i] = False
        total += x[i]
    return chosen
