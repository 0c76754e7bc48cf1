"""report.md: a title, the table, what each metric means and which way is better, the plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mcl.metrics.continual import METRIC_DEFINITIONS

# Which way is better, per metric (Forgetting is a loss of accuracy; BWT < 0 means forgetting).
HIGHER_IS_BETTER = {"last": True, "avg_incremental": True, "forgetting": False, "bwt": True,
                    "fwt": True, "transfer": True, "mtil_average": True}


def document(table: str, rows: Sequence, images: Sequence[Path], out: Path) -> str:
    """The whole report.md around the comparison `table` (mcl.report.table.markdown)."""
    streams = sorted({row.stream for row in rows})
    runs = sum(len(row.runs) for row in rows)
    lines = [f"# mcl report: {', '.join(streams)}", "",
             f"{runs} run(s) of {len(rows)} backbone x stream x method combination(s). "
             "Accuracy in %; R[i, j] is the accuracy on task j after training task i (row 0: "
             "before any training).", "", table.rstrip("\n"), "", "## Metrics", "",
             "| metric | better | definition |", "|---|---|---|"]
    for name, definition in METRIC_DEFINITIONS.items():
        better = "higher" if HIGHER_IS_BETTER.get(name, True) else "lower"
        lines.append(f"| {name} | {better} | {definition} |")
    if images:
        lines += ["", "## Plots", ""]
        for path in images:
            link = Path(path).relative_to(out).as_posix()
            lines.append(f"- [{link}]({link})")
    return "\n".join(lines) + "\n"
