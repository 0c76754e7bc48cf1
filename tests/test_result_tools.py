"""The scripts that keep and compare the comparison tables (experiments/)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from sweep import job_shares  # noqa: E402

HEADER = ("| backbone | stream | method | seeds | last | forgetting | status |\n"
          "|---|---|---|---:|---:|---:|---|\n")


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_diff_reports_lists_only_the_moved_means_and_the_new_rows(tmp_path):
    old, new = tmp_path / "old.md", tmp_path / "new.md"
    old.write_text("# t\n\n" + HEADER + "| b | s | lora | 3 | 10.0 ± 1.0 | 40.0 ± 2.0 | ok |\n")
    new.write_text(HEADER + "| b | s | lora | 3 | 12.5 ± 0.5 | 40.2 ± 9.0 | ok |\n"
                   "| b | s | ewc | 3 | 20.0 ± 1.0 | 30.0 ± 1.0 | ok |\n")
    out = run("experiments/diff_reports.py", str(old), str(new))
    row = next(line for line in out.splitlines() if line.startswith("| b | s | lora"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "10.0 → 12.5 (+2.5)"
    assert cells[4] == ""  # 40.0 -> 40.2 moved less than 0.5 points; std changes do not count
    assert "ewc on s" in out


def test_collect_matrices_keeps_every_runs_matrix(tmp_path):
    for seed in (0, 1):
        run_dir = tmp_path / "b" / "s" / "lora" / f"seed{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps({
            "backbone": "b", "stream": "s", "method": "lora", "seed": seed, "tasks": ["x"],
            "matrix": [[0.0], [0.5 + seed / 10]], "metrics": {"last": 0.5 + seed / 10}}))
    out = tmp_path / "runs.json"
    run("experiments/collect_matrices.py", str(tmp_path / "b"), str(out))
    runs = json.loads(out.read_text())
    assert [r["seed"] for r in runs] == [0, 1]
    assert runs[1]["matrix"] == [[0.0], [0.6]] and runs[1]["run"] == "s/lora/seed1"


def test_job_shares_split_the_slots_in_proportion_with_one_each_at_least():
    assert job_shares([6, 11], 14) == [5, 9]
    assert job_shares([1, 1], 2) == [1, 1]
    assert job_shares([1, 20], 4) == [1, 4]
