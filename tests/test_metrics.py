"""Tests for mcl.metrics.continual on hand-computed accuracy matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcl.metrics.continual import (
    METRIC_DEFINITIONS,
    average_incremental_accuracy,
    backward_transfer,
    compute_metrics,
    forgetting,
    forward_transfer,
    last_accuracy,
    mtil_average,
    mtil_transfer,
)

# Three tasks (T = 3). Row 0 is zero-shot; task j is trained at row j + 1.
#            task0  task1  task2
R3 = np.array(
    [
        [0.50, 0.40, 0.30],  # zero-shot
        [0.90, 0.50, 0.35],  # after task 0
        [0.92, 0.95, 0.45],  # after task 1 (task 0 still improves: 0.90 -> 0.92)
        [0.70, 0.85, 0.90],  # after task 2
    ]
)

# Hand-computed values for R3:
# last        = (0.70 + 0.85 + 0.90) / 3                         = 2.45 / 3 = 0.816667
# A_1 = 0.90; A_2 = (0.92 + 0.95) / 2 = 0.935; A_3 = 0.816667
# avg_incr    = (0.90 + 0.935 + 0.816667) / 3                    = 0.883889
# forgetting  = ((max(0.90, 0.92) - 0.70) + (0.95 - 0.85)) / 2   = (0.22 + 0.10) / 2 = 0.16
# bwt         = ((0.70 - 0.90) + (0.85 - 0.95)) / 2              = -0.15
# fwt         = ((0.50 - 0.40) + (0.45 - 0.30)) / 2              = 0.125
# transfer    = (0.50 + (0.35 + 0.45) / 2) / 2  (ZSCL, per task)    = 0.45
# mtil_avg    = (1.75 + 2.32 + 2.45) / 9                         = 6.52 / 9 = 0.724444
EXPECTED_R3 = {
    "last": 2.45 / 3,
    "avg_incremental": (0.90 + 0.935 + 2.45 / 3) / 3,
    "forgetting": 0.16,
    "bwt": -0.15,
    "fwt": 0.125,
    "transfer": 0.45,
    "mtil_average": 6.52 / 9,
}


def test_three_task_matrix_individual_functions() -> None:
    assert last_accuracy(R3) == pytest.approx(0.816667, abs=1e-6)
    assert average_incremental_accuracy(R3) == pytest.approx(0.883889, abs=1e-6)
    assert forgetting(R3) == pytest.approx(0.16)
    assert backward_transfer(R3) == pytest.approx(-0.15)
    assert forward_transfer(R3) == pytest.approx(0.125)
    assert mtil_transfer(R3) == pytest.approx(0.45)
    assert mtil_average(R3) == pytest.approx(0.724444, abs=1e-6)


def test_compute_metrics_matches_hand_values() -> None:
    metrics = compute_metrics(R3)
    assert set(metrics) == set(EXPECTED_R3)
    for key, value in EXPECTED_R3.items():
        assert metrics[key] == pytest.approx(value), key
        assert isinstance(metrics[key], float)


def test_definitions_cover_every_metric() -> None:
    assert set(METRIC_DEFINITIONS) == set(compute_metrics(R3))
    assert all(text.strip() for text in METRIC_DEFINITIONS.values())


def test_accepts_nested_lists() -> None:
    assert last_accuracy(R3.tolist()) == pytest.approx(EXPECTED_R3["last"])


@pytest.mark.filterwarnings("error")
def test_single_task_has_no_forgetting_or_transfer() -> None:
    # T = 1: zero-shot 0.4, after training 0.8.
    r1 = np.array([[0.4], [0.8]])
    metrics = compute_metrics(r1)
    assert metrics["last"] == pytest.approx(0.8)
    assert metrics["avg_incremental"] == pytest.approx(0.8)
    assert metrics["mtil_average"] == pytest.approx(0.8)
    for key in ("forgetting", "bwt", "fwt", "transfer"):
        assert math.isnan(metrics[key]), key


@pytest.mark.filterwarnings("error")
def test_nan_entries_are_ignored() -> None:
    r = R3.copy()
    r[1, 2] = np.nan  # task 2 not evaluated after task 0
    r[0, 1] = np.nan  # no zero-shot number for task 1
    metrics = compute_metrics(r)
    # transfer: task 1: 0.50; task 2: row 2 only (row 1 is NaN), 0.45; (0.50 + 0.45) / 2
    assert metrics["transfer"] == pytest.approx(0.475)
    # fwt: only task 2 is defined: 0.45 - 0.30 = 0.15
    assert metrics["fwt"] == pytest.approx(0.15)
    # mtil_average: (6.52 - 0.35) / 8 = 0.77125
    assert metrics["mtil_average"] == pytest.approx(0.77125)
    # Metrics that do not read the NaN cells are unchanged.
    for key in ("last", "avg_incremental", "forgetting", "bwt"):
        assert metrics[key] == pytest.approx(EXPECTED_R3[key]), key


@pytest.mark.filterwarnings("error")
def test_nan_in_forgetting_history_and_all_nan() -> None:
    r = R3.copy()
    r[2, 0] = np.nan  # max over history of task 0 uses only R[1, 0] = 0.90
    # forgetting = ((0.90 - 0.70) + (0.95 - 0.85)) / 2 = 0.15
    assert forgetting(r) == pytest.approx(0.15)
    # A_2 becomes R[2, 1] = 0.95 alone: (0.90 + 0.95 + 0.816667) / 3 = 0.888889
    assert average_incremental_accuracy(r) == pytest.approx(0.888889, abs=1e-6)

    empty = np.full((4, 3), np.nan)
    assert all(math.isnan(v) for v in compute_metrics(empty).values())


@pytest.mark.parametrize("shape", [(3, 3), (3,), (2, 3), (1, 0), (4, 3, 1), (5, 3)])
def test_bad_shape_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(T \+ 1, T\).*got shape"):
        compute_metrics(np.zeros(shape))


def test_mtil_transfer_is_zscl_per_task_mean_not_the_flat_mean() -> None:
    # T = 4. Cells before each task was trained (zero-shot row excluded):
    #   task 1: R[1,1] = 0.6;  task 2: R[1,2], R[2,2] = 0.5, 0.3;  task 3: 0.1, 0.2, 0.9
    R4 = np.array([[0.2, 0.3, 0.4, 0.5],
                   [0.9, 0.6, 0.5, 0.1],
                   [0.8, 0.9, 0.3, 0.2],
                   [0.7, 0.8, 0.9, 0.9],
                   [0.6, 0.7, 0.8, 0.9]])
    # ZSCL (mtil/results.ipynb): (0.6 + (0.5 + 0.3) / 2 + (0.1 + 0.2 + 0.9) / 3) / 3 = 1.4 / 3
    assert mtil_transfer(R4) == pytest.approx(1.4 / 3)
    flat = (0.6 + 0.5 + 0.1 + 0.3 + 0.2 + 0.9) / 6  # the old, wrong definition: 2.6 / 6
    assert abs(mtil_transfer(R4) - flat) > 0.03
