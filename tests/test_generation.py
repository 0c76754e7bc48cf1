"""mcl.generation's static-cache decoder gives transformers' greedy answers (fp32, CPU)."""

import pytest
import torch

from mcl.data import toy_world
from mcl.generation import GreedyDecoder, batch_size_for_memory, kv_bytes_per_token

MIXED = ["dataset_caption", "dataset_multiple_choice", "domain_icons", "capability_counting"]


def mixed_batch(backbone, n_per_task: int = 3):
    samples = [s for t in MIXED for s in toy_world.generate(t, n_per_task, 1, "test")]
    return backbone.collate_generate(backbone.encode(samples, with_answer=False))


def new_tokens(backbone, decoding: str, batch: dict, **kwargs) -> torch.Tensor:
    backbone.decoding = decoding
    return backbone._new_tokens(batch["attention_mask"], input_ids=batch["input_ids"],
                                pixel_values=batch["pixel_values"], **kwargs)


def same_answers(a: torch.Tensor, b: torch.Tensor, pad: int) -> None:
    """Equal ids up to trailing padding (generate stops at the longest answer too)."""
    width = max(a.shape[1], b.shape[1])
    pad_to = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=pad)  # noqa: E731
    assert torch.equal(pad_to(a), pad_to(b))


@pytest.mark.parametrize("max_new_tokens", [1, 8, 20])
def test_static_decoder_gives_generates_greedy_ids(micro_backbone, max_new_tokens):
    backbone = micro_backbone.eval()
    backbone.max_new_tokens = max_new_tokens
    batch = mixed_batch(backbone)
    assert (batch["attention_mask"] == 0).any()  # left padding of different lengths
    reference = new_tokens(backbone, "hf", batch)
    fast = new_tokens(backbone, "static", batch)
    same_answers(fast, reference, backbone.tokenizer.pad_token_id)
    backbone.decoding = "static"
    assert backbone.generate(batch) == (lambda: (setattr(backbone, "decoding", "hf"),
                                                 backbone.generate(batch))[1])()


def random_weights(backbone, eos_boost: float):
    """Random weights (long, varied answers); `eos_boost` makes the end token win sometimes."""
    torch.manual_seed(0)
    for p in backbone.model.parameters():
        p.data.normal_(0, 0.5)
    backbone.model.lm_head.weight.data[backbone.tokenizer.eos_token_id] += eos_boost
    return backbone.eval()


def test_random_weights_long_answers_and_min_new_tokens(micro_backbone):
    """Random weights: long, varied answers, so every decode step is compared; min_new_tokens
    (the benchmark's fixed answer length) blocks the end token as generate's processor does."""
    backbone = random_weights(micro_backbone, 0.15)
    eos = backbone.tokenizer.eos_token_id
    backbone.max_new_tokens = 24
    batch = mixed_batch(backbone, 4)
    reference = new_tokens(backbone, "hf", batch)
    fast = new_tokens(backbone, "static", batch)
    ended = (reference == eos).any(1)
    assert ended.any() and not ended.all(), "the fixture should end some answers early"
    same_answers(fast, reference, backbone.tokenizer.pad_token_id)
    forced = new_tokens(backbone, "static", batch, min_new_tokens=24)
    same_answers(forced, new_tokens(backbone, "hf", batch, min_new_tokens=24), 0)
    assert forced.shape[1] == 24 and not (forced == eos).any()


def test_stops_when_every_sequence_has_ended(micro_backbone):
    backbone = random_weights(micro_backbone, 1.0)
    backbone.max_new_tokens = 64
    steps = []
    decoder_step = GreedyDecoder._step

    def counting(self):
        steps.append(1)
        return decoder_step(self)

    batch = mixed_batch(backbone, 2)
    GreedyDecoder._step = counting
    try:
        out = new_tokens(backbone, "static", batch)
    finally:
        GreedyDecoder._step = decoder_step
    eos = backbone.tokenizer.eos_token_id
    assert out.shape[1] < 64 and (out == eos).any(1).all()  # every answer ended...
    assert not (out[:, :-1] == eos).any(1).all()  # ...and the last one at the last step
    assert len(steps) == out.shape[1] - 1  # the prefill gives the first token


def test_embeddings_path_matches_generate(micro_backbone):
    backbone = micro_backbone.eval()
    backbone.max_new_tokens = 12
    batch = mixed_batch(backbone)
    embeds = backbone.embed(batch)
    answers = {}
    for decoding in ("hf", "static"):
        backbone.decoding = decoding
        answers[decoding] = backbone.generate_embeds(embeds, batch["attention_mask"])
    assert answers["static"] == answers["hf"]


