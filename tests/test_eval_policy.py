"""Evaluation policies fill exactly the cells they promise, and results.json records them."""

import json

import numpy as np
import pytest
from conftest import MICRO, compose_config

import mcl.loop
from mcl.eval_policy import EvalConfig, not_measured, planned_cells, sample_indices
from mcl.results import summary_table
from mcl.run import run

BASE = [o for o in MICRO if not o.startswith("method.")]  # zero_shot: evaluation alone
THREE = ["stream.tasks=[capability_recognition,capability_colour,capability_counting]",
         "method=zero_shot", "stream.test_size=8"]


def test_planned_cells_by_hand():
    assert planned_cells(EvalConfig("full"), 3).all()
    assert planned_cells(EvalConfig("subset"), 3).all()
    expected = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 1]], dtype=bool)
    assert (planned_cells(EvalConfig("seen_next"), 3) == expected).all()


def test_metrics_reading_empty_cells_are_not_measured():
    assert not_measured(planned_cells(EvalConfig("full"), 4)) == []
    # seen_next keeps R[j, j], R[0, j] (FWT), R[j+1, j] and the last row (BWT, forgetting):
    # only MTIL's Transfer and Avg. read the untrained upper triangle.
    assert not_measured(planned_cells(EvalConfig("seen_next"), 4)) == ["transfer",
                                                                        "mtil_average"]
    no_zero_shot = planned_cells(EvalConfig("full"), 3)
    no_zero_shot[0] = False
    assert not_measured(no_zero_shot) == ["fwt"]


def test_subset_is_fixed_per_task_and_the_last_row_is_whole():
    cfg = EvalConfig("subset", subset_size=5, subset_seed=3)
    first = sample_indices(cfg, 0, 1, 3, 40)
    assert len(first) == 5 == len(set(first)) and first == sample_indices(cfg, 2, 1, 3, 40)
    assert first != sample_indices(cfg, 0, 0, 3, 40)  # another task, another subset
    assert sample_indices(cfg, 3, 1, 3, 40) is None  # the final row: every sample
    assert sample_indices(cfg, 0, 1, 3, 4) is None  # a test set smaller than the subset


def test_bad_policy_says_what_is_allowed():
    with pytest.raises(ValueError, match="evaluation.policy='fast' is not one of"):
        EvalConfig("fast")


@pytest.fixture()
def evaluated(monkeypatch):
    """Every (test set, number of samples) the loop evaluates, in order."""
    calls = []
    real = mcl.loop.evaluate_records

    def spy(generate, backbone, items, batch_size, indices=None, **kwargs):
        calls.append((items.samples[0].prompt, len(items) if indices is None else len(indices)))
        return real(generate, backbone, items, batch_size, indices=indices, **kwargs)

    monkeypatch.setattr(mcl.loop, "evaluate_records", spy)
    return calls


@pytest.mark.parametrize("policy, overrides", [
    ("full", []), ("seen_next", []), ("subset", ["evaluation.subset_size=3"])])
def test_each_policy_fills_its_cells_and_records_them(tmp_path, evaluated, policy, overrides):
    cfg = compose_config([*BASE, *THREE, f"evaluation={policy}", *overrides])
    results = run(cfg, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    matrix = np.array(saved["matrix"], dtype=float)
    planned = planned_cells(EvalConfig(policy), 3)
    assert (~np.isnan(matrix) == planned).all()  # exactly the promised cells
    record = saved["evaluation"]
    assert record["policy"] == policy and saved["config"]["evaluation"]["policy"] == policy
    full = 8  # stream.test_size
    expected = [[(3 if policy == "subset" and i < 3 else full) if planned[i, j] else None
                 for j in range(3)] for i in range(4)]
    assert record["samples"] == expected
    # The loop scored those samples: one call per planned cell, of that many samples.
    assert [n for _, n in evaluated] == [n for row in expected for n in row if n is not None]
    skipped = ["transfer", "mtil_average"] if policy == "seen_next" else []
    assert saved["metrics_not_measured"] == skipped == record["metrics_not_measured"]
    for key, value in saved["metrics"].items():
        assert (value is None) == (key in skipped), key
    table = summary_table(results)
    assert ("n/m" in table) == bool(skipped)
