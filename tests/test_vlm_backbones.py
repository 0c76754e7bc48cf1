"""Every preset VLM family (a tiny random model of its real classes, saved with save_pretrained
and loaded through the real path): variable numbers of image tokens in collation and masks, the
embeddings path, and every instruction strategy either keeping the contract or refused before
loading, with its reason."""

import io

import numpy as np
import pytest
import torch
from conftest import MICRO, MICRO_METHOD, compose_config
from hydra.utils import instantiate
from test_strategy_contract import _own_members, _train_on_both_tasks

from mcl.backbones.base import IGNORE_INDEX, Backbone
from mcl.backbones.vlm import VlmBackbone
from mcl.compatibility import backbone_spec, check_run
from mcl.data import toy_world
from mcl.data.task import Sample, Task
from mcl.run import run
from mcl.strategies import STRATEGIES, build_strategy

FAMILIES = ["llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "internvl", "idefics3"]
VARIABLE = {"llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "internvl"}
INSTRUCTION = sorted(n for n, c in STRATEGIES.items() if "instruction" in c.families)
SHAPES = [(32, 32), (40, 72), (64, 64), (72, 24)]  # give different token counts per image
TASKS = [Task(name, toy_world.generate(name, 8, 0, "train"), toy_world.generate(name, 4, 0, "test"))
         for name in ("capability_recognition", "capability_colour")]


def _samples(n: int = 4) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [Sample(rng.integers(0, 255, (*SHAPES[i % len(SHAPES)], 3), dtype=np.uint8),
                   "what colour is it ?", ["blue", "red square", "two", "yes"][i % 4])
            for i in range(n)]


def _node(family: str):
    return compose_config([f"backbone=tiny_{family}"]).backbone


def _load(family: str) -> Backbone:
    """The stand-in through the preset: built once into the (test) cache, then from_pretrained."""
    return instantiate(_node(family), _convert_="all").eval()


@pytest.fixture(scope="module", params=FAMILIES)
def family(request) -> str:
    return request.param


def test_preset_loads_its_family_class_through_from_pretrained(family):
    backbone = _load(family)
    model_type = backbone.model.config.model_type
    assert type(backbone) is VlmBackbone.for_model_type(model_type)
    assert backbone.spec == backbone_spec(_node(family))
    assert type(backbone.model).__name__.endswith("ForConditionalGeneration")
    with pytest.raises(ValueError, match="set its _target_ to"):  # the wrong class says which
        other = "Qwen2VlBackbone" if "qwen" not in family else "VlmBackbone"
        getattr(__import__("mcl.backbones.vlm", fromlist=[other]), other).load(
            "x", pretrained=str(backbone.model.name_or_path))


def test_image_tokens_follow_each_image_and_labels_only_the_answer(family):
    backbone = _load(family)
    samples = _samples()
    batch = backbone.collate_train(backbone.encode(samples, with_answer=True))
    counts = backbone.image_mask(batch).sum(1).tolist()
    # Each sample has as many image tokens as it has alone, and as many as features embed places.
    alone = [int(backbone.image_mask(backbone.collate_train(backbone.encode([s], True))).sum())
             for s in samples]
    assert counts == alone and min(counts) > 0
    if family in VARIABLE:
        assert len(set(counts)) > 1, counts
    tok = backbone.tokenizer
    for i, sample in enumerate(samples):
        labelled = batch["labels"][i][batch["labels"][i] != IGNORE_INDEX]
        assert tok.decode(labelled, skip_special_tokens=True) == sample.answer
        assert labelled[-1].item() == tok.eos_token_id
    # The instruction mask holds the prompt's words and template words, no image-block token.
    mask = backbone.instruction_mask(batch)
    for i in range(len(samples)):
        words = tok.convert_ids_to_tokens(batch["input_ids"][i][mask[i]])
        assert " ".join(samples[i].prompt.split()) in " ".join(words)
        assert not torch.isin(batch["input_ids"][i][mask[i]], backbone._image_block_ids).any()
    assert not (mask & backbone.image_mask(batch)).any()


def test_a_padded_batch_computes_what_each_sample_computes_alone(family):
    """Collation (pixel tensors of different shapes padded or concatenated, per-sample extra
    inputs kept) changes nothing: each sample's loss logits and greedy answer are its own."""
    backbone = _load(family)
    samples = _samples()
    batch = backbone.collate_train(backbone.encode(samples, with_answer=True))
    with torch.no_grad():
        logits = backbone(batch).logits
        for i, sample in enumerate(samples):
            one = backbone.collate_train(backbone.encode([sample], with_answer=True))
            n = one["input_ids"].shape[1]
            torch.testing.assert_close(logits[i, :n], backbone(one).logits[0],
                                       atol=2e-5, rtol=1e-4)
    gen = backbone.collate_generate(backbone.encode(samples, with_answer=False))
    assert backbone.generate(gen) == [
        backbone.generate(backbone.collate_generate(backbone.encode([s], False)))[0]
        for s in samples]


def test_embeddings_path_equals_the_token_path_or_is_refused(family):
    backbone = _load(family)
    samples = _samples()
    train = backbone.collate_train(backbone.encode(samples, with_answer=True))
    if "embeds" not in backbone.capabilities:
        assert family.startswith("qwen")  # M-RoPE: positions come from input_ids + grid
        with pytest.raises(ValueError, match="M-RoPE"):
            check_run(build_strategy("fwd_prompt"), backbone_spec(_node(family)))
        return
    with torch.no_grad():
        direct = backbone(train)
        via = backbone.forward_embeds(backbone.embed(train), train["attention_mask"],
                                      labels=train["labels"])
    torch.testing.assert_close(via.logits, direct.logits)
    gen = backbone.collate_generate(backbone.encode(samples, with_answer=False))
    assert backbone.generate_embeds(backbone.embed(gen), gen["attention_mask"]) == \
        backbone.generate(gen)


@pytest.mark.parametrize("name", INSTRUCTION)
def test_every_instruction_strategy_keeps_the_contract_or_is_refused_before_loading(
        name, family, tmp_path):
    spec = backbone_spec(_node(family))
    options = {"epochs": 1, "batch_size": 4, "lr": 1e-2, **MICRO_METHOD.get(name, {})}
    try:
        check_run(build_strategy(name, **options), spec)
    except ValueError as err:  # refused from the class alone: nothing was loaded
        assert "needs the capabilities" in str(err) and "M-RoPE" in str(err), err
        return

    def fresh():
        strategy = build_strategy(name, **options)
        strategy.setup(_load(family))
        return strategy

    strategy = fresh()
    untouched = _own_members(strategy.backbone)
    trainable = set(strategy.named_trainable_parameters())
    before = {n: p.detach().clone() for n, p in strategy.named_parameters()}
    _train_on_both_tasks(strategy, tmp_path, TASKS)
    assert _own_members(strategy.backbone) == untouched
    after = dict(strategy.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in before.items() if n not in trainable)
    assert any(not torch.equal(after[n], before[n]) for n in trainable) == strategy.trains
    buffer = io.BytesIO()
    torch.save(strategy.checkpoint_state(), buffer)
    buffer.seek(0)
    restored = fresh()
    restored.load_checkpoint_state(torch.load(buffer, weights_only=False))
    items = strategy.backbone.encode(TASKS[0].test + TASKS[1].test, with_answer=True)
    for s in (strategy, restored):
        s.eval()
    with torch.no_grad():
        batch = strategy.backbone.collate_train(items)
        assert torch.equal(strategy.forward(batch).logits, restored.forward(batch).logits)
        gen = strategy.backbone.collate_generate(items)
        assert strategy.generate(gen) == restored.generate(gen)


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3"])
def test_end_to_end_run_on_non_llava_families(family, tmp_path):
    overrides = [o for o in MICRO if not o.startswith("backbone=")]
    cfg = compose_config([f"backbone=tiny_{family}", *overrides, "method=lora"])
    results = run(cfg, tmp_path)
    assert results["completed_tasks"] == 2
    assert np.array(results["matrix"], dtype=float).shape == (3, 2)
    assert (tmp_path / "checkpoints" / "task_001.pt").exists()


def test_llava_1_5_encodes_and_answers_as_its_processor_and_model_do(micro_backbone):
    """LlavaBackbone is the generic class's LLaVA preset: its items, batches and answers are
    exactly those of one batched processor call and `model.generate` (what it computed before
    the generic class), pad-to-square included."""
    backbone = micro_backbone.eval()
    backbone.pad_to_square = True
    samples = _samples(3)
    items = backbone.encode(samples, with_answer=True)
    images = [backbone._pad_to_square(s.image) for s in samples]
    assert images[1].shape[:2] == (72, 72)
    texts = [backbone.prompt_text(s.prompt) for s in samples]
    ref = backbone.processor(images=images, text=texts, return_tensors="pt", padding=True)
    for i, item in enumerate(items):
        assert torch.equal(item["prompt_ids"], ref["input_ids"][i][ref["attention_mask"][i] > 0])
        assert torch.equal(item["pixel_values"], ref["pixel_values"][i])
    batch = backbone.collate_generate(items)
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "answers", "match",
                          "references"}
    out = backbone.model.generate(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"],
                                  pixel_values=ref["pixel_values"], max_new_tokens=8,
                                  do_sample=False, pad_token_id=backbone.tokenizer.pad_token_id,
                                  eos_token_id=backbone.tokenizer.eos_token_id)
    expected = backbone.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:],
                                               skip_special_tokens=True)
    assert backbone.generate(batch) == [t.strip() for t in expected]
