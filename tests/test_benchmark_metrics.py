"""Tests for mcl.metrics.vqa and mcl.metrics.benchmarks.

Expected values are worked out by hand from the reference code named in each comment:
vqaEval.py of GT-Vision-Lab/VQA, ``relaxed_correctness`` of google-research/pix2struct, the
official DocVQA/InfographicVQA ANLS script, and CoIN's / RefCOCO's grounding evaluation.
"""

from __future__ import annotations

import pytest

from mcl.metrics.benchmarks import (
    SCORERS,
    anls,
    box_iou,
    classification_correct,
    grounding_correct,
    levenshtein_distance,
    parse_box,
    relaxed_accuracy,
    score,
)
from mcl.metrics.vqa import vqa_accuracy, vqa_normalize

OTHERS = ["cat", "cow", "pig", "hen", "fox", "owl", "bee", "ant", "elk", "yak"]


def ten_refs(matching: int, answer: str = "dog") -> list[str]:
    """Ten annotator answers of which ``matching`` equal ``answer`` and the rest all differ."""
    return [answer] * matching + OTHERS[: 10 - matching]


# --- VQAv2 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two", "2"),  # lowercased, then manualMap "two" -> "2"
        ("ten.", "10"),  # period not before a digit dropped, then manualMap
        ("none", "0"),  # manualMap also maps "none" -> "0"
        ("the dog.", "dog"),  # periodStrip, then article removal
        ("A Man", "man"),
        ("yes!", "yes"),  # "!" touches no space: replaced by a space, then split/join
        ("dont", "don't"),  # contractions map
        ("Whats up?", "what's up"),
        ("it's", "it's"),  # "'" is not in the punctuation list
        ("Im", "im"),  # the map's "Im" key is dead: words are lowercased first
        ("1,000", "1000"),  # commaStrip (\d)(,)(\d) found: punctuation is deleted
        ("red,blue", "red blue"),  # no digit comma, no space: comma becomes a space
        ("1,000 red,blue", "1000 redblue"),  # one digit comma deletes *every* mark
        ("hot - dog", "hot dog"),  # " -" present: deleted, double space collapses
        ("t-shirt", "t shirt"),
        ("3.5", "3.5"),  # period before a digit kept
        ("3.", "3"),  # "(?!<=\d)" typo: the intended look-behind never applies
        ("a.m.", "am"),
        ("12%", "12%"),  # "%" is not in the punctuation list
        ("\tYes\n", "yes"),  # tabs/newlines become spaces, ends stripped
        ("." * 40, "." * 8),  # re.UNICODE (32) passed as `count`: only 32 periods go
    ],
)
def test_vqa_normalize_matches_official(text: str, expected: str) -> None:
    assert vqa_normalize(text) == expected


@pytest.mark.parametrize(
    ("matching", "expected"),
    [
        # Leave-one-out over 10 annotators, acc_i = min(1, matches among the other 9 / 3):
        (0, 0.0),
        (1, 0.3),  # 1 ref left out: 0/3; 9 refs: 1/3 -> (9 * 1/3) / 10 = 0.3
        (2, 0.6),  # 2 refs: 1/3 each; 8 refs: 2/3 -> (2/3 + 16/3) / 10 = 0.6
        (3, 0.9),  # 3 refs: 2/3 each; 7 refs: min(1, 3/3) -> (2 + 7) / 10 = 0.9
        (4, 1.0),  # 4 refs: 3/3; 6 refs: min(1, 4/3) -> 10 / 10
        (10, 1.0),
    ],
)
def test_vqa_accuracy_leave_one_out(matching: int, expected: float) -> None:
    assert vqa_accuracy("dog", ten_refs(matching)) == pytest.approx(expected)


def test_vqa_accuracy_normalises_prediction_and_references() -> None:
    # "Two." -> "2"; the three "two"/"2"/"Two" references all normalise to "2": 3 matches.
    refs = ["two", "2", "Two"] + OTHERS[:7]
    assert vqa_accuracy("Two.", refs) == pytest.approx(0.9)
    assert vqa_accuracy("the dog", ["dog", "a dog"] + OTHERS[:8]) == pytest.approx(0.6)


