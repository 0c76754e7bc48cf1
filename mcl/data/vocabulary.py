"""Can the backbone's tokenizer read the stream? Checked after the backbone loads, before training.

The tiny backbones' tokenizers are word-level over the toy world's few dozen words: every other
word becomes `<unk>`, and a run on such data learns and scores nothing (all accuracies 0.0,
silently). Real tokenizers (byte-level BPE, SentencePiece with byte fallback) have no unknown
words and always pass.
"""

from __future__ import annotations

from collections import Counter

from mcl.data.task import Stream

# Per task and split: enough samples to estimate the share, few enough to take no time.
SAMPLES_PER_SPLIT = 500
OPEN_VOCABULARY = ("instructions: llava_hf, llava_1_5_7b, llava_1_5_13b (any text); "
                   "classification: clip_vit_b16, vit_b16_in21k, tiny_vit (any class names)")


def unknown_words(tokenizer, texts: list[str]) -> tuple[float, Counter]:
    """(share of the whitespace-separated words of `texts` that the tokenizer maps to its
    unknown token, how often each unknown word occurs)."""
    words = Counter(w for text in texts for w in text.split())
    if not words or tokenizer.unk_token_id is None:
        return 0.0, Counter()
    unique = list(words)
    ids = tokenizer(unique, add_special_tokens=False).input_ids
    unknown = Counter({w: words[w] for w, tokens in zip(unique, ids, strict=True)
                       if tokenizer.unk_token_id in tokens})
    return sum(unknown.values()) / sum(words.values()), unknown


def check_vocabulary(backbone, backbone_name: str, stream: Stream,
                     max_share: float | None) -> float:
    """The share of the stream's prompt and answer words unknown to the backbone's tokenizer;
    a ValueError, with the share, examples and the backbones that can read them, when it is
    above `max_share` (None: never). A backbone without a tokenizer (ViT's class head) reads
    any answer."""
    from mcl.backbones.base import MissingCapability

    if max_share is None:
        return 0.0
    try:
        tokenizer = backbone.tokenizer
    except MissingCapability:  # no text input: class names are scored, never tokenised
        return 0.0
    texts = [text for task in stream.tasks for split in (task.train, task.test)
             for s in split[:SAMPLES_PER_SPLIT] for text in (s.prompt, s.answer)]
    share, unknown = unknown_words(tokenizer, texts)
    if not unknown:
        return share
    examples = ", ".join(repr(w) for w, _ in unknown.most_common(8))
    what = (f"{share:.1%} of the prompt and answer words of stream {stream.name!r} are unknown "
            f"to backbone {backbone_name!r}'s tokenizer (a vocabulary of {len(tokenizer)} "
            f"tokens), e.g. {examples}")
    if share > max_share:
        raise ValueError(
            f"{what}: it would see them all as one <unk> token and learn nothing from them. Use "
            f"a backbone that reads any text ({OPEN_VOCABULARY}), rephrase the data in the toy "
            "world's words (mcl.data.toy_world.vocabulary()), or set max_unknown_words=1.0 to "
            f"run anyway (now {max_share:.0%}).")
    print(f"warning: {what}.")
    return share
