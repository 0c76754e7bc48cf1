"""The numbers that changed between two mcl.report tables (report.md or a copy in
experiments/results/): one row per (backbone, stream, method) in both, old -> new (difference)
for each metric column whose mean moved by at least --min points.

    python experiments/diff_reports.py old.md new.md [--min 0.5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

KEYS = ("backbone", "stream", "method")


def rows(path: Path) -> tuple[list[str], dict[tuple, dict[str, float]]]:
    """The metric columns and, per key, each column's mean (the number before ' ± ')."""
    header, table = None, {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:3] == list(KEYS):
            header = cells
        elif header and len(cells) == len(header) and not set(cells[0]) <= set("-: "):
            values = {}
            for name, cell in zip(header, cells, strict=True):
                try:
                    values[name] = float(cell.split("±")[0])
                except ValueError:
                    continue
            table[tuple(cells[:3])] = values
    if header is None:
        raise SystemExit(f"{path}: no table with columns {', '.join(KEYS)}")
    return [h for h in header if h not in (*KEYS, "seeds", "status")], table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--min", type=float, default=0.5, help="smallest change listed, points")
    args = parser.parse_args()
    columns, old = rows(args.old)
    _, new = rows(args.new)
    print("| backbone | stream | method | " + " | ".join(columns) + " |")
    print("|---|---|---|" + "---:|" * len(columns))
    for key in sorted(old.keys() & new.keys()):
        cells = []
        for c in columns:
            a, b = old[key].get(c), new[key].get(c)
            cells.append("" if a is None or b is None or abs(b - a) < args.min
                         else f"{a:.1f} → {b:.1f} ({b - a:+.1f})")
        print(f"| {' | '.join(key)} | " + " | ".join(cells) + " |")
    only = sorted(new.keys() - old.keys())
    if only:
        print(f"\nNew rows (not in {args.old.name}): " + ", ".join(k[2] + " on " + k[1]
                                                               for k in only))


if __name__ == "__main__":
    main()
