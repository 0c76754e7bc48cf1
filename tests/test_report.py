"""Tests for the comparison report (python -m mcl.report): table, plots, bad input, W&B."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcl.report.cli import main
from mcl.report.plots import seen_accuracy
from mcl.report.runs import find_runs
from mcl.report.table import build_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = ["a", "b"]


def write_run(root: Path, method: str, seed: int, metrics: dict, completed: int = 2) -> Path:
    """A run directory like mcl.run's, with a hand-written results.json."""
    path = root / "tiny" / "toy" / method / f"seed{seed}"
    path.mkdir(parents=True)
    matrix = [[0.1, 0.2], [0.9, 0.3], [0.5, 0.8]] if completed == 2 else \
        [[0.1, 0.2], [0.9, 0.3], [None, None]]
    (path / "results.json").write_text(json.dumps({
        "tasks": TASKS, "completed_tasks": completed, "matrix": matrix, "metrics": metrics,
        "method": method, "stream": "toy", "backbone": "tiny", "seed": seed, "timings": []}))
    if completed == len(TASKS):  # finalized, as mcl.results.finalize leaves a finished run
        (path / "matrix.csv").write_text("")
    return path


def metrics(last: float, forgetting: float, fwt: float, transfer: float | None) -> dict:
    return {"last": last, "avg_incremental": 0.6, "forgetting": forgetting, "bwt": -forgetting,
            "fwt": fwt, "transfer": transfer, "mtil_average": 0.5}


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    """finetune x 2 seeds, lora x 2 seeds + 1 incomplete, joint: one failed Hydra job."""
    root = tmp_path / "multirun"
    write_run(root, "finetune", 0, metrics(0.5, 0.2, 0.1, 0.3))
    write_run(root, "finetune", 1, metrics(0.7, 0.4, 0.1, None))  # transfer undefined here
    write_run(root, "lora", 0, metrics(0.8, 0.1, 0.2, 0.2))
    write_run(root, "lora", 1, metrics(0.9, 0.3, 0.4, 0.2))
    # Its last = 10 % would pull lora's mean to 60 % if the incomplete run were averaged.
    write_run(root, "lora", 2, metrics(0.1, 0.0, 0.0, 0.0), completed=1)
    failed = root / "tiny" / "toy" / "joint" / "seed0" / ".hydra"
    failed.mkdir(parents=True)
    (failed / "config.yaml").write_text(
        "backbone:\n  name: tiny\nstream:\n  name: toy\nmethod:\n  name: joint\nseed: 0\n")
    (failed.parent / "failed.json").write_text('{"error": "ValueError: boom\\nmore"}')
    return root


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["method"]: row for row in csv.DictReader(handle)}


def test_means_and_stds_over_finished_seeds(sweep: Path) -> None:
    rows = {row.method: row for row in build_rows(find_runs([sweep]))}
    assert sorted(rows) == ["finetune", "joint", "lora"]
    # Population std over seeds: std(0.5, 0.7) = 0.1, std(0.8, 0.9) = 0.05.
    assert rows["finetune"].mean_std("last") == pytest.approx((0.6, 0.1))
    assert rows["finetune"].mean_std("forgetting") == pytest.approx((0.3, 0.1))
    assert rows["finetune"].mean_std("bwt") == pytest.approx((-0.3, 0.1))
    assert rows["finetune"].mean_std("fwt") == pytest.approx((0.1, 0.0))
    assert rows["finetune"].mean_std("transfer") == pytest.approx((0.3, 0.0))  # None skipped
    assert rows["lora"].mean_std("last") == pytest.approx((0.85, 0.05))
    assert rows["lora"].mean_std("fwt") == pytest.approx((0.3, 0.1))
    assert len(rows["lora"].complete) == 2 and rows["lora"].status() == "1 incomplete"
    assert rows["joint"].complete == [] and rows["joint"].status() == "1 failed"
    assert np.isnan(rows["joint"].mean_std("last")[0])


