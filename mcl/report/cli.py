"""``python -m mcl.report <dir> [<dir> ...] [--out DIR] [--wandb]``: compare finished runs.

Gathers every results.json under the directories (a Hydra multirun or several run dirs), writes
report.md, report.csv and plots/ into --out (default: the first dir), prints the Markdown table.
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
from mcl.report.table import build_rows, markdown, to_csv


def main(argv: Sequence[str] | None = None) -> int:
    """Build the report; return the exit code (2 on bad input)."""
    parser = argparse.ArgumentParser(
        prog="python -m mcl.report",
        description="Compare runs: mean ± std tables over seeds, heatmaps and plots.")
    parser.add_argument("dirs", nargs="+", type=Path, help="run or multirun directories")
    parser.add_argument("--out", type=Path, help="output directory (default: the first dir)")
    parser.add_argument("--wandb", action="store_true", help="also log to W&B (offline)")
    args = parser.parse_args(argv)
    try:
        runs = find_runs(args.dirs)
    except ReportError as error:
        print(f"mcl.report: error: {error}", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0]
    rows = build_rows(runs)
    text, table = markdown(rows), to_csv(rows)
    images = make_plots(rows, out)
    text = document(text, rows, images, Path(out))
    write_text(out / "report.md", text)
    write_text(out / "report.csv", table)
    if args.wandb:
        from mcl.report.to_wandb import log_report

        print(f"W&B run: {log_report(table, images, out)}", file=sys.stderr)
    print(text, end="")
    return 0
