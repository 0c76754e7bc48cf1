"""MTIL Transfer of finished runs, stored vs recomputed with ZSCL's per-task formula.

    python experiments/recompute_transfer.py multirun/compare_toy [more dirs ...]

Reads every results.json under the directories, recomputes the metrics from its matrix
(mcl.metrics.continual, as `python -m mcl.report` now does) and prints, per run, the Transfer
stored when the run ended and the recomputed one, in %. The results.json files are left as they
are; `python -m mcl.report <dirs>` writes the corrected tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mcl.report.runs import find_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    args = parser.parse_args()
    print("| run | stored transfer | recomputed transfer | change |")
    print("|---|---:|---:|---:|")
    for run in find_runs(args.dirs):
        if not run.completed:
            continue
        stored = json.loads((run.path / "results.json").read_text())["metrics"].get("transfer")
        new = run.metrics.get("transfer")
        if stored is None or new is None:
            print(f"| {run.path} | {stored} | {new} | |")
            continue
        print(f"| {run.path} | {100 * stored:.2f} | {100 * new:.2f} | "
              f"{100 * (new - stored):+.2f} |")


if __name__ == "__main__":
    main()
