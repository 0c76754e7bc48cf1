"""How large a run's LoRA adapter has grown after each task: the Frobenius norms of all its A
and B matrices and of the update they add to the weights, (alpha / r) * B A, read from the
run's task checkpoints (checkpoints/task_NNN.pt; keep them all with
trainer.keep_task_checkpoints=null). For issue 15's question whether a single adapter trained
task after task loses the ability to learn a new task as it grows.

    python experiments/adapter_norms.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml


def adapter_norms(params: dict[str, torch.Tensor], scale: float) -> tuple[float, float, float]:
    """(||A||, ||B||, ||scale * B A||) over every LoRA pair in `params` (peft's names:
    `<layer>.lora_A.<adapter>.weight` beside `<layer>.lora_B.<adapter>.weight`), each the root of
    the sum of its layers' squared Frobenius norms."""
    a2 = b2 = delta2 = 0.0
    for name, a in params.items():
        if ".lora_A." not in name:
            continue
        b = params[name.replace(".lora_A.", ".lora_B.")]
        a, b = a.double(), b.double()
        a2 += a.pow(2).sum().item()
        b2 += b.pow(2).sum().item()
        delta2 += (scale * b @ a).pow(2).sum().item()
    return a2 ** 0.5, b2 ** 0.5, delta2 ** 0.5


def run_rows(run_dir: Path) -> list[tuple[str, float, float, float]]:
    """(task, ||A||, ||B||, ||dW||) for each task checkpoint of `run_dir`, in task order."""
    method = yaml.safe_load((run_dir / "config.yaml").read_text())["method"]
    scale = method["alpha"] / method["r"]
    rows = []
    for path in sorted((run_dir / "checkpoints").glob("task_*.pt")):
        state = torch.load(path, map_location="cpu", weights_only=False)
        rows.append((state["task"], *adapter_norms(state["strategy"]["params"], scale)))
    return rows


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("| run | after task | ‖A‖ | ‖B‖ | ‖(α/r) B A‖ |\n|---|---|---:|---:|---:|")
    for run_dir in map(Path, sys.argv[1:]):
        rows = run_rows(run_dir)
        if not rows:
            print(f"| {run_dir} | no task checkpoints | | | |")
        for task, a, b, delta in rows:
            print(f"| {run_dir.name} | {task} | {a:.2f} | {b:.2f} | {delta:.2f} |")


if __name__ == "__main__":
    main()