def test_cli_writes_table_and_plots(sweep: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert capsys.readouterr().out == md  # the table printed is the table written
    assert "| tiny | toy | finetune | 2 | 60.0 ± 10.0 | 60.0 ± 0.0 | 30.0 ± 10.0 | " \
           "-30.0 ± 10.0 | 10.0 ± 0.0 | 30.0 ± 0.0 | 50.0 ± 0.0 | ok |" in md
    assert "| tiny | toy | lora | 2 | 85.0 ± 5.0 |" in md
    assert "| tiny | toy | joint | 0 | n/a |" in md

    table = read_csv(out / "report.csv")
    assert set(table) == {"finetune", "lora", "joint"}
    assert (table["finetune"]["last_mean"], table["finetune"]["last_std"]) == ("60.0", "10.0")
    assert (table["lora"]["fwt_mean"], table["lora"]["fwt_std"]) == ("30.0", "10.0")
    assert (table["lora"]["seeds"], table["lora"]["incomplete"]) == ("2", "1")
    assert (table["joint"]["failed"], table["joint"]["last_mean"]) == ("1", "")

    plots = out / "plots" / "tiny" / "toy"
    names = ["heatmap_finetune.png", "heatmap_lora.png", "seen_accuracy.png", "metrics.png"]
    assert sorted(p.name for p in plots.iterdir()) == sorted(names)  # none for joint, no tmp
    for name in names:
        assert (plots / name).read_bytes().startswith(PNG_MAGIC)
        with Image.open(plots / name) as image:
            image.verify()
            assert min(image.size) > 200
    assert sorted(p.name for p in out.iterdir()) == ["plots", "report.csv", "report.md"]


def test_report_md_has_a_title_metric_directions_and_plot_links(sweep: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert md.startswith("# mcl report: toy\n")
    assert "| forgetting | lower | mean_{j=0..T-2}" in md and "| last | higher | A_T" in md
    links = [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("- [")]
    assert "plots/tiny/toy/heatmap_lora.png" in links
    assert all((out / link).is_file() for link in links)


def test_incomplete_and_failed_runs_are_marked(sweep: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(sweep)]) == 0  # --out defaults to the first dir
    md = (sweep / "report.md").read_text()
    assert "| tiny | toy | lora | 2 | 85.0 ± 5.0 |" in md and "| 1 incomplete |" in md
    assert "| 1 failed |" in md
    lora2, joint0 = sweep / "tiny/toy/lora/seed2", sweep / "tiny/toy/joint/seed0"
    assert f"- **incomplete** `{lora2}`: 1/2 tasks done" in md
    assert f"- **failed** `{joint0}`: ValueError: boom" in md
    table = read_csv(sweep / "report.csv")
    assert f"incomplete: {lora2}" in table["lora"]["problem_runs"]
    assert f"failed: {joint0}" in table["joint"]["problem_runs"]
    assert table["finetune"]["problem_runs"] == ""


def test_a_run_killed_before_finalizing_is_incomplete_not_averaged(sweep: Path) -> None:
    # Every task's results are written, but not matrix.csv (finalize's last file): the run
    # resumes to finish, and its 0 % must not pull finetune's mean of 50 and 70 down.
    killed = write_run(sweep, "finetune", 2, metrics(0.0, 0.0, 0.0, 0.0))
    (killed / "matrix.csv").unlink()
    assert main([str(sweep)]) == 0
    md = (sweep / "report.md").read_text()
    assert "| tiny | toy | finetune | 2 | 60.0 ± 10.0 |" in md
    assert f"- **incomplete** `{killed}`: every task done but not finalized" in md


def test_run_dirs_given_one_by_one_and_overlapping(sweep: Path, tmp_path: Path) -> None:
    runs = find_runs([sweep / "tiny/toy/finetune/seed0", sweep / "tiny/toy/finetune/seed1",
                      sweep, sweep / "tiny"])  # the same runs reached several ways count once
    assert len(runs) == 6
    only = build_rows(find_runs([sweep / "tiny/toy/finetune/seed0"]))
    assert [(r.method, len(r.complete)) for r in only] == [("finetune", 1)]


def test_unreadable_results_is_a_failed_run(sweep: Path) -> None:
    broken = sweep / "tiny/toy/finetune/seed1/results.json"
    broken.write_text('{"tasks": ["a", ')
    row = {r.method: r for r in build_rows(find_runs([sweep]))}["?"]
    assert row.status() == "1 failed" and "unreadable" in row.runs[0].reason


def test_seen_accuracy() -> None:
    R = np.array([[0.1, 0.2, 0.3], [0.9, 0.3, 0.0], [0.5, 0.8, 0.1], [0.4, np.nan, 1.0]])
    # A_1 = R[1,0]; A_2 = mean(R[2,:2]); A_3 = mean(R[3,:3]) ignoring the NaN.
    assert seen_accuracy(R) == pytest.approx([0.9, 0.65, 0.7])


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main([str(tmp_path), str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err

    empty = tmp_path / "empty"
    (empty / "job" / ".hydra").mkdir(parents=True)  # only a failed run: nothing to compare
    assert main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert "no results.json" in err and str(empty) in err
    assert not (empty / "report.md").exists()


def test_module_entry_point_exit_code(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mcl.report", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "nope" in done.stderr and done.stdout == ""


def test_wandb_offline(sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    wandb_dir = tmp_path / "wandb_dir"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--wandb"]) == 0
    runs = list((wandb_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb"))  # the run's log, to `wandb sync` later
    tables = list(runs[0].rglob("media/table/report/table_*.table.json"))
    assert len(tables) == 1
    logged = json.loads(tables[0].read_text())
    rows = {row[logged["columns"].index("method")]: row for row in logged["data"]}
    assert rows["finetune"][logged["columns"].index("last_mean")] == "60.0"
    images = list(runs[0].rglob("media/images/plots/tiny/toy/*.png"))
    assert sorted(p.name.split("_0_")[0] for p in images) == [
        "heatmap_finetune", "heatmap_lora", "metrics", "seen_accuracy"]


def test_a_metric_stored_under_an_older_definition_is_recomputed(tmp_path: Path) -> None:
    from mcl.metrics.continual import METRIC_DEFINITIONS

    # 3 tasks; the flat mean above the diagonal (the old Transfer) is (0.5 + 0.35 + 0.45) / 3,
    # ZSCL's per-task mean (0.5 + (0.35 + 0.45) / 2) / 2 = 0.45.
    path = tmp_path / "run"
    path.mkdir()
    old = dict(METRIC_DEFINITIONS, transfer="mean_{1<=i<=T-1, j>=i} R[i, j] (flat)")
    (path / "results.json").write_text(json.dumps({
        "tasks": ["a", "b", "c"], "completed_tasks": 3,
        "matrix": [[0.5, 0.4, 0.3], [0.9, 0.5, 0.35], [0.92, 0.95, 0.45], [0.7, 0.85, 0.9]],
        "metrics": {"transfer": 1.30 / 3, "last": 0.123}, "metric_definitions": old,
        "method": "m", "stream": "s", "backbone": "b", "seed": 0}))
    run = find_runs([tmp_path])[0]
    assert run.metrics["transfer"] == pytest.approx(0.45)
    assert run.metrics["last"] == 0.123  # same definition: the stored number stays


def test_runs_of_one_method_with_other_settings_than_the_seed_are_not_averaged(
        tmp_path: Path) -> None:
    """Seeds 0-1 of a method from before a default changed and seed 2 from after it: two rows,
    each named by the setting that differs, never one mean over three 'seeds'."""
    root = tmp_path / "multirun"
    for seed, init, last in ((0, "pytorch_port", 0.2), (1, "pytorch_port", 0.4),
                             (2, "official", 0.9)):
        path = write_run(root, "l2p", seed, metrics(last, 0.1, 0.0, None))
        data = json.loads((path / "results.json").read_text())
        data["fingerprint"] = {"seed": seed, "method.name": "l2p", "method.prompt_init": init}
        (path / "results.json").write_text(json.dumps(data))
    for seed in (0, 1):  # seeds of one configuration: one row
        path = write_run(root, "lora", seed, metrics(0.5 + seed / 10, 0.1, 0.0, None))
        data = json.loads((path / "results.json").read_text())
        data["fingerprint"] = {"seed": seed, "method.name": "lora", "method.r": 8}
        (path / "results.json").write_text(json.dumps(data))
    rows = {row.method: row for row in build_rows(find_runs([root]))}
    assert sorted(rows) == ["l2p [method.prompt_init=official]",
                            "l2p [method.prompt_init=pytorch_port]", "lora"]
    assert rows["l2p [method.prompt_init=pytorch_port]"].mean_std("last") == pytest.approx(
        (0.3, 0.1))
    assert len(rows["l2p [method.prompt_init=official]"].complete) == 1
    assert rows["lora"].mean_std("last") == pytest.approx((0.55, 0.05))
