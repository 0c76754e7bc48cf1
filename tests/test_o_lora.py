"""O-LoRA: the orthogonality loss on hand matrices (the code's sum of absolute values and the
paper's squared Frobenius norm), old adapters frozen and still applied, the new one fresh."""

import pytest
import torch

from mcl.strategies import build_strategy
from mcl.strategies.o_lora import OrthogonalLoRA, orthogonality_loss

A_OLD = torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]])  # 2 old ranks, in_features 3
A_NEW = torch.tensor([[3.0, 1.0, 0.0]])  # 1 new rank
# A_old A_new^T = [[1*3 + 0 + 0], [0 - 1 + 0]] = [[3], [-1]]


def test_orthogonality_loss_by_hand():
    assert orthogonality_loss(A_OLD, A_NEW, "squared").item() == 3.0**2 + 1.0**2
    assert orthogonality_loss(A_OLD, A_NEW, "abs").item() == 3.0 + 1.0
    partly = torch.tensor([[0.0, 1.0, 1.0]])  # A_old rows . this = [2, 0]
    assert orthogonality_loss(A_OLD, partly, "squared").item() == 4.0
    assert orthogonality_loss(A_OLD, torch.tensor([[2.0, -1.0, -1.0]]), "squared").item() == 0.0


def test_regulariser_sums_the_layers_with_lambda_1_and_lambda_2(micro_backbone):
    strategy = build_strategy("o_lora", lambda_1=0.5, lambda_2=0.1, orthogonality="squared")
    strategy.setup(micro_backbone)
    expected = 0.0
    with torch.no_grad():
        for a in strategy.adapters:
            a.freeze_new()  # a first task's adapter becomes old
            expected += 0.5 * (a.old_A @ a.new_A.T).pow(2).sum().item()
            expected += 0.1 * (a.new_A.norm() + a.new_B.norm()).item()
    assert strategy.regulariser().item() == pytest.approx(expected, rel=1e-5)


def test_old_adapters_stay_applied_and_frozen_and_the_new_one_is_fresh():
    torch.manual_seed(0)
    layer = OrthogonalLoRA(3, 2, r=1, alpha=2.0, dropout=0.0)
    with torch.no_grad():
        layer.new_A.copy_(A_NEW)
        layer.new_B.copy_(torch.tensor([[1.0], [2.0]]))
    x = torch.tensor([[1.0, 1.0, 1.0]])
    before = layer(x)
    assert torch.allclose(before, 2.0 * (x @ A_NEW.T) @ torch.tensor([[1.0, 2.0]]))
    layer.freeze_new()
    assert torch.equal(layer.old_A, A_NEW) and not layer.old_A.requires_grad
    assert torch.equal(layer.new_B, torch.zeros(2, 1))  # a fresh B: no effect yet
    assert torch.allclose(layer(x), before)  # the old task's update is still there
    assert [n for n, _ in layer.named_parameters()] == ["new_A", "new_B"]


def test_unknown_orthogonality_is_refused():
    with pytest.raises(ValueError, match="abs: the official code, squared: the paper"):
        build_strategy("o_lora", orthogonality="frobenius")
