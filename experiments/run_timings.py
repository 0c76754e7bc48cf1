"""Where a sweep's time went: per method and stream, the median seconds of a run's training and
evaluation (timings.json), for planning the next sweep's deadline and jobs.

    python experiments/run_timings.py /tmp/small_tier/compare_toy_small
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from mcl.results import is_finished


def timing_rows(root: Path) -> list[tuple]:
    """(method, stream, runs, median train s, median eval s, median total s) per group of the
    finished runs under `root`, slowest first."""
    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for path in root.rglob("timings.json"):
        if not is_finished(path.parent):
            continue
        data = json.loads((path.parent / "results.json").read_text())
        steps = json.loads(path.read_text())
        groups[data["method"], data["stream"]].append(
            (sum(s.get("train_s", 0.0) for s in steps), sum(s.get("eval_s", 0.0) for s in steps)))
    rows = []
    for (method, stream), times in groups.items():
        train = statistics.median(t for t, _ in times)
        evaluation = statistics.median(e for _, e in times)
        rows.append((method, stream, len(times), train, evaluation,
                     statistics.median(t + e for t, e in times)))
    return sorted(rows, key=lambda r: -r[5])


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    rows = timing_rows(Path(sys.argv[1]))
    print("| method | stream | runs | train s | eval s | total s |\n|---|---|---:|---:|---:|---:|")
    for method, stream, n, train, evaluation, total in rows:
        print(f"| {method} | {stream} | {n} | {train:.0f} | {evaluation:.0f} | {total:.0f} |")
    print(f"\n{len(rows)} groups; median of their median totals: "
          f"{statistics.median(r[5] for r in rows):.0f} s"
          if rows else "no finished runs")


if __name__ == "__main__":
    main()
