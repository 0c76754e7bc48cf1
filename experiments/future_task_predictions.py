"""Where a run's answers on tasks it has not trained yet go: for each row i (after training task
i-1) and each later task, the share of that task's test samples answered with a label of an
already-trained task, beside the accuracy (the Transfer / FWT cells of the matrix). It tells a
method whose fused or trained head takes every image to the classes it has seen (class-
incremental bias) from one that answers at random or keeps the zero-shot answer.

    python experiments/future_task_predictions.py <run dir> [<run dir> ...]
    python experiments/future_task_predictions.py --just-trained <run dir> [...]

--just-trained asks the same of the task just trained instead: right after training task i,
the share of its test samples answered with an older task's label (class-incremental
cross-task confusion: a task learnt among its own classes, lost among all seen).
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
    args = sys.argv[1:]
    just_trained = bool(args) and args[0] == "--just-trained"
    runs = args[1:] if just_trained else args
    if not runs:
        sys.exit(__doc__)
    other = "an older task's label" if just_trained else "a trained task's label"
    print(f"| run | after task | on task | answered with {other} | accuracy |")
    print("|---|---:|---:|---:|---:|")
    for run in map(Path, runs):
        tasks = json.loads((run / "results.json").read_text())["tasks"]
        for row in range(2 if just_trained else 1, len(tasks) + just_trained):
            # the tasks trained before the one(s) scored: rows 1.. are after tasks 0..
            older = row - 1 if just_trained else row
            trained = set().union(*(labels(records(run, row, t)) for t in range(older)))
            for task in ([row - 1] if just_trained else range(row, len(tasks))):
                recs = records(run, row, task)
                share = sum(r["prediction"] in trained for r in recs) / len(recs)
                accuracy = sum(r["score"] for r in recs) / len(recs)
                print(f"| {run.parent.name}/{run.name[:5]} | {row - 1} | {task} | "
                      f"{100 * share:.0f}% | {100 * accuracy:.0f}% |")


if __name__ == "__main__":
    main()
