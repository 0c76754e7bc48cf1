"""Every strategy on the micro toy streams with fixed seeds: its results.json matrix, printed.

    python experiments/check_matrices.py > experiments/results/matrices_<label>.txt

A refactor that changes no mechanism gives the same file before and after (compare them with
`diff`). Each method gets explicit hyperparameters sized for the micro backbones (so the output
does not depend on where presets live), one epoch, and `lightning.seed_everything(seed)` right
before the run builds its strategy, so adapter and prompt initialisations are reproducible.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[1] / "conf"
SEED = 0
COMMON = ["logger=none", "trainer.progress_bar=false", "++method.epochs=1", "++method.batch_size=8",
          "trainer.checkpoint_every_minutes=null", f"seed={SEED}"]
INSTRUCTION = ["backbone=tiny_llava_micro", "stream=toy_micro"]
CLASSIFICATION = ["stream=toy_class_micro"]
# Method -> its overrides (micro-sized where the paper's numbers do not fit 2-layer, width-16
# backbones); families say on which backbones it runs.
METHODS: dict[str, tuple[list[str], list[str]]] = {
    "zero_shot": ([], ["instruction", "clip", "vit"]),
    "finetune": (["method.lr=1e-3"], ["instruction", "clip", "vit"]),
    "joint": (["method.lr=1e-3"], ["instruction", "clip", "vit"]),
    "lora": (["method.lr=3e-3"], ["instruction", "clip", "vit"]),
    "rank_selective_lora": (["method.lr=3e-3", "method.max_kappa=0.03", "method.r=4"],
                            ["instruction", "clip", "vit"]),
    "continual_llava": (["method.lr=3e-3", "method.pool_size=4", "method.top_m=2",
                         "method.rank=2"], ["instruction"]),
    "fwd_prompt": (["method.lr=3e-3", "method.pool_size=4", "method.prompt_length=2",
                    "method.top_k=2"], ["instruction"]),
    "l2p": (["method.lr=3e-2", "method.pool_size=4", "method.prompt_length=2", "method.top_k=2"],
            ["clip", "vit"]),
    "dualprompt": (["method.lr=5e-3", "method.pool_size=2", "method.g_layers=[0]",
                    "method.e_layers=[1]", "method.g_length=2", "method.e_length=2"],
                   ["clip", "vit"]),
    "coda_prompt": (["method.lr=1e-3", "method.pool_size=4", "method.num_tasks=2",
                     "method.layers=[0,1]", "method.prompt_length=2"], ["clip", "vit"]),
    "prompt_fusion": (["method.lr=1e-2", "backbone@method.booster=tiny_vit_micro",
                       "method.context_length=4", "method.clip_prompt_length=4",
                       "method.booster_prompt_length=4", "method.memory_size=8"], ["clip"]),
}
BACKBONES = {"instruction": INSTRUCTION,
             "clip": ["backbone=tiny_clip_micro", *CLASSIFICATION],
             "vit": ["backbone=tiny_vit_micro", *CLASSIFICATION]}


def _checksum(value) -> float:
    """Sum of every tensor in a (nested) state: independent of names and order."""
    import torch

    if isinstance(value, torch.Tensor):
        return float(value.double().sum()) if value.is_floating_point() else 0.0
    if isinstance(value, dict):
        return sum(_checksum(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_checksum(v) for v in value)
    return 0.0


def run_one(method: str, family: str, overrides: list[str], out: Path) -> tuple[np.ndarray, float]:
    """The run's matrix and a checksum of its trained parameters after the last task."""
    import torch

    from mcl.results import checkpoint_path
    from mcl.run import run

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config",
                      overrides=[*BACKBONES[family], f"method={method}", *COMMON, *overrides])
    L.seed_everything(SEED, workers=True, verbose=False)
    with contextlib.redirect_stdout(sys.stderr):  # stdout holds only the matrices
        results = run(cfg, out / f"{family}_{method}", loggers=[])
    last = checkpoint_path(out / f"{family}_{method}", len(results["tasks"]) - 1)
    state = torch.load(last, weights_only=False)["strategy"]
    return np.asarray(results["matrix"]), _checksum(state["params"])


def main() -> None:
    only = set(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        for method, (overrides, families) in METHODS.items():
            if only and method not in only:
                continue
            for family in families:
                R, checksum = run_one(method, family, overrides, Path(tmp))
                rows = "\n".join("  " + " ".join(f"{v:.6f}" for v in row) for row in R)
                print(f"== {method} on {family} (trained parameters sum {checksum:.6e})\n{rows}",
                      flush=True)


if __name__ == "__main__":
    main()
