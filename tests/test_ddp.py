"""DDP with 2 CPU processes (gloo, launched by torchrun) trains the same model as 1 process.

Tolerance: trained weights within 1e-5 (fp32 all-reduce sums in another order; measured
1.2e-7 here against a change of 8e-3 over the task) and the same accuracy matrix. The micro
stream's samples all carry two answer tokens, so the mean over ranks of per-rank token means is
the single process's batch mean.
"""

import json
import subprocess
import sys
from pathlib import Path

import torch
from conftest import MICRO

ROOT = Path(__file__).resolve().parents[1]
ARGS = [*MICRO[:-1], "method.epochs=2", "method.batch_size=8"]


def _run(launcher: list[str], run_dir: Path, *extra: str) -> dict:
    result = subprocess.run([*launcher, "-m", "mcl.run", *ARGS, *extra,
                             f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


def _weights(run_dir: Path, task: int) -> dict:
    path = run_dir / "checkpoints" / f"task_{task:03d}.pt"
    return torch.load(path, weights_only=False)["strategy"]["params"]


def test_two_gloo_processes_match_one_process(tmp_path):
    single = _run([sys.executable], tmp_path / "single")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29517"]
    ddp = _run(torchrun, tmp_path / "ddp", "trainer=ddp_cpu")
    assert ddp["matrix"] == single["matrix"]
    for task in (0, 1):
        a, b = _weights(tmp_path / "single", task), _weights(tmp_path / "ddp", task)
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=0)
    moved = max((_weights(tmp_path / "single", 1)[k] - _weights(tmp_path / "single", 0)[k])
                .abs().max().item() for k in a)
    assert moved > 1e-4  # training did change the weights: the comparison means something
