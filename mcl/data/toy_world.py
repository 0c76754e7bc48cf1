"""The built-in toy world: small procedurally rendered images with instructions about them.

Everything is a pure function of (seed, task name, split): no file or network is needed to run or
test mcl. Scenes hold shapes, digits (glyphs), textures and bar charts, rendered in several visual
styles; each *task* is a question template over one kind of scene with its own answer format.
The task families mirror the COAST configurations (domain, capability, dataset), and a separate
pre-training mix, whose templates no stream uses, gives the tiny backbones knowledge to keep or
lose.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mcl.data.task import Sample

IMAGE_SIZE = 32

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "purple": (160, 60, 200),
    "cyan": (40, 210, 210),
}
COUNT_WORDS = ("zero", "one", "two", "three", "four")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
POSITIONS = ("left", "right", "top", "bottom")
TEXTURES = ("stripes", "bars", "dots", "checker")
TRENDS = ("rising", "falling", "peak", "valley")
OPTION_LETTERS = "abcd"
MC_COLOURS = ("red", "green", "blue", "yellow")  # the multiple-choice task's four options

# 3x5 bitmaps of the digits, row by row (a classic seven-segment-like pixel font).
_GLYPHS = {
    0: "111101101101111", 1: "010110010010111", 2: "111001111100111", 3: "111001111001111",
    4: "101101111001001", 5: "111100111001111", 6: "111100111101111", 7: "111001010010010",
    8: "111101111101111", 9: "111101111001111",
}


# ----------------------------------------------------------------------------- rendering


def _grid() -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    return ys, xs


_YS, _XS = _grid()


def shape_mask(shape: str, cy: float, cx: float, r: float) -> np.ndarray:
    """Boolean mask of a filled shape centred at (cy, cx) with half-size r."""
    dy, dx = _YS - cy, _XS - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return np.maximum(abs(dy), abs(dx)) <= r * 0.85
    if shape == "triangle":  # apex up: the allowed width grows linearly towards the base
        return (dy >= -r) & (dy <= r) & (abs(dx) <= (dy + r) / 2)
    if shape == "cross":
        inside = np.maximum(abs(dy), abs(dx)) <= r
        return inside & ((abs(dy) <= r / 3) | (abs(dx) <= r / 3))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask minus its 4-neighbour erosion: a one-pixel outline."""
    eroded = mask.copy()
    eroded[1:, :] &= mask[:-1, :]
    eroded[:-1, :] &= mask[1:, :]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    return mask & ~eroded


def glyph_mask(digit: int, top: int, left: int, scale: int) -> np.ndarray:
    """Boolean mask of a digit drawn from its 3x5 bitmap, each bit a scale x scale block."""
    bits = np.array([int(b) for b in _GLYPHS[digit]], dtype=bool).reshape(5, 3)
    big = np.kron(bits, np.ones((scale, scale), dtype=bool))
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    h, w = big.shape
    mask[top : top + h, left : left + w] = big[: IMAGE_SIZE - top, : IMAGE_SIZE - left]
    return mask


