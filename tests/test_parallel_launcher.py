"""hydra/launcher=parallel: which job sees which GPUs (4 simulated GPUs, trainer.devices 1 and
2), at most G/d jobs at once, d > 1 as torchrun ranks on one run directory; bad requests refused
before any job starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hydra_plugins.mcl_launcher.parallel_launcher import job_needs, worker_command

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "sweep_app" / "app.py"


def sweep(tmp_path: Path, jobs: int, devices: int, gpus: str = "0,1,2,3"
          ) -> dict[int, list[dict]]:
    """Jobs 0..jobs-1 of the app through the launcher on `gpus`: {job: its ranks' records}."""
    together = 4 // devices
    result = subprocess.run(
        [sys.executable, str(APP), "-m", f"job={','.join(map(str, range(jobs)))}",
         f"together={together}", f"markers={tmp_path / 'markers'}",
         f"trainer.devices={devices}", "hydra/launcher=mcl_parallel",
         f"hydra.launcher.gpus=[{gpus}]", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = {}
    for job in range(jobs):
        files = sorted((tmp_path / "sweep" / f"job{job}").glob("seen_*.json"))
        seen[job] = [json.loads(f.read_text()) for f in files]
    return seen


def test_one_gpu_each_four_at_once(tmp_path: Path) -> None:
    seen = sweep(tmp_path, jobs=5, devices=1)
    first = [seen[j][0] for j in range(4)]
    # Jobs 0-3 ran together (each waited for the other three), on GPUs 0, 1, 2, 3 in order.
    assert all(r["released"] and r["world"] == 1 for r in first)
    assert [r["gpus"] for r in first] == ["0", "1", "2", "3"]
    assert all(r["mode"] == "RunMode.MULTIRUN" for r in first)
    # Job 4 waited for a GPU: it started after the first job ended, on that job's GPU.
    fifth = seen[4][0]
    ended = [r for r in first if r["end"] <= fifth["start"]]
    assert ended and fifth["gpus"] in {r["gpus"] for r in ended}
    assert len(seen[4]) == 1


def test_repeated_gpu_names_share_one_gpu(tmp_path: Path) -> None:
    # gpus=[0,0,0,0]: four one-GPU jobs at once, all on GPU 0 (several small runs on one H200).
    seen = sweep(tmp_path, jobs=4, devices=1, gpus="0,0,0,0")
    first = [seen[j][0] for j in range(4)]
    assert all(r["released"] for r in first)  # each waited for the other three: they ran at once
    assert [r["gpus"] for r in first] == ["0", "0", "0", "0"]


def test_two_gpus_each_as_torchrun_ranks(tmp_path: Path) -> None:
    seen = sweep(tmp_path, jobs=3, devices=2)
    # Each job: 2 ranks of one DDP world, both in the job's one directory, seeing the same 2 GPUs.
    for job in range(3):
        ranks = seen[job]
        assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
        assert ranks[0]["gpus"] == ranks[1]["gpus"]
    assert [seen[j][0]["gpus"] for j in (0, 1)] == ["0,1", "2,3"]
    assert all(seen[j][0]["released"] for j in (0, 1))  # they ran at once
    third = seen[2][0]
    ended = [seen[j][0] for j in (0, 1) if seen[j][0]["end"] <= third["start"]]
    assert ended and third["gpus"] in {r["gpus"] for r in ended}


def test_needs_and_refusals() -> None:
    config = OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 2}})
    gpus = ["0", "1", "2", "3"]
    assert job_needs(config, "trainer.devices", "trainer.accelerator", gpus, "#0") == (2, 2)
    cpu = OmegaConf.create({"trainer": {"accelerator": "cpu", "devices": 2}})
    assert job_needs(cpu, "trainer.devices", "trainer.accelerator", gpus, "#0") == (2, 0)
    with pytest.raises(ValueError, match="needs trainer.devices=2 GPUs but only 1"):
        job_needs(config, "trainer.devices", "trainer.accelerator", ["0"], "#0")
    with pytest.raises(ValueError, match="repeats a GPU"):
        job_needs(config, "trainer.devices", "trainer.accelerator", ["0", "0"], "#0")
    with pytest.raises(ValueError, match="no GPU is visible"):
        job_needs(config, "trainer.devices", "trainer.accelerator", [], "#0")
    auto = OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": "auto"}})
    with pytest.raises(ValueError, match="must be a number"):
        job_needs(auto, "trainer.devices", "trainer.accelerator", gpus, "#0")
    assert worker_command(1, Path("j.pkl"))[1:] == ["-m", "hydra_plugins.mcl_launcher.worker",
                                                    "j.pkl"]
    assert worker_command(2, Path("j.pkl"))[1:6] == ["-m", "torch.distributed.run",
                                                     "--standalone", "--nproc_per_node", "2"]


def test_slurm_launcher_asks_for_the_trainers_nodes_and_tasks() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True, overrides=[
            "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    assert launcher["_target_"].endswith("SlurmLauncher")
