"""One row per run of a sweep directory (its overrides, not averaged over as seeds are): the
ablation tables of experiments/small_tier_gpu.sh.

    python experiments/ablation_table.py /tmp/small_tier/ablate_small
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRICS = ("last", "avg_incremental", "forgetting", "bwt")


def main() -> None:
    root = Path(sys.argv[1])
    print("| run | " + " | ".join(METRICS) + " | accuracy right after training each task |")
    print("|---|" + "---:|" * len(METRICS) + "---|")
    for path in sorted(root.rglob("results.json")):
        results = json.loads(path.read_text())
        matrix = results.get("accuracy_matrix") or results.get("matrix") or []
        diagonal = [row[i] for i, row in enumerate(matrix[1:]) if i < len(row)]
        metrics = results["metrics"]
        print(f"| {path.parent.relative_to(root)} | "
              + " | ".join(f"{100 * metrics[m]:.1f}" if metrics.get(m) is not None else "-"
                           for m in METRICS)
              + " | " + ", ".join(f"{100 * a:.0f}" for a in diagonal) + " |")


if __name__ == "__main__":
    main()
