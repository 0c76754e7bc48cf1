"""Continual LLaVA: selection by instruction similarity, a contextual mix of earlier tasks only,
increments at the attention output projections, gradients only where the method trains."""

import math

import pytest
import torch

from mcl.data import toy_world
from mcl.data.task import Task
from mcl.strategies.base import build_strategy
from mcl.strategies.continual_llava import (
    contextual_coefficients,
    intrinsic_coefficients,
    low_rank_delta,
    select,
)

TASKS = [Task(name, toy_world.generate(name, 8, 0, "train"), [])
         for name in ("capability_recognition", "capability_colour")]


def test_selects_the_most_cosine_similar_entries_and_weights_them_by_cosine():
    keys = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1],
                         [10, 3, 0, 0]])  # large norm: a dot product would pick it first
    query = torch.tensor([[0.0, 1, 0, 2]])
    indices, sims = select(query, keys, top_m=2)
    assert indices.tolist() == [[3, 1]]
    assert torch.allclose(sims, torch.tensor([[2, 1]]) / math.sqrt(5))
    coefficients = intrinsic_coefficients(indices, sims, pool_size=5)
    assert torch.allclose(coefficients, torch.tensor([[0, 1 / 3, 0, 2 / 3, 0]]))


def test_contextual_mix_draws_only_on_earlier_tasks():
    records = torch.rand(5, 6)
    weights = torch.rand(5, requires_grad=True)
    assert contextual_coefficients(records, weights, task=0) is None
    mix = contextual_coefficients(records, weights, task=2)
    assert torch.allclose(mix, weights[0] * records[0] + weights[1] * records[1])
    later_changed = records.clone()
    later_changed[2:] = 100.0
    assert torch.equal(contextual_coefficients(later_changed, weights, task=2), mix)
    mix.sum().backward()
    assert torch.allclose(weights.grad[:2], records[:2].sum(1))
    assert torch.equal(weights.grad[2:], torch.zeros(3))


def test_low_rank_delta_is_the_weighted_sum_of_the_pool_increments():
    x, down, up = torch.randn(2, 3, 4), torch.randn(5, 2, 4), torch.randn(5, 6, 2)
    coefficients = torch.rand(2, 5)
    expected = torch.stack([sum(coefficients[b, n] * x[b] @ (up[n] @ down[n]).T
                                for n in range(5)) for b in range(2)])
    assert torch.allclose(low_rank_delta(x, down, up, coefficients), expected, atol=1e-5)


def _strategy_on_second_task(backbone):
    """Task 0 trained as far as the method's own hooks go, task 1 begun; increments non-zero."""
    strategy = build_strategy("continual_llava", pool_size=6, top_m=2, rank=2, batch_size=8,
                              lr=1e-2)
    strategy.setup(backbone)
    strategy.before_task(TASKS[0], 0)
    strategy.after_task(TASKS[0], 0)
    strategy.before_task(TASKS[1], 1)
    with torch.no_grad():
        for up in strategy.pool.up:
            up.normal_()
    items = backbone.encode(TASKS[1].train, with_answer=True)
    return strategy, backbone.collate_train(items)


def test_increments_are_added_at_every_attention_output_projection(micro_backbone):
    strategy, batch = _strategy_on_second_task(micro_backbone)
    projections = [layer.self_attn.o_proj
                   for layer in micro_backbone.decoder_layers()]
    seen = []
    handles = [p.register_forward_hook(lambda m, args, out: seen.append((m, args[0], out)))
               for p in projections]
    with torch.no_grad():
        strategy.forward(batch)
    for handle in handles:
        handle.remove()
    assert [m for m, _, _ in seen] == projections
    indices, sims = select(strategy.instruction_features(batch), strategy.pool.keys,
                           strategy.top_m)
    intrinsic = intrinsic_coefficients(indices, sims, strategy.pool_size)
    contextual = strategy.records[0] * strategy.pool.context_weights[0]  # task 1: task 0 only
    for layer, (module, x, out) in enumerate(seen):
        down, up = strategy.pool.down[layer], strategy.pool.up[layer]
        expected = (module(x) + low_rank_delta(x, down, up, intrinsic)
                    + low_rank_delta(x, down, up, contextual.expand_as(intrinsic)))
        assert torch.allclose(out, expected.detach(), atol=1e-5)


