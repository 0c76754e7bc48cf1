"""A compact table from a runs.json (experiments/collect_matrices.py): one row per method, one
column per stream and metric, each cell the mean over that method's finished runs there (in %),
for the summaries in experiments/results/ (the full report has every metric and its std).

    python experiments/summary_table.py experiments/results/small_tier_h200_s9_runs.json \\
        --backbone small_llava --metrics last forgetting [--methods a b ...] [--streams x y ...]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def finished(run: dict) -> bool:
    """collect_matrices' flag; runs.json files written before it had one: a full matrix."""
    if "finished" in run:
        return bool(run["finished"])
    return all(v is not None for row in run["matrix"] for v in row)


def summary_rows(runs: list[dict], backbone: str, metrics: list[str], methods: list[str] | None,
                 streams: list[str] | None) -> tuple[list[str], list[list[str]]]:
    """(column headers, rows): per method the seeds counted (a range where streams differ) and
    each stream x metric mean in % with one decimal; '-' where no finished run has it."""
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        if run["backbone"] == backbone and finished(run):
            # Runs of one method with other settings than the seed are rows of their own.
            label = f"{run['method']} [{run['variant']}]" if run.get("variant") else run["method"]
            cells[label, run["stream"]].append(run["metrics"])
    streams = streams or sorted({s for _, s in cells})
    labels = sorted({m for m, _ in cells})
    methods = labels if not methods else [
        label for m in methods
        for label in ([x for x in labels if x == m or x.startswith(m + " [")] or [m])]
    header = ["method", "seeds"] + [f"{s.removeprefix('toy_')} {k}" for s in streams
                                    for k in metrics]
    rows = []
    for method in methods:
        counts = sorted({len(cells[method, s]) for s in streams})
        row = [method, "-".join(map(str, dict.fromkeys([counts[0], counts[-1]])))]
        for stream in streams:
            for key in metrics:
                values = [m[key] for m in cells[method, stream] if m.get(key) is not None]
                row.append(f"{100 * sum(values) / len(values):.1f}" if values else "-")
        rows.append(row)
    return header, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_json", type=Path)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--metrics", nargs="+", default=["last"])
    parser.add_argument("--methods", nargs="+")
    parser.add_argument("--streams", nargs="+")
    args = parser.parse_args()
    header, rows = summary_rows(json.loads(args.runs_json.read_text()), args.backbone,
                                args.metrics, args.methods, args.streams)
    print("| " + " | ".join(header) + " |")
    print("|---|---:|" + "---:|" * (len(header) - 2))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
