"""Where a run's answers on tasks it has not trained yet go: for each row i (after training task
i-1) and each later task, the share of that task's test samples answered with a label of an
already-trained task, beside the accuracy (the Transfer / FWT cells of the matrix). It tells a
method whose fused or trained head takes every image to the classes it has seen (class-
incremental bias) from one that answers at random or keeps the zero-shot answer.

    python experiments/future_task_predictions.py <run dir> [<run dir> ...]
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path


def records(run: Path, row: int, task: int) -> list[dict]:
    with gzip.open(run / "predictions" / f"row{row:03d}_task{task:03d}.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def labels(recs: list[dict]) -> set[str]:
    return {r if isinstance(r, str) else r[0] for r in (x["references"] for x in recs)}


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("| run | after task | on task | answered with a trained task's label | accuracy |")
    print("|---|---:|---:|---:|---:|")
    for run in map(Path, sys.argv[1:]):
        tasks = json.loads((run / "results.json").read_text())["tasks"]
        for row in range(1, len(tasks)):
            trained = set().union(*(labels(records(run, row, t)) for t in range(row)))
            for task in range(row, len(tasks)):
                recs = records(run, row, task)
                share = sum(r["prediction"] in trained for r in recs) / len(recs)
                accuracy = sum(r["score"] for r in recs) / len(recs)
                print(f"| {run.parent.name}/{run.name[:5]} | {row - 1} | {task} | "
                      f"{100 * share:.0f}% | {100 * accuracy:.0f}% |")


if __name__ == "__main__":
    main()
