"""ZSCL: the distillation loss against a hand computation, no gradient into the teacher (nor,
as in the official code, a distillation gradient into the student's text tower), and the
weight ensemble's running average."""

import math

import pytest
import torch
from conftest import compose_config, method_options
from hydra.utils import instantiate

from mcl.data import toy_classes
from mcl.strategies.zscl import ZSCL, distillation, zscl_distillation

TASK = toy_classes.toy_classification_stream(
    "zscl", "class_incremental", ["shapes"], train_size=8, test_size=4, seed=0,
    styles=["clean"], num_tasks=1).tasks[0]
REFERENCE = {"_target_": "mcl.strategies.zscl.toy_pretraining_reference", "size": 12, "seed": 1}


def _strategy(**kwargs) -> ZSCL:
    backbone = instantiate(compose_config(["backbone=tiny_clip_micro"]).backbone, _convert_="all")
    strategy = ZSCL(**method_options("zscl", reference=REFERENCE, reference_batch_size=8,
                                     **kwargs))
    strategy.setup(backbone)
    return strategy


def _hand_distillation(t, s, temp):
    """sum_j -softmax(t_i / T)_j log softmax(s_i / T)_j, averaged over rows i, times T^2."""
    total = 0.0
    for ti, si in zip(t.tolist(), s.tolist(), strict=True):
        zt = sum(math.exp(v / temp) for v in ti)
        zs = sum(math.exp(v / temp) for v in si)
        total += sum(-(math.exp(a / temp) / zt) * math.log(math.exp(b / temp) / zs)
                     for a, b in zip(ti, si, strict=True))
    return total / len(t) * temp ** 2


def test_distillation_equals_the_hand_computation():
    generator = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(2, 3, 5, generator=generator, dtype=torch.float64)
    assert distillation(teacher, student, 2.0).item() == pytest.approx(
        _hand_distillation(teacher, student, 2.0), rel=1e-12)


def test_zscl_terms_are_image_and_transposed_text_distillation_on_teacher_texts():
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(2, 4, 6, generator=generator, dtype=torch.float64)
    texts = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    scale = torch.tensor(10.0, dtype=torch.float64)

    def unit(x):
        return x / x.norm(dim=-1, keepdim=True)

    current = scale * unit(student) @ unit(texts).T
    reference = scale * unit(teacher) @ unit(texts).T
    image = _hand_distillation(reference, current, 2.0)
    text = _hand_distillation(reference.T, current.T, 2.0)
    assert zscl_distillation(student, teacher, texts, scale, 2.0).item() == pytest.approx(
        image + text, rel=1e-12)
    assert zscl_distillation(student, teacher, texts, scale, 2.0, text_loss=False).item() == (
        pytest.approx(image, rel=1e-12))


def test_no_gradient_reaches_the_teacher_nor_through_distillation_the_student_text_tower():
    strategy = _strategy()
    backbone = strategy.backbone
    strategy.before_task(TASK, 0)
    strategy.train()
    batch = backbone.collate_train(backbone.encode(TASK.train, with_answer=True))
    strategy.loss(batch, strategy.forward(batch)).backward()
    assert all(p.grad is None and not p.requires_grad for p in strategy.teacher.parameters())
    vision = list(backbone.part_parameters(["vision"]))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vision)
    strategy.zero_grad()
    strategy.distillation_loss(strategy.reference_batch(torch.device("cpu"))).backward()
    text = list(backbone.part_parameters(["text"]))
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in text)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vision)
    assert all(p.grad is None for p in strategy.teacher.parameters())


@torch.no_grad()
def test_weight_ensemble_averages_the_start_and_every_avg_every_th_step():
    strategy = _strategy(avg_every=2)
    params = strategy.trainable_parameters()
    strategy.before_task(TASK, 0)
    kept = [[p.clone() for p in params]]  # the task's initial weights
    for step in range(5):
        for p in params:
            p.add_(1.0 + step)
        if step % 2 == 0:
            kept.append([p.clone() for p in params])
        strategy.after_optimizer_step()
    strategy.after_task(TASK, 0)
    for i, p in enumerate(params):
        expected = torch.stack([k[i] for k in kept]).mean(0)
        torch.testing.assert_close(p, expected, rtol=1e-6, atol=1e-5)


def test_a_reference_without_target_is_refused():
    with pytest.raises(ValueError, match="method.reference must be a node with _target_"):
        ZSCL(**method_options("zscl", reference="imagenet"))
