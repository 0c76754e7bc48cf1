"""Runs one job that `hydra/launcher=parallel` wrote to a file, as joblib's and submitit's
workers do: the job's config, Hydra's state, then `run_job` (under torchrun, in every rank).

    python -m hydra_plugins.mcl_launcher.worker <job.pkl>
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def task_reference(task_function: Callable) -> tuple[str, str, str | None]:
    """How a fresh process finds the task function again: its module's import name (the
    `-m` module for `python -m mcl.run`) or the script's path, and its name. Importing it runs
    the module's top level (mcl.run registers its resolvers there)."""
    module = task_function.__module__
    path = None
    if module == "__main__":
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
        else:
            path = str(Path(main.__file__).resolve())
    return module, task_function.__name__, path


def load_task(reference: tuple[str, str, str | None]) -> Callable:
    module_name, name, path = reference
    if path is None:
        module = importlib.import_module(module_name)
    else:  # a script: loaded under another name, so its `if __name__ == "__main__"` stays idle
        spec = importlib.util.spec_from_file_location("_hydra_task", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["_hydra_task"] = module
        spec.loader.exec_module(module)
    function = getattr(module, name)
    return getattr(function, "__wrapped__", function)  # @hydra.main's wrapper -> the task


def write_job(path: Path, **job: Any) -> None:
    import cloudpickle  # here, not at the top: Hydra imports every plugin module at start-up

    path.write_bytes(cloudpickle.dumps(job))


def run(path: Path) -> int:
    import cloudpickle
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals

    job = cloudpickle.loads(path.read_bytes())
    setup_globals()
    Singleton.set_state(job["singleton_state"])
    task_function = load_task(job["task"])
    HydraConfig.instance().set_config(job["config"])
    result = run_job(hydra_context=job["hydra_context"], config=job["config"],
                     task_function=task_function, job_dir_key="hydra.sweep.dir",
                     job_subdir_key="hydra.sweep.subdir")
    if result.status == JobStatus.FAILED:  # mcl.run records its own errors; other apps' here
        print(f"job failed: {result._return_value!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
