"""The finished runs of a sweep tree as a small archive that another machine resumes as done.

    python experiments/archive_runs.py /tmp/small_tier runs.tar.gz            # write it
    python experiments/archive_runs.py --restore runs.tar.gz /tmp/small_tier  # restore it

Only finished runs (every task done, matrix.csv written) go in, with the files that say what ran
and what it scored (results.json, timings.json, matrix.csv, config.yaml, .hydra/): a finished
run needs no checkpoint to be kept (mcl.loop keeps it as it is), while a partial one could not
resume without its checkpoints, which are far too big to carry. The runs' results.json record
the backbone's weight digest: --restore unpacks only the runs whose weights this machine's
cache holds (the same digest), and says how many it left out; a run that is there already
stays as it is.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

from mcl.backbones.tiny_llava import cache_root, weights_digest
from mcl.results import is_finished

KEPT = ("results.json", "timings.json", "matrix.csv", "config.yaml", ".hydra")


def finished_runs(root: Path) -> list[Path]:
    """Run directories under `root` whose every task finished and whose results were final."""
    return [path.parent for path in sorted(root.rglob("results.json"))
            if is_finished(path.parent)]


def archive(root: Path, out: Path) -> int:
    """Write the finished runs' KEPT files under `root` to the gzipped tar `out` (paths relative
    to `root`); returns how many runs went in."""
    runs = finished_runs(root)
    with tarfile.open(out, "w:gz") as tar:
        for run in runs:
            for name in KEPT:
                if (run / name).exists():
                    tar.add(run / name, arcname=str((run / name).relative_to(root)))
    return len(runs)


def restore(archive_path: Path, root: Path) -> tuple[int, int]:
    """Unpack into `root` the archived runs whose recorded backbone weights this machine's
    cache holds (the same sha256) and that `root` does not hold yet; returns (restored, left
    out because of other or missing weights)."""
    local: dict[str, str | None] = {}

    def digest_here(cache: str) -> str | None:
        if cache not in local:
            path = cache_root() / cache
            local[cache] = weights_digest(path) if path.is_dir() else None
        return local[cache]

    restored = refused = 0
    with tarfile.open(archive_path, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            if not member.name.endswith("/results.json"):
                continue
            run = member.name.removesuffix("/results.json")
            weights = json.load(tar.extractfile(member)).get("backbone_weights") or {}
            if weights and digest_here(weights["cache"]) != weights["sha256"]:
                refused += 1
                continue
            if (root / run / "results.json").exists():
                continue
            tar.extractall(root, members=[m for m in members
                                          if m.name.startswith(f"{run}/")], filter="data")
            restored += 1
    return restored, refused


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--restore":
        restored, refused = restore(Path(sys.argv[2]), Path(sys.argv[3]))
        print(f"restored {restored} finished runs into {sys.argv[3]}" + (
            f"; left out {refused} whose backbone weights this machine's cache does not hold "
            "(pre-trained with other bits: they would be refused)" if refused else ""))
        return
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    n = archive(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{n} finished runs -> {sys.argv[2]}")


if __name__ == "__main__":
    main()
