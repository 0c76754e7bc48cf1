"""MoELoRA (CoIN): the router's per-token weights sum to 1, the update is the weighted sum of the
experts' LoRA updates, and gradients reach only the experts a token is routed to."""

import pytest
import torch

from mcl.strategies import build_strategy
from mcl.strategies.moe_lora import MoELoRA


def _layer() -> MoELoRA:
    torch.manual_seed(0)
    layer = MoELoRA(in_features=3, out_features=2, experts=2, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        layer.lora_B.normal_()  # B starts at zero; any values for the check
    return layer


def test_output_is_the_routed_sum_of_expert_updates_by_hand():
    layer = _layer()
    x = torch.tensor([[[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]]])  # [batch 1, 2 tokens, 3]
    gate = layer.routing(x)
    assert torch.allclose(gate.sum(-1), torch.ones(1, 2))
    logits = x @ layer.router.weight.T
    assert torch.allclose(gate, logits.exp() / logits.exp().sum(-1, keepdim=True))
    expected = sum(gate[..., e:e + 1] * (x @ layer.lora_A[e].T @ layer.lora_B[e].T)
                   for e in range(2)) * (8 / 4)  # scaling alpha / total rank
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_gradients_reach_only_the_routed_experts():
    layer = _layer()
    with torch.no_grad():  # expert 1's logit -1e4 for a positive input: its weight is exactly 0
        layer.router.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [-1e4, -1e4, -1e4]]))
    x = torch.tensor([[1.0, 2.0, 0.5]])
    assert layer.routing(x)[0].tolist() == [1.0, 0.0]
    layer(x).sum().backward()
    assert layer.lora_A.grad[1].abs().sum() == 0 and layer.lora_B.grad[1].abs().sum() == 0
    assert layer.lora_A.grad[0].abs().sum() > 0 and layer.lora_B.grad[0].abs().sum() > 0


def test_rank_must_split_evenly_among_the_experts():
    with pytest.raises(ValueError, match="multiple of method.expert_num"):
        build_strategy("moe_lora", r=12, expert_num=8)


def test_experts_wrap_every_language_model_linear_layer(micro_backbone):
    strategy = build_strategy("moe_lora", r=4, expert_num=2)
    strategy.setup(micro_backbone)
    names = micro_backbone.linear_layer_names(["llm"])
    assert len(strategy.experts) == len(names) > 0
    trained = strategy.named_trainable_parameters()
    assert trained and all(n.startswith("experts.") for n in trained)
