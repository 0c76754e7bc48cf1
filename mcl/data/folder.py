"""Your own data as a stream, without Python: a folder of tasks, or a Hugging Face dataset.

`stream=folder stream.root=/my/data` reads one task per sub-folder, in name order (or the order
of `stream.tasks`), in either of two layouts:

    /my/data/<task>/train.json, test.json, images...   instructions (LLaVA conversations or
                                                       questions, `mcl.data.instruct`); image
                                                       paths relative to the task folder
    /my/data/<task>/train/<class>/<image>              classification (torchvision's
    /my/data/<task>/test/<class>/<image>               ImageFolder): the answer is the class

`stream=hf stream.path=<local dir or id>` reads `datasets.load_dataset(path)` with its columns
named in the config (`stream.columns`); its tasks are the values of one column
(`stream.task_column`) or one load per task (`stream.tasks: [{name, ...load_dataset args}]`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mcl.data import classification as cls
from mcl.data.coast import MissingDataError
from mcl.data.images import drop_bad_images
from mcl.data.instruct import read_annotations
from mcl.data.task import Sample, Stream, Task

LAYOUT = ("<root>/<task>/{train,test}.json with the images beside them (LLaVA conversations or "
          "questions), or <root>/<task>/{train,test}/<class>/<image> (classification)")
SCENARIOS = ("class_incremental", "domain_incremental", "mtil")


def _task_dirs(root: Path, tasks: Sequence[str] | None) -> list[Path]:
    if not root.is_dir():
        raise MissingDataError(f"stream.root={root} is not a directory; point it at a folder "
                               f"laid out as {LAYOUT}")
    if tasks:
        dirs = [root / t for t in tasks]
        absent = [str(d) for d in dirs if not d.is_dir()]
        if absent:
            raise MissingDataError(f"stream.tasks names folders that do not exist: {absent}; "
                                   f"the folders of {root}: {cls.class_folders(root)}")
        return dirs
    dirs = [root / name for name in cls.class_folders(root)]
    if not dirs:
        raise MissingDataError(f"{root} holds no task folders; expected {LAYOUT}")
    return dirs


def _instruction_task(folder: Path, match: str, skip_bad_images: bool) -> Task:
    splits, bad = {}, {}
    for split in ("train", "test"):
        path = folder / f"{split}.json"
        if not path.is_file():
            raise MissingDataError(f"task folder {folder} has train.json but no {path.name}; "
                                   f"expected {LAYOUT}")
        splits[split], bad[split] = drop_bad_images(
            read_annotations(path, folder, match), lambda s: s.image, skip_bad_images,
            f"task {folder.name} ({split})")
    return Task(folder.name, splits["train"], splits["test"],
                {"match": match, "bad_images": bad, "source": str(folder)})


def _classification_task(folder: Path, scenario: str, task_aware: bool,
                         skip_bad_images: bool) -> Task:
    if not (folder / "test").is_dir():
        raise MissingDataError(f"task folder {folder} has train/ but no test/; expected {LAYOUT}")
    train, test = (cls.folder_of_classes(folder / split) for split in ("train", "test"))
    classes = cls.class_folders(folder / "train")
    unknown = sorted({c for _, c in test} - set(classes))
    if unknown:
        raise ValueError(f"{folder / 'test'} has classes that train/ lacks: {unknown}")
    return cls.usable_task("folder", folder.name, train, test, classes, skip_bad_images,
                           scenario=scenario, task_aware=task_aware, source=str(folder))


def _one_family(name: str, tasks: list[Task]) -> Stream:
    kinds = {"classes" in t.meta for t in tasks}
    if len(kinds) > 1:
        raise ValueError(f"stream {name!r} mixes classification tasks (train/<class>/ folders) "
                         "and instruction tasks (train.json); one stream holds one kind")
    return Stream(name, tasks)


def folder_stream(name: str, root: str, seed: int = 0, tasks: Sequence[str] | None = None,
                  match: str = "exact", matches: dict[str, str] | None = None,
                  scenario: str = "class_incremental", task_aware: bool = False,
                  skip_bad_images: bool = False) -> Stream:
    """The tasks under `root` (layout in the module docstring), trained in `tasks` order or
    sorted by folder name. Instruction answers are scored by `match` (a key of
    `mcl.metrics.benchmarks.SCORERS`), per task by `matches[task]`; classification tasks are
    scored among classes as `scenario` and `task_aware` say (`mcl.data.label_space`). `seed` is
    unused: the data and its order are the folder's."""
    del seed
    if scenario not in SCENARIOS:
        raise ValueError(f"stream.scenario={scenario!r}; choose one of {SCENARIOS}")
    built = []
    for folder in _task_dirs(Path(root).expanduser().resolve(), tasks):
        if (folder / "train.json").is_file():
            built.append(_instruction_task(folder, (matches or {}).get(folder.name, match),
                                           skip_bad_images))
        elif (folder / "train").is_dir():
            built.append(_classification_task(folder, scenario, task_aware, skip_bad_images))
        else:
            raise MissingDataError(f"task folder {folder} has neither train.json nor train/; "
                                   f"expected {LAYOUT}")
    return _one_family(name, built)


# ------------------------------------------------------------------ Hugging Face datasets


def _image(value, base: Path | None):
    """A sample's image from a dataset cell: pixels, or a file path (relative to `base`)."""
    if isinstance(value, dict):  # datasets.Image(decode=False): {"bytes", "path"}
        if value.get("bytes"):
            from PIL import Image

            return np.asarray(Image.open(io.BytesIO(value["bytes"])).convert("RGB"))
        value = value.get("path")
    if isinstance(value, str):
        path = Path(value).expanduser()
        return str(path if path.is_absolute() or base is None else base / path)
    if hasattr(value, "convert"):  # a decoded PIL image
        return np.asarray(value.convert("RGB"))
    raise ValueError(f"image column holds a {type(value).__name__}; expected an image, its bytes "
                     "or a file path")


