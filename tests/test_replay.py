"""Replay: the memory keeps the budgeted number of each finished task's training samples (never a
test sample), mixes them into every later task, and survives a checkpoint round trip."""

import io

import pytest
import torch

from mcl.data import toy_world
from mcl.data.task import Task
from mcl.strategies import build_strategy

TASKS = [Task(name, toy_world.generate(name, 10, seed, "train"),
              toy_world.generate(name, 4, seed, "test"))
         for seed, name in enumerate(("capability_recognition", "capability_colour",
                                      "capability_counting"))]


def _finish(strategy, tasks):
    for i, task in enumerate(tasks):
        strategy.before_task(task, i)
        strategy.after_task(task, i)


@pytest.mark.parametrize(("options", "per_task"), [
    ({"memory_per_task": 3, "memory_fraction": None}, 3),
    ({"memory_per_task": None, "memory_fraction": 0.5}, 5),
    ({"memory_per_task": 50, "memory_fraction": None}, 10)])  # never more than the task has
def test_memory_holds_the_budget_of_every_task_and_only_training_samples(options, per_task):
    strategy = build_strategy("replay", **options)
    _finish(strategy, TASKS[:2])
    assert [t for t, _, _ in strategy.memory.entries].count(0) == per_task
    assert [t for t, _, _ in strategy.memory.entries].count(1) == per_task
    mixed = strategy.train_samples(TASKS)  # the third task arrives
    assert mixed[: len(TASKS[2].train)] == list(TASKS[2].train)
    replayed = mixed[len(TASKS[2].train):]
    assert len(replayed) == 2 * per_task
    train_ids = {id(s) for task in TASKS[:2] for s in task.train}
    test_ids = {id(s) for task in TASKS for s in task.test}
    assert all(id(s) in train_ids and id(s) not in test_ids for s in replayed)
    assert len({id(s) for s in replayed}) == len(replayed)  # no sample twice


def test_memory_survives_a_checkpoint_round_trip(micro_backbone, micro_tiny):
    from mcl.backbones.llava import LlavaBackbone

    strategy = build_strategy("replay", memory_per_task=3, r=4, alpha=8)
    strategy.setup(micro_backbone)
    _finish(strategy, TASKS[:2])
    buffer = io.BytesIO()
    torch.save(strategy.checkpoint_state(), buffer)
    buffer.seek(0)
    restored = build_strategy("replay", memory_per_task=3, r=4, alpha=8)
    restored.setup(LlavaBackbone.load("tiny_llava_micro", tiny=micro_tiny))
    restored.load_checkpoint_state(torch.load(buffer, weights_only=False))
    assert restored.memory.entries == strategy.memory.entries
    assert restored.train_samples(TASKS) == strategy.train_samples(TASKS)


def test_exactly_one_budget_is_required():
    with pytest.raises(ValueError, match="exactly one of method.memory_per_task"):
        build_strategy("replay", memory_per_task=3, memory_fraction=0.1)


def test_finetune_base_trains_the_parts(micro_backbone):
    strategy = build_strategy("replay", base="finetune")
    strategy.setup(micro_backbone)
    parts = {id(p) for p in micro_backbone.part_parameters(["projector", "llm"])}
    assert {id(p) for p in strategy.trainable_parameters()} == parts
    with pytest.raises(ValueError, match="method.base must be one of"):
        build_strategy("replay", base="prompt")


def test_the_choice_follows_the_task_seed_not_what_training_drew():
    picks = []
    for seed, draws in ((5, 1), (5, 9), (6, 1)):
        strategy = build_strategy("replay", memory_per_task=3, memory_fraction=None)
        torch.manual_seed(seed)  # the loop seeds every task
        torch.rand(draws)  # training consumes the generator by a varying amount
        strategy.after_task(TASKS[0], 0)
        picks.append(strategy.memory.entries)
    assert picks[0] == picks[1] != picks[2]
