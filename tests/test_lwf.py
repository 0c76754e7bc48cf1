"""LwF: the distillation term is zero while the model has not moved from its teacher and equals
the KL of the softened distributions by hand; on classification it reads the earlier classes."""

import math

import torch
from conftest import compose_config
from hydra.utils import instantiate

from mcl.data import toy_classes, toy_world
from mcl.data.task import Task
from mcl.strategies import build_strategy
from mcl.strategies.lwf import distillation


def test_distillation_is_the_kl_of_softened_distributions_by_hand():
    student, teacher = torch.tensor([[0.0, 2.0]]), torch.tensor([[2.0, 0.0]])
    p = torch.softmax(teacher / 2, -1)[0]  # T = 2
    q = torch.softmax(student / 2, -1)[0]
    expected = sum(p[i] * math.log(p[i] / q[i]) for i in range(2))
    assert math.isclose(distillation(student, teacher, 2.0).item(), expected, rel_tol=1e-6)
    assert distillation(teacher, teacher, 2.0).item() == 0.0


def _term(strategy, batch) -> float:
    strategy.train()
    outputs = strategy.forward(batch)
    return (strategy.loss(batch, outputs) - outputs.loss).item()


def test_loss_is_zero_when_the_model_has_not_changed_on_instructions(micro_backbone):
    samples = toy_world.generate("capability_recognition", 4, 0, "train")
    strategy = build_strategy("lwf", r=4, alpha=8, dropout=0.0)
    strategy.setup(micro_backbone)
    with torch.no_grad():  # a LoRA that does something, as after a first task
        for p in strategy.trainable_parameters():
            p.normal_(std=0.1)
    batch = micro_backbone.collate_train(micro_backbone.encode(samples, with_answer=True))
    strategy.before_task(Task("second", samples, []), 1)
    assert _term(strategy, batch) == 0.0
    with torch.no_grad():
        strategy.trainable_parameters()[-1].add_(0.5)  # the model moves: the term is positive
    assert _term(strategy, batch) > 0
    strategy.before_task(Task("first", samples, []), 0)  # no teacher on the first task
    assert _term(strategy, batch) == 0.0


def test_classification_distils_the_earlier_classes(tmp_path):
    tasks = toy_classes.toy_classification_stream(
        "lwf", "class_incremental", ["shapes"], train_size=8, test_size=4, seed=0,
        styles=["clean"], num_tasks=2).tasks
    backbone = instantiate(compose_config(["backbone=tiny_clip_micro"]).backbone, _convert_="all")
    strategy = build_strategy("lwf", r=4, alpha=8, dropout=0.0)
    strategy.setup(backbone)
    strategy.before_task(tasks[0], 0)
    strategy.after_task(tasks[0], 0)
    first = sorted({s.answer for s in tasks[0].train})
    assert strategy.old_classes == first
    strategy.before_task(tasks[1], 1)
    batch = backbone.collate_train(backbone.encode(tasks[1].train, with_answer=True))
    assert not set(batch["classes"]) & set(first)  # the new task's own classes only
    assert _term(strategy, batch) == 0.0
    with torch.no_grad():
        for p in strategy.trainable_parameters():
            p.add_(0.05)
    assert _term(strategy, batch) > 0
