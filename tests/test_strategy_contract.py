"""The contract every registered strategy must keep.

It trains only what it declares; frozen parameters stay bitwise unchanged; its state survives a
checkpoint round trip with identical predictions. Checked on the micro backbone of every family
the strategy supports (LLaVA for instruction, CLIP and ViT for classification).
"""

import io

import pytest
import torch
from conftest import MICRO_METHOD, compose_config
from hydra.utils import instantiate

from mcl.data import toy_classes, toy_world
from mcl.data.task import Task
from mcl.loop import LoopConfig, fit_task
from mcl.strategies import STRATEGIES, build_strategy

TASKS = [Task(name, toy_world.generate(name, 24, 0, "train"),
              toy_world.generate(name, 8, 0, "test"))
         for name in ("capability_recognition", "capability_colour")]
CLASS_TASKS = toy_classes.toy_classification_stream(
    "contract", "class_incremental", ["shapes"], train_size=16, test_size=8, seed=0,
    styles=["clean"], num_tasks=2).tasks
CFG = LoopConfig(progress_bar=False, eval_batch_size=8)
CLASSIFICATION = ["tiny_clip_micro", "tiny_vit_micro"]


def _load(backbone: str):
    return instantiate(compose_config([f"backbone={backbone}"]).backbone, _convert_="all")


def _setup_or_skip(strategy, backbone) -> None:
    """Set the strategy up on the backbone, or skip the test where the pair is impossible (a
    classification-only method on LLaVA), as check_run would refuse it."""
    try:
        strategy.check_backbone(backbone)
    except ValueError as err:
        pytest.skip(str(err))
    strategy.setup(backbone)


def _classification_strategy(name: str, backbone: str):
    """A fresh strategy set up on a fresh micro classification backbone (skipped where the pair
    is impossible, as check_run would refuse it)."""
    strategy = build_strategy(name, epochs=1, batch_size=8, lr=1e-2, **MICRO_METHOD.get(name, {}))
    _setup_or_skip(strategy, _load(backbone))
    return strategy


def _train_on_both_tasks(strategy, tmp_path, tasks=TASKS):
    backbone = strategy.backbone
    for i, task in enumerate(tasks):
        strategy.before_task(task, i)
        if strategy.trains:
            items = backbone.encode(strategy.train_samples(tasks[: i + 1]), with_answer=True)
            fit_task(strategy, items, task.name, CFG, seed=i, loggers=[], run_dir=tmp_path)
        strategy.after_task(task, i)


def _predictions(strategy, tasks=TASKS):
    backbone = strategy.backbone.eval()
    items = backbone.encode(tasks[0].test + tasks[1].test, with_answer=True)
    with torch.no_grad():
        logits = strategy.forward(backbone.collate_train(items)).logits
        answers = strategy.generate(backbone.collate_generate(items))
    return logits, answers


def _own_members(backbone) -> dict:
    """The backbone object's own attributes, submodules, parameters and buffers (by name): what
    a strategy attaching anything onto its backbone would change."""
    return {"attributes": set(vars(backbone)), "modules": dict(backbone._modules),
            "parameters": dict(backbone._parameters), "buffers": dict(backbone._buffers)}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_trains_only_what_it_declares(name, micro_backbone, tmp_path):
    strategy = build_strategy(name, epochs=1, batch_size=8, lr=1e-2, **MICRO_METHOD.get(name, {}))
    untouched = _own_members(micro_backbone)
    _setup_or_skip(strategy, micro_backbone)
    trainable = {n for n, p in strategy.named_trainable_parameters().items()}
    # Everything the method trains is owned by the strategy (its backbone child included).
    assert trainable == {n for n, p in strategy.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in strategy.named_parameters()}
    _train_on_both_tasks(strategy, tmp_path)
    assert _own_members(micro_backbone) == untouched, f"{name} attached something onto the backbone"
    after = dict(strategy.named_parameters())
    for n, value in before.items():
        if n not in trainable:
            assert torch.equal(after[n], value), f"{name} changed frozen parameter {n}"
    changed = [n for n in trainable if not torch.equal(after[n], before[n])]
    assert bool(changed) == strategy.trains, f"{name}: trainable parameters changed: {changed[:3]}"


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_state_round_trips_through_a_checkpoint(name, micro_tiny, tmp_path):
    from mcl.backbones.llava import LlavaBackbone

    def fresh():
        s = build_strategy(name, epochs=1, batch_size=8, lr=1e-2, **MICRO_METHOD.get(name, {}))
        _setup_or_skip(s, LlavaBackbone.load("tiny_llava_micro", tiny=micro_tiny))
        return s

    trained = fresh()
    _train_on_both_tasks(trained, tmp_path)
    buffer = io.BytesIO()
    torch.save(trained.checkpoint_state(), buffer)
    buffer.seek(0)
    restored = fresh()
    restored.load_checkpoint_state(torch.load(buffer, weights_only=False))
    logits_a, answers_a = _predictions(trained)
    logits_b, answers_b = _predictions(restored)
    assert torch.equal(logits_a, logits_b)
    assert answers_a == answers_b


