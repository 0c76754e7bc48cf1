"""Step checkpoints inside a task, so that a killed run loses minutes, not a whole task.

Lightning's ModelCheckpoint writes the running task's latest state (trainable parameters, the
strategy's extra state, optimiser, LR schedule, loop counters, RNG, data position: see
mcl.module.ContinualModule.on_save_checkpoint) to `checkpoints/task_NNN.step.ckpt`, replacing
the previous one atomically. Re-running the command hands it to `trainer.fit(ckpt_path=...)`;
once the task's own checkpoint (task_NNN.pt) and results.json are written, it is deleted.

SIGINT and SIGTERM (`StopOnSignal`, `StopAtStepBoundary`) write that checkpoint at the next step
boundary and stop the run with `Interrupted`; `python -m mcl.run` then says how to resume and
exits with 128 + the signal's number (130, 143).
"""

from __future__ import annotations

import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mcl.io import save_torch

STEP_SUFFIX = ".step.ckpt"


def step_checkpoint_path(run_dir: str | Path, task_index: int) -> Path:
    """Where the running task `task_index` keeps its latest step checkpoint."""
    return Path(run_dir) / "checkpoints" / f"task_{task_index:03d}{STEP_SUFFIX}"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save checkpoints, written through mcl.io (temporary file + rename):
    a kill while saving leaves the previous checkpoint whole, and a disk-full error names the
    file and the fix."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("mcl's checkpoint writer takes no storage_options")
        save_torch(path, checkpoint)


def step_checkpointing(run_dir: str | Path, task_index: int, every_n_steps: int | None,
                       every_minutes: float | None) -> ModelCheckpoint | None:
    """A ModelCheckpoint that keeps only the latest state of task `task_index`, every
    `every_n_steps` optimiser steps if given, else every `every_minutes` minutes of training;
    None when both are unset (no step checkpoints)."""
    if every_n_steps is not None and every_n_steps <= 0:
        raise ValueError("trainer.checkpoint_every_n_steps must be a positive number of steps "
                         f"or null, got {every_n_steps}")
    if every_minutes is not None and every_minutes <= 0:
        raise ValueError("trainer.checkpoint_every_minutes must be positive or null, got "
                         f"{every_minutes}")
    if every_n_steps is None and every_minutes is None:
        return None
    path = step_checkpoint_path(run_dir, task_index)
    return ModelCheckpoint(
        dirpath=path.parent, filename=path.name.removesuffix(".ckpt"),
        every_n_train_steps=every_n_steps,
        train_time_interval=None if every_n_steps else timedelta(minutes=every_minutes),
        save_top_k=1, save_last=False, enable_version_counter=False)  # one file, replaced


def remove_stale(run_dir: str | Path, keep_task: int | None) -> None:
    """Delete step checkpoints of tasks other than `keep_task` (finished, or from a run that is
    started over) and temporary files a killed writer left behind."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return
    for path in folder.glob(f"task_*{STEP_SUFFIX}"):
        if path != step_checkpoint_path(run_dir, keep_task if keep_task is not None else -1):
            path.unlink(missing_ok=True)
    for path in folder.glob(".*.tmp"):
        path.unlink(missing_ok=True)


class Interrupted(Exception):
    """The run stopped on SIGINT / SIGTERM after saving where it was (`saved` says what)."""

    def __init__(self, signum: int, saved: str) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}: {saved}")
        self.signum, self.saved = signum, saved

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class StopOnSignal:
    """While active, SIGINT (Ctrl-C) and SIGTERM (SLURM pre-emption, `kill`) only ask the run to
    stop at the next step boundary (`requested`); a second one acts as usual (kills at once).
    Only the main thread can handle signals: elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        print(f"\n{signal.Signals(signum).name} received: stopping at the next step boundary "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    def install(self) -> None:
        """(Re-)install the handlers, e.g. over the SIGTERM handler Lightning sets in fit."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.SIGNALS:
            if signum != self.signum:  # after a first signal, the second one acts as usual
                current = signal.getsignal(signum)
                if current != self._handle:
                    self._previous.setdefault(signum, current)
                    signal.signal(signum, self._handle)

    def __enter__(self) -> StopOnSignal:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)


class StopAtStepBoundary(Callback):
    """After the optimiser step during which a stop was requested: write the task's step
    checkpoint and raise `Interrupted`, so the re-run continues from exactly this step."""

    def __init__(self, stop: StopOnSignal, run_dir: str | Path, task_index: int) -> None:
        self.stop, self.path = stop, step_checkpoint_path(run_dir, task_index)

    def on_train_start(self, trainer, pl_module) -> None:
        self.stop.install()  # Lightning has put its own SIGTERM handler in place by now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.stop.requested or (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        trainer.save_checkpoint(self.path)
        raise Interrupted(self.stop.signum, f"the step checkpoint of task "
                                            f"{pl_module.task_name!r} at step "
                                            f"{trainer.global_step} is in {self.path}")
