"""`hydra/sweeper=mcl_rerun hydra.sweep.dir=<sweep>`: launch only the failed and incomplete jobs
of an earlier sweep (mcl.report.sweep decides which), each with its own overrides and into its
own directory, through whatever launcher the command names. `python -m mcl.report <sweep>`
prints the full command."""

from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class RerunSweeper(Sweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from pathlib import Path

        from mcl.report.sweep import sweep_jobs, to_rerun

        if arguments:
            raise ValueError("hydra/sweeper=mcl_rerun re-runs each job with its own overrides; "
                             f"remove {' '.join(arguments)} (or start a new sweep)")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        if not (sweep_dir / "multirun.yaml").is_file():
            raise ValueError(f"{sweep_dir} is not a sweep directory (no multirun.yaml); set "
                             "hydra.sweep.dir to the sweep to re-run")
        jobs = sweep_jobs(sweep_dir)
        for job in jobs:  # an old error must not outlive the attempt that replaces it
            if job.path is not None and job.status != "finished":
                (job.path / "failed.json").unlink(missing_ok=True)
        batch = to_rerun(jobs, sweep_dir)
        print(f"re-running {len(batch)} of the {len(jobs)} jobs of {sweep_dir}")
        if not batch:
            return []
        results: list[JobReturn] = list(self.launcher.launch(batch, initial_job_idx=0))
        for result in results:
            _ = result.return_value  # raises if a job failed outside mcl.run's own handling
        return [results]
