"""The runs of a comparison grid (backbone x methods x streams x seeds) that have not finished
under a sweep tree, and the methods and seeds that a sweep needs to cover them.

    python experiments/missing_runs.py /tmp/small_tier/compare_toy_small --backbone small_llava \\
        --methods lora ewc --streams toy_domain toy_dataset --seeds 0 1 2

prints `methods: ...` and `seeds: ...` (both empty when nothing is missing), and each missing
run on stderr. Why: a sweep started again over the whole grid starts a process for every run,
and a finished run costs that process its imports, its stream and (a cached toy backbone, whose
weights it checks) its backbone before mcl.run finds it finished; on the small tier's last call,
300 of 315 runs were finished and the sweep got 2 more done in 478 s (then each finished run
also set its method up; experiments/results/small_tier_h200.md). With ONLY_MISSING=1 the next
call swept the 18 jobs this printed (3 of them finished) and got all 15 missing runs done
within 570 s of sweeping.
small_tier_gpu.sh's ONLY_MISSING=1 sweeps just the methods x seeds printed here. (Within one
sweep, `hydra/sweeper=mcl_rerun` re-runs its unfinished jobs from its multirun.yaml; this works
from the runs' results alone, e.g. an archive restored on another machine, archive_runs.py.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from archive_runs import finished_runs


def missing_runs(root: Path, backbone: str, methods: list[str], streams: list[str],
                 seeds: list[int]) -> list[tuple[str, str, int]]:
    """(method, stream, seed) of the grid with no finished run under `root`, in grid order.
    A run is identified by what its results.json records, not by its folder's name."""
    done = set()
    for run in finished_runs(root):  # none under a folder that does not exist
        data = json.loads((run / "results.json").read_text())
        if data.get("backbone") == backbone:
            done.add((data.get("method"), data.get("stream"), data.get("seed")))
    return [(m, s, seed) for m in methods for s in streams for seed in seeds
            if (m, s, seed) not in done]


def to_sweep(missing: list[tuple[str, str, int]]) -> tuple[list[str], list[int]]:
    """The methods (in the grid's order) and seeds whose product covers every missing run."""
    methods = list(dict.fromkeys(m for m, _, _ in missing))
    return methods, sorted({seed for _, _, seed in missing})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the sweep tree (e.g. $WORK/compare_toy_small)")
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--streams", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    args = parser.parse_args()
    missing = missing_runs(args.root, args.backbone, args.methods, args.streams, args.seeds)
    for method, stream, seed in missing:
        print(f"missing: {method} {stream} seed {seed}", file=sys.stderr)
    methods, seeds = to_sweep(missing)
    print(f"methods: {' '.join(methods)}")
    print(f"seeds: {' '.join(map(str, seeds))}")


if __name__ == "__main__":
    main()
