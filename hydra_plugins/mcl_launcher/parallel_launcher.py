"""`hydra/launcher=parallel`: several jobs of a sweep at once on one machine, each on GPUs of its
own.

With G GPUs visible and a job config of `trainer.devices=d`, a job starts as soon as d GPUs are
free (so at most G/d run at once, in the sweep's order) and runs in a fresh process that sees
only those GPUs (CUDA_VISIBLE_DEVICES is set before it starts, so before CUDA initialises). A
job of d > 1 runs under torchrun with d processes (how mcl's DDP is tested), all on the job's one
run directory. Jobs on the CPU take no GPUs and are bounded by `n_jobs` alone.

Why not hydra-joblib-launcher: its loky workers are long-lived processes reused across jobs, so a
job cannot be given devices before CUDA initialises in the worker it lands on, nor know which
devices are free; and a job of several processes cannot be started from a worker (Lightning's
own launcher re-runs the worker's command line). So each job here is one new process (or one
torchrun), that loads the job exactly as joblib's and submitit's workers do and calls Hydra's
`run_job`: the job sees the same config, directory and multirun mode as under any launcher.
"""

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)
GPU_ACCELERATORS = ("gpu", "cuda")


def visible_gpus() -> list[str]:
    """The GPUs this process may use, named as CUDA_VISIBLE_DEVICES names them."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    import torch  # counts the devices without initialising CUDA

    return [str(i) for i in range(torch.cuda.device_count())]


@dataclass
class Job:
    """One job of the sweep, with what it needs and, once started, what it got."""

    num: int
    overrides: list[str]
    config: DictConfig
    directory: Path
    processes: int  # trainer.devices: 1, or d ranks under torchrun
    gpus_needed: int  # 0 for a job on the CPU
    gpus: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    job_file: Path | None = None
    started: float = 0.0


def job_needs(config: DictConfig, devices_key: str, accelerator_key: str,
              gpus: Sequence[str], label: str) -> tuple[int, int]:
    """(processes, GPUs) a job needs; a clear error if the sweep cannot run it here."""
    devices = OmegaConf.select(config, devices_key, default=1)
    accelerator = str(OmegaConf.select(config, accelerator_key, default="cpu"))
    on_gpu = accelerator in GPU_ACCELERATORS or (accelerator == "auto" and gpus)
    if not isinstance(devices, int) or devices < 1:
        raise ValueError(f"hydra/launcher=parallel gives each job `{devices_key}` processes, "
                         f"so it must be a number >= 1; job {label} has {devices!r}")
    if on_gpu and not gpus:
        raise ValueError(f"job {label} asks for {accelerator_key}={accelerator} but no GPU is "
                         "visible (CUDA_VISIBLE_DEVICES, or hydra.launcher.gpus)")
    if on_gpu and devices > len(gpus):
        raise ValueError(f"job {label} needs {devices_key}={devices} GPUs but only "
                         f"{len(gpus)} are visible ({','.join(gpus)}); lower {devices_key} "
                         "or run on a larger machine")
    if on_gpu and devices > 1 and len(set(gpus)) < len(gpus):
        # A repeated name (gpus=[0,0,0,0]) shares one GPU among several one-GPU jobs; a job's
        # torchrun ranks would be handed the same GPU twice.
        raise ValueError(f"job {label} needs {devices_key}={devices} GPUs, but "
                         f"hydra.launcher.gpus repeats a GPU ({','.join(gpus)}): repeated names "
                         f"are for one-GPU jobs sharing a GPU; set {devices_key}=1 or list "
                         "distinct GPUs")
    return devices, devices if on_gpu else 0


def worker_command(processes: int, job_file: Path) -> list[str]:
    """The command that runs a pickled job: one process, or torchrun with `processes` ranks on a
    free port of this machine (--standalone)."""
    worker = ["-m", "hydra_plugins.mcl_launcher.worker", str(job_file)]
    if processes == 1:
        return [sys.executable, *worker]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(processes), *worker]


class ParallelLauncher(Launcher):
    def __init__(self, n_jobs: int | None = None, gpus: Sequence[Any] | None = None,
                 devices_key: str = "trainer.devices",
                 accelerator_key: str = "trainer.accelerator") -> None:
        self.n_jobs = n_jobs
        self.gpus = None if gpus is None else [str(g) for g in gpus]
        self.devices_key, self.accelerator_key = devices_key, accelerator_key
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _prepare(self, num: int, overrides: Sequence[str], gpus: list[str]) -> Job:
        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = f"{config.hydra.job.name}_{num}"
            config.hydra.job.num = num
        directory = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        label = f"#{num} ({' '.join(filter_overrides(overrides))})"
        processes, gpus_needed = job_needs(config, self.devices_key, self.accelerator_key, gpus,
                                           label)
        return Job(num, list(overrides), config, directory, processes, gpus_needed)

    def _start(self, job: Job, free: list[str], scratch: Path) -> None:
        from hydra_plugins.mcl_launcher.worker import task_reference, write_job

        job.gpus, free[:] = free[: job.gpus_needed], free[job.gpus_needed :]
        job.directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f"job{job.num}_", suffix=".pkl", dir=scratch)
        os.close(handle)
        job.job_file = job_file = Path(name)
        write_job(job_file, task=task_reference(self.task_function), config=job.config,
                  hydra_context=self.hydra_context, singleton_state=Singleton.get_state())
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [os.getcwd() if p == "" else p for p in sys.path])}
        env["CUDA_VISIBLE_DEVICES"] = ",".join(job.gpus)  # "" hides the GPUs from a CPU job
        console = job.directory / "console.log"
        with console.open("w") as out:
            job.process = subprocess.Popen(worker_command(job.processes, job_file), env=env,
                                           stdout=out, stderr=subprocess.STDOUT)
        job.started = time.time()
        where = f"GPUs {','.join(job.gpus)}" if job.gpus else "CPU"
        ranks = f", {job.processes} processes (torchrun)" if job.processes > 1 else ""
        log.info(f"#{job.num} started on {where}{ranks}: "
                 f"{' '.join(filter_overrides(job.overrides))} (console: {console})")

    def _finish(self, job: Job, free: list[str]) -> None:
        assert job.process is not None
        code = job.process.returncode
        job.job_file.unlink(missing_ok=True)
        free.extend(job.gpus)
        free.sort(key=lambda g: self._order.index(g))
        failed = job.directory / "failed.json"
        minutes = (time.time() - job.started) / 60
        if code != 0 and not failed.exists():
            # The job died without its own record (killed, out of memory, a crashed rank):
            # leave one as mcl.run does for an error, so the sweep summary lists it.
            tail = (job.directory / "console.log").read_text(errors="replace")[-4000:]
            from mcl.io import write_json

            write_json(failed, {"error": f"exit code {code}: see {job.directory / 'console.log'}",
                                "traceback": tail})
        state = "failed" if failed.exists() else "finished"
        log.info(f"#{job.num} {state} after {minutes:.1f} min")

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None
        gpus = self.gpus if self.gpus is not None else visible_gpus()
        self._order = list(gpus)
        # Every job's config and needs first: a job that cannot run here stops the sweep now.
        jobs = [self._prepare(initial_job_idx + i, o, gpus) for i, o in enumerate(job_overrides)]
        limit = self.n_jobs or (len(jobs) if gpus else 2)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        scratch = sweep_dir / ".parallel"
        scratch.mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(jobs)} jobs on {len(gpus)} GPUs ({','.join(gpus) or 'none'}), "
                 f"at most {limit} at once; sweep output dir: {sweep_dir}")
        free, waiting, running = list(gpus), list(jobs), []
        try:
            while waiting or running:
                # In the sweep's order: the next job starts once its GPUs are free.
                while (waiting and len(running) < limit
                       and waiting[0].gpus_needed <= len(free)):
                    job = waiting.pop(0)
                    self._start(job, free, scratch)
                    running.append(job)
                time.sleep(0.2)
                for job in [j for j in running if j.process.poll() is not None]:
                    running.remove(job)
                    self._finish(job, free)
        finally:
            for job in running:  # interrupted (Ctrl-C): stop the jobs still running
                job.process.terminate()
            for job in running:
                job.process.wait()
        return [JobReturn(overrides=job.overrides, cfg=job.config, hydra_cfg=job.config,
                          working_dir=str(job.directory), task_name=str(job.config.hydra.job.name),
                          status=JobStatus.COMPLETED, _return_value=None) for job in jobs]