def test_vqa_accuracy_strict_reproduces_unanimous_quirk() -> None:
    # vqaEval.py (since 2021) skips all normalisation when the 10 answers are one string.
    assert vqa_accuracy("Yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("Yes", ["yes"] * 10, strict=True) == 0.0
    assert vqa_accuracy("yes", ["yes"] * 10, strict=True) == 1.0
    # With differing answers both modes normalise, so they agree.
    refs = ["yes"] * 9 + ["Yes!"]
    assert vqa_accuracy("YES", refs, strict=True) == vqa_accuracy("YES", refs) == 1.0


def test_vqa_accuracy_edge_cases() -> None:
    assert vqa_accuracy("dog", ["dog"]) == 0.0  # one reference: no "other" annotator agrees
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("dog", [])


# --- ChartQA relaxed accuracy (pix2struct relaxed_correctness) --------------------------------


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        ("100", "100", True),
        ("105", "100", True),  # |105 - 100| / 100 = 0.05 <= 0.05
        ("95", "100", True),  # 5% below
        ("105.1", "100", False),
        ("94.9", "100", False),
        ("-10.4", "-10", True),  # relative to |target|: 0.4 / 10 = 0.04
        ("12.5%", "12%", True),  # 0.125 vs 0.12: 0.005 / 0.12 = 0.0417
        ("0.12", "12%", True),  # "%" divides by 100 on either side
        ("12", "12%", False),  # 12 vs 0.12
        ("0", "0", True),  # zero target: string comparison
        ("0.0", "0", False),  # ... so an equal number written differently fails
        ("1,000", "1000", False),  # thousands separators are not parsed
        ("Yes", "yes", True),  # non-numeric: case-insensitive exact match
        ("yes ", "yes", False),  # no stripping in the reference implementation
        ("Democrats", "Republicans", False),
    ],
)
def test_relaxed_accuracy(prediction: str, target: str, expected: bool) -> None:
    assert relaxed_accuracy(prediction, target) is expected


def test_relaxed_accuracy_custom_tolerance() -> None:
    assert relaxed_accuracy("110", "100", tolerance=0.1)
    assert not relaxed_accuracy("110", "100")


# --- ANLS -------------------------------------------------------------------------------------


def test_levenshtein_distance() -> None:
    assert levenshtein_distance("kitten", "sitting") == 3  # the textbook example
    assert levenshtein_distance("", "abc") == 3
    assert levenshtein_distance("abc", "abc") == 0
    assert levenshtein_distance("flaw", "lawn") == 2


@pytest.mark.parametrize(
    ("prediction", "references", "expected"),
    [
        ("Hello", ["hello"], 1.0),  # case-insensitive
        ("  Hello   World ", ["hello world"], 1.0),  # stripped, inner whitespace collapsed
        ("abcdefghix", ["abcdefghij"], 0.9),  # 1 edit / 10 chars
        ("abxy", ["abcd"], 0.5),  # NL = 2/4: kept, the script zeroes only scores < 0.5
        ("abxyz", ["abcde"], 0.0),  # NL = 3/5: 0.4 < 0.5
        ("abc", ["xyz"], 0.0),
        ("1999", ["nineteen ninety", "1990", "1990 AD"], 0.75),  # best: 1 edit / 4 chars
        ("1990", ["1999", "1990"], 1.0),  # max over references
        # Distance on normalised strings, length on raw ones: 1 edit / len("abd   ") = 1/6.
        ("abd   ", ["abc"], 5 / 6),
        ("", [""], 1.0),  # both empty: NL defined as 0
        ("", ["abc"], 0.0),
    ],
)
def test_anls(prediction: str, references: list[str], expected: float) -> None:
    assert anls(prediction, references) == pytest.approx(expected)


def test_anls_single_string_reference_and_threshold() -> None:
    assert anls("abcdefghix", "abcdefghij") == pytest.approx(0.9)
    assert anls("abxyz", ["abcde"], threshold=0.3) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="at least one"):
        anls("x", [])


# --- Grounding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box_a", "box_b", "expected"),
    [
        ([0.1, 0.2, 0.5, 0.6], [0.1, 0.2, 0.5, 0.6], 1.0),
        ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7),  # inter 1, union 4 + 4 - 1
        ([0, 0, 1, 1], [0, 0, 0.5, 1], 0.5),  # inside: inter 0.5, union 1
        ([0, 0, 1, 1], [1, 0, 2, 1], 0.0),  # touching edges
        ([0, 0, 1, 1], [2, 2, 3, 3], 0.0),  # disjoint
        ([0.3, 0.3, 0.3, 0.3], [0.3, 0.3, 0.3, 0.3], 0.0),  # empty union
    ],
)
def test_box_iou(box_a: list[float], box_b: list[float], expected: float) -> None:
    assert box_iou(box_a, box_b) == pytest.approx(expected)
    assert box_iou(box_b, box_a) == pytest.approx(expected)


