"""One row per run of a sweep directory (its overrides, not averaged over as seeds are): the
ablation tables of experiments/small_tier_gpu.sh.

    python experiments/ablation_table.py /tmp/small_tier/ablate_small
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

METRICS = ("last", "avg_incremental", "forgetting", "bwt")
# Overrides every run of an ablation sweep shares (left out of its rows).
SHARED = {"trainer", "trainer.progress_bar", "logger", "hydra.launcher.gpus"}


def run_overrides(path: Path) -> list[str]:
    """The run's own overrides (its folder name is cut short and hashed), less SHARED."""
    overrides = path.parent / ".hydra" / "overrides.yaml"
    named = yaml.safe_load(overrides.read_text()) if overrides.exists() else []
    return [o for o in named or [] if o.split("=")[0].lstrip("+") not in SHARED]


def main() -> None:
    root = Path(sys.argv[1])
    print("| overrides | tasks done | " + " | ".join(METRICS)
          + " | accuracy right after training each task |")
    print("|---|---:|" + "---:|" * len(METRICS) + "---|")
    paths = sorted(root.rglob("results.json"))
    named = {path: run_overrides(path) for path in paths}
    # The seed names a row only where the runs differ in it (a comparison's tree, not an
    # ablation sweep of one seed), so that two seeds of one method are told apart.
    seeds = {o for runs in named.values() for o in runs if o.startswith("seed=")}
    for path in paths:
        results = json.loads(path.read_text())
        matrix = results.get("accuracy_matrix") or results.get("matrix") or []
        diagonal = [row[i] for i, row in enumerate(matrix[1:]) if i < len(row)]
        metrics = results["metrics"]
        label = " ".join(o for o in named[path] if len(seeds) > 1 or not o.startswith("seed="))
        done = f"{results.get('completed_tasks', len(diagonal))}/{len(results.get('tasks', []))}"
        print(f"| `{label}` | {done} | "
              + " | ".join(f"{100 * metrics[m]:.1f}" if metrics.get(m) is not None else "-"
                           for m in METRICS)
              + " | " + ", ".join("-" if a is None else f"{100 * a:.0f}" for a in diagonal)
              + " |")


if __name__ == "__main__":
    main()
