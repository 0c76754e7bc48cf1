"""MLLM-CL's per-task scorers (Zhao et al. 2025, arXiv 2506.05453), as its evaluation scripts in
github.com/bjzhb666/MLLM-CL `ETrain/Eval/LLaVA/CoIN/` score one answer.

Domain continual learning (scripts/LLaVA/Eval_dom/*.sh name the script per task):
  RS, AD  `eval_ai2d.py`   `contains_answer`  (word-bounded containment)
  Med     `eval_pvqa.py`   `pvqa_correct`     (plain containment)
  Sci     `eval_sci.py`    `sci_score`        (exact for AI2D/TQA/VQA/SciVerse, MapQA rules)
  Fin     `eval_finvis.py` `finvis_correct`   (equality with spaces and dots removed)
Ability continual learning (scripts/LLaVA/Eval_ability/*.sh):
  OCR     `eval_ocr.py`    `ocr_correct`      (OCRBench: any answer contained)
  VP      `eval_sat.py`    `sat_correct`      (CV-Bench: containment, spaces and dots removed)
  Math    `eval_math.py`   needs an external judge: VLMEvalKit's MathVista evaluation, which asks
          GPT-4 to extract the answer. mcl offers `exact_fallback` (case-insensitive equality
          after stripping), marked as a fallback wherever it is used.
  GUI     `convert_result_to_submission.py` writes the predicted option letters into MMT-Bench's
          submission file, scored by MMT-Bench's server (external). Fallback: `option`
          (mcl.metrics.answers.option_match), marked likewise.

Every domain script skips a prediction containing "Unanswerable" while still counting it in the
total, so such an answer scores 0; the scorers here do the same. Test entries carry what the
scorers need beyond the answer (OCRBench's `answer_type`, the image file name that tells Sci's
source data set, the question); `reference_from_entry` builds that reference when the files are
read.
"""

from __future__ import annotations

from collections.abc import Callable


def _unanswerable(prediction: str) -> bool:
    return "Unanswerable" in prediction  # case-sensitive, as in the scripts


def contains_answer(prediction: str, answer: str) -> bool:
    """eval_ai2d.py (RS, AD): a multi-word answer must occur in the prediction; a one-word answer
    (its dots removed) must occur followed or preceded by a space, or followed by "." or ",",
    when the prediction has several words, and anywhere in a one-word prediction."""
    if _unanswerable(prediction):
        return False
    pred, gt = prediction.lower(), answer.lower()
    if " " in gt:
        return gt in pred
    gt = gt.replace(".", "")
    if " " in pred:
        return any(form in pred for form in (" " + gt, gt + " ", gt + ".", gt + ","))
    return gt in pred


def pvqa_correct(prediction: str, answer: str) -> bool:
    """eval_pvqa.py (Med): the lower-cased answer occurs in the lower-cased prediction."""
    return not _unanswerable(prediction) and answer.lower() in prediction.lower()


_SCI_EXACT_SOURCES = ("AI2D", "TQA", "VQA", "SciVerse")


def sci_score(prediction: str, reference: dict) -> float:
    """eval_sci.py (Sci). The source data set is the image file name's prefix before "_": for
    AI2D, TQA, VQA and SciVerse the lower-cased strings must be equal; otherwise (MapQA) a
    "Which states" question scores the fraction of the answer's comma-separated states found
    among the prediction's (split on ",", nothing stripped, as there), and any other question
    is right when the answer occurs in the prediction."""
    if _unanswerable(prediction):
        return 0.0
    pred, gt = prediction.lower(), str(reference["answer"]).lower()
    if reference["source"] in _SCI_EXACT_SOURCES:
        return float(gt == pred)
    if "Which states" in reference["question"]:
        states = gt.split(",")
        predicted = pred.split(",")
        return sum(state in predicted for state in states) / len(states)
    return float(gt in pred)


def finvis_correct(prediction: str, answer: str) -> bool:
    """eval_finvis.py (Fin): the prediction lower-cased with spaces and dots removed equals the
    lower-cased answer (multiple choice and true/false questions)."""
    if _unanswerable(prediction):
        return False
    return prediction.lower().replace(" ", "").replace(".", "") == answer.lower()


HMER = "Handwritten Mathematical Expression Recognition"


def ocr_correct(prediction: str, reference: dict) -> bool:
    """eval_ocr.py (OCRBench): right when any answer occurs in the prediction; handwritten
    mathematical expressions compare with all spaces and newlines removed (case kept), other
    categories lower-cased, stripped and without newlines. The per-category sum the script
    prints is, divided by the number of questions, this mean."""
    answers = reference["answers"]
    if reference["category"] == HMER:
        pred = prediction.strip().replace(" ", "").replace("\n", "")
        return any(a.strip().replace(" ", "").replace("\n", "") in pred for a in answers)
    pred = prediction.lower().strip().replace("\n", "")
    return any(a.lower().strip().replace("\n", "") in pred for a in answers)


def _squash(text: str) -> str:
    return text.lower().strip().replace(" ", "").replace("\n", "").replace(".", "")


def sat_correct(prediction: str, answer: str) -> bool:
    """eval_sat.py (VP, CV-Bench): the answer occurs in the prediction, both lower-cased with
    spaces, newlines and dots removed."""
    return _squash(answer) in _squash(prediction)


def exact_fallback(prediction: str, answer: str) -> bool:
    """FALLBACK, not the benchmark's scorer: case-insensitive equality after stripping, for
    tasks whose official score needs an external judge (MLLM-CL Math: GPT-4 answer
    extraction)."""
    return prediction.strip().lower() == answer.strip().lower()


def _sci_reference(entry: dict) -> dict:
    return {"answer": str(entry["answer"]),
            "source": str(entry["image"]).split("/")[-1].split("_")[0],
            "question": str(entry["text"])}


def _ocr_reference(entry: dict) -> dict:
    answers = entry["answer"] if isinstance(entry["answer"], list) else [entry["answer"]]
    return {"answers": [str(a) for a in answers], "category": str(entry["answer_type"])}


# match -> the reference its scorer needs, built from a test entry (question-file format).
ENTRY_REFERENCES: dict[str, Callable[[dict], object]] = {
    "mllm_cl_sci": _sci_reference,
    "mllm_cl_ocr": _ocr_reference,
}