def test_grounding_correct_threshold() -> None:
    assert grounding_correct([0, 0, 0.5, 1], [0, 0, 1, 1])  # IoU exactly 0.5 counts (>=)
    assert not grounding_correct([0, 0, 2, 2], [1, 1, 3, 3])  # IoU 1/7
    assert grounding_correct([0, 0, 2, 2], [1, 1, 3, 3], threshold=0.1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[0.12, 0.34, 0.56, 0.78]", [0.12, 0.34, 0.56, 0.78]),  # LLaVA-1.5 format
        (" [0.12,0.34,0.56,0.78]\n", [0.12, 0.34, 0.56, 0.78]),
        ("The box is [0.1, 0.2, 0.3, 0.4].", [0.1, 0.2, 0.3, 0.4]),
        ("[0, 0, 1, 1]", [0.0, 0.0, 1.0, 1.0]),
        ("[0.12, 0.34, 0.56]", None),  # three numbers
        ("[0.1, 0.2, 0.3, 0.4, 0.5]", None),  # five numbers
        ("0.12, 0.34, 0.56, 0.78", None),  # no brackets
        ("[0.1, 0.2, 0.3, 0.4", None),  # unclosed
        ("[12, 34, 56, 78]", None),  # pixels, not normalised
        ("[0.5, 0.2, 0.1, 0.9]", None),  # x2 < x1
        ("[a, b, c, d]", None),
        ("a dog on the left", None),
        ("", None),
    ],
)
def test_parse_box(text: str, expected: list[float] | None) -> None:
    assert parse_box(text) == expected


# --- Classification ---------------------------------------------------------------------------


def test_classification_correct() -> None:
    assert classification_correct("Golden retriever.", "golden retriever")
    assert classification_correct("A golden retriever", "golden retriever")
    assert not classification_correct("labrador retriever", "golden retriever")
    # Exact, not substring (CoIN's ImageNet script would accept this one).
    assert not classification_correct("This is a golden retriever", "golden retriever")


# --- Registry ---------------------------------------------------------------------------------


def test_scorers_registry_kinds() -> None:
    assert list(SCORERS) == ["exact", "option", "vqa", "relaxed", "anls", "grounding",
                             "classification", "exact_case", "cider", "mllm_cl_contains",
                             "mllm_cl_pvqa", "mllm_cl_sci", "mllm_cl_finvis", "mllm_cl_ocr",
                             "mllm_cl_sat", "exact_fallback"]


@pytest.mark.parametrize(
    ("prediction", "reference", "kind", "expected"),
    [
        ("Dog.", ten_refs(3), "vqa", 0.9),
        ("cat", ten_refs(3), "vqa", 0.3),  # "cat" is one of the other answers
        (" 103\n", "100", "relaxed", 1.0),  # the scorer strips generated whitespace
        ("12", "12%", "relaxed", 0.0),
        ("abcdefghix", ["abcdefghij", "zzz"], "anls", 0.9),
        ("abcdefghix", "abcdefghij", "anls", 0.9),
        ("[0, 0, 0.5, 1]", [0, 0, 1, 1], "grounding", 1.0),
        ("[0, 0, 0.5, 1]", "[0.0, 0.0, 1.0, 1.0]", "grounding", 1.0),  # box stored as text
        ("[0, 0, 0.4, 1]", [0, 0, 1, 1], "grounding", 0.0),  # IoU 0.4
        ("somewhere on the left", [0, 0, 1, 1], "grounding", 0.0),  # malformed: wrong
        ("Tabby cat", "tabby cat", "classification", 1.0),
        ("tiger cat", "tabby cat", "classification", 0.0),
    ],
)
def test_score(prediction: str, reference: object, kind: str, expected: float) -> None:
    value = score(prediction, reference, kind)
    assert isinstance(value, float)
    assert value == pytest.approx(expected)


def test_score_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="vqa, relaxed, anls, grounding, classification"):
        score("x", "x", "bleu")
    with pytest.raises(TypeError, match="list of reference answers"):
        score("dog", "dog", "vqa")  # a bare string would be scored letter by letter
    with pytest.raises(ValueError, match="not a box"):
        score("[0, 0, 1, 1]", [0, 0, 1], "grounding")
