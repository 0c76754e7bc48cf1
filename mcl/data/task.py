"""The data types the continual loop works on: a sample, a task, a stream of tasks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sample:
    """One image with an instruction and its reference answer.

    `match` names how a generated answer is scored (see `mcl.metrics.answers.match_answer`).
    """

    image: np.ndarray  # H x W x 3, uint8
    prompt: str
    answer: str
    match: str = "exact"


@dataclass
class Task:
    """A named task with its training and test samples."""

    name: str
    train: list[Sample]
    test: list[Sample]
    meta: dict = field(default_factory=dict)


@dataclass
class Stream:
    """An ordered list of tasks, trained one after another."""

    name: str
    tasks: list[Task]

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError(f"stream {self.name!r} has no tasks; give it at least one task")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"stream {self.name!r} repeats a task name: {names}")
        for task in self.tasks:
            if not task.train or not task.test:
                raise ValueError(
                    f"task {task.name!r} of stream {self.name!r} has an empty train or test split"
                )

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]
