"""CPU benchmark of the default run: a new user's first run (cold cache: pre-training, then the
stream, in one process), pre-training alone (cold cache), then the stream again (warm cache).

    python experiments/bench_cpu.py [extra overrides for mcl.run ...]

Targets on 2 cores: pre-training <= 5 min, stream <= 3 min. Prints a table, the per-task training
times of the first run against the warm one, and the machine.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def stream_run(overrides: list[str], env: dict, run_dir: Path) -> tuple[float, dict]:
    """Wall time of `python -m mcl.run` and its results.json, with its per-task timings
    (timings.json, kept apart so that results.json of identical runs is identical)."""
    seconds = timed([sys.executable, "-m", "mcl.run", *overrides, "logger=none",
                     "trainer.progress_bar=false", f"hydra.run.dir={run_dir}"], env)
    results = json.loads((run_dir / "results.json").read_text())
    results["timings"] = json.loads((run_dir / "timings.json").read_text())
    return seconds, results


def main() -> None:
    overrides = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        first_env = {**os.environ, "MCL_CACHE": str(Path(tmp) / "first")}
        first_s, first = stream_run(overrides, first_env, Path(tmp) / "first_run")
        env = {**os.environ, "MCL_CACHE": str(Path(tmp) / "cache")}
        pretrain_s = timed([sys.executable, "-m", "mcl.pretrain", *overrides], env)
        stream_s, results = stream_run(overrides, env, Path(tmp) / "run")
        pretrain_report = json.loads(next(Path(env["MCL_CACHE"]).glob("*/*/pretrain.json"))
                                     .read_text())
    train_s = sum(t["train_s"] for t in results["timings"])
    eval_s = sum(t["eval_s"] for t in results["timings"])
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
          f"load average before: {os.getloadavg()[0]:.1f}")
    print(f"run: {results['backbone']} / {results['method']} / {results['stream']} "
          f"seed {results['seed']} {' '.join(overrides)}")
    print()
    print("| phase | wall time (s) | target (s) |")
    print("|---|---:|---:|")
    print(f"| first run, cold cache (`python -m mcl.run`: pre-training + stream) | {first_s:.1f} "
          "| 480 |")
    print(f"| pre-training, cold cache (`python -m mcl.pretrain`) | {pretrain_s:.1f} | 300 |")
    print(f"| stream, warm cache (`python -m mcl.run`, whole process) | {stream_s:.1f} | 180 |")
    print(f"| - of which training ({len(results['tasks'])} tasks) | {train_s:.1f} | |")
    print(f"| - of which evaluation ({len(results['tasks']) + 1} rows) | {eval_s:.1f} | |")
    print()
    print("per-task training (s), first run vs warm: " + ", ".join(
        f"{a['task']} {a['train_s']:.1f} vs {b['train_s']:.1f}"
        for a, b in zip(first["timings"], results["timings"], strict=True) if b["train_s"]))
    print(f"pre-training held-out accuracy: {pretrain_report['heldout_accuracy']:.3f}; "
          f"stream Last accuracy: {results['metrics']['last']:.3f}")


if __name__ == "__main__":
    main()
