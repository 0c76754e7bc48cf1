"""Methods on the three toy streams: mean ± std over seeds of the standard metrics.

    python experiments/compare_toy.py --methods zero_shot finetune lora joint   # the baselines
    python experiments/compare_toy.py --seeds 0 1 2                             # every method
    python experiments/compare_toy.py --seeds 0 1 2 --jobs 8 trainer=gpu        # in parallel

Runs a Hydra multirun of `mcl.run` into --out (default multirun/compare_toy; with --jobs > 1
through Hydra's joblib launcher), reuses finished runs (a re-run resumes), then prints a
Markdown table and writes it to <out>/table.md. Seed methods run with their `_tiny` presets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("last", "avg_incremental", "forgetting", "bwt", "fwt", "transfer")


def collect(out: Path) -> dict[tuple[str, str], dict[str, list[float]]]:
    """metric values per (stream, method), one per seed, from every results.json under out."""
    table: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(out.glob("**/results.json")):
        data = json.loads(path.read_text())
        if data["completed_tasks"] != len(data["tasks"]):
            continue
        for key in METRICS:
            value = data["metrics"].get(key)
            table[data["stream"], data["method"]][key].append(np.nan if value is None else value)
    return table


def fmt(values: list[float]) -> str:
    values = np.asarray(values, dtype=float)
    if np.isnan(values).all():
        return "n/a"
    mean = 100 * np.nanmean(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {100 * np.nanstd(values):.1f}"


def markdown(table: dict, methods: list[str]) -> str:
    lines = ["| stream | method | seeds | " + " | ".join(METRICS) + " |",
             "|---|---|---:|" + "---:|" * len(METRICS)]
    for stream in sorted({s for s, _ in table}):
        for method in methods:
            cell = table.get((stream, method))
            if cell:
                lines.append(f"| {stream} | {method} | {len(cell['last'])} | " +
                             " | ".join(fmt(cell[k]) for k in METRICS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=[
        "zero_shot", "finetune", "lora", "joint", "fwd_prompt_tiny", "continual_llava_tiny",
        "rank_selective_lora_tiny"])
    parser.add_argument("--streams", nargs="+",
                        default=["toy_domain", "toy_capability", "toy_dataset"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--jobs", type=int, default=1, help="parallel runs (joblib launcher)")
    parser.add_argument("--out", type=Path, default=ROOT / "multirun" / "compare_toy")
    parser.add_argument("--collect-only", action="store_true", help="only build the table")
    parser.add_argument("overrides", nargs="*", help="extra mcl.run overrides")
    args = parser.parse_args()
    if not args.collect_only:
        cmd = [sys.executable, "-m", "mcl.run", "-m", f"method={','.join(args.methods)}",
               f"stream={','.join(args.streams)}", f"seed={','.join(map(str, args.seeds))}",
               "trainer.progress_bar=false", "logger=none", f"hydra.sweep.dir={args.out}",
               *args.overrides]
        if args.jobs > 1:
            cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"]
        subprocess.run(cmd, cwd=ROOT, check=True)
    names = [m.removesuffix("_tiny") for m in args.methods]  # results carry the method's name
    text = markdown(collect(args.out), names)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
