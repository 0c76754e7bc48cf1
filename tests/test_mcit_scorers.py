"""The UCIT and MLLM-CL scorers on cases that follow their official evaluation code."""

from __future__ import annotations

import pytest

from mcl.metrics.benchmarks import score
from mcl.metrics.captions import attach_corpus, cider, tokenize
from mcl.metrics.mllm_cl import HMER

# Three images, as pycocoevalcap 1.2's Cider().compute_score(gts, res) was run on them (these
# strings are already tokenised): per-image 2.1814039873726605, 1.2099289038891903,
# 0.23658576463652015, corpus 1.2093062186327903.
REFS = [["a man is riding a horse on the beach", "a person rides a brown horse",
         "man on horse near the ocean"],
        ["two dogs play in the snow", "a pair of dogs running through snow"],
        ["a woman holds an umbrella in the rain", "woman with umbrella walking on a wet street"]]
PREDS = ["a man riding a horse on a beach", "dogs playing in snow", "a cat sleeping on a sofa"]


def test_cider_matches_pycocoevalcap_per_image_and_for_the_corpus():
    refs = attach_corpus(REFS)
    scores = [score(p, r, "cider") for p, r in zip(PREDS, refs, strict=True)]
    assert scores == pytest.approx([2.1814039873726605, 1.2099289038891903,
                                    0.23658576463652015], rel=1e-12)
    assert sum(scores) / 3 == pytest.approx(1.2093062186327903, rel=1e-12)
    # The document frequencies are the split's: the same caption scores differently alone.
    alone = attach_corpus(REFS[:1])[0]
    assert cider(PREDS[0], alone) != pytest.approx(scores[0])


def test_cider_refuses_references_without_corpus_statistics():
    with pytest.raises(TypeError, match="attach_corpus"):
        cider("a dog", ["a dog runs"])


@pytest.mark.parametrize("text,tokens", [
    # Stanford PTBTokenizer 3.4.1 (-lowerCase), punctuation then dropped as coco-caption does.
    ("A man, (wearing a hat) doesn't ride... the horse.",
     "a man -lrb- wearing a hat -rrb- does n't ride the horse"),
    ("The dog's ball is red-and-white; it's \"new\"!",
     "the dog 's ball is red-and-white it 's new"),
    ("Two kids play at 3:30 in the U.S. park?", "two kids play at 3:30 in the u.s. park"),
])
def test_tokenizer_agrees_with_the_ptb_tokenizer_on_captions(text, tokens):
    assert " ".join(tokenize(text)) == tokens


def test_ucit_exact_is_case_insensitive_equality_only():
    # eval_deepseek_r1.py: pred.upper() == ground_truth.upper() on the stripped generation.
    assert score(" Golden Retriever\n", "golden retriever", "exact_case") == 1.0
    assert score("golden retriever.", "golden retriever", "exact_case") == 0.0
    assert score("The answer is B", "B", "exact_case") == 0.0


def test_mllm_cl_eval_ai2d_word_bounded_containment():
    kind = "mllm_cl_contains"
    assert score("It is a parking lot.", "parking lot", kind) == 1.0  # multi-word: contained
    assert score("yesterday it rained", "yes", kind) == 0.0  # one word, not bounded
    assert score("yes, it is", "yes", kind) == 1.0
    assert score("Yes.", "yes", kind) == 1.0  # one-word prediction: contained anywhere
    assert score("us", "U.S.", kind) == 1.0  # dots leave a one-word answer
    assert score("Unanswerable, parking lot", "parking lot", kind) == 0.0


def test_mllm_cl_eval_pvqa_plain_containment():
    assert score("not sure", "no", "mllm_cl_pvqa") == 1.0  # the script's own quirk
    assert score("Yes", "no", "mllm_cl_pvqa") == 0.0


def test_mllm_cl_eval_sci_by_source():
    ai2d = {"answer": "B", "source": "AI2D", "question": "Which part?"}
    assert score("b", ai2d, "mllm_cl_sci") == 1.0 and score("b.", ai2d, "mllm_cl_sci") == 0.0
    states = {"answer": "Ohio,Utah", "source": "MapQA", "question": "Which states have ...?"}
    assert score("utah,texas", states, "mllm_cl_sci") == 0.5
    assert score("utah, ohio", states, "mllm_cl_sci") == 0.5  # " ohio" is not "ohio"
    other = {"answer": "Texas", "source": "MapQA", "question": "Does Texas ...?"}
    assert score("it is texas", other, "mllm_cl_sci") == 1.0


def test_mllm_cl_eval_finvis_removes_spaces_and_dots():
    assert score("A.", "a", "mllm_cl_finvis") == 1.0
    assert score("True", "true", "mllm_cl_finvis") == 1.0
    assert score("A B", "a", "mllm_cl_finvis") == 0.0


def test_mllm_cl_eval_ocr_any_answer_and_formula_rules():
    regular = {"answers": ["Hello World", "hello"], "category": "Regular Text Recognition"}
    assert score("the text says HELLO", regular, "mllm_cl_ocr") == 1.0
    formula = {"answers": ["x ^ 2 + 1"], "category": HMER}
    assert score("x^2+1 = y", formula, "mllm_cl_ocr") == 1.0
    assert score("X^2+1", formula, "mllm_cl_ocr") == 0.0  # case is kept for formulas


def test_mllm_cl_eval_sat_squashed_containment_and_fallbacks():
    assert score("(A) 3 .", "3", "mllm_cl_sat") == 1.0
    assert score("(A) 4", "3", "mllm_cl_sat") == 0.0
    assert score(" 42 ", "42", "exact_fallback") == 1.0
    assert score("x = 42", "42", "exact_fallback") == 0.0
