"""CIDEr-D of generated captions (Vedantam et al. 2015), as coco-caption computes it.

UCIT scores its two captioning tasks (VizWiz-caption, Flickr30k) with HiDe-LLaVA's
`llava/eval/eval_caption.py`, which runs pycocoevalcap's `COCOEvalCap` against a COCO-format
caption file (`val_coco_type_3000.json`). mcl computes the CIDEr of that evaluation itself rather
than depending on pycocoevalcap (a 100 MB wheel whose tokenizer and METEOR need Java), following
`pycocoevalcap/cider/cider_scorer.py` (version 1.2) step for step:

* captions are split on whitespace after tokenisation; n-grams of order 1..4 are counted;
* document frequency df(g) = number of *images* whose references contain g, counted over the
  references only; the log corpus size is log(number of images);
* each caption becomes per-order vectors of tf(g) * (log N - log max(1, df(g))), with the
  "length" of a caption counted, as there, as its number of bigrams;
* per reference: for each order, sum over the candidate's n-grams of
  min(v_cand, v_ref) * v_ref divided by both norms (when non-zero), times
  exp(-(len_cand - len_ref)^2 / (2 * 6^2)); the image's score is 10 * the mean over orders,
  summed over references and divided by their number;
* the corpus CIDEr is the mean of the per-image scores.

Because df and N depend on the references alone, each test sample can be scored on its own once
the test split's statistics are known: `attach_corpus` gives every caption reference a shared
`CiderCorpus`, and the loop's mean of per-sample scores is then exactly the corpus CIDEr. Scores
are on coco-caption's scale (0..10, typically below 2; HiDe-LLaVA prints them x100).

Departure: coco-caption tokenises with Stanford CoreNLP's PTBTokenizer (Java) and drops its
punctuation tokens; `tokenize` is a Python approximation (lower case, punctuation split off and
dropped, PTB's clitic splits such as "don't" -> "do n't"). It agrees on plain captions; on rarer
constructs (e.g. "U.S.", ellipses inside words) the tokens can differ.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

ORDER = 4  # n-grams of order 1..4 (CiderScorer's n)
SIGMA = 6.0  # width of the length penalty (CiderScorer's sigma)

# pycocoevalcap/tokenizer/ptbtokenizer.py's PUNCTUATIONS, dropped after tokenising.
# The list is compared case-sensitively after -lowerCase, so the bracket tokens (-lrb- ...) stay.
_PUNCTUATION = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",",
                ":", "-", "--", "...", ";"}
_CLITICS = re.compile(r"(?i)\b(\w+)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_SPLIT = re.compile(
    r"(?<!\S)(?:n't|'s|'re|'ve|'ll|'d|'m)\b"  # the clitics split off above
    r"|\d+(?:[:.,]\d+)+"  # 3:30, 1,000, 2.5
    r"|(?:[a-z]\.){2,}"  # u.s.
    r"|\.\.\.|--|[()\[\]{}]|[.,!?;:\"`']"
    r"|[^\s.,!?;:\"`()\[\]{}']+")


def tokenize(text: str) -> list[str]:
    """PTB-style lower-cased tokens of `text` without punctuation (see the module docstring)."""
    text = _CLITICS.sub(r"\1 \2", text.replace("\n", " ").lower())
    tokens = []
    for token in _SPLIT.findall(text):
        token = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", '"': "''"}.get(token,
                                                                                       token)
        if token not in _PUNCTUATION:
            tokens.append(token)
    return tokens


def ngram_counts(tokens: Sequence[str], order: int = ORDER) -> Counter:
    """Counts of every n-gram (as a tuple) of order 1..`order` in `tokens`."""
    return Counter(tuple(tokens[i:i + k]) for k in range(1, order + 1)
                   for i in range(len(tokens) - k + 1))


@dataclass(frozen=True)
class CiderCorpus:
    """The reference statistics of one test split: n-gram document frequencies and log N."""

    document_frequency: dict
    log_images: float

    @classmethod
    def from_references(cls, references: Sequence[Sequence[str]]) -> CiderCorpus:
        """Statistics of a split whose i-th image has the captions `references[i]`."""
        if not references or any(not refs for refs in references):
            raise ValueError("CIDEr needs at least one image and one reference caption per image")
        df: Counter = Counter()
        for refs in references:
            df.update(set().union(*(ngram_counts(tokenize(r)) for r in refs)))
        return cls(dict(df), math.log(len(references)))

    def vector(self, counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(ORDER)]
        norm = [0.0] * ORDER
        length = 0
        for gram, tf in counts.items():
            n = len(gram) - 1
            weight = tf * (self.log_images - math.log(max(1.0, self.document_frequency.get(gram,
                                                                                        0.0))))
            vec[n][gram] = weight
            norm[n] += weight * weight
            if n == 1:  # coco-caption counts a caption's length in bigrams
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def score(self, candidate: str, references: Sequence[str]) -> float:
        """CIDEr-D of one candidate caption against its image's references."""
        vec, norm, length = self.vector(ngram_counts(tokenize(candidate)))
        total = 0.0
        for ref in references:
            ref_vec, ref_norm, ref_length = self.vector(ngram_counts(tokenize(ref)))
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * SIGMA**2))
            per_order = []
            for n in range(ORDER):
                value = sum(min(w, ref_vec[n].get(g, 0.0)) * ref_vec[n].get(g, 0.0)
                            for g, w in vec[n].items())
                if norm[n] != 0 and ref_norm[n] != 0:
                    value /= norm[n] * ref_norm[n]
                per_order.append(value * penalty)
            total += sum(per_order) / ORDER
        return 10.0 * total / len(references)


class CaptionReferences(list):
    """An image's reference captions (a list, so it is stored as one) with the statistics of
    the test split it belongs to."""

    corpus: CiderCorpus | None = None


def attach_corpus(references: Sequence[Sequence[str]]) -> list[CaptionReferences]:
    """The caption lists of one test split, each given the split's shared `CiderCorpus`."""
    corpus = CiderCorpus.from_references(references)
    attached = []
    for refs in references:
        item = CaptionReferences(str(r) for r in refs)
        item.corpus = corpus
        attached.append(item)
    return attached


def cider(prediction: str, reference: object) -> float:
    """The "cider" scorer: CIDEr-D of `prediction` against a `CaptionReferences`.

    Raises:
        TypeError: the reference carries no corpus statistics (CIDEr is undefined without them).
    """
    corpus = getattr(reference, "corpus", None)
    if corpus is None:
        raise TypeError("CIDEr needs the test split's reference statistics: the task's "
                        "references must come from mcl.metrics.captions.attach_corpus (streams "
                        f"read by mcl.data.instruct do this for match: cider); got {reference!r}")
    return corpus.score(prediction, reference)
