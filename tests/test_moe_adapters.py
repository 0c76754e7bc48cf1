"""MoE-Adapters: DDAS sends an image from an unseen distribution to the frozen zero-shot CLIP
(exactly its logits), a learnt one to its task's router; top-k gating; frozen experts."""

import numpy as np
import pytest
import torch
from conftest import compose_config, method_options
from hydra.utils import instantiate

from mcl.data import toy_classes
from mcl.data.task import Sample
from mcl.strategies.moe_adapters import ZERO_SHOT, MoEAdapters, noisy_top_k

TASK = toy_classes.toy_classification_stream(
    "moe", "mtil", ["shapes"], train_size=16, test_size=8, seed=0, styles=["clean"]).tasks[0]


def _strategy(**kwargs) -> MoEAdapters:
    backbone = instantiate(compose_config(["backbone=tiny_clip_micro"]).backbone, _convert_="all")
    strategy = MoEAdapters(**method_options("moe_adapters", ae_steps=300, ae_batch_size=16,
                                            **kwargs))
    strategy.setup(backbone)
    return strategy


def _noise_images(n: int, size: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [Sample(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "", "circle")
            for _ in range(n)]


def test_ddas_routes_an_unseen_distribution_to_zero_shot_and_a_learnt_one_to_its_router():
    strategy = _strategy(threshold=1.0)
    backbone = strategy.backbone
    strategy.before_task(TASK, 0)
    with torch.no_grad():  # give the experts a visible effect (training stand-in)
        for mixture in strategy.mixtures.values():
            for expert in mixture.experts:
                expert.up.weight.normal_()
    strategy.after_task(TASK, 0)
    strategy.eval()
    seen = backbone.collate_train(backbone.encode(TASK.test, with_answer=True))
    unseen = backbone.collate_train(backbone.encode(_noise_images(8, backbone.image_size),
                                                    with_answer=True))
    auto = strategy.selectors[0]
    seen_error = auto.error(strategy.ddas_features(seen["pixel_values"]))
    unseen_error = auto.error(strategy.ddas_features(unseen["pixel_values"]))
    assert unseen_error.min() > seen_error.max()  # the autoencoder tells them apart
    strategy.limits = [float((seen_error.max() + unseen_error.min()) / 2)]  # the threshold
    assert strategy.routes(seen["pixel_values"]).tolist() == [0] * 8
    assert strategy.routes(unseen["pixel_values"]).tolist() == [ZERO_SHOT] * 8
    with torch.no_grad():
        logits = strategy.forward(unseen).logits
        zero_shot = backbone(unseen).logits  # route is ZERO_SHOT outside forward: no adapters
        adapted = strategy.forward(seen).logits
        strategy.route = 0
        backbone.eval()
        through_router = backbone(seen).logits
        strategy.route = ZERO_SHOT
        backbone.eval()
        plain = backbone(seen).logits
    assert torch.equal(logits, zero_shot)
    torch.testing.assert_close(adapted, through_router)
    assert not torch.allclose(adapted, plain, atol=1e-4)  # the adapters do act on seen images


def test_threshold_quantile_sets_each_task_its_own_limit():
    strategy = _strategy(threshold_quantile=0.5)
    strategy.before_task(TASK, 0)
    strategy.after_task(TASK, 0)
    backbone = strategy.backbone
    pixels = torch.stack([it["pixel_values"] for it in backbone.encode(TASK.train,
                                                                         with_answer=False)])
    with torch.no_grad():
        errors = strategy.selectors[0].error(strategy.ddas_features(pixels))
    assert strategy.limits == [pytest.approx(float(errors.quantile(0.5)))]
    assert (strategy.routes(pixels) == ZERO_SHOT).sum() == (errors > strategy.limits[0]).sum()


def test_noisy_top_k_keeps_k_gates_summing_to_one():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 6, generator=generator)
    w = torch.randn(6, 4, generator=generator)
    gates = noisy_top_k(x, w, torch.zeros(6, 4), k=2, noisy=False)
    assert ((gates > 0).sum(-1) == 2).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(5))
    top = (x @ w).topk(2, dim=-1)
    torch.testing.assert_close(gates.gather(-1, top.indices), torch.softmax(top.values, -1))


def test_the_most_chosen_experts_are_frozen_after_a_task():
    strategy = _strategy(freeze_top=1)
    backbone = strategy.backbone
    strategy.before_task(TASK, 0)
    strategy.train()
    batch = backbone.collate_train(backbone.encode(TASK.train[:8], with_answer=True))
    strategy.loss(batch, strategy.forward(batch)).backward()
    counts = {k: m.chosen.clone() for k, m in strategy.mixtures.items()}
    strategy.zero_grad()
    strategy.after_task(TASK, 0)
    assert {k for k, _ in strategy.frozen} == set(counts)
    for key, expert in strategy.frozen:
        assert counts[key][expert] == counts[key].max()
    strategy.before_task(TASK, 1)
    strategy.train()
    strategy.loss(batch, strategy.forward(batch)).backward()
    strategy.on_after_backward()
    for key, expert in strategy.frozen:
        assert all(p.grad is None for p in strategy.mixtures[key].experts[expert].parameters())
