"""Online EWC: elastic weight consolidation (Kirkpatrick et al. 2017, PNAS, "Overcoming
catastrophic forgetting in neural networks") in its online form (Schwarz et al. 2018, "Progress &
Compress"; Mammoth models/ewc_on.py), on the trained parameters: a LoRA adapter (Prism's ewc,
LAMDA-CL/Prism method/custom/ewc/integration.py) or whole parts (`method.base`).

After each task the diagonal Fisher F_t of the trained parameters is estimated on the task's
training data and folded into one running Fisher, F = gamma * F + F_t (Mammoth's `end_task`),
and the parameters are remembered as the anchor theta*. Every later step adds

    (lambda / 2) * sum_i F_i (theta_i - theta*_i)^2

to the task loss (Prism's `_apply_ewc_grad` adds its gradient lambda F (theta - theta*), the
gradient of this term). The Fisher estimate is Prism's: the squared gradient of the training
loss of a batch, averaged over the first `fisher_batches` batches of `fisher_batch_size` of a
random order of the task's training samples, with dropout off. Kirkpatrick's Fisher is the
per-sample expectation: `fisher_batch_size: 1` gives the per-sample empirical Fisher (Mammoth
weights each sample's squared gradient by its probability of the true label instead).
Prism keeps one Fisher and anchor per task (no decay); the online form with gamma = 1 sums the
Fishers at the latest anchor.
"""

from __future__ import annotations

import torch

from mcl.data.label_space import training_label_space
from mcl.data.task import EncodedSamples, Task
from mcl.strategies.base import register
from mcl.strategies.sequential import OnLoraOrFinetune


@register("ewc")
class Ewc(OnLoraOrFinetune):
    """Sequential LoRA or fine-tuning with the online EWC penalty."""

    # The penalty reads every trained parameter whole at every step, beside its anchor and Fisher
    # (held whole, not sharded), and the Fisher needs whole gradients: not for FSDP.
    shardable = False

    def __init__(self, *, ewc_lambda: float, gamma: float, fisher_batches: int,
                 fisher_batch_size: int | None, **kwargs) -> None:
        super().__init__(**kwargs)
        if ewc_lambda < 0 or not 0 <= gamma <= 1:
            raise ValueError(f"method.ewc_lambda must be >= 0 and method.gamma in [0, 1], got "
                             f"{ewc_lambda} and {gamma}")
        if fisher_batches <= 0 or (fisher_batch_size is not None and fisher_batch_size <= 0):
            raise ValueError("method.fisher_batches and method.fisher_batch_size must be "
                             f"positive, got {fisher_batches} and {fisher_batch_size}")
        self.ewc_lambda, self.gamma = ewc_lambda, gamma
        self.fisher_batches, self.fisher_batch_size = fisher_batches, fisher_batch_size
        self.fisher: list[torch.Tensor] | None = None  # per trained parameter, like it
        self.anchor: list[torch.Tensor] | None = None

    def penalty(self) -> torch.Tensor:
        """(lambda / 2) * sum F (theta - theta*)^2 over the trained parameters (0 before any
        task has finished)."""
        params = self.trainable_parameters()
        total = params[0].new_zeros((), dtype=torch.float32)
        if self.fisher is None:
            return total
        if self.fisher[0].device != params[0].device:  # once, where the training runs
            self.fisher = [f.to(params[0].device) for f in self.fisher]
            self.anchor = [a.to(params[0].device) for a in self.anchor]
        for p, f, a in zip(params, self.fisher, self.anchor, strict=True):
            total = total + (f * (p.float() - a).pow(2)).sum()
        return self.ewc_lambda / 2 * total

    def loss(self, batch: dict, outputs) -> torch.Tensor:
        return outputs.loss + self.penalty()

    def after_task(self, task: Task, index: int) -> None:
        new = self.estimate_fisher(task)
        if self.fisher is None:
            self.fisher = new
        else:
            self.fisher = [self.gamma * f + n for f, n in zip(self.fisher, new, strict=True)]
        self.anchor = [p.detach().float().clone() for p in self.trainable_parameters()]

    def estimate_fisher(self, task: Task) -> list[torch.Tensor]:
        """Mean over batches of the squared gradient of the batch's training loss."""
        params, backbone = self.trainable_parameters(), self.backbone
        device = torch.device("cuda") if torch.cuda.is_available() else params[0].device
        self.to(device)  # the trainer hands the model back on the CPU after a task's fit
        size = self.fisher_batch_size or self.batch_size
        generator = torch.Generator().manual_seed(torch.initial_seed())  # the task's seed
        order = torch.randperm(len(task.train), generator=generator)
        order = order[: self.fisher_batches * size].tolist()
        # A classification task trains among all its classes, as the loop trains it.
        extra = ({"classes": training_label_space(task.train)}
                 if backbone.family == "classification" else None)
        items = EncodedSamples(backbone, task.train, with_answer=True, extra=extra)
        fisher = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        was_training = self.training
        self.eval()  # no dropout: the Fisher of the model as it predicts
        batches = 0
        with torch.enable_grad():
            for start in range(0, len(order), size):
                batch = backbone.collate_train([items[i] for i in order[start:start + size]])
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                grads = torch.autograd.grad(self.forward(batch).loss, params, allow_unused=True)
                for f, g in zip(fisher, grads, strict=True):
                    if g is not None:
                        f += g.float().pow(2)
                batches += 1
        self.train(was_training)
        return [f / max(batches, 1) for f in fisher]

    def extra_state(self) -> dict:
        if self.fisher is None:
            return {"fisher": None, "anchor": None}
        return {"fisher": [f.cpu() for f in self.fisher],
                "anchor": [a.cpu() for a in self.anchor]}

    def load_extra_state(self, state: dict) -> None:
        if state["fisher"] is None:
            self.fisher = self.anchor = None
            return
        params = self.trainable_parameters()
        self.fisher = [f.to(p.device) for f, p in zip(state["fisher"], params, strict=True)]
        self.anchor = [a.to(p.device) for a, p in zip(state["anchor"], params, strict=True)]
