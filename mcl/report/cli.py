"""``python -m mcl.report <dir> [<dir> ...] [--out DIR] [--wandb] [--changes N]``: compare
finished runs.

Gathers every results.json under the directories (a Hydra multirun or several run dirs), writes
report.md, report.csv and plots/ into --out (default: the first dir), prints the Markdown table;
for a sweep directory also every job's status and the command that re-runs the failed and
incomplete ones (mcl.report.sweep). With --changes, every run's per-task changed answers
(mcl.report.changes: what was forgotten, with N examples a task) are added to report.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mcl.io import write_text
from mcl.report.document import document
from mcl.report.plots import make_plots
from mcl.report.runs import ReportError, find_runs
from mcl.report.sweep import is_sweep, summary
from mcl.report.table import build_rows, markdown, to_csv


def main(argv: Sequence[str] | None = None) -> int:
    """Build the report; return the exit code (2 on bad input)."""
    parser = argparse.ArgumentParser(
        prog="python -m mcl.report",
        description="Compare runs: mean ± std tables over seeds, heatmaps and plots.")
    parser.add_argument("dirs", nargs="+", type=Path, help="run or multirun directories")
    parser.add_argument("--out", type=Path, help="output directory (default: the first dir)")
    parser.add_argument("--wandb", action="store_true", help="also log to W&B (offline)")
    parser.add_argument("--changes", type=int, metavar="N", default=None,
                        help="per run and task: answers forgotten between the row after "
                             "training and the last row, N examples each")
    args = parser.parse_args(argv)
    sweeps = "".join("\n" + summary(d) for d in args.dirs if d.is_dir() and is_sweep(d))
    try:
        runs = find_runs(args.dirs)
    except ReportError as error:
        print(sweeps, end="")  # a sweep whose every job failed still says which and why
        print(f"mcl.report: error: {error}", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0]
    rows = build_rows(runs)
    text, table = markdown(rows), to_csv(rows)
    if args.changes is not None:
        from mcl.report.changes import changed_answers

        text += "".join("\n" + changed_answers(run.path, args.changes)
                        for run in runs if run.completed)
    images = make_plots(rows, out)
    text = document(text, rows, images, Path(out))
    write_text(out / "report.md", text)
    write_text(out / "report.csv", table)
    if args.wandb:
        from mcl.report.to_wandb import log_report

        print(f"W&B run: {log_report(table, images, out)}", file=sys.stderr)
    print(text + sweeps, end="")
    return 0
