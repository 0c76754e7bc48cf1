"""Streams of the built-in toy world, deterministic by seed."""

from __future__ import annotations

from collections.abc import Sequence

from mcl.data import toy_world
from mcl.data.task import Stream, Task


def toy_stream(name: str, tasks: Sequence[str], train_size: int, test_size: int,
               seed: int) -> Stream:
    """A stream of toy tasks, each with `train_size` training and `test_size` test samples."""
    if not tasks:
        raise ValueError(f"stream {name!r} lists no tasks; give it at least one of: "
                         f"{', '.join(sorted(toy_world.TASKS))}")
    unknown = [t for t in tasks if t not in toy_world.TASKS]
    if unknown:
        raise ValueError(f"stream {name!r} names unknown toy tasks {unknown}; valid tasks: "
                         f"{', '.join(sorted(toy_world.TASKS))}")
    if train_size <= 0 or test_size <= 0:
        raise ValueError(f"stream {name!r}: train_size and test_size must be positive, got "
                         f"{train_size} and {test_size}")
    return Stream(name, [
        Task(t, toy_world.generate(t, train_size, seed, "train"),
             toy_world.generate(t, test_size, seed, "test"))
        for t in tasks
    ])