def test_cache_is_reused_across_batches_and_rebuilt_for_new_weights(micro_backbone):
    backbone = micro_backbone.eval()
    batch = mixed_batch(backbone)
    new_tokens(backbone, "static", batch)
    cache = backbone._decoder.cache
    new_tokens(backbone, "static", {k: v for k, v in batch.items()})
    assert backbone._decoder.cache is cache
    backbone.model.lm_head.weight = torch.nn.Parameter(backbone.model.lm_head.weight.clone())
    new_tokens(backbone, "static", batch)
    assert backbone._decoder.cache is not cache


def test_batch_size_from_memory_counts_the_cache(micro_backbone):
    config = backbone_config = micro_backbone.model.config
    text = backbone_config.get_text_config(decoder=True)
    per_token = kv_bytes_per_token(config)
    assert per_token == 2 * text.num_hidden_layers * text.num_key_value_heads * \
        (text.hidden_size // text.num_attention_heads) * 4
    small = batch_size_for_memory(config, 100, 16, free_bytes=10**7)
    large = batch_size_for_memory(config, 100, 16, free_bytes=10**8)
    assert 1 <= small < large and large % 8 == 0
    assert batch_size_for_memory(config, 100, 16, free_bytes=10**3) == 1


def test_a_smaller_last_batch_reuses_the_cache_and_gives_its_own_answers(micro_backbone):
    backbone = micro_backbone.eval()
    backbone.max_new_tokens = 6
    batch = mixed_batch(backbone)
    new_tokens(backbone, "static", batch)
    cache = backbone._decoder.cache
    last = {k: v[-7:] for k, v in batch.items()}  # 7 of 12: padded to the 12 captured
    fast = new_tokens(backbone, "static", last)
    assert backbone._decoder.cache is cache and fast.shape[0] == 7
    same_answers(fast, new_tokens(backbone, "hf", last), backbone.tokenizer.pad_token_id)


def test_decode_step_traces_as_one_graph(micro_backbone):
    """The step CUDA graphs capture must not read a tensor on the host (no `.item()`, no
    branch on a value): TorchDynamo's fullgraph tracing fails on exactly those. The CPU proxy
    for the capture that only a GPU can run."""
    backbone = micro_backbone.eval()
    batch = mixed_batch(backbone, 1)
    new_tokens(backbone, "static", batch)
    decoder = backbone._decoder
    state = decoder._state()
    expected = decoder._step().clone()  # one more step eagerly, then the same step traced
    decoder._restore(state)
    traced = torch.compile(decoder._step, fullgraph=True, backend="eager")
    torch.testing.assert_close(traced(), expected)


def test_attention_reads_only_the_written_slots(micro_backbone, monkeypatch):
    """The prefill attends over the prompt's slots alone and each decode step over the
    smallest CACHE_BUCKET window holding every written slot, not the whole cache; answers stay
    generate's (fp32)."""
    from mcl.generation import CACHE_BUCKET, WindowedLayer

    backbone = random_weights(micro_backbone, 0.0)
    backbone.max_new_tokens = 70
    batch = mixed_batch(backbone, 1)
    length = batch["attention_mask"].shape[1]
    seen = []
    update = WindowedLayer.update

    def recording(self, *args, **kwargs):
        keys, values = update(self, *args, **kwargs)
        if self is self_first[0]:
            seen.append(keys.shape[-2])
        return keys, values

    self_first = [None]
    original_buffers = GreedyDecoder._buffers

    def buffers(self, *args):
        original_buffers(self, *args)
        self_first[0] = self.cache.layers[0]

    monkeypatch.setattr(GreedyDecoder, "_buffers", buffers)
    monkeypatch.setattr(WindowedLayer, "update", recording)
    fast = new_tokens(backbone, "static", batch, min_new_tokens=70)
    cache_len = backbone._decoder._shape[-1]
    assert all(isinstance(la, WindowedLayer) for la in backbone._decoder.cache.layers)
    expected = [length] + [min(-(-(length + s) // CACHE_BUCKET) * CACHE_BUCKET, cache_len)
                           for s in range(1, 70)]
    assert seen == expected
    assert len(set(seen[1:])) >= 2 and min(seen[1:]) < cache_len  # windows grow with the answer
    monkeypatch.setattr(WindowedLayer, "update", update)
    same_answers(fast, new_tokens(backbone, "hf", batch, min_new_tokens=70), 0)


def test_kv_bytes_follow_the_weights_dtype(micro_backbone):
    config = micro_backbone.model.config
    assert kv_bytes_per_token(config, torch.bfloat16) * 2 == kv_bytes_per_token(config,
                                                                                torch.float32)
    assert batch_size_for_memory(config, 100, 16, 10**8, dtype=torch.bfloat16) > \
        batch_size_for_memory(config, 100, 16, 10**8, dtype=torch.float32)

