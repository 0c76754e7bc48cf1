"""CoDyRA (`rank_selective_lora`): exact zeros from the proximal step, exact merging, sparsity
that grows with kappa, and gradients that reach the adapters only."""

import pytest
import torch
from conftest import method_options
from torch import nn

import mcl.strategies.rank_selective_lora as rsl
from mcl.adapters.gated_lora import adapter_of
from mcl.data import toy_world
from mcl.data.task import Task

TASK = Task("capability_recognition", toy_world.generate("capability_recognition", 24, 0, "train"),
            toy_world.generate("capability_recognition", 8, 0, "test"))


def _batch(backbone, samples=TASK.train[:8]):
    return backbone.collate_train(backbone.encode(samples, with_answer=True))


def _strategy(backbone, **kwargs):
    strategy = rsl.RankSelectiveLora(**method_options("rank_selective_lora", r=4, lr=1e-2,
                                                      epochs=1, batch_size=8, **kwargs))
    strategy.setup(backbone)
    return strategy


@torch.no_grad()
def _randomise_adapters(strategy, seed=0):
    """Give every adapter a visible effect: B non-zero, half of the gates already zero."""
    generator = torch.Generator().manual_seed(seed)
    for adapter in strategy.adapters():
        adapter.lora_B.copy_(0.1 * torch.randn(adapter.lora_B.shape, generator=generator))
        adapter.gate[::2] = 0.0


def test_soft_threshold_sets_gates_within_kappa_exactly_to_zero():
    gates = torch.tensor([-0.3, -0.1, -0.05, 0.0, 0.02, 0.1, 0.5])
    out = rsl.soft_threshold(gates, 0.1)
    small = gates.abs() <= 0.1
    assert torch.equal(out[small], torch.zeros(int(small.sum())))
    assert not torch.signbit(out[small]).any()  # +0.0, not -0.0
    assert torch.allclose(out[~small], torch.tensor([-0.2, 0.4]))


def test_official_update_zeroes_the_band_kappa_to_2kappa_the_soft_one_keeps_it():
    kappa = 0.1
    # One value in each band: |g| < kappa, kappa < |g| < 2 kappa (1.5 kappa), |g| > 2 kappa.
    gates = torch.tensor([0.05, -0.05, 0.15, -0.15, 0.35, -0.35])
    # models/codyra.py by hand: 0.15 -> 0.05 by the first mask, then < kappa -> 0.
    official = rsl.official_proximal(gates, kappa)
    assert torch.allclose(official, torch.tensor([0.0, 0.0, 0.0, 0.0, 0.25, -0.25]))
    assert official[2].item() == 0.0 and official[3].item() == 0.0  # exactly 0
    # The paper's soft threshold: the 1.5 kappa gate keeps 0.5 kappa.
    soft = rsl.soft_threshold(gates, kappa)
    assert torch.allclose(soft, torch.tensor([0.0, 0.0, 0.05, -0.05, 0.25, -0.25]))
    # |g| = kappa exactly: the official masks (strict comparisons) leave it, soft zeroes it.
    edge = torch.tensor([0.25, -0.25])
    assert torch.equal(rsl.official_proximal(edge, 0.25), edge)
    assert torch.equal(rsl.soft_threshold(edge, 0.25), torch.zeros(2))


def test_unknown_proximal_is_refused():
    with pytest.raises(ValueError, match="method.proximal"):
        rsl.RankSelectiveLora(**method_options("rank_selective_lora", proximal="hard"))


def test_kappa_schedule_is_zero_while_dense_then_climbs_the_official_staircase():
    kappas = [rsl.kappa_schedule(k, 500, 5e-3, 0.5, 50) for k in range(500)]
    assert all(k == 0.0 for k in kappas[:251])  # the official loop prunes only after step 250
    assert kappas[251] == pytest.approx(5e-3 / 49)  # np.linspace(0, 5e-3, 50)[1]
    assert kappas[255] == pytest.approx(2 * 5e-3 / 49)  # one stair per 250 / 50 = 5 steps
    assert kappas[-1] == pytest.approx(5e-3)
    assert all(a <= b for a, b in zip(kappas, kappas[1:], strict=False))


@pytest.mark.parametrize(("proximal", "expected"), [("official", [0.0, 0.0, 0.0, -0.7]),
                                                     ("soft", [0.0, 0.0, 0.2, -0.7])])
