"""Per-example scores that vision-language benchmarks define, each as its reference code does.

VQAv2 soft accuracy lives in :mod:`mcl.metrics.vqa`; this module adds ChartQA relaxed accuracy,
ANLS (ST-VQA/DocVQA), box IoU for grounding, classification by normalised exact match, and the
:data:`SCORERS` registry that maps a benchmark kind to a ``(prediction, reference) -> [0, 1]``
scorer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from mcl.metrics import mllm_cl
from mcl.metrics.answers import exact_match, option_match
from mcl.metrics.captions import cider
from mcl.metrics.vqa import vqa_accuracy

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_BOX = re.compile(r"\[\s*" + r"\s*,\s*".join([_NUMBER] * 4) + r"\s*\]")


def relaxed_accuracy(prediction: str, target: str, tolerance: float = 0.05) -> bool:
    """ChartQA relaxed accuracy (Masry et al. 2022, after Methani et al. 2020).

    As ``relaxed_correctness`` in google-research/pix2struct ``pix2struct/metrics.py`` (vis-nlp/
    ChartQA ships no scorer): when both strings parse as floats and the target is non-zero, the
    prediction is right if ``|pred - target| / |target| <= tolerance``; a string ending in "%"
    is divided by 100 first. Otherwise the strings must be equal ignoring case. As there,
    nothing is stripped and nothing else is parsed, so "12%" vs "12" (0.12 vs 12), "0.0" vs "0"
    (a zero target falls back to string equality) and "1,000" vs "1000" are all wrong.
    """

    def to_float(text: str) -> float | None:
        try:
            return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            return None

    pred_value, target_value = to_float(prediction), to_float(target)
    if pred_value is not None and target_value:
        return abs(pred_value - target_value) / abs(target_value) <= tolerance
    return prediction.lower() == target.lower()


def levenshtein_distance(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions all cost 1) between two strings."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def anls(prediction: str, references: str | Sequence[str], threshold: float = 0.5) -> float:
    """ANLS of one answer (Biten et al. 2019, ST-VQA; used by DocVQA and InfographicVQA).

    As the official DocVQA/InfographicVQA evaluation script (rrc.cvc.uab.es, ch=17): both
    strings are lowercased, stripped and their inner whitespace collapsed; NL = edit distance /
    max length; the score is 1 - min(NL) over the references, set to 0 when below
    ``threshold``. Two details follow that script rather than the paper: a similarity of exactly
    0.5 is kept (the paper zeroes NL >= 0.5), and the length divides by the *raw* strings'
    lengths (before stripping), so untrimmed whitespace slightly raises the score.

    Raises:
        ValueError: if there are no references.
    """
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("anls needs at least one reference answer")
    guess = " ".join(prediction.strip().lower().split())
    distances = []
    for ref in refs:
        answer = " ".join(ref.strip().lower().split())
        length = max(len(ref.upper()), len(prediction.upper()))
        distances.append(levenshtein_distance(answer, guess) / length if length else 0.0)
    score = 1.0 - min(distances)
    return score if score >= threshold else 0.0


def box_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes; 0 if the union is empty.

    Continuous coordinates (no "+1" pixel convention), as CoIN's ``eval_grounding.py`` and the
    usual RefCOCO evaluations of models that emit normalised boxes.
    """
    ax1, ay1, ax2, ay2 = box_a
    bx1, by1, bx2, by2 = box_b
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def grounding_correct(
    pred_box: Sequence[float], target_box: Sequence[float], threshold: float = 0.5
) -> bool:
    """RefCOCO Acc@0.5: right when IoU >= ``threshold`` (as in the refer/MAttNet code).

    CoIN's own script uses a strict ``>``; the two differ only at IoU exactly 0.5.
    """
    return box_iou(pred_box, target_box) >= threshold


def parse_box(text: str) -> list[float] | None:
    """Read the first ``[x1, y1, x2, y2]`` box in LLaVA-1.5's normalised format from ``text``.

    LLaVA-1.5 answers grounding prompts with e.g. "[0.12, 0.34, 0.56, 0.78]", coordinates in
    [0, 1] of the padded square image. Returns ``None`` (to be counted wrong) when there is no
    bracketed list of exactly four numbers, a coordinate lies outside [0, 1], or x2 < x1 or
    y2 < y1.
    """
    match = _BOX.search(text)
    if match is None:
        return None
    box = [float(value) for value in match.groups()]
    if not all(0.0 <= value <= 1.0 for value in box) or box[2] < box[0] or box[3] < box[1]:
        return None
    return box


