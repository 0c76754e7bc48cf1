"""The data types the continual loop works on: a sample, a task, a stream of tasks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class MissingDataError(FileNotFoundError):
    """The data a stream needs is not where mcl looks for it."""


@dataclass
class Sample:
    """One image with an instruction and its reference answer.

    `image` is pixels (H x W x 3 uint8) or the path of an image file, decoded only when the
    sample is encoded (`mcl.data.images.load_image`). `answer` is the training target; `match`
    names the scorer of a generated answer (a key of `mcl.metrics.benchmarks.SCORERS`: exact,
    option, vqa, relaxed, anls, grounding, classification) and `reference` is what that scorer
    compares against when it is not `answer` itself (e.g. VQAv2's ten human answers, a box).
    """

    image: np.ndarray | str | Path
    prompt: str
    answer: str
    match: str = "exact"
    reference: object = None

    @property
    def scored_against(self) -> object:
        """The reference the scorer named by `match` receives."""
        return self.answer if self.reference is None else self.reference


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


class EncodedSamples(Sequence):
    """Samples seen as backbone inputs, encoded on access instead of all at once.

    Indexing encodes one sample, a slice is another lazy view, and iterating (or
    `__getitems__`, which a DataLoader uses for a batch) encodes in one batched
    `backbone.encode` call. Samples whose images are files are encoded again at every access,
    so memory holds one batch of decoded images, not a benchmark's worth; when every image is
    already in memory as pixels (the toy world) the encodings are kept after their first use,
    which costs about what the pixels do and keeps epochs after the first as fast as before.
    `extra` is added to every encoded item (e.g. the label space a classification task is
    trained or scored among, which the loop decides for the whole set, not per batch).
    """

    def __init__(self, backbone, samples: Sequence[Sample], with_answer: bool,
                 _cache: dict | None = None, extra: dict | None = None) -> None:
        self.backbone = backbone
        self.samples = samples
        self.with_answer = with_answer
        self.extra = dict(extra or {})
        in_memory = all(isinstance(s.image, np.ndarray) for s in samples)
        self._cache = _cache if _cache is not None else ({} if in_memory else None)

    def with_extra(self, extra: dict) -> EncodedSamples:
        """The same samples (and encodings cache), with `extra` added to every item."""
        return EncodedSamples(self.backbone, self.samples, self.with_answer, self._cache, extra)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return EncodedSamples(self.backbone, self.samples[index], self.with_answer, self._cache,
                                  self.extra)
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        items = self._encode(indices)
        return [{**item, **self.extra} for item in items] if self.extra else items

    def _encode(self, indices: Sequence[int]) -> list[dict]:
        if self._cache is None:
            return self.backbone.encode([self.samples[i] for i in indices],
                                        with_answer=self.with_answer)
        # Keyed by the sample object, so that slices (views) share one cache.
        wanted = [self.samples[i] for i in indices]
        missing = list({id(s): s for s in wanted if id(s) not in self._cache}.values())
        encoded = self.backbone.encode(missing, with_answer=self.with_answer)
        self._cache.update(zip(map(id, missing), encoded, strict=True))
        return [self._cache[id(s)] for s in wanted]

    def __iter__(self) -> Iterator[dict]:
        return iter(self.__getitems__(range(len(self))))
