"""What every classification benchmark loader shares: its samples and tasks, the data-root
checks and their messages, the listing of folder-of-classes layouts, class splits.

A classification sample is `Sample(image=<array or path>, prompt="", answer=<class name>)` and
its task lists its classes, in order, in `meta["classes"]` (the convention between the loaders
and the CLIP/ViT backbones). Big benchmarks keep images as file paths: they are decoded only
when a sample is encoded (`mcl.data.images.load_image`); at start-up only each file's header is
read (`usable`), and bad files are named, or skipped and listed with `skip_bad_images`.

Each benchmark module (split_cifar100, split_imagenet_r, core50, mtil) exposes, for
`python -m mcl.data prepare <benchmark>`:
  - `BENCHMARK`: its name;
  - `LAYOUT`: the expected layout under the data root, as text to show the user;
  - `validate(data_root) -> list[str]`: what is missing or malformed (empty when ready).
Their stream builders take `data_root` and `skip_bad_images` (prepare's contract).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mcl.data.images import drop_bad_images
from mcl.data.instruct import prepare_command
from mcl.data.task import MissingDataError, Sample, Task

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def missing_data(benchmark: str, expected: Path, what: str, data_root: str | Path
                 ) -> MissingDataError:
    """One message naming the benchmark, where its data was expected, and how to get it there."""
    return MissingDataError(
        f"benchmark {benchmark!r} needs {what}, expected at {expected}. Prepare it with "
        f"`{prepare_command(benchmark, data_root)}` and run with data_root=<dir> (or set the "
        "MCL_DATA_ROOT environment variable to <dir>).")


def root_dir(data_root: str | Path) -> Path:
    """The data root as an absolute path (`~` expanded)."""
    return Path(data_root).expanduser().resolve()


def require(benchmark: str, path: Path, what: str, data_root: str | Path,
            is_dir: bool = True) -> Path:
    """`path` if it exists (as a directory or file), else the benchmark's missing-data error."""
    if (is_dir and not path.is_dir()) or (not is_dir and not path.is_file()):
        raise missing_data(benchmark, path, what, data_root)
    return path


def sample(image: np.ndarray | str | Path, class_name: str) -> Sample:
    """A classification sample: the image (pixels or a path) and its class name as answer."""
    if isinstance(image, Path):
        image = str(image)
    return Sample(image=image, prompt="", answer=class_name, match="exact")


def usable(benchmark: str, task_name: str, split: str, items: Iterable[tuple],
           skip_bad_images: bool) -> tuple[list[tuple], list[str]]:
    """(image, class name) pairs whose image file exists and its header opens (arrays pass),
    and the paths of the others: a bad file raises `BadImageError` naming it, unless
    `skip_bad_images` (then it is left out and listed, as `mcl.data.prepare` requires)."""
    return drop_bad_images(list(items), lambda item: item[0], skip_bad_images,
                           f"{benchmark} task {task_name} ({split})")


def task(name: str, train: Iterable[tuple], test: Iterable[tuple], classes: Sequence[str],
         bad_images: dict[str, list[str]] | None = None, **meta) -> Task:
    """A task from (image, class name) pairs; `meta["classes"]` is its ordered class list and
    `meta["bad_images"]` ({split: [paths]}, see `usable`) what was left out of each split."""
    bad_images = {"train": [], "test": [], **(bad_images or {})}
    return Task(name, [sample(i, c) for i, c in train], [sample(i, c) for i, c in test],
                meta={"classes": list(classes), "bad_images": bad_images, **meta})


def usable_task(benchmark: str, name: str, train: Iterable[tuple], test: Iterable[tuple],
                classes: Sequence[str], skip_bad_images: bool, **meta) -> Task:
    """`task` from the pairs whose images are usable (`usable`), the others listed in meta."""
    kept, bad = {}, {}
    for split, items in (("train", train), ("test", test)):
        kept[split], bad[split] = usable(benchmark, name, split, items, skip_bad_images)
    return task(name, kept["train"], kept["test"], classes, bad_images=bad, **meta)


def class_folders(root: Path) -> list[str]:
    """The sub-directory names of `root`, sorted (ImageFolder's class order)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def image_files(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The image files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in suffixes)


def folder_of_classes(root: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES
                      ) -> list[tuple[Path, str]]:
    """(image path, class folder name) for `root/<class>/<image>`, classes and files sorted."""
    return [(path, cls) for cls in class_folders(root) for path in image_files(root / cls,
                                                                            suffixes)]


def split_into_tasks(class_order: Sequence, num_tasks: int) -> list[list]:
    """`class_order` cut into `num_tasks` consecutive, equal groups."""
    if num_tasks <= 0 or len(class_order) % num_tasks:
        raise ValueError(f"cannot split {len(class_order)} classes into {num_tasks} equal tasks; "
                         f"choose num_tasks dividing {len(class_order)}")
    size = len(class_order) // num_tasks
    return [list(class_order[i * size:(i + 1) * size]) for i in range(num_tasks)]


def coda_shuffle(order: Sequence, seed: int) -> list:
    """The class order CODA-Prompt trains with under `seed` (GT-RIPL/CODA-Prompt trainer.py):
    unchanged for seed 0, else Python's `random.seed(seed); random.shuffle(order)`."""
    order = list(order)
    if seed > 0:
        random.Random(seed).shuffle(order)
    return order


def check_order(benchmark: str, class_order: Sequence, known: Sequence) -> list:
    """`class_order` (a permutation of `known`), or a clear error naming what is wrong."""
    order = list(class_order)
    if sorted(map(str, order)) != sorted(map(str, known)) or len(set(order)) != len(order):
        extra = sorted(set(map(str, order)) - set(map(str, known)))
        absent = sorted(set(map(str, known)) - set(map(str, order)))
        raise ValueError(f"{benchmark}: class_order must list each of the {len(known)} classes "
                         f"once; unknown: {extra[:5]}, missing: {absent[:5]}")
    return order