def texture_mask(texture: str, period: int, phase: int) -> np.ndarray:
    """Boolean mask of a periodic pattern covering the whole image."""
    ys, xs = _YS.astype(int) + phase, _XS.astype(int) + phase
    half = max(period // 2, 1)
    if texture == "stripes":  # horizontal
        return (ys % period) < half
    if texture == "bars":  # vertical
        return (xs % period) < half
    if texture == "dots":
        return ((ys % period) < 2) & ((xs % period) < 2)
    if texture == "checker":
        return ((ys // half) + (xs // half)) % 2 == 0
    raise ValueError(f"unknown texture {texture!r}; expected one of {TEXTURES}")


def chart_mask(trend: str, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of a four-bar chart whose heights follow the trend."""
    base = {"rising": [1, 2, 3, 4], "falling": [4, 3, 2, 1], "peak": [1, 4, 4, 1],
            "valley": [4, 1, 1, 4]}[trend]
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    jitter = rng.integers(0, 2, size=4)
    for i, level in enumerate(base):
        height = 5 * level + int(jitter[i])
        left = 4 + 6 * i
        mask[IMAGE_SIZE - 3 - height : IMAGE_SIZE - 3, left : left + 4] = True
    return mask


@dataclass(frozen=True)
class Style:
    """How a scene is painted: background, foreground treatment and noise."""

    background: tuple[int, int, int]
    outline: bool = False
    noise: float = 0.0
    dim: float = 1.0  # foreground colour scale (darker ink on paper)


STYLES = {
    "clean": Style(background=(0, 0, 0)),
    "outline": Style(background=(90, 90, 90), outline=True),
    "noisy": Style(background=(40, 40, 40), noise=45.0),
    "paper": Style(background=(235, 235, 225), dim=0.6),
}


def paint(masks: list[tuple[np.ndarray, str]], style: Style,
          rng: np.random.Generator) -> np.ndarray:
    """Paint coloured masks onto a background in a style; returns an HxWx3 uint8 image."""
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    image[:] = style.background
    for mask, colour in masks:
        if style.outline:
            mask = _outline(mask)
        image[mask] = np.array(COLOURS[colour], dtype=np.float32) * style.dim
    if style.noise:
        image += rng.normal(0.0, style.noise, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- scenes


def _place(rng: np.random.Generator, count: int, r: float) -> list[tuple[float, float]]:
    """Non-overlapping centres for `count` objects of half-size r (cells of a 3x3 grid)."""
    cells = rng.choice(9, size=count, replace=False)
    step = IMAGE_SIZE / 3
    return [((c // 3 + 0.5) * step + rng.uniform(-1, 1), (c % 3 + 0.5) * step + rng.uniform(-1, 1))
            for c in cells]


def _position_centre(rng: np.random.Generator, position: str) -> tuple[float, float]:
    mid, near, far = IMAGE_SIZE / 2, 6.5, IMAGE_SIZE - 6.5
    jitter = rng.uniform(-3, 3)
    return {"left": (mid + jitter, near), "right": (mid + jitter, far),
            "top": (near, mid + jitter), "bottom": (far, mid + jitter)}[position]


@dataclass
class Scene:
    """What is in an image, so that questions can be answered from it."""

    image: np.ndarray
    kind: str  # shapes | digit | texture | chart
    obj: str  # the shape, digit word, texture or trend shown
    colour: str
    count: int = 1
    position: str = ""


def shapes_scene(rng: np.random.Generator, style: str, count: int | None = None,
                 position: str | None = None, colours: tuple[str, ...] = tuple(COLOURS)) -> Scene:
    """One or more objects of one shape and one colour (drawn from `colours`)."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = colours[rng.integers(len(colours))]
    if position is not None:
        centres, r = [_position_centre(rng, position)], 5.5
    else:
        count = count or 1
        r = 6.5 if count == 1 else 4.0
        centres = ([(IMAGE_SIZE / 2 + rng.uniform(-4, 4), IMAGE_SIZE / 2 + rng.uniform(-4, 4))]
                   if count == 1 else _place(rng, count, r))
    masks = [(shape_mask(shape, cy, cx, r), colour) for cy, cx in centres]
    image = paint(masks, STYLES[style], rng)
    return Scene(image, "shapes", shape, colour, len(centres), position or "")


def digit_scene(rng: np.random.Generator, style: str) -> Scene:
    digit = int(rng.integers(10))
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    scale = 4
    top = int(rng.integers(2, IMAGE_SIZE - 5 * scale - 1))
    left = int(rng.integers(2, IMAGE_SIZE - 3 * scale - 1))
    image = paint([(glyph_mask(digit, top, left, scale), colour)], STYLES[style], rng)
    return Scene(image, "digit", DIGIT_WORDS[digit], colour)


def texture_scene(rng: np.random.Generator, style: str) -> Scene:
    texture = TEXTURES[rng.integers(len(TEXTURES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    mask = texture_mask(texture, period=int(rng.integers(4, 7)), phase=int(rng.integers(0, 6)))
    return Scene(paint([(mask, colour)], STYLES[style], rng), "texture", texture, colour)


def chart_scene(rng: np.random.Generator, style: str) -> Scene:
    trend = TRENDS[rng.integers(len(TRENDS))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    return Scene(paint([(chart_mask(trend, rng), colour)], STYLES[style], rng), "chart", trend,
                 colour)


# ----------------------------------------------------------------------------- tasks

TaskFn = Callable[[np.random.Generator], Sample]
TASKS: dict[str, TaskFn] = {}


def toy_task(name: str) -> Callable[[TaskFn], TaskFn]:
    """Register a sample generator under a task name."""

    def register(fn: TaskFn) -> TaskFn:
        TASKS[name] = fn
        return fn

    return register


def _what_is_shown(scene_fn: Callable[[np.random.Generator], Scene]) -> TaskFn:
    """Domain tasks: the same two questions (what is shown, which colour) on any kind of scene."""

    def make(rng: np.random.Generator) -> Sample:
        scene = scene_fn(rng)
        if rng.random() < 0.5:
            return Sample(scene.image, "what is shown in the image ?", scene.obj)
        return Sample(scene.image, "what colour is it ?", scene.colour)

    return make


# toy_domain: the same questions over four visual domains (each with its own content and style),
# as COAST-domain asks over charts, documents, icons and medical images.
TASKS["domain_icons"] = _what_is_shown(lambda rng: shapes_scene(rng, "clean"))
TASKS["domain_documents"] = _what_is_shown(lambda rng: digit_scene(rng, "paper"))
TASKS["domain_textures"] = _what_is_shown(lambda rng: texture_scene(rng, "noisy"))
TASKS["domain_charts"] = _what_is_shown(lambda rng: chart_scene(rng, "outline"))


# toy_capability: a new skill in every task.
@toy_task("capability_recognition")
def _recognition(rng: np.random.Generator) -> Sample:
    scene = shapes_scene(rng, "clean")
    return Sample(scene.image, "which shape is this ?", scene.obj)


@toy_task("capability_counting")
def _counting(rng: np.random.Generator) -> Sample:
    scene = shapes_scene(rng, "clean", count=int(rng.integers(1, 5)))
    return Sample(scene.image, "how many objects are there ?", COUNT_WORDS[scene.count])


@toy_task("capability_colour")
def _colour(rng: np.random.Generator) -> Sample:
    scene = shapes_scene(rng, "outline")
    return Sample(scene.image, "which colour is the object ?", scene.colour)


@toy_task("capability_position")
def _position(rng: np.random.Generator) -> Sample:
    scene = shapes_scene(rng, "clean", position=POSITIONS[rng.integers(4)])
    return Sample(scene.image, "where is the object ?", scene.position)


@toy_task("capability_reading")
def _reading(rng: np.random.Generator) -> Sample:
    scene = digit_scene(rng, "clean")
    return Sample(scene.image, "which number is written ?", scene.obj)


# toy_dataset: new instruction and answer formats, as COAST-dataset changes source datasets.
@toy_task("dataset_short_answer")
def _short_answer(rng: np.random.Generator) -> Sample:
    scene = shapes_scene(rng, "clean")
    return Sample(scene.image, "name the shape . answer with one word .", scene.obj)


@toy_task("dataset_multiple_choice")
def _multiple_choice_colour(rng: np.random.Generator) -> Sample:
    # Options in one fixed order: the tiny LM cannot learn to look an answer up among shuffled
    # options within the CPU budget (it stays at chance), so this task tests the answer *format*
    # (reply with an option letter, scored by option matching), not option lookup.
    scene = shapes_scene(rng, "clean", colours=MC_COLOURS)
    options = " ".join(f"{OPTION_LETTERS[i]} . {c}" for i, c in enumerate(MC_COLOURS))
    letter = OPTION_LETTERS[MC_COLOURS.index(scene.colour)]
    prompt = f"what colour is the shape ? {options} . answer with the letter ."
    return Sample(scene.image, prompt, letter, match="option")


@toy_task("dataset_yes_no")
def _yes_no(rng: np.random.Generator) -> Sample:
    scene = shapes_scene(rng, "clean")
    asked = scene.obj if rng.random() < 0.5 else SHAPES[rng.integers(len(SHAPES))]
    answer = "yes" if asked == scene.obj else "no"
    return Sample(scene.image, f"is there a {asked} ? answer yes or no .", answer)


@toy_task("dataset_caption")
def _caption(rng: np.random.Generator) -> Sample:
    scene = shapes_scene(rng, "clean", position=POSITIONS[rng.integers(4)])
    answer = f"{scene.colour} {scene.obj} at the {scene.position}"
    return Sample(scene.image, "write a short caption .", answer)


# The pre-training mix: templates and answers no stream uses, over all kinds of content, so that
# the backbone can see and read before any stream starts.
@toy_task("pretrain_describe_shapes")
def _describe_shapes(rng: np.random.Generator) -> Sample:
    count = int(rng.integers(1, 5))
    scene = shapes_scene(rng, STYLES_PRETRAIN[rng.integers(len(STYLES_PRETRAIN))], count=count)
    return Sample(scene.image, "describe .", f"{COUNT_WORDS[count]} {scene.colour} {scene.obj}")


@toy_task("pretrain_describe_place")
def _describe_place(rng: np.random.Generator) -> Sample:
    scene = shapes_scene(rng, "clean", position=POSITIONS[rng.integers(4)])
    return Sample(scene.image, "locate .", f"{scene.obj} {scene.position}")


@toy_task("pretrain_describe_digit")
def _describe_digit(rng: np.random.Generator) -> Sample:
    scene = digit_scene(rng, STYLES_PRETRAIN[rng.integers(len(STYLES_PRETRAIN))])
    return Sample(scene.image, "describe .", f"{scene.colour} digit {scene.obj}")


@toy_task("pretrain_describe_texture")
def _describe_texture(rng: np.random.Generator) -> Sample:
    scene = texture_scene(rng, "clean")
    return Sample(scene.image, "describe .", f"{scene.colour} {scene.obj}")


@toy_task("pretrain_describe_chart")
def _describe_chart(rng: np.random.Generator) -> Sample:
    scene = chart_scene(rng, "clean")
    return Sample(scene.image, "describe .", f"{scene.colour} chart {scene.obj}")


STYLES_PRETRAIN = ("clean", "outline")
PRETRAIN_MIX = tuple(name for name in TASKS if name.startswith("pretrain_"))

# Labels of the vision tower's supervised pre-training (as a ViT is pre-trained on ImageNet
# before LLaVA aligns it): what each scene shows, whatever the style.
SCENE_LABELS = {
    "object": SHAPES + DIGIT_WORDS + TEXTURES + TRENDS,
    "colour": tuple(COLOURS),
    "count": COUNT_WORDS[1:],
    "position": POSITIONS,
}


def labelled_scene(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, int]]:
    """A random scene of any kind and style with its class labels (-1 where not applicable)."""
    style = tuple(STYLES)[rng.integers(len(STYLES))]
    kind = rng.integers(4)
    if kind == 0:
        if rng.random() < 0.5:
            scene = shapes_scene(rng, style, position=POSITIONS[rng.integers(4)])
        else:
            scene = shapes_scene(rng, style, count=int(rng.integers(1, 5)))
    else:
        scene = (digit_scene, texture_scene, chart_scene)[kind - 1](rng, style)
    labels = {"object": SCENE_LABELS["object"].index(scene.obj),
              "colour": SCENE_LABELS["colour"].index(scene.colour),
              "count": scene.count - 1 if scene.kind == "shapes" else -1,
              "position": POSITIONS.index(scene.position) if scene.position else -1}
    return scene.image, labels


def generate(task: str, n: int, seed: int, split: str) -> list[Sample]:
    """`n` samples of a toy task; a pure function of (task, n, seed, split)."""
    if task not in TASKS:
        raise KeyError(f"unknown toy task {task!r}; valid tasks: {', '.join(sorted(TASKS))}")
    # crc32 (unlike hash()) is stable across processes, so the data is too.
    rng = np.random.default_rng([seed, zlib.crc32(task.encode()), zlib.crc32(split.encode())])
    return [TASKS[task](rng) for _ in range(n)]


def vocabulary() -> list[str]:
    """Every word any toy prompt or answer can contain (for building the tokenizer)."""
    words: set[str] = set()
    rng = np.random.default_rng(0)
    for fn in TASKS.values():
        for _ in range(200):
            sample = fn(rng)
            words.update(sample.prompt.split())
            words.update(sample.answer.split())
    words.update(SHAPES, COLOURS, COUNT_WORDS, DIGIT_WORDS, POSITIONS, TEXTURES, TRENDS,
                 OPTION_LETTERS)
    return sorted(words)
