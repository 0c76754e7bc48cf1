"""The LightningModule that trains one task: it holds the strategy and delegates to it."""

from __future__ import annotations

import lightning as L
import torch

from mcl.distributed import GlobalBatches
from mcl.strategies.base import ContinualStrategy


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class ContinualModule(L.LightningModule):
    """Training step, backward hook and optimiser, all decided by the strategy."""

    def __init__(self, strategy: ContinualStrategy, task_name: str, check_every: int = 10,
                 sampler: GlobalBatches | None = None) -> None:
        super().__init__()
        self.strategy = strategy  # a submodule (backbone and owned modules): Lightning moves it
        self.task_name = task_name
        self.check_every = check_every
        self.sampler = sampler  # told where to continue when a step checkpoint is loaded
        self.batches_done = 0  # batches trained in this task, across epochs
        self.resumed_from: int | None = None  # the step a step checkpoint continued from
        self._rng_to_restore: dict | None = None
        # Names as the module's state_dict has them, taken before any FSDP wrapping.
        self._trainable_keys = {f"strategy.{name}"
                                for name in strategy.named_trainable_parameters()}
        # A step checkpoint holds only what the task changes (below); the frozen rest is
        # rebuilt by the loop from the last finished task's checkpoint.
        self.strict_loading = False

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.batches_done += 1
        outputs = self.strategy.forward(batch)
        loss = self.strategy.loss(batch, outputs)
        self._check_finite(loss, batch_idx)
        self.log(f"train_loss/{self.task_name}", loss, prog_bar=True,
                 batch_size=batch["pixel_values"].shape[0])
        return loss

    def _check_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Stop on a NaN/Inf loss. On a GPU the check waits for the device, so it looks every
        `check_every` steps (and at the first); the last finished task's checkpoint on disk is
        untouched either way, and re-running the command resumes from it."""
        on_cpu = loss.device.type == "cpu"
        if not (on_cpu or batch_idx % self.check_every == 0) or torch.isfinite(loss):
            return
        raise NonFiniteLossError(
            f"the training loss of task {self.task_name!r} became {loss.item()} at step "
            f"{self.global_step}; the run stops and keeps the checkpoint of the last finished "
            f"task. Lower method.lr (now {self.strategy.lr}) or clip gradients "
            "(trainer.gradient_clip_val) and run again: a new setting is a new run, in its own "
            "directory (or here with resume=false).")

    def on_after_backward(self) -> None:
        self.strategy.on_after_backward()

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.strategy.after_optimizer_step()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        model = self.trainer.strategy.model
        if gradient_clip_val and hasattr(model, "clip_grad_norm_"):
            # FSDP: Lightning's FSDP precision cannot clip by norm; FSDP's own clip_grad_norm_
            # takes the norm over all shards, i.e. the same clipping as one process.
            model.clip_grad_norm_(gradient_clip_val)
            return
        fused = any(group.get("fused") for group in optimizer.param_groups)
        if gradient_clip_val and fused:
            if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
                raise ValueError(
                    "trainer.precision=16-mixed scales the loss, and a fused optimiser unscales "
                    "gradients inside its step, after clipping would have to happen: use "
                    "trainer.precision=bf16-mixed, or trainer.gradient_clip_val=null")
            # bf16 / fp32: gradients are unscaled, so clipping them here is exact; Lightning's
            # mixed-precision plugin refuses any fused optimiser without making that distinction.
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val,
                                            gradient_clip_algorithm)

    def configure_optimizers(self):
        optimizer, schedule = self.strategy.configure_optimizer(
            self.strategy.trainable_parameters(), int(self.trainer.estimated_stepping_batches))
        if schedule is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ------------------------------------------------------------------ step checkpoints

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep what a task changes: the trainable parameters (not the frozen backbone, so a
        LoRA step checkpoint of a 7B model is megabytes), the strategy's extra state
        (counters, bases), the data position and the RNG. Lightning adds the optimiser, the LR
        schedule and its loop counters."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if k in self._trainable_keys}
        checkpoint["mcl"] = {"task": self.task_name, "batches_done": self.batches_done,
                             "extra": self.strategy.extra_state(), "rng": _rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("mcl")
        if state is None or state["task"] != self.task_name:
            raise ValueError(f"the step checkpoint is not one of task {self.task_name!r} "
                             f"(it is of {state and state['task']!r}); delete it to start the "
                             "task over")
        # (FSDP has loaded and removed the parameters by now; other strategies load them next.)
        if set(checkpoint.get("state_dict", self._trainable_keys)) != self._trainable_keys:
            raise ValueError(f"the step checkpoint of task {self.task_name!r} holds other "
                             "parameters than this method trains (another method's, or an older "
                             "mcl's from before strategies owned their modules); delete it to "
                             "start the task over")
        self.strategy.load_extra_state(state["extra"])
        self.batches_done = state["batches_done"]
        if self.sampler is not None:
            self.sampler.resume_at(self.batches_done)
        self._rng_to_restore = state["rng"]
        self.resumed_from = int(checkpoint["global_step"])

    def on_train_start(self) -> None:
        if self._rng_to_restore is not None:  # after Lightning's set-up, before the next batch
            _set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        if self.resumed_from is not None and self.trainer.is_global_zero:
            print(f"task {self.task_name}: resuming from the step checkpoint at step "
                  f"{self.resumed_from} ({self.batches_done} batches already trained)")


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
