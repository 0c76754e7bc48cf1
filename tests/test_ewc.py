"""Online EWC: the penalty equals (lambda / 2) sum F (theta - theta*)^2 on a hand-made Fisher, the
Fisher folds online as gamma * F + F_t, and it is the squared gradient of the training loss."""

import pytest
import torch
from torch import nn

from mcl.data import toy_world
from mcl.data.task import Task
from mcl.strategies import build_strategy


def _with_parameters(**options):
    strategy = build_strategy("ewc", **options)
    strategy._params = [nn.Parameter(torch.tensor([1.0, 2.0])), nn.Parameter(torch.tensor([[3.0]]))]
    return strategy


def test_penalty_is_the_formula_on_a_hand_made_fisher():
    strategy = _with_parameters(ewc_lambda=4.0)
    assert strategy.penalty().item() == 0.0  # no finished task yet
    strategy.fisher = [torch.tensor([0.5, 2.0]), torch.tensor([[1.0]])]
    strategy.anchor = [torch.tensor([0.0, 1.0]), torch.tensor([[5.0]])]
    # (4 / 2) * (0.5 * 1^2 + 2 * 1^2 + 1 * (-2)^2) = 2 * 6.5 = 13
    assert strategy.penalty().item() == 13.0
    restored = _with_parameters(ewc_lambda=4.0)
    restored.load_extra_state(strategy.extra_state())
    assert restored.penalty().item() == 13.0


def test_fisher_folds_online_with_gamma(monkeypatch):
    strategy = _with_parameters(gamma=0.5)
    estimates = iter([[torch.tensor([2.0, 4.0]), torch.tensor([[2.0]])],
                      [torch.tensor([1.0, 1.0]), torch.tensor([[0.0]])]])
    monkeypatch.setattr(strategy, "estimate_fisher", lambda task: next(estimates))
    strategy.after_task(None, 0)
    with torch.no_grad():
        strategy._params[0] += 1.0
    strategy.after_task(None, 1)
    assert strategy.fisher[0].tolist() == [2.0, 3.0] and strategy.fisher[1].tolist() == [[1.0]]
    assert strategy.anchor[0].tolist() == [2.0, 3.0]  # the parameters after the last task


def test_fisher_is_the_squared_gradient_of_the_training_loss(micro_backbone):
    samples = toy_world.generate("capability_recognition", 6, 0, "train")
    task = Task("t", samples, [])
    strategy = build_strategy("ewc", fisher_batches=1, fisher_batch_size=6, dropout=0.0)
    strategy.setup(micro_backbone)
    fisher = strategy.estimate_fisher(task)  # one batch: all six samples
    batch = micro_backbone.collate_train(micro_backbone.encode(samples, with_answer=True))
    params = strategy.trainable_parameters()
    grads = torch.autograd.grad(strategy.forward(batch).loss, params)
    assert all(torch.allclose(f, g.pow(2)) for f, g in zip(fisher, grads, strict=True))
    assert any(f.sum() > 0 for f in fisher)


def test_bad_gamma_is_refused():
    with pytest.raises(ValueError, match="method.gamma in"):
        build_strategy("ewc", gamma=1.5)
