"""Every run's accuracy matrix and metrics of a sweep tree in one JSON file, so a table in
experiments/results/ can be recomputed (e.g. a corrected metric) without its run tree.

    python experiments/collect_matrices.py multirun/compare_toy experiments/results/x.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mcl.report.runs import COMPLETE, label_variants, load_run


def collect(root: Path) -> list[dict]:
    """One entry per results.json under `root`, sorted by its run directory; `finished` says
    whether the run finished (the report's status, by mcl.results.is_finished): an unfinished
    run's metrics cover only its first `completed_tasks` tasks. `variant` is the report's:
    where runs of one method differ in more than the seed, the settings that tell them apart
    ("" elsewhere)."""
    paths = sorted(root.rglob("results.json"))
    loaded = [load_run(path) for path in paths]
    label_variants(loaded)
    runs = []
    for path, run in zip(paths, loaded, strict=True):
        r = json.loads(path.read_text())
        runs.append({"run": str(path.parent.relative_to(root)), "backbone": r["backbone"],
                     "stream": r["stream"], "method": r["method"], "seed": r["seed"],
                     "tasks": r["tasks"], "completed_tasks": r.get("completed_tasks"),
                     "finished": run.status == COMPLETE, "matrix": r["matrix"],
                     "metrics": r["metrics"], "git_revision": r.get("git_revision"),
                     "variant": run.variant})
    return runs


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    runs = collect(Path(sys.argv[1]))
    if not runs:
        sys.exit(f"no results.json under {sys.argv[1]}")
    Path(sys.argv[2]).write_text(json.dumps(runs, indent=0) + "\n")
    print(f"{len(runs)} runs -> {sys.argv[2]}")


if __name__ == "__main__":
    main()
