"""VQAv2 soft accuracy with the answer normalisation of the official evaluation.

Source: Antol et al. 2015, "VQA: Visual Question Answering", and the official evaluation script
``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` of GT-Vision-Lab/VQA (commit a013f00, 2021),
re-implemented here; the tables below are the script's data, the code is ours.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# The official contractions table, entries kept as they are: the keys with capitals ("Im", "Ive",
# "Id've", "I'dve") can never match because words are lowercased before the lookup, and
# "somebody'd" -> "somebodyd" runs the wrong way round; both are part of the official behaviour.
_CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
# The official "manualMap": number words up to ten become digits, and "none" becomes "0".
_NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# "." and "'" are not in the list: periods have their own rule, apostrophes survive.
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
          "@", "`", ",", "?", "!")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# The official pattern is "(?!<=\d)(\.)(?!\d)": a typo for the look-behind "(?<!\d)", so its
# first group never rejects anything and the rule is simply "a period not followed by a digit".
# Hence "3." loses its period while "3.5" keeps it.
_PERIOD_STRIP = re.compile(r"\.(?!\d)")
# The official call is periodStrip.sub("", text, re.UNICODE): the flag lands in the `count`
# argument, so at most re.UNICODE == 32 periods are removed.
_PERIOD_COUNT = 32


def _process_punctuation(text: str) -> str:
    # Whether a mark is deleted or replaced by a space is decided on the *input* text, and any
    # digit-comma-digit anywhere switches every mark to deletion: "1,000" -> "1000", but also
    # "1,000 red,blue" -> "1000 redblue".
    delete_all = _COMMA_STRIP.search(text) is not None
    out = text
    for mark in _PUNCT:
        if delete_all or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def _process_digit_article(text: str) -> str:
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_normalize(text: str) -> str:
    """Normalise an answer exactly as the official VQA evaluation (vqaEval.py) does.

    Steps, in the official order: newlines/tabs become spaces and the ends are stripped; the
    punctuation pass (marks in the official list become a space, or are deleted when they touch
    a space or when the text holds a digit-comma-digit anywhere; then periods not followed by a
    digit are deleted); then lowercasing, number words "none"/"zero".."ten" -> digits, removal
    of the articles "a", "an", "the", and the official contractions map ("dont" -> "don't").
    """
    return _process_digit_article(_process_punctuation(_clean(text)))


def vqa_accuracy(prediction: str, references: Sequence[str], strict: bool = False) -> float:
    """VQA soft accuracy of ``prediction`` against the human ``references`` (10 in VQAv2).

    Antol et al. 2015 define Acc = min(1, #humans who gave the answer / 3); the official script
    averages it over the 10-choose-9 subsets of annotators: for each reference, count the *other*
    references equal to the prediction, take min(1, count / 3), then average. With 10 references
    and m of them matching this gives 0.3, 0.6, 0.9, 1.0 for m = 1, 2, 3, 4+. It is meant for
    many references: with a single reference the score is always 0.

    Prediction and references are compared after :func:`vqa_normalize`. The official script
    (since 2021) normalises nothing when all references are the same string, so there "Yes"
    scores 0 against ten "yes"; the earlier official version, still copied by most toolkits,
    always normalised the prediction. We always normalise both, which equals the official result
    whenever that corner case does not arise; ``strict=True`` reproduces it exactly.

    Raises:
        ValueError: if ``references`` is empty.
    """
    if not references:
        raise ValueError("vqa_accuracy needs at least one reference answer")
    answers = [_clean(ref) for ref in references]
    guess = _clean(prediction)
    if not strict or len(set(answers)) > 1:
        answers = [_process_digit_article(_process_punctuation(ref)) for ref in answers]
        guess = _process_digit_article(_process_punctuation(guess))
    matches = sum(answer == guess for answer in answers)
    # Leaving out a matching reference leaves matches - 1 others; any other leaves all matches.
    total = sum(min(1.0, (matches - (answer == guess)) / 3) for answer in answers)
    return total / len(answers)