@pytest.mark.parametrize("backbone", CLASSIFICATION)
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_classification_family_keeps_the_contract(name, backbone, tmp_path):
    """Trains only what it declares, frozen parameters unchanged, and the state round-trips
    through a checkpoint with identical logits and predictions, on CLIP and ViT."""
    strategy = build_strategy(name, epochs=1, batch_size=8, lr=1e-2, **MICRO_METHOD.get(name, {}))
    model = _load(backbone)
    untouched = _own_members(model)
    _setup_or_skip(strategy, model)
    trainable = set(strategy.named_trainable_parameters())
    assert trainable == {n for n, p in strategy.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in strategy.named_parameters()}
    _train_on_both_tasks(strategy, tmp_path, CLASS_TASKS)
    assert _own_members(model) == untouched, f"{name} attached something onto the backbone"
    after = dict(strategy.named_parameters())
    for n, value in before.items():
        if n not in trainable:
            assert torch.equal(after[n], value), f"{name} changed frozen parameter {n}"
    changed = [n for n in trainable if not torch.equal(after[n], before[n])]
    assert bool(changed) == strategy.trains, f"{name}: trainable parameters changed: {changed[:3]}"
    buffer = io.BytesIO()
    torch.save(strategy.checkpoint_state(), buffer)
    buffer.seek(0)
    restored = _classification_strategy(name, backbone)
    restored.load_checkpoint_state(torch.load(buffer, weights_only=False))
    logits_a, answers_a = _predictions(strategy, CLASS_TASKS)
    logits_b, answers_b = _predictions(restored, CLASS_TASKS)
    assert torch.equal(logits_a, logits_b)
    assert answers_a == answers_b


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown method 'nope'.*finetune.*lora"):
        build_strategy("nope")


@pytest.mark.parametrize("field", ["epochs", "batch_size"])
def test_non_positive_hyperparameters_are_rejected(field):
    with pytest.raises(ValueError, match=f"method.{field} must be a positive"):
        build_strategy("finetune", **{field: 0})


def test_no_strategy_file_reaches_into_or_attaches_onto_its_backbone():
    """The repository hook's grep, as a test: strategies use only the backbone interface."""
    import re
    from pathlib import Path

    pattern = re.compile(r"setattr\(backbone|backbone\.[A-Za-z_]+ *= |backbone\.add_module"
                         r"|backbone\.model\.|backbone\.processor\.")
    folder = Path(__file__).resolve().parents[1] / "mcl" / "strategies"
    hits = [f"{path.name}:{i}: {line.strip()}" for path in sorted(folder.glob("*.py"))
            for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_a_checkpoint_from_before_strategies_owned_their_modules_is_refused_clearly():
    """Format 1 (parameters named from the backbone, no "format" key) cannot be resumed."""
    strategy = build_strategy("finetune")
    with pytest.raises(ValueError, match="older mcl.*format 1.*new output directory.*resume=false"):
        strategy.load_checkpoint_state({"params": {"model.lm_head.weight": None}, "extra": {}})
