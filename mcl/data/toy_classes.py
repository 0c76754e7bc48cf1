"""The classification view of the toy world: labelled images in *views* (toy data sets, each with
its own label set) and the three classification streams built from them.

Views (class names are what CLIP reads in "a photo of a {name}."):
  shapes         circle, square, triangle, cross                  (any colour)
  colour_shapes  red circle, ..., cyan cross (6 colours x 4 shapes = 24 classes)
  digits         digit zero, ..., digit nine                       (any colour)
  textures       stripes, bars, dots, checker                     (any colour)
  charts         rising chart, falling chart, peak chart, valley chart
  colours        red, green, blue, yellow, purple, cyan           (any kind of scene)

Scenarios (the stream YAML's `scenario`):
  class_incremental   one view's classes split into `num_tasks` disjoint tasks (fixed order drawn
                      from `class_order_seed`); evaluated among all classes seen so far
  domain_incremental  one view, one task per visual style (same classes, new styles)
  mtil                one task per view, each with its own label set (the toy analogue of MTIL,
                      Zheng et al. 2023), each scored within its own label set
  xtail               the tasks of mtil, each scored among the classes of all views (the toy
                      analogue of X-TAIL, Xu et al. 2024: no task id, unseen domains included)
`train_shots: k` keeps k training images per class out of `train_size` drawn ones
(`mcl.data.fewshot`, seeded by `shots_seed`): toy_mtil_fewshot, toy_xtail.
Every task carries meta["classes"], meta["scenario"] and meta["task_aware"] (see
`mcl.data.label_space`). Everything is a pure function of the seed.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np

from mcl.data import toy_world as tw
from mcl.data.fewshot import few_shot, shots_meta
from mcl.data.task import Sample, Stream, Task

SCENARIOS = ("class_incremental", "domain_incremental", "mtil", "xtail")
SHAPE_RADIUS = 6.5


def _centre(rng: np.random.Generator) -> tuple[float, float]:
    mid = tw.IMAGE_SIZE / 2
    return mid + rng.uniform(-4, 4), mid + rng.uniform(-4, 4)


def _random_colour(rng: np.random.Generator) -> str:
    return tuple(tw.COLOURS)[rng.integers(len(tw.COLOURS))]


def render(kind: str, obj: str, colour: str, style: str, rng: np.random.Generator) -> np.ndarray:
    """One object of a kind (shape, digit, texture, chart) in a colour and a style."""
    if kind == "shape":
        mask = tw.shape_mask(obj, *_centre(rng), SHAPE_RADIUS)
    elif kind == "digit":
        scale = 4
        top = int(rng.integers(2, tw.IMAGE_SIZE - 5 * scale - 1))
        left = int(rng.integers(2, tw.IMAGE_SIZE - 3 * scale - 1))
        mask = tw.glyph_mask(tw.DIGIT_WORDS.index(obj), top, left, scale)
    elif kind == "texture":
        mask = tw.texture_mask(obj, period=int(rng.integers(4, 7)), phase=int(rng.integers(0, 6)))
    elif kind == "chart":
        mask = tw.chart_mask(obj, rng)
    else:
        raise ValueError(f"unknown scene kind {kind!r}")
    return tw.paint([(mask, colour)], tw.STYLES[style], rng)


KIND_OBJECTS = {"shape": tw.SHAPES, "digit": tw.DIGIT_WORDS, "texture": tw.TEXTURES,
                "chart": tw.TRENDS}


def object_name(kind: str, obj: str) -> str:
    """How a caption or a class name calls an object."""
    return {"shape": obj, "digit": f"digit {obj}", "texture": obj, "chart": f"{obj} chart"}[kind]


def random_object(rng: np.random.Generator) -> tuple[str, str]:
    kind = tuple(KIND_OBJECTS)[rng.integers(len(KIND_OBJECTS))]
    return kind, KIND_OBJECTS[kind][rng.integers(len(KIND_OBJECTS[kind]))]


Renderer = Callable[[str, str, np.random.Generator], np.ndarray]  # (class, style, rng) -> image


def _single_kind(kind: str) -> tuple[list[str], Renderer]:
    names = {object_name(kind, o): o for o in KIND_OBJECTS[kind]}
    return list(names), lambda c, style, rng: render(kind, names[c], _random_colour(rng), style,
                                                    rng)


def _colour_shapes() -> tuple[list[str], Renderer]:
    classes = [f"{c} {s}" for c in tw.COLOURS for s in tw.SHAPES]
    return classes, lambda c, style, rng: render("shape", c.split()[1], c.split()[0], style, rng)


def _colours() -> tuple[list[str], Renderer]:
    def draw(c: str, style: str, rng: np.random.Generator) -> np.ndarray:
        kind, obj = random_object(rng)
        return render(kind, obj, c, style, rng)

    return list(tw.COLOURS), draw


VIEWS: dict[str, tuple[list[str], Renderer]] = {
    "shapes": _single_kind("shape"),
    "colour_shapes": _colour_shapes(),
    "digits": _single_kind("digit"),
    "textures": _single_kind("texture"),
    "charts": _single_kind("chart"),
    "colours": _colours(),
}


def samples(view: str, classes: Sequence[str], styles: Sequence[str], n: int, seed: int,
            key: str) -> list[Sample]:
    """`n` labelled images of `classes` (uniform) in `styles` (uniform); a pure function of the
    arguments (`key` names the task, so tasks of one stream draw different images)."""
    _, draw = VIEWS[view]
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    out = []
    for _ in range(n):
        label = classes[rng.integers(len(classes))]
        style = styles[rng.integers(len(styles))]
        out.append(Sample(draw(label, style, rng), "", label))
    return out


def _check(name: str, scenario: str, views: Sequence[str], styles: Sequence[str],
           train_size: int, test_size: int) -> None:
    if scenario not in SCENARIOS:
        raise ValueError(f"stream {name!r}: unknown scenario {scenario!r}; use one of {SCENARIOS}")
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ValueError(f"stream {name!r}: unknown or no views {list(views)}; valid views: "
                         f"{', '.join(VIEWS)}")
    bad = [s for s in styles if s not in tw.STYLES]
    if bad or not styles:
        raise ValueError(f"stream {name!r}: unknown or no styles {list(styles)}; valid styles: "
                         f"{', '.join(tw.STYLES)}")
    if train_size <= 0 or test_size <= 0:
        raise ValueError(f"stream {name!r}: train_size and test_size must be positive, got "
                         f"{train_size} and {test_size}")


def toy_classification_stream(name: str, scenario: str, views: Sequence[str],
                              train_size: int, test_size: int, seed: int,
                              styles: Sequence[str] = tuple(tw.STYLES), num_tasks: int = 5,
                              class_order_seed: int = 0, task_aware: bool = False,
                              train_shots: int | None = None, shots_seed: int = 0,
                              shots_repeat: bool = False) -> Stream:
    """A classification stream of the toy world (see the module docstring for the scenarios).

    `train_size`/`test_size` are per task. `task_aware=True` scores every task within its own
    classes (the task identity is given at test time). `train_shots`: k training images per
    class out of the `train_size` drawn (`mcl.data.fewshot.few_shot`)."""
    views, styles = list(views), list(styles)
    _check(name, scenario, views, styles, train_size, test_size)
    plan: list[tuple[str, str, list[str], list[str]]] = []  # task name, view, classes, styles
    if scenario in ("mtil", "xtail"):
        plan = [(view, view, VIEWS[view][0], styles) for view in views]
    else:
        if len(views) != 1:
            raise ValueError(f"stream {name!r}: a {scenario} stream uses one view, got {views}")
        view = views[0]
        classes = VIEWS[view][0]
        if scenario == "domain_incremental":
            plan = [(f"{view}_{style}", view, classes, [style]) for style in styles]
        else:
            if not 1 <= num_tasks <= len(classes):
                raise ValueError(f"stream {name!r}: num_tasks must lie in [1, {len(classes)}] "
                                 f"for view {view!r}, got {num_tasks}")
            order = np.random.default_rng(class_order_seed).permutation(len(classes))
            plan = [(f"{view}_{i}", view, [classes[k] for k in split], styles)
                    for i, split in enumerate(np.array_split(order, num_tasks))]
    tasks = []
    for task_name, view, classes, task_styles in plan:
        meta = {"classes": list(classes), "scenario": scenario, "task_aware": task_aware,
                **shots_meta(train_shots, shots_seed, shots_repeat)}
        train = samples(view, classes, task_styles, train_size, seed, f"{task_name}/train")
        if train_shots is not None:
            pairs = few_shot([(s, s.answer) for s in train], train_shots, shots_seed,
                             shots_repeat)
            train = [s for s, _ in pairs]
        tasks.append(Task(task_name, train,
                          samples(view, classes, task_styles, test_size, seed,
                                  f"{task_name}/test"), meta))
    return Stream(name, tasks)