def test_proximal_step_follows_each_optimiser_step_on_the_schedule(micro_backbone, proximal,
                                                                   expected):
    # 4 steps, dense warm-up 2 steps, 2 levels: the prox after step 3 uses max_kappa.
    strategy = rsl.RankSelectiveLora(**method_options("rank_selective_lora", r=4, epochs=1,
                                                      batch_size=1, max_kappa=0.3,
                                                      kappa_levels=2, proximal=proximal))
    strategy.setup(micro_backbone)
    strategy.before_task(Task("t", TASK.train[:4], TASK.test), 0)
    strategy.configure_optimizer(strategy.trainable_parameters(), total_steps=4)
    adapter = strategy.adapters()[0]
    with torch.no_grad():
        adapter.gate.copy_(torch.tensor([0.2, -0.25, 0.5, -1.0]))
    for _ in range(3):  # steps 0-2 lie within the warm-up: no shrinkage
        strategy.after_optimizer_step()
    assert torch.equal(adapter.gate.detach(), torch.tensor([0.2, -0.25, 0.5, -1.0]))
    strategy.after_optimizer_step()  # step 3
    # 0.5 lies in (kappa, 2 kappa): official 0, soft 0.2.
    assert torch.allclose(adapter.gate.detach(), torch.tensor(expected))
    assert adapter.gate[0].item() == 0.0 and adapter.gate[1].item() == 0.0


def test_merged_model_equals_the_unmerged_one(micro_backbone):
    batch = _batch(micro_backbone)
    micro_backbone.eval()
    with torch.no_grad():
        base_logits = micro_backbone(batch).logits
    strategy = _strategy(micro_backbone)
    strategy.before_task(TASK, 0)
    _randomise_adapters(strategy)
    name, layer = next(iter(strategy.layers.items()))
    adapter = adapter_of(layer)
    expected_delta = adapter.lora_B.detach() @ torch.diag(adapter.gate.detach()) @ adapter.lora_A
    weight_before = layer.weight.clone()
    with torch.no_grad():
        unmerged = strategy.forward(batch).logits
        strategy.after_task(TASK, 0)
        merged = strategy.forward(batch).logits
    assert (unmerged - base_logits).abs().max() > 1e-3  # the adapters do change the model
    assert torch.allclose(merged, unmerged, atol=1e-5)
    assert torch.allclose(layer.weight - weight_before, expected_delta.detach(), atol=1e-6)
    assert strategy.active_ranks[-1][name] == 2  # gates 0 and 2 of 4 were zero: pruned
    # After the merge: plain nn.Linear layers, fresh adapters with B = 0, switched off.
    assert type(layer) is nn.Linear
    assert all(not a.active and not a.lora_B.any() for a in strategy.adapters())
    # No hook left on any wrapped layer: merged inference runs the plain layers, at base speed.
    assert all(not layer._forward_hooks for layer in strategy.layers.values())


def test_adapters_are_off_outside_a_task(micro_backbone):
    batch = _batch(micro_backbone)
    micro_backbone.eval()
    with torch.no_grad():
        before = micro_backbone(batch).logits
        strategy = _strategy(micro_backbone)
        _randomise_adapters(strategy)
        assert torch.equal(strategy.forward(batch).logits, before)


def test_stronger_regularisation_leaves_fewer_ranks(micro_tiny):
    from mcl.backbones.llava import LlavaBackbone

    kept = {}
    task = Task("t", TASK.train[:12], TASK.test)
    for max_kappa in (0.05, 1.0):
        torch.manual_seed(0)  # the same initial gates for both
        # 3 steps of batch 4: dense warm-up through step 1, one proximal step at max_kappa.
        strategy = rsl.RankSelectiveLora(**method_options(
            "rank_selective_lora", r=4, lr=1e-2, epochs=1, batch_size=4, max_kappa=max_kappa,
            kappa_levels=2))
        strategy.setup(LlavaBackbone.load("tiny_llava_micro", tiny=micro_tiny))
        strategy.before_task(task, 0)
        optimiser, schedule = strategy.configure_optimizer(strategy.trainable_parameters(), 3)
        strategy.backbone.train()
        for start in range(0, len(task.train), strategy.batch_size):
            # The loop's order: forward, backward, optimiser step, proximal step.
            batch = _batch(strategy.backbone, task.train[start:start + strategy.batch_size])
            strategy.loss(batch, strategy.forward(batch)).backward()
            optimiser.step()
            schedule.step()
            strategy.after_optimizer_step()
            optimiser.zero_grad()
        strategy.after_task(task, 0)
        kept[max_kappa] = sum(strategy.active_ranks[-1].values())
    total = 4 * len(strategy.layers)
    assert 0 < kept[0.05] <= total
    assert kept[1.0] < kept[0.05]


def test_gradients_reach_only_the_adapters(micro_backbone):
    strategy = _strategy(micro_backbone)
    strategy.before_task(TASK, 0)
    _randomise_adapters(strategy)
    with torch.no_grad():
        for adapter in strategy.adapters():
            adapter.gate.fill_(1.0)  # no zero gate, so every factor gets a gradient
    micro_backbone.train()
    batch = _batch(micro_backbone)
    strategy.loss(batch, strategy.forward(batch)).backward()
    adapter_params = {id(p) for p in strategy.trainable_parameters()}
    for name, p in micro_backbone.named_parameters():
        if id(p) in adapter_params:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert all(not layer.weight.requires_grad for layer in strategy.layers.values())
