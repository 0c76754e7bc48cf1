"""Experience replay: a memory of past tasks' training samples, mixed into each new task.

The MCIT form of Prism's `replay_lora` (LAMDA-CL/Prism, method/custom/replay_lora,
config/methods/replay_lora.py) and MCITlib's Replay: after a task, a fixed number of its
training samples enters the memory (Prism: `replay_buffer_size` 180 slots split over the
`task_num - 1` tasks that can still be replayed, i.e. 180 // 7 = 25 per task on CoIN's 8 tasks;
or, with `memory_fraction`, that fraction of the task's training set), and every later task
trains on its own samples followed by the whole memory, one concatenated training set. The
memory is never cut: each task keeps its budget for the rest of the stream.

Selection: a uniform random subset of the task's training set, drawn from the seed the loop
sets for the task (so a resumed run chooses the same). Prism keeps the first samples of the
shuffled training batches that pass a Bernoulli(0.7) draw until the task's slots are full, which
is also a uniformly random subset of the task for a shuffled loader, as a reservoir over the task
would be; so one rule covers all three.

The memory holds references (task, index in its training split) in `mcl.memory.ExemplarMemory`,
never a test sample or a copy of an image, and travels with every checkpoint. What is trained is
`method.base`: a LoRA adapter (Prism's replay_lora) or whole parts (replay with fine-tuning).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mcl.data.task import Sample, Task
from mcl.memory import ExemplarMemory
from mcl.strategies.base import register
from mcl.strategies.sequential import OnLoraOrFinetune


@register("replay")
class Replay(OnLoraOrFinetune):
    """Sequential LoRA or fine-tuning on each task's samples plus a memory of earlier ones."""

    def __init__(self, *, memory_per_task: int | None, memory_fraction: float | None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if (memory_per_task is None) == (memory_fraction is None):
            raise ValueError("replay: set exactly one of method.memory_per_task (samples kept "
                             "per task) and method.memory_fraction (share of each task's "
                             f"training set kept); got {memory_per_task} and {memory_fraction}")
        if memory_per_task is not None and memory_per_task < 0:
            raise ValueError(f"method.memory_per_task must be >= 0, got {memory_per_task}")
        if memory_fraction is not None and not 0 <= memory_fraction <= 1:
            raise ValueError(f"method.memory_fraction must be in [0, 1], got {memory_fraction}")
        self.memory_per_task, self.memory_fraction = memory_per_task, memory_fraction
        self.memory = ExemplarMemory(0)  # entries are added per task, never rebalanced

    def budget(self, task_size: int) -> int:
        """How many samples of a task of `task_size` training samples the memory keeps."""
        if self.memory_per_task is not None:
            return min(self.memory_per_task, task_size)
        return int(round(self.memory_fraction * task_size))

    def train_samples(self, seen: Sequence[Task]) -> list[Sample]:
        return list(seen[-1].train) + self.memory.samples(seen)

    def after_task(self, task: Task, index: int) -> None:
        keep = self.budget(len(task.train))
        # From the seed the loop gave this task: the same choice after a resume mid-task.
        generator = torch.Generator().manual_seed(torch.initial_seed())
        chosen = torch.randperm(len(task.train), generator=generator)[:keep].tolist()
        self.memory.entries += [[index, i, task.name] for i in sorted(chosen)]
        self.memory.size = len(self.memory.entries)

    def extra_state(self) -> dict:
        return {"memory": self.memory.state()}

    def load_extra_state(self, state: dict) -> None:
        self.memory.load_state(state["memory"])
        self.memory.size = len(self.memory.entries)