def test_gradients_reach_only_the_selected_increments_and_earlier_task_weights(micro_backbone):
    strategy, batch = _strategy_on_second_task(micro_backbone)
    strategy.forward(batch).loss.backward()
    assert all(p.grad is None for p in micro_backbone.model.parameters())
    pool = strategy.pool
    assert pool.keys.grad is None  # stage 2: the keys only select
    assert pool.context_weights.grad[0] != 0
    assert torch.equal(pool.context_weights.grad[1:], torch.zeros(strategy.max_tasks - 1))
    indices, _ = select(strategy.instruction_features(batch), pool.keys, strategy.top_m)
    selected = set(indices.flatten().tolist())
    assert selected and len(selected) < strategy.pool_size
    for down, up in zip(pool.down, pool.up, strict=True):
        for n in range(strategy.pool_size):
            assert (down.grad[n].abs().sum() > 0) == (n in selected)
            assert (up.grad[n].abs().sum() > 0) == (n in selected)


def test_stage_one_pulls_only_the_selected_keys_towards_the_instructions(micro_backbone):
    strategy = build_strategy("continual_llava", pool_size=6, top_m=2, batch_size=8, lr=1e-1,
                              align_epochs=3)
    strategy.setup(micro_backbone)
    features = strategy._task_features(TASKS[0].train)
    keys = strategy.pool.keys.detach().clone()
    indices, sims = select(features, keys, strategy.top_m)
    strategy.before_task(TASKS[0], 0)
    after = strategy.pool.keys.detach()
    _, sims_after = select(features, after, strategy.top_m)
    assert sims_after.mean() > sims.mean() + 0.1
    moved = {n for n in range(strategy.pool_size) if not torch.equal(after[n], keys[n])}
    assert moved == set(indices.flatten().tolist())


def test_a_task_records_its_instance_averaged_selection(micro_backbone):
    strategy = build_strategy("continual_llava", pool_size=6, top_m=2, batch_size=8)
    strategy.setup(micro_backbone)
    strategy.after_task(TASKS[0], 0)
    features = strategy._task_features(TASKS[0].train)
    indices, sims = select(features, strategy.pool.keys, strategy.top_m)
    expected = intrinsic_coefficients(indices, sims, strategy.pool_size).mean(0)
    assert torch.allclose(strategy.records[0], expected)
    assert strategy.records[0].sum().item() == pytest.approx(1.0)
    assert torch.equal(strategy.records[1:], torch.zeros(strategy.max_tasks - 1, 6))


def _tiny_sentence_bert(path) -> None:
    """A 1-layer BERT with a character-level WordPiece vocabulary, saved like a Sentence-BERT."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(letters)
             + [f"##{c}" for c in letters] + list(".,:?!'-()/"))
    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=24, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=48)).save_pretrained(path)


def test_a_sentence_bert_embeds_the_instruction_text_and_stays_frozen(micro_backbone, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    encoder = tmp_path / "sbert"
    _tiny_sentence_bert(encoder)
    strategy = build_strategy("continual_llava", pool_size=6, top_m=2, rank=2, batch_size=8,
                              instruction_encoder=str(encoder))
    strategy.setup(micro_backbone)
    assert strategy.pool.keys.shape == (6, 24)  # keys live in the encoder's space
    items = micro_backbone.encode(TASKS[1].train[:4] + TASKS[0].train[:4], with_answer=True)
    batch = micro_backbone.collate_train(items)
    features = strategy.instruction_features(batch)

    # By hand: the instruction text (image, padding, answer tokens dropped), mean-pooled BERT.
    mask = micro_backbone.instruction_mask(batch)
    texts = [micro_backbone.tokenizer.decode(ids[keep], skip_special_tokens=True).strip()
             for ids, keep in zip(batch["input_ids"], mask, strict=True)]
    assert all(s.prompt.split()[0].lower() in t.lower() for s, t in
               zip(TASKS[1].train[:4] + TASKS[0].train[:4], texts, strict=True))
    tokenizer, bert = AutoTokenizer.from_pretrained(encoder), AutoModel.from_pretrained(encoder)
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(**tokens).last_hidden_state
    m = tokens["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(features, (hidden * m).sum(1) / m.sum(1), atol=1e-5)
    assert not torch.allclose(features[0], features[-1], atol=1e-3)  # two different tasks

    strategy.forward(batch).loss.backward()  # the encoder only selects: no gradient, not saved
    assert all(p.grad is None for p in strategy.sentence_encoder.model.parameters())
    assert all("sentence" not in name for name in strategy.checkpoint_state()["params"])


def test_a_missing_sentence_encoder_is_reported_before_any_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="method.instruction_encoder"):
        build_strategy("continual_llava", instruction_encoder=str(tmp_path / "absent"))
