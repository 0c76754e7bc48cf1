"""SEFE's RegLoRA against hand computation: the key entries, the penalty, the merge."""

import torch
from conftest import method_options

from mcl.adapters.gated_lora import adapter_of
from mcl.data.task import Task
from mcl.strategies.sefe import Sefe, key_entries, key_penalty


def test_key_entries_are_the_largest_absolute_entries_of_the_update():
    delta = torch.tensor([[1.0, -5.0, 2.0], [0.5, 4.0, -3.0]])
    # int(0.5 * 6) = 3 entries: |-5| at (0, 1), |4| at (1, 1), |-3| at (1, 2) -> flat 1, 4, 5.
    assert sorted(key_entries(delta, 0.5).tolist()) == [1, 4, 5]
    assert key_entries(delta, 0.2).tolist() == [1]  # int(1.2) = 1


def test_key_penalty_is_the_mean_absolute_update_on_the_keys():
    lora_a = torch.tensor([[1.0, 2.0, -1.0], [0.0, 1.0, 3.0]])  # r=2 x in=3
    lora_b = torch.tensor([[2.0, 1.0], [-1.0, 0.5]])            # out=2 x r=2
    delta = lora_b @ lora_a  # [[2, 5, 1], [-1, -1.5, 2.5]]
    keys = torch.tensor([1, 3, 5, 1], dtype=torch.int32)  # an entry picked twice counts twice
    expected = (5 + 1 + 2.5 + 5) / 4
    assert torch.isclose(key_penalty(lora_a, lora_b, keys), torch.tensor(expected))
    assert torch.isclose(key_penalty(lora_a, lora_b, keys),
                         delta.flatten()[keys.long()].abs().mean())


def test_after_a_task_keys_are_kept_the_adapter_merged_and_the_next_one_penalised(micro_backbone):
    strategy = Sefe(**method_options("sefe", r=2, key_fraction=0.1))
    strategy.setup(micro_backbone)
    assert strategy.regularisation() is None  # the first task trains plain LoRA
    torch.manual_seed(0)
    before, deltas = {}, {}
    for name, layer in strategy.layers.items():
        adapter = adapter_of(layer)
        with torch.no_grad():
            adapter.lora_B.normal_()
        before[name] = layer.weight.clone()
        deltas[name] = adapter.lora_B @ adapter.lora_A
    task = Task("t", [], [])
    strategy.before_task(task, 0)
    strategy.after_task(task, 0)
    for name, layer in strategy.layers.items():
        delta = deltas[name]
        k = int(0.1 * delta.numel())
        top = delta.abs().flatten().topk(k).indices
        assert sorted(strategy.keys[name].tolist()) == sorted(top.tolist())
        # merged with LoRA's scale alpha / r; the new adapter starts at zero update
        torch.testing.assert_close(layer.weight, before[name] + strategy.scaling * delta)
        assert torch.count_nonzero(adapter_of(layer).lora_B) == 0
        assert not adapter_of(layer).active
    assert float(strategy.regularisation()) == 0.0  # a fresh adapter changes nothing
    with torch.no_grad():
        for layer in strategy.layers.values():
            adapter_of(layer).lora_B.normal_()
    by_hand = sum((adapter_of(layer).lora_B @ adapter_of(layer).lora_A).flatten()[
        strategy.keys[name].long()].abs().mean() for name, layer in strategy.layers.items())
    torch.testing.assert_close(strategy.regularisation(), by_hand / len(strategy.layers))
    outputs = type("Out", (), {"loss": torch.tensor(1.0)})()
    torch.testing.assert_close(strategy.loss({}, outputs),
                               1.0 + strategy.reg_weight * by_hand / len(strategy.layers))
    strategy.after_task(task, 1)  # the lists of both tasks are concatenated
    name = next(iter(strategy.layers))
    assert len(strategy.keys[name]) == 2 * int(0.1 * deltas[name].numel())
