"""What changed between two rows of one run, sample by sample, from its stored predictions.

By default it compares, for every task, the row right after that task was trained with the last
row: the answers that were right then and are wrong at the end are what the run forgot (and the
reverse, what it learned later). A Markdown table shows a few examples of each task.
"""

from __future__ import annotations

import json
from pathlib import Path

from mcl.results import load_predictions, predictions_path


def _cell(text: object, width: int = 60) -> str:
    """A value fit for one Markdown table cell."""
    text = text if isinstance(text, str) else json.dumps(text)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def changed_answers(run_dir: str | Path, examples: int = 3) -> str:
    """Markdown: per task, how many answers were forgotten (right after training, wrong at the
    end) and learned (the reverse), with up to `examples` forgotten ones."""
    run_dir = Path(run_dir)
    data = json.loads((run_dir / "results.json").read_text())
    names, last = data["tasks"], data["completed_tasks"]
    lines = [f"### Changed answers: {run_dir}", "",
             "Per task: the row right after it was trained vs the last row "
             f"(after {names[last - 1] if last else 'nothing'}).", "",
             "| task | samples | forgotten | learned | id | answer after training | "
             "answer at the end | reference |", "|---|---:|---:|---:|---:|---|---|---|"]
    missing = []
    for j, name in enumerate(names[:last]):
        early, late = predictions_path(run_dir, j + 1, j), predictions_path(run_dir, last, j)
        if not (early.exists() and late.exists()):
            missing.append(name)
            continue
        before = {r["id"]: r for r in load_predictions(run_dir, j + 1, j)}
        after = {r["id"]: r for r in load_predictions(run_dir, last, j)}
        common = sorted(before.keys() & after.keys())
        forgotten = [i for i in common if before[i]["score"] > after[i]["score"]]
        learned = [i for i in common if before[i]["score"] < after[i]["score"]]
        head = f"| {name} | {len(common)} | {len(forgotten)} | {len(learned)} |"
        if not forgotten:
            lines.append(head + " | | | |")
        for k, i in enumerate(forgotten[:examples]):
            prefix = head if k == 0 else "| | | | |"
            lines.append(f"{prefix} {i} | {_cell(before[i]['prediction'])} | "
                         f"{_cell(after[i]['prediction'])} | {_cell(after[i]['references'])} |")
    if missing:
        lines += ["", f"No stored predictions for {', '.join(missing)} (the run kept "
                      "predictions=last or none)."]
    return "\n".join(lines) + "\n"