def _rows(split, columns: dict[str, str | None], where: str) -> tuple[list, list, list]:
    """(images, prompts, answers) of a datasets split, the column names mapped by `columns`."""
    from datasets import Image

    names = split.column_names
    for role in ("image", "answer", "prompt"):
        column = columns.get(role)
        if column is not None and column not in names:
            raise ValueError(f"{where}: no column {column!r} (stream.columns.{role}); its "
                             f"columns: {names}")
    if isinstance(split.features[columns["image"]], Image):
        split = split.cast_column(columns["image"], Image(decode=False))
    feature = split.features[columns["answer"]]
    answers = list(split[columns["answer"]])
    if hasattr(feature, "int2str"):  # a ClassLabel: answers are its names
        answers = [feature.int2str(a) for a in answers]
    prompts = list(split[columns["prompt"]]) if columns.get("prompt") else [""] * len(answers)
    return list(split[columns["image"]]), [str(p) for p in prompts], [str(a) for a in answers]


def hf_stream(name: str, path: str, seed: int = 0, columns: dict[str, str | None] | None = None,
              task_column: str | None = None, tasks: Sequence | None = None,
              splits: dict[str, str] | None = None, load_args: dict | None = None,
              classification: bool = False,
              match: str = "exact", scenario: str = "class_incremental",
              task_aware: bool = False, skip_bad_images: bool = False) -> Stream:
    """A stream from `datasets.load_dataset(path)` (a local directory or script, or a Hub id
    where the Hub is reachable).

    `columns` maps mcl's roles to column names: `image` (images, bytes or file paths relative to
    `path`), `prompt` (the instruction; null for classification) and `answer` (text, or a
    ClassLabel whose names become the answers). Tasks are the values of `task_column`, in the
    order of `tasks` (names) or of first appearance in the train split; or, without
    `task_column`, `tasks` lists dicts `{name, ...}` whose other keys go to `load_dataset` (e.g.
    `name` of a dataset config as `config`, `data_dir`, `data_files`). `splits` names the train
    and test splits; `load_args` go to every `load_dataset` call (e.g. `data_files`, when a
    folder holds more images than data files). `classification` makes class-name tasks
    (meta["classes"], in order of first appearance) for the CLIP/ViT backbones.
    """
    del seed
    from datasets import load_dataset

    columns = {"image": "image", "prompt": "question", "answer": "answer", **(columns or {})}
    splits = {"train": "train", "test": "test", **(splits or {})}
    base = Path(path).expanduser()
    base = base.resolve() if base.exists() else None

    def load(**kwargs):
        kwargs = {**(load_args or {}), **kwargs}
        config = kwargs.pop("config", None)
        try:
            data = load_dataset(str(base or path), config, **kwargs)
        except FileNotFoundError as err:
            raise MissingDataError(f"stream.path={path}: {err}") from None
        absent = [s for s in splits.values() if s not in data]
        if absent:
            raise ValueError(f"dataset {path!r} has no split {absent} (its splits: "
                             f"{list(data)}); name them with stream.splits.train/test")
        return data

    parts: list[tuple[str, dict[str, tuple]]] = []
    if task_column is not None:
        data = load()
        by_task: dict[str, dict[str, tuple]] = {}
        for role, split in splits.items():
            if task_column not in data[split].column_names:
                raise ValueError(f"dataset {path!r}: no column {task_column!r} "
                                 f"(stream.task_column); its columns: {data[split].column_names}")
            rows = _rows(data[split], columns, f"dataset {path!r} ({split})")
            for key, *row in zip(data[split][task_column], *rows, strict=True):
                lists = by_task.setdefault(str(key), {"train": ([], [], []), "test": ([], [], [])})
                for target, value in zip(lists[role], row, strict=True):
                    target.append(value)
        order = [str(t) for t in tasks] if tasks else list(by_task)
        missing = [t for t in order if t not in by_task]
        if missing:
            raise ValueError(f"stream.tasks names values {missing} that column {task_column!r} "
                             f"never holds; it holds {list(by_task)}")
        parts = [(t, by_task[t]) for t in order]
    elif tasks:
        for spec in tasks:
            spec = dict(spec)
            task_name = str(spec.pop("name"))
            data = load(**spec)
            parts.append((task_name, {role: _rows(data[split], columns,
                                                  f"dataset {path!r} task {task_name} ({split})")
                                      for role, split in splits.items()}))
    else:
        raise ValueError("stream=hf needs its tasks: stream.task_column=<column whose values name "
                         "the tasks>, or stream.tasks=[{name: ..., data_dir: ...}, ...]")
    built = []
    for task_name, by_split in parts:
        samples, bad = {}, {}
        for role, (images, prompts, answers) in by_split.items():
            where = f"dataset {path!r} task {task_name} ({role})"
            found = [Sample(_image(i, base), p, a, "exact" if classification else match)
                     for i, p, a in zip(images, prompts, answers, strict=True)]
            samples[role], bad[role] = drop_bad_images(found, lambda s: s.image,
                                                       skip_bad_images, where)
        meta = {"bad_images": bad, "source": str(path)}
        if classification:
            meta.update(classes=list(dict.fromkeys(s.answer for s in samples["train"])),
                        scenario=scenario, task_aware=task_aware)
        else:
            meta["match"] = match
        built.append(Task(task_name, samples["train"], samples["test"], meta))
    return _one_family(name, built)
