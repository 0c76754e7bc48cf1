"""The exemplar memory: equal shares per group within the budget, best-first order kept, samples
looked up in the training splits, state round trip."""

from mcl.data.task import Sample, Task
from mcl.memory import ExemplarMemory


def _task(name: str, answers: list[str]) -> Task:
    return Task(name, [Sample(f"{name}{i}.png", "q", a) for i, a in enumerate(answers)], [])


def test_rebalance_shares_the_budget_and_keeps_the_best_first():
    memory = ExemplarMemory(8)
    memory.rebalance({(0, "a"): [3, 1, 2, 0], (0, "b"): [5, 4]})
    assert memory.entries == [[0, 3, "a"], [0, 1, "a"], [0, 2, "a"], [0, 0, "a"],
                              [0, 5, "b"], [0, 4, "b"]]  # 8 // 2 = 4 each, b has only 2
    memory.rebalance({(1, "c"): [0, 1, 2], (1, "d"): [3]})
    assert memory.entries == [[0, 3, "a"], [0, 1, "a"], [0, 5, "b"], [0, 4, "b"],
                              [1, 0, "c"], [1, 1, "c"], [1, 3, "d"]]  # 8 // 4 = 2 each
    assert len(memory) == 7 <= memory.size


def test_samples_come_from_the_training_splits_and_state_round_trips():
    tasks = [_task("t0", ["a", "a", "b"]), _task("t1", ["c", "c"])]
    memory = ExemplarMemory(4)
    memory.rebalance({(0, "a"): [1, 0], (1, "c"): [0]})
    assert [s.image for s in memory.samples(tasks)] == ["t01.png", "t00.png", "t10.png"]
    restored = ExemplarMemory(4)
    restored.load_state(memory.state())
    assert restored.entries == memory.entries and restored.entries is not memory.entries
