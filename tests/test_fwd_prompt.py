"""Fwd-Prompt: the subspaces come from the SVD as specified, projected prompt gradients never
enter old tasks' subspaces, only the prompt pool receives gradients, and state resumes."""

import pytest
import torch

from mcl.data import toy_world
from mcl.data.task import Task
from mcl.strategies import build_strategy
from mcl.strategies.fwd_prompt import allowed_basis, energy_rank, extend_basis, project


def _orthonormal(d: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64)).Q


def _matrix(singular: list[float], n: int = 40, d: int = 12, seed: int = 0) -> torch.Tensor:
    """n x d matrix with the given singular values and random singular vectors."""
    k = len(singular)
    return _orthonormal(n, k, seed) @ torch.diag(torch.tensor(singular, dtype=torch.float64)) \
        @ _orthonormal(d, k, seed + 1).T


def _tasks(n: int = 8) -> list[Task]:
    return [Task(name, toy_world.generate(name, n, 0, "train"),
                 toy_world.generate(name, 4, 0, "test"))
            for name in ("capability_recognition", "capability_colour")]


def test_core_basis_is_the_top_right_singular_vectors_reaching_the_energy_threshold():
    # energies 50, 25, 12, 8, 3, 1, 1 (of 100): cumulative 0.50 0.75 0.87 0.95 0.98 0.99 1.00
    x = _matrix([50 ** 0.5, 25 ** 0.5, 12 ** 0.5, 8 ** 0.5, 3 ** 0.5, 1.0, 1.0 - 1e-3])
    _, s, vh = torch.linalg.svd(x)
    assert energy_rank(s ** 2, 0.97) == 5
    assert energy_rank(s ** 2, 0.95 - 1e-9) == 4 and energy_rank(s ** 2, 0.5 - 1e-9) == 1
    basis = extend_basis(torch.empty(12, 0, dtype=torch.float64), x.T @ x, 0.97)
    top = vh[:5].T
    assert basis.shape == (12, 5)
    assert torch.allclose(basis.T @ basis, torch.eye(5, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(basis @ basis.T, top @ top.T, atol=1e-8)  # same subspace


def test_memory_update_adds_the_fewest_directions_that_reach_the_threshold():
    old = extend_basis(torch.empty(12, 0, dtype=torch.float64),
                       _matrix([3.0, 2.0], seed=3).T @ _matrix([3.0, 2.0], seed=3), 0.97)
    x = _matrix([4.0, 3.0, 2.0, 1.0, 0.5], seed=7)
    new = extend_basis(old, x.T @ x, 0.97)
    assert torch.equal(new[:, :2], old)  # the old directions are kept as they are
    assert torch.allclose(new.T @ new, torch.eye(new.shape[1], dtype=torch.float64), atol=1e-10)

    def captured(basis: torch.Tensor) -> float:
        return float((x @ basis).square().sum() / x.square().sum())

    assert new.shape[1] > 2 and captured(new) >= 0.97
    assert captured(new[:, :-1]) < 0.97  # one direction fewer would not be enough


def test_projection_removes_the_protected_subspace_and_keeps_the_pretrained_one():
    e = torch.eye(8, dtype=torch.float64)
    pretrained, protected = e[:, :5], e[:, 3:6]  # they share e4, e5
    allowed = allowed_basis(pretrained, protected)
    assert torch.allclose(allowed @ allowed.T, torch.diag(torch.tensor([1.0] * 3 + [0.0] * 5,
                                                                       dtype=torch.float64)))
    g = torch.randn(4, 2, 8)
    expected = g.clone()
    expected[..., 3:] = 0
    assert torch.allclose(project(g, allowed), expected, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projected_gradient_has_no_component_in_old_task_subspaces(seed):
    pretrained, protected = _orthonormal(64, 40, seed), _orthonormal(64, 20, seed + 10)
    g = torch.randn(10, 5, 64, generator=torch.Generator().manual_seed(seed))
    projected = project(g, allowed_basis(pretrained, protected))
    inside = projected.reshape(-1, 64).double() @ protected
    assert inside.norm() / g.norm() <= 1e-6
    assert projected.norm() > 0.1 * g.norm()  # not trivially zero
    assert torch.allclose(project(projected, allowed_basis(pretrained, protected)), projected,
                          atol=1e-5)  # a projection: applying it twice changes nothing


def test_only_the_prompt_pool_gets_gradients_and_they_avoid_old_subspaces(micro_backbone):
    strategy = build_strategy("fwd_prompt", batch_size=8)
    strategy.setup(micro_backbone)
    tasks = _tasks()
    strategy.before_task(tasks[0], 0)
    old = strategy.protected.clone()  # the first task's core subspace
    strategy.before_task(tasks[1], 1)
    assert old.shape[1] > 0
    batch = micro_backbone.collate_train(micro_backbone.encode(tasks[1].train, with_answer=True))
    strategy.loss(batch, strategy.forward(batch)).backward()
    pool = {id(p) for p in strategy.trainable_parameters()}
    for name, p in micro_backbone.named_parameters():
        assert (p.grad is not None) == (id(p) in pool), name
    grad = strategy.pool.prompts.grad
    assert grad.abs().sum(dim=(1, 2)).gt(0).sum() <= strategy.top_k * len(batch["input_ids"])
    raw = grad.norm()
    assert (grad.reshape(-1, grad.shape[-1]) @ old.to(grad)).norm() / raw > 1e-2  # before
    strategy.on_after_backward()
    assert (grad.reshape(-1, grad.shape[-1]) @ old.to(grad)).norm() / raw <= 1e-6  # after
    assert grad.norm() > 1e-2 * raw


def test_prompts_go_in_front_of_each_sample_whatever_the_padding(micro_backbone):
    strategy = build_strategy("fwd_prompt")
    strategy.setup(micro_backbone)
    items = micro_backbone.encode(_tasks()[0].train[:4], with_answer=True)
    items[0]["prompt_ids"] = items[0]["prompt_ids"][:-2]  # a shorter sample gets padding
    micro_backbone.eval()
    with torch.no_grad():
        alone = strategy.forward(micro_backbone.collate_train(items[:1]))
        batched = strategy.forward(micro_backbone.collate_train(items))
    n = alone.logits.shape[1]
    assert batched.logits.shape[1] > n
    assert torch.allclose(alone.logits[0], batched.logits[0, :n], atol=1e-5)

    generate = micro_backbone.collate_generate(items)  # left-padded
    with torch.no_grad():
        embeds, mask, labels, _ = strategy.with_prompts(generate)
        original = micro_backbone.embed(generate)
    n, pool = strategy.top_k * strategy.prompt_length, strategy.pool.prompts.flatten(0, 1)
    assert labels is None and embeds.shape[1] == original.shape[1] + n
    for b, pads in enumerate((generate["attention_mask"] == 0).sum(1).tolist()):
        assert mask[b, :pads].sum() == 0 and mask[b, pads:].all()
        assert torch.equal(embeds[b, :pads], original[b, :pads])
        assert torch.equal(embeds[b, pads + n:], original[b, pads:])
        inserted = embeds[b, pads:pads + n]
        assert (inserted[:, None] == pool[None]).all(-1).any(-1).all()  # rows of the pool


def test_a_restored_strategy_builds_the_same_projector_for_the_next_task(micro_tiny):
    from mcl.backbones.llava import LlavaBackbone

    tasks = _tasks()
    first = build_strategy("fwd_prompt")
    first.setup(LlavaBackbone.load("tiny_llava_micro", tiny=micro_tiny))
    first.before_task(tasks[0], 0)
    restored = build_strategy("fwd_prompt")
    restored.setup(LlavaBackbone.load("tiny_llava_micro", tiny=micro_tiny))
    restored.load_checkpoint_state(first.checkpoint_state())
    first.before_task(tasks[1], 1)
    restored.before_task(tasks[1], 1)
    assert torch.equal(first.allowed, restored.allowed)
    assert torch.equal(first.protected, restored.protected)
    assert first.allowed.shape[1] > 0


def test_training_moves_prompts_only_outside_old_task_subspaces(micro_backbone, tmp_path):
    # The loop's AdamW rescales coordinates, so this holds only because the prompts' change is
    # kept in the allowed subspace too, not just the gradient.
    from mcl.loop import LoopConfig, fit_task

    strategy = build_strategy("fwd_prompt", epochs=2, batch_size=4, lr=1e-2)
    strategy.setup(micro_backbone)
    tasks = _tasks()
    strategy.before_task(tasks[0], 0)
    old = strategy.protected.clone()
    strategy.before_task(tasks[1], 1)
    before = strategy.pool.prompts.detach().clone()
    items = micro_backbone.encode(tasks[1].train, with_answer=True)
    fit_task(strategy, items, tasks[1].name, LoopConfig(progress_bar=False), seed=0, loggers=[],
             run_dir=tmp_path)
    strategy.after_task(tasks[1], 1)
    change = (strategy.pool.prompts.detach() - before).reshape(-1, before.shape[-1]).double()
    assert change.norm() > 1e-3
    assert (change @ old).norm() / change.norm() <= 1e-6


@pytest.mark.parametrize("projection", ["full", "old_tasks", "none"])
def test_projection_ablations_allow_what_they_name(micro_backbone, projection):
    """`full` keeps updates in the pre-trained span and out of old tasks' subspaces; `old_tasks`
    only out of old tasks' subspaces (the whole residual space, beyond the embedding span);
    `none` anywhere."""
    strategy = build_strategy("fwd_prompt", batch_size=8, projection=projection)
    strategy.setup(micro_backbone)
    tasks = _tasks()
    strategy.before_task(tasks[0], 0)
    protected = strategy.protected.clone()  # the first task's: what the second must avoid
    strategy.before_task(tasks[1], 1)
    allowed = strategy.allowed
    d = allowed.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    projector = allowed @ allowed.T
    assert torch.allclose(allowed.T @ allowed, torch.eye(allowed.shape[1], dtype=torch.float64),
                          atol=1e-8)
    pretrained_room = allowed_basis(strategy.pretrained, protected).shape[1]
    if projection == "none":
        assert torch.allclose(projector, eye)
    else:
        assert (projector @ protected).norm() < 1e-6  # nothing moves inside old subspaces
        expected = pretrained_room if projection == "full" else d - protected.shape[1]
        assert allowed.shape[1] == expected
    if projection == "old_tasks":  # holds the method's room (more, where the embedding
        full = allowed_basis(strategy.pretrained, protected)  # table spans less than R^d)
        assert torch.allclose(projector @ full, full, atol=1e-8)


def test_unknown_projection_is_refused():
    with pytest.raises(ValueError, match="projection='pgp'.*choose one of"):
        build_strategy("fwd_prompt", projection="pgp")
