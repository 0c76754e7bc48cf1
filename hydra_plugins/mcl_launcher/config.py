"""The plugins' config schemas, registered in Hydra's ConfigStore when Hydra scans plugins."""


from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class ParallelLauncherConf:
    _target_: str = "hydra_plugins.mcl_launcher.parallel_launcher.ParallelLauncher"
    # Jobs at once at most; null: as many as the GPUs allow (one per slice of `devices`), or 2
    # on a machine without GPUs.
    n_jobs: int | None = None
    # The GPUs to share out, as CUDA_VISIBLE_DEVICES names them; null: those this process sees.
    gpus: list[str] | None = None
    # Where a job's config says how many GPUs (processes) it needs and whether it uses GPUs.
    devices_key: str = "trainer.devices"
    accelerator_key: str = "trainer.accelerator"


@dataclass
class RerunSweeperConf:
    _target_: str = "hydra_plugins.mcl_launcher.rerun_sweeper.RerunSweeper"


ConfigStore.instance().store(group="hydra/launcher", name="mcl_parallel",
                             node=ParallelLauncherConf, provider="mcl")
ConfigStore.instance().store(group="hydra/sweeper", name="mcl_rerun", node=RerunSweeperConf,
                             provider="mcl")
