"""Continual-learning metrics computed from an accuracy matrix.

The accuracy matrix ``R`` has shape ``(T + 1, T)``: ``R[i, j]`` is the accuracy on task ``j``
(0-indexed column) after training the ``i``-th task (row ``i``). Row 0 holds the zero-shot
accuracies measured before any training, and task ``j`` is trained at row ``j + 1``, so the
just-trained cells are ``R[j + 1, j]``. Entries that were not evaluated are NaN and every metric
ignores them (nanmean semantics). A metric with no defined term returns ``float("nan")``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

METRIC_DEFINITIONS: dict[str, str] = {
    "last": "A_T = mean_j R[T, j] (final row; Zheng et al. 2023, ZSCL/MTIL 'Last')",
    "avg_incremental": (
        "mean_{i=1..T} A_i, A_i = mean_{j<i} R[i, j] (Rebuffi et al. 2017, iCaRL; "
        "Douillard et al. 2020, PODNet)"
    ),
    "forgetting": (
        "mean_{j=0..T-2} max_{i=j+1..T-1} R[i, j] - R[T, j] (Chaudhry et al. 2018, RWalk)"
    ),
    "bwt": "mean_{j=0..T-2} R[T, j] - R[j+1, j] (Lopez-Paz & Ranzato 2017, GEM)",
    "fwt": (
        "mean_{j=1..T-1} R[j, j] - R[0, j], R[0] = the pre-trained backbone's zero-shot, the same "
        "for every method (Lopez-Paz & Ranzato 2017, GEM)"
    ),
    "transfer": (
        "mean_{j=1..T-1} (mean_{i=1..j} R[i, j]): per task, its accuracy before it was trained "
        "(rows after tasks 1..j), then the mean over tasks 2..T (Zheng et al. 2023, ZSCL/MTIL "
        "'Transfer', mtil/results.ipynb)"
    ),
    "mtil_average": "mean_{1<=i<=T, j} R[i, j] (Zheng et al. 2023, ZSCL/MTIL 'Avg.')",
}


def check_matrix(R: npt.ArrayLike) -> np.ndarray:
    """Return ``R`` as a float array after checking it has shape ``(T + 1, T)`` with ``T >= 1``.

    Raises:
        ValueError: if ``R`` is not 2-D or its shape is not ``(T + 1, T)``.
    """
    arr = np.asarray(R, dtype=float)
    if arr.ndim != 2 or arr.shape[1] < 1 or arr.shape[0] != arr.shape[1] + 1:
        raise ValueError(
            f"accuracy matrix must have shape (T + 1, T) with T >= 1 "
            f"(row 0 = zero-shot, row i = after task i); got shape {arr.shape}"
        )
    return arr


def _nanmean(values: npt.ArrayLike) -> float:
    """Mean of the non-NaN values, or NaN when there are none (without numpy's warning)."""
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _num_tasks(R: np.ndarray) -> int:
    return R.shape[1]


def last_accuracy(R: npt.ArrayLike) -> float:
    """Final average accuracy ``A_T = mean_j R[T, j]`` over all tasks after the last task.

    Source: the standard final accuracy, e.g. "Last" in Zheng et al. 2023 (ZSCL, MTIL).
    """
    arr = check_matrix(R)
    return _nanmean(arr[-1])


def average_incremental_accuracy(R: npt.ArrayLike) -> float:
    """Average incremental accuracy ``mean_{i=1..T} A_i`` with ``A_i = mean_{j<i} R[i, j]``.

    ``A_i`` averages only the tasks seen so far (columns ``0..i-1``) after training task ``i``.
    Source: Rebuffi et al. 2017 (iCaRL); Douillard et al. 2020 (PODNet).
    """
    arr = check_matrix(R)
    steps = [_nanmean(arr[i, :i]) for i in range(1, _num_tasks(arr) + 1)]
    return _nanmean(steps)


def forgetting(R: npt.ArrayLike) -> float:
    """Average forgetting ``mean_{j=0..T-2} (max_{i=j+1..T-1} R[i, j] - R[T, j])``.

    The maximum runs from the row where task ``j`` was trained to the row before the last one.
    Undefined (NaN) for ``T < 2``. Source: Chaudhry et al. 2018 (RWalk), Eq. for f_j^k.
    """
    arr = check_matrix(R)
    T = _num_tasks(arr)
    terms = []
    for j in range(T - 1):
        history = arr[j + 1 : T, j]
        history = history[~np.isnan(history)]
        if history.size:
            terms.append(history.max() - arr[T, j])
    return _nanmean(terms)


def backward_transfer(R: npt.ArrayLike) -> float:
    """Backward transfer ``BWT = mean_{j=0..T-2} (R[T, j] - R[j+1, j])``.

    Negative values mean forgetting. Undefined (NaN) for ``T < 2``.
    Source: Lopez-Paz & Ranzato 2017 (GEM), Eq. 3.
    """
    arr = check_matrix(R)
    T = _num_tasks(arr)
    return _nanmean([arr[T, j] - arr[j + 1, j] for j in range(T - 1)])


def forward_transfer(R: npt.ArrayLike) -> float:
    """Forward transfer ``FWT = mean_{j=1..T-1} (R[j, j] - R[0, j])``.

    ``R[j, j]`` is the accuracy on task ``j`` just before training it and ``R[0, j]`` the
    pre-trained backbone's zero-shot accuracy, which plays the role of GEM's baseline ``b_j``
    (the model before any continual training). It is the backbone's, not a method's untrained
    state (mcl.loop stores that apart as ``initial``): one baseline for every method, as ZSCL's
    MTIL tables give one zero-shot row, so FWT compares methods, not their initialisations.
    Undefined (NaN) for ``T < 2``. Source: Lopez-Paz & Ranzato 2017 (GEM), Eq. 4.
    """
    arr = check_matrix(R)
    T = _num_tasks(arr)
    return _nanmean([arr[j, j] - arr[0, j] for j in range(1, T)])


def mtil_transfer(R: npt.ArrayLike) -> float:
    """MTIL "Transfer": ``mean_{j=1..T-1} (mean_{i=1..j} R[i, j])``.

    For each task after the first (0-based column ``j``, trained at row ``j + 1``) the mean of its
    accuracies in the rows before it was trained, the zero-shot row excluded (rows ``1..j``);
    then the mean of these per-task values. It measures how well the zero-shot ability on tasks
    not trained yet survives. It is not the flat mean of the cells above the diagonal: that
    weights early tasks' columns less, and the two differ for ``T >= 3``. Undefined (NaN) for
    ``T < 2``. Source: Zheng et al. 2023, "Preventing Zero-Shot Transfer Degradation in
    Continual Learning of Vision-Language Models" (ZSCL), MTIL benchmark, as its
    ``mtil/results.ipynb`` computes it (CoDyRA's ``main.py`` computes the same).
    """
    arr = check_matrix(R)
    T = _num_tasks(arr)
    return _nanmean([_nanmean(arr[1 : j + 1, j]) for j in range(1, T)])


def mtil_average(R: npt.ArrayLike) -> float:
    """MTIL "Avg.": mean of every entry in rows ``1..T`` (all tasks, after every training step).

    Source: Zheng et al. 2023 (ZSCL), MTIL benchmark.
    """
    arr = check_matrix(R)
    return _nanmean(arr[1:])


def compute_metrics(R: npt.ArrayLike) -> dict[str, float]:
    """Compute every metric of :data:`METRIC_DEFINITIONS` for the accuracy matrix ``R``."""
    arr = check_matrix(R)
    return {
        "last": last_accuracy(arr),
        "avg_incremental": average_incremental_accuracy(arr),
        "forgetting": forgetting(arr),
        "bwt": backward_transfer(arr),
        "fwt": forward_transfer(arr),
        "transfer": mtil_transfer(arr),
        "mtil_average": mtil_average(arr),
    }
