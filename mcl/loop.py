"""The continual loop: for each task, the strategy's hooks, fit, then evaluate every task.

It fills the accuracy matrix R (row 0: the pre-trained backbone's own zero-shot accuracy, the
same for every method; a method whose untrained state answers differently has that row recorded
as `initial`), keeps every cell's per-sample answers (predictions/), checkpoints after every task
and resumes after the last finished one. SIGINT / SIGTERM stop it at the next step boundary with
a step checkpoint (mcl.checkpointing.StopOnSignal). It knows nothing about any one method.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mcl import checkpointing, eval_policy, sharding
from mcl import results as results_io
from mcl.data.label_space import is_classification, label_spaces, training_label_space
from mcl.data.task import EncodedSamples, Stream
from mcl.distributed import GlobalBatches, barrier, is_main
from mcl.engines import VLLMAnswers, use_backend
from mcl.eval_policy import EvalConfig
from mcl.evaluate import cell_score, evaluate_records
from mcl.module import ContinualModule, NonFiniteLossError
from mcl.strategies.base import ContinualStrategy

# One Trainer per task: its start-up banner (GPU available, tips) would repeat for every task.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")  # lightning vs torch 2.13
# The step checkpoints live beside the finished tasks' ones; GlobalBatches resumes mid-epoch
# itself (ContinualModule tells it where), which Lightning cannot see.
warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty")
warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the")


@dataclass
class LoopConfig:
    """How the loop trains and evaluates (the `trainer` config group)."""

    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str | dict = "auto"  # Lightning's by name (ddp, ...), or FSDP options (sharding.py)
    num_nodes: int = 1
    precision: str = "32-true"
    gradient_clip_val: float | None = 1.0
    eval_batch_size: int | None = 128  # None: sized from free GPU memory (mcl.evaluate)
    deterministic: bool = True
    log_every_n_steps: int = 10
    progress_bar: bool = True
    # Step checkpoints inside a task (mcl.checkpointing): every N optimiser steps if set, else
    # every so many minutes of training; both null: none.
    checkpoint_every_n_steps: int | None = None
    checkpoint_every_minutes: float | None = 10.0
    # Batches of similar length (less padding on data of mixed lengths), as HF Trainer's
    # group_by_length; lengths are the samples' prompt + answer characters.
    group_by_length: bool = False
    # Finished tasks' checkpoints (checkpoints/task_NNN.pt) to keep: the last N; null keeps all.
    # Resume needs only the last one, and with finetune on a 7B model each is ~14 GB.
    keep_task_checkpoints: int | None = 1
    extra: dict = field(default_factory=dict)  # any other lightning.Trainer argument


def _eval_device(cfg: LoopConfig) -> torch.device:
    if cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto"
                                             and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def evaluate_stream(generate, strategy: ContinualStrategy, test_items: Sequence[EncodedSamples],
                    cfg: LoopConfig, desc: str, classes: Sequence[list[str]] | None = None,
                    columns: Sequence[bool] | None = None,
                    subsets: Sequence[list[int] | None] | None = None,
                    ) -> tuple[np.ndarray, list[list[dict] | None]]:
    """One row of R: accuracy of `generate` on every task of the stream, trained or not yet
    (only where `columns` is true, NaN elsewhere; on `subsets[j]`'s samples where given: the
    evaluation policy's cells), and every evaluated task's per-sample records (mcl.evaluate;
    None where not evaluated). Classification tasks are scored among `classes[j]`
    (`mcl.data.label_space`). Tasks that share one test set (CORe50's sessions) are evaluated
    once."""
    backbone = strategy.backbone
    strategy.to(_eval_device(cfg))  # the backbone and the modules the strategy owns
    strategy.eval()
    row = np.full(len(test_items), np.nan)
    records: list[list[dict] | None] = []
    done: dict[tuple, list[dict]] = {}
    for j, items in enumerate(tqdm(test_items, desc=desc, unit="task", leave=False,
                                   disable=not cfg.progress_bar)):
        if columns is not None and not columns[j]:
            records.append(None)
            continue
        space = None if classes is None else tuple(classes[j])
        subset = None if subsets is None else subsets[j]
        key = (id(items.samples), space, None if subset is None else tuple(subset))
        if key not in done:
            if space is not None:
                items = items.with_extra({"classes": list(space)})
            done[key] = evaluate_records(generate, backbone, items, cfg.eval_batch_size,
                                         indices=subset)
        records.append(done[key])
        row[j] = cell_score(done[key])
    return row, records


def _own_generate(strategy: ContinualStrategy) -> bool:
    """Whether the method answers otherwise than its backbone (prompts, a router, ...)."""
    return type(strategy).generate is not ContinualStrategy.generate


def fit_task(strategy: ContinualStrategy, items: Sequence[dict], task_name: str, cfg: LoopConfig,
             seed: int, loggers: Sequence, run_dir: Path, task_index: int = 0,
             resume: bool = False, stop: checkpointing.StopOnSignal | None = None
             ) -> ContinualModule:
    """Train the strategy's parameters on one task with a fresh Lightning Trainer, writing step
    checkpoints as `cfg` says; with `resume`, continue from the task's step checkpoint if one
    exists; with `stop`, a signal writes one at the next step boundary and raises
    `checkpointing.Interrupted`. Returns the trained module (its `resumed_from` says from which
    step)."""
    lengths = None
    if cfg.group_by_length:  # text length (items: EncodedSamples): cheap; image tokens are fixed
        lengths = [len(s.prompt) + len(s.answer) for s in items.samples]
    sampler = GlobalBatches(len(items), strategy.batch_size, seed, lengths=lengths)
    loader = DataLoader(items, batch_sampler=sampler, collate_fn=strategy.backbone.collate_train)
    step_checkpoint = checkpointing.step_checkpoint_path(run_dir, task_index)
    saver = checkpointing.step_checkpointing(run_dir, task_index, cfg.checkpoint_every_n_steps,
                                             cfg.checkpoint_every_minutes)
    extra = dict(cfg.extra)
    callbacks = [*extra.pop("callbacks", []), *([saver] if saver else []),
                 *([checkpointing.StopAtStepBoundary(stop, run_dir, task_index)] if stop else [])]
    plugins = [*extra.pop("plugins", []), checkpointing.AtomicCheckpointIO()]
    parallel = (sharding.fsdp_strategy(cfg.strategy, strategy.backbone, cfg.accelerator)
                if isinstance(cfg.strategy, dict) else cfg.strategy)
    trainer = L.Trainer(
        accelerator=cfg.accelerator, devices=cfg.devices, strategy=parallel,
        num_nodes=cfg.num_nodes, use_distributed_sampler=False, precision=cfg.precision,
        max_epochs=strategy.epochs, gradient_clip_val=cfg.gradient_clip_val,
        deterministic=cfg.deterministic, logger=list(loggers) or False,
        log_every_n_steps=cfg.log_every_n_steps, enable_checkpointing=saver is not None,
        callbacks=callbacks, plugins=plugins, enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False, default_root_dir=str(run_dir), **extra)
    strategy.train()
    module = ContinualModule(strategy, task_name, sampler=sampler)
    ckpt_path = step_checkpoint if resume and step_checkpoint.exists() else None
    try:
        trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
    except NonFiniteLossError:
        # The latest step checkpoint may already hold the diverging weights, and it would
        # restore the old learning rate: the re-run starts this task over.
        if is_main():
            step_checkpoint.unlink(missing_ok=True)
        raise
    sharding.unshard(trainer.strategy.model)  # FSDP: full parameters again, for evaluation
    return module


def run_stream(strategy: ContinualStrategy, stream: Stream, run_dir: str | Path,
               cfg: LoopConfig, seed: int, loggers: Sequence = (), resume: bool = True,
               meta: dict | None = None, predictions: str = "all",
               evaluation: EvalConfig | None = None) -> dict:
    """Train `strategy` on `stream` task by task and return the results (also written to
    `run_dir`: results.json, timings.json, matrix.csv, matrix.png, predictions/, checkpoints/).
    `predictions`: which rows' per-sample answers to keep (all, last, none)."""
    with checkpointing.StopOnSignal() as stop:
        return _run_stream(strategy, stream, Path(run_dir), cfg, seed, loggers, resume, meta,
                           predictions, evaluation or EvalConfig(), stop)


def _run_stream(strategy: ContinualStrategy, stream: Stream, run_dir: Path, cfg: LoopConfig,
                seed: int, loggers: Sequence, resume: bool, meta: dict | None, predictions: str,
                evaluation: EvalConfig, stop: checkpointing.StopOnSignal) -> dict:
    if predictions not in ("all", "last", "none"):
        raise ValueError(f"predictions must be all, last or none, got {predictions!r}")
    names = stream.task_names
    backbone = strategy.backbone
    state = results_io.load_progress(run_dir, names) if resume else None
    R = np.full((len(names) + 1, len(names)), np.nan)
    initial = None
    timings: list[dict] = []
    done = 0
    if state is not None:
        done, R, timings = state["completed_tasks"], state["matrix"], state["timings"]
        initial = state["initial"]
        if results_io.is_finished(run_dir):  # finalize wrote matrix.csv last
            return results_io.kept_results(run_dir, names)
        if done:
            last = results_io.checkpoint_path(run_dir, done - 1)
            strategy.load_checkpoint_state(torch.load(last, weights_only=False)["strategy"])
        print(f"resuming {run_dir}: {done} of {len(names)} tasks already finished")
    if is_main():
        checkpointing.remove_stale(run_dir, keep_task=done if resume else None)
    barrier()

    def keep(row: int, records: list[list[dict] | None]) -> None:
        if predictions == "all" or (predictions == "last" and row == len(names)):
            for j, cell in enumerate(records):
                if cell is not None:  # not evaluated under the evaluation policy
                    results_io.save_predictions(run_dir, row, j, cell)

    # Encoded lazily, a batch at a time: a real benchmark's images never sit decoded in memory.
    test_items = [EncodedSamples(backbone, t.test, with_answer=False) for t in stream.tasks]
    # The evaluation policy's cells (eval_policy), recorded in results.json.
    use_backend(strategy, evaluation.backend)
    planned = eval_policy.planned_cells(evaluation, len(names))
    meta = {**(meta or {}), "evaluation": eval_policy.record(evaluation,
                                                             [len(t) for t in test_items])}

    def evaluate_row(row: int, desc: str, generate) -> tuple[np.ndarray, list]:
        subsets = [eval_policy.sample_indices(evaluation, row, j, len(names), len(t))
                   for j, t in enumerate(test_items)]
        answer = VLLMAnswers(backbone) if evaluation.backend == "vllm" else generate
        return evaluate_stream(answer, strategy, test_items, cfg, desc,
                               label_spaces(stream.tasks, trained=row), planned[row], subsets)

    if np.isnan(R[0][planned[0]]).any():
        start = time.perf_counter()
        # Row 0 is the pre-trained backbone's own answers, whatever the method has added: the
        # one zero-shot baseline of every method (ZSCL's tables list one "Zero-shot" row); FWT
        # and Transfer compare against it. A method's untrained additions (prompts, a router)
        # may answer otherwise: that row is kept apart, as `initial`.
        R[0], records = evaluate_row(0, "zero-shot evaluation", backbone.generate)
        if _own_generate(strategy):
            initial, _ = evaluate_row(0, "evaluation of the untrained method",
                                      strategy.generate)
        timings.append({"task": "zero-shot", "train_s": 0.0,
                        "eval_s": time.perf_counter() - start})
        if is_main():
            keep(0, records)
            results_io.save_progress(run_dir, names, R, 0, timings, meta, initial)

    for i in range(done, len(names)):
        if stop.requested:
            raise checkpointing.Interrupted(stop.signum, f"{i} of {len(names)} tasks are "
                                                         "finished and saved")
        task = stream.tasks[i]
        L.seed_everything(seed + i, workers=True, verbose=False)
        start = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        strategy.before_task(task, i)
        if strategy.trains:
            samples = strategy.train_samples(stream.tasks[: i + 1])
            # A classification set trains among the classes of all its samples (not per batch).
            extra = ({"classes": training_label_space(samples)}
                     if is_classification(stream.tasks) else None)
            items = EncodedSamples(backbone, samples, with_answer=True, extra=extra)
            fit_task(strategy, items, task.name, cfg, seed + i, loggers, run_dir,
                     task_index=i, resume=resume, stop=stop)
        strategy.after_task(task, i)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        R[i + 1], records = evaluate_row(i + 1, f"evaluation after {task.name}",
                                         strategy.generate)
        timings.append({"task": task.name, "train_s": train_s,
                        "eval_s": time.perf_counter() - start})
        if torch.cuda.is_available():  # training and evaluation of this task, this process
            timings[-1]["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if is_main():  # every rank holds the same state; one writes it
            # Checkpoint first, then declare the task finished: a kill in between re-runs it.
            start = time.perf_counter()
            results_io.save_checkpoint(run_dir, i, {"strategy": strategy.checkpoint_state(),
                                                    "task": task.name},
                                       keep=cfg.keep_task_checkpoints)
            timings[-1] |= {"checkpoint_s": time.perf_counter() - start, "checkpoint_bytes":
                            results_io.checkpoint_path(run_dir, i).stat().st_size}
            keep(i + 1, records)
            results_io.save_progress(run_dir, names, R, i + 1, timings, meta, initial)
            checkpointing.step_checkpoint_path(run_dir, i).unlink(missing_ok=True)
            for logger in loggers:
                logger.log_metrics({f"acc/{n}": float(R[i + 1, j]) for j, n in enumerate(names)}
                                   | {"acc/seen_mean": float(np.mean(R[i + 1, : i + 1]))},
                                   step=i + 1)
            print(f"[{i + 1}/{len(names)}] {task.name}: " +
                  " ".join(f"{n}={100 * R[i + 1, j]:.1f}%" for j, n in enumerate(names)))
        barrier()
    if not is_main():
        return {"tasks": names, "completed_tasks": len(names), "matrix": R.tolist()}
    if predictions == "last":
        results_io.drop_predictions(run_dir, keep_rows={len(names)})
    elif predictions == "none":
        results_io.drop_predictions(run_dir, keep_rows=set())
    return results_io.finalize(run_dir, names, R, timings, meta, initial)
