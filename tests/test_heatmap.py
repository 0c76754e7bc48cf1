"""Tests for mcl.report.heatmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mcl.heatmap import plot_matrix

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_matrix_writes_png_atomically(tmp_path: Path) -> None:
    r = np.array(
        [
            [0.50, 0.40, np.nan],
            [0.90, 0.50, 0.35],
            [0.92, 0.95, np.nan],
            [0.70, 0.85, 0.90],
        ]
    )
    target = tmp_path / "matrix.png"
    plot_matrix(r, ["cifar100", "dtd", "eurosat"], target, title="3-task run")

    assert target.exists()
    data = target.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 5_000
    assert [p.name for p in tmp_path.iterdir()] == ["matrix.png"]


def test_plot_matrix_overwrites_and_accepts_str_path(tmp_path: Path) -> None:
    target = tmp_path / "single.png"
    target.write_bytes(b"old")
    plot_matrix(np.array([[0.4], [0.8]]), ["task"], str(target))
    assert target.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in tmp_path.iterdir()] == ["single.png"]


def test_plot_matrix_rejects_wrong_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task names"):
        plot_matrix(np.zeros((3, 2)), ["only one"], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