def classification_correct(prediction: str, label: str) -> bool:
    """Top-1 correctness of a generated class name: normalised exact match with ``label``.

    Uses :func:`mcl.metrics.answers.normalize_answer` (case, punctuation and articles ignored).
    Stricter than CoIN's ImageNet script, which accepts either string containing the other.
    """
    return exact_match(prediction, label)


def _answer_list(reference: object) -> list[str]:
    # A bare string would be iterated character by character; refuse it loudly.
    if isinstance(reference, str) or not isinstance(reference, Sequence):
        raise TypeError(f"expected a list of reference answers, got {reference!r}")
    return [str(answer) for answer in reference]


def _box(reference: object) -> list[float]:
    # A malformed *reference* is a data error, not a wrong answer, so it raises.
    if isinstance(reference, str):
        box = parse_box(reference)
    elif isinstance(reference, Sequence) and len(reference) == 4:
        box = [float(value) for value in reference]
    else:
        box = None
    if box is None or not all(math.isfinite(value) for value in box):
        raise ValueError(f"reference is not a box [x1, y1, x2, y2]: {reference!r}")
    return box


def _score_grounding(prediction: str, reference: object) -> float:
    box = parse_box(prediction)
    return 0.0 if box is None else float(grounding_correct(box, _box(reference)))


SCORERS: dict[str, Callable[[str, object], float]] = {
    # The general matchers of mcl.metrics.answers, so that one registry names every scorer.
    "exact": lambda prediction, reference: float(exact_match(prediction, str(reference))),
    "option": lambda prediction, reference: float(option_match(prediction, str(reference))),
    "vqa": lambda prediction, reference: vqa_accuracy(prediction, _answer_list(reference)),
    # Generated text often carries surrounding whitespace; pix2struct scored stripped decodes.
    "relaxed": lambda prediction, reference: float(
        relaxed_accuracy(prediction.strip(), str(reference).strip())
    ),
    "anls": lambda prediction, reference: anls(
        prediction, reference if isinstance(reference, str) else _answer_list(reference)
    ),
    "grounding": _score_grounding,
    "classification": lambda prediction, reference: float(
        classification_correct(prediction, str(reference))
    ),
    # UCIT (HiDe-LLaVA llava/eval/eval_deepseek_r1.py): pred.upper() == ground_truth.upper(),
    # nothing else normalised (the generated text is stripped, as model_answer.py does).
    "exact_case": lambda prediction, reference: float(
        prediction.strip().upper() == str(reference).upper()
    ),
    # CIDEr-D with the test split's statistics (mcl.metrics.captions); on coco-caption's scale.
    "cider": cider,
    # MLLM-CL's scripts (mcl.metrics.mllm_cl); the two fallbacks stand in for external judges.
    "mllm_cl_contains": lambda p, r: float(mllm_cl.contains_answer(p, str(r))),
    "mllm_cl_pvqa": lambda p, r: float(mllm_cl.pvqa_correct(p, str(r))),
    "mllm_cl_sci": mllm_cl.sci_score,
    "mllm_cl_finvis": lambda p, r: float(mllm_cl.finvis_correct(p, str(r))),
    "mllm_cl_ocr": lambda p, r: float(mllm_cl.ocr_correct(p, r)),
    "mllm_cl_sat": lambda p, r: float(mllm_cl.sat_correct(p, str(r))),
    "exact_fallback": lambda p, r: float(mllm_cl.exact_fallback(p, str(r))),
}


def score(prediction: str, reference: object, kind: str) -> float:
    """Score ``prediction`` against ``reference`` with the benchmark scorer named by ``kind``.

    ``reference`` is what the benchmark stores: a list of answers for "vqa" and "anls" (a
    string is also accepted for "anls"), a string for "relaxed", a box (or its string) for
    "grounding", a label for "classification". Returns a score in [0, 1], except "cider"
    (coco-caption's CIDEr scale, 0..10).

    Raises:
        ValueError: if ``kind`` is not a key of :data:`SCORERS`.
    """
    scorer = SCORERS.get(kind)
    if scorer is None:
        raise ValueError(f"unknown benchmark kind {kind!r}; valid kinds: {', '.join(SCORERS)}")
    return scorer(prediction, reference)
