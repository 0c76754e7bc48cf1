"""DDP and FSDP with 2 CPU processes (gloo) train the same model as 1 process, whether torchrun
launches them on one node, torchrun on 2 simulated nodes (`--nnodes 2`), or SLURM (its variables
set by hand, as srun sets them); an FSDP run and a SLURM job killed mid-task resume from their
step checkpoint (SLURM's re-submission after a time-out runs the same command again).

Tolerance: trained weights within 1e-5 (fp32 all-reduce sums in another order; measured
1.2e-7 here against a change of 8e-3 over the task) and the same accuracy matrix. The micro
stream's samples all carry two answer tokens, so the mean over ranks of per-rank token means is
the single process's batch mean.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import MICRO

from mcl.checkpointing import step_checkpoint_path

ROOT = Path(__file__).resolve().parents[1]
ARGS = [*MICRO[:-1], "method.epochs=2", "method.batch_size=8",
        "trainer.keep_task_checkpoints=null"]  # the tests compare every task's weights


def _run(launcher: list[str], run_dir: Path, *extra: str) -> dict:
    result = subprocess.run([*launcher, "-m", "mcl.run", *ARGS, *extra,
                             f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


def _weights(run_dir: Path, task: int) -> dict:
    path = run_dir / "checkpoints" / f"task_{task:03d}.pt"
    return torch.load(path, weights_only=False)["strategy"]["params"]


def _torchrun(port: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", str(port)]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The one-process run both multi-process runs must reproduce."""
    run_dir = tmp_path_factory.mktemp("single")
    _run([sys.executable], run_dir)
    a, b = _weights(run_dir, 0), _weights(run_dir, 1)
    moved = max((b[k] - a[k]).abs().max().item() for k in a)
    assert moved > 1e-4  # training did change the weights: the comparisons mean something
    return run_dir


def _assert_same_weights(run_dir: Path, single: Path) -> None:
    for task in (0, 1):
        a, b = _weights(single, task), _weights(run_dir, task)
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=0)


def test_two_gloo_processes_match_one_process(tmp_path, single):
    ddp = _run(_torchrun(29517), tmp_path / "ddp", "trainer=ddp_cpu")
    assert ddp["matrix"] == json.loads((single / "results.json").read_text())["matrix"]
    _assert_same_weights(tmp_path / "ddp", single)


def _kill_with_workers(process: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (which it starts in sessions of their own)."""
    workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                             text=True).stdout.split()
    process.kill()
    for pid in workers:
        os.kill(int(pid), signal.SIGKILL)
    process.wait()


def test_fsdp_killed_mid_task_resumes_and_matches_one_process(tmp_path, single):
    """FSDP (FULL_SHARD over the micro model's layers, fp32) with step checkpoints every 2
    steps; SIGKILL to both ranks once one is written, then the same command again."""
    run_dir = tmp_path / "fsdp"
    args = [*_torchrun(29527), "-m", "mcl.run", *ARGS, "trainer=fsdp_cpu",
            "trainer.checkpoint_every_n_steps=2", f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint = step_checkpoint_path(run_dir, 0)
    deadline = time.time() + 600
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    _kill_with_workers(process)
    state = torch.load(checkpoint, weights_only=False)
    # Rank 0 wrote the gathered full tensors (not one rank's flat shard).
    full = _weights(single, 0)
    assert {k.removeprefix("strategy.") for k in state["state_dict"]} == set(full)
    assert all(state["state_dict"][f"strategy.{k}"].shape == v.shape for k, v in full.items())
    assert not (run_dir / "results.json").exists() or json.loads(
        (run_dir / "results.json").read_text())["completed_tasks"] == 0

    rerun = subprocess.run([*_torchrun(29537), *args[len(_torchrun(0)):]], cwd=ROOT,
                           capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = f"resuming from the step checkpoint at step {state['global_step']}"
    assert resumed in rerun.stdout, rerun.stdout[-3000:]
    _assert_same_weights(run_dir, single)


def _wait_for_step_checkpoint(run_dir: Path, processes: list[subprocess.Popen]) -> dict:
    checkpoint = step_checkpoint_path(run_dir, 0)
    deadline = time.time() + 600
    while (not checkpoint.exists() and all(p.poll() is None for p in processes)
           and time.time() < deadline):
        time.sleep(0.02)
    for process in processes:
        process.kill()
        process.wait()
    return torch.load(checkpoint, weights_only=False)


def _slurm_task(rank: int, port: int) -> dict[str, str]:
    """What srun sets for task `rank` of `--nodes 2 --ntasks-per-node 1` (one task per node)."""
    return {**os.environ, "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "mcl-test",
            "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2",
            "SLURM_PROCID": str(rank), "SLURM_LOCALID": "0", "SLURM_NODEID": str(rank),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def test_slurm_tasks_match_one_process_and_resume_after_a_kill(tmp_path, single):
    """2 tasks on 2 SLURM "nodes": Lightning's SLURMEnvironment gives the ranks; killed once a
    step checkpoint exists and started again (what a re-submitted job does), they resume from
    it and end with one process's weights."""
    run_dir = tmp_path / "slurm"
    args = [sys.executable, "-m", "mcl.run", *ARGS, "trainer=ddp_cpu", "trainer.devices=1",
            "trainer.num_nodes=2", "trainer.checkpoint_every_n_steps=2",
            f"hydra.run.dir={run_dir}"]

    def start(port: int, **kwargs) -> list[subprocess.Popen]:
        return [subprocess.Popen(args, cwd=ROOT, env=_slurm_task(rank, port), text=True,
                                 **kwargs) for rank in (0, 1)]

    state = _wait_for_step_checkpoint(run_dir, start(29547, stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL))
    tasks = start(29557, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outputs = [task.communicate(timeout=900) for task in tasks]
    for task, (_, err) in zip(tasks, outputs, strict=True):
        assert task.returncode == 0, err[-3000:]
    resumed = f"resuming from the step checkpoint at step {state['global_step']}"
    assert resumed in outputs[0][0], outputs[0][0][-3000:]
    _assert_same_weights(run_dir, single)


@pytest.mark.parametrize(("trainer", "rendezvous"), [
    ("ddp_cpu", ["--master_addr", "127.0.0.1", "--master_port", "29567"]),
    ("fsdp_cpu", ["--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:29577",
                  "--rdzv-id", "mcl-test"]),
])
def test_two_torchrun_nodes_match_one_process(tmp_path, single, trainer, rendezvous):
    """`torchrun --nnodes 2 --node_rank i` once per (simulated) node, 1 process each: DDP with
    the static rendezvous on node 0's address, FSDP with the c10d rendezvous."""
    run_dir = tmp_path / trainer
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank",
         str(node), "--nproc_per_node", "1", *rendezvous, "-m", "mcl.run", *ARGS,
         f"trainer={trainer}", "trainer.devices=1", "trainer.num_nodes=2",
         f"hydra.run.dir={run_dir}"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for node in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=900)
        assert node.returncode == 0, err[-3000:]
    _assert_same_weights(run_dir, single)
