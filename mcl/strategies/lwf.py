"""LwF: Learning without Forgetting (Li & Hoiem 2016, ECCV / TPAMI 2017; Mammoth models/lwf.py).

While a task trains, the model as it was before the task (the teacher) sees the same inputs, and
the trained model is pulled towards the teacher's output distributions at temperature T:

    L = L_task + weight * KL(softmax(z_teacher / T) || softmax(z / T))

- instruction backbones: z are the language model's next-token logits at the answer positions
  (the tokens the task loss is computed on), the KL averaged over those tokens;
- classification backbones: z are the logits of the classes of earlier tasks (LwF's "old task
  outputs"; Mammoth: `outputs[:, :n_past_classes]`) on the new task's images, the KL averaged
  over the batch; the task loss is the cross-entropy among the batch's classes, as every method
  in mcl trains.

The paper (and Mammoth's `modified_kl_div`) write the term as the cross-entropy
-sum y'_teacher log y'_student, which is the KL plus the teacher's entropy, a constant: the same
gradients, and zero exactly when the model has not moved. Defaults: T = 2 and weight
lambda_o = 1 (Li & Hoiem, Sec. 3; Mammoth's default weight is 0.5). Li & Hoiem first warm up the
new head alone; here the head (where one exists) trains with the rest from the start.

The teacher is the same network with the trained parameters' values from before the task swapped
in for its forward pass (no second copy of the frozen weights; a copy of the trained values,
which for `base: finetune` is a copy of those parts). What is trained is `method.base`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from mcl.backbones.base import IGNORE_INDEX, BackboneSpec, Capability
from mcl.backbones.classification import ClassifierOutput
from mcl.data.label_space import training_label_space
from mcl.data.task import Task
from mcl.strategies.base import register
from mcl.strategies.sequential import OnLoraOrFinetune


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float
                 ) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) of rows [N, C], averaged over rows."""
    if not len(student):
        return student.new_zeros(())
    log_p = F.log_softmax(student.float() / temperature, dim=-1)
    log_q = F.log_softmax(teacher.float() / temperature, dim=-1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")


def answer_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The next-token logits [N, V] that predict the answer tokens (labels shifted by one)."""
    if logits.shape[1] != labels.shape[1]:
        raise ValueError(f"lwf: the backbone's logits cover {logits.shape[1]} positions but its "
                         f"labels {labels.shape[1]}; it must return one logit row per position")
    return logits[:, :-1][labels[:, 1:] != IGNORE_INDEX]


@register("lwf")
class Lwf(OnLoraOrFinetune):
    """Sequential LoRA or fine-tuning, distilled towards the model before the task."""

    # The teacher swaps the trained parameters' values in and out around its forward pass, which
    # needs them whole: not for FSDP.
    shardable = False

    def __init__(self, *, weight: float, temperature: float, **kwargs) -> None:
        super().__init__(**kwargs)
        if weight < 0 or temperature <= 0:
            raise ValueError(f"method.weight must be >= 0 and method.temperature positive, got "
                             f"{weight} and {temperature}")
        self.weight, self.temperature = weight, temperature
        self.old_classes: list[str] = []  # classification: the classes of earlier tasks
        self._teacher: list[torch.Tensor] | None = None  # trained values before this task
        self._distill: torch.Tensor | None = None  # this step's term, from forward to loss

    def check_backbone(self, backbone) -> None:
        super().check_backbone(backbone)
        spec = backbone if isinstance(backbone, BackboneSpec) else backbone.spec
        if spec.family == "classification" and Capability.VISION_PROMPTS not in spec.capabilities:
            raise ValueError(f"method lwf needs the logits of earlier classes on classification "
                             f"backbones (capability 'vision_prompts'), which {spec.name!r} "
                             "lacks")

    # ------------------------------------------------------------------ task hooks

    def before_task(self, task: Task, index: int) -> None:
        # The teacher is the model as the previous task left it (after a resume: as its
        # checkpoint restored it, so a step checkpoint need not carry it).
        self._teacher = ([p.detach().clone() for p in self.trainable_parameters()]
                         if index > 0 else None)

    def after_task(self, task: Task, index: int) -> None:
        self._teacher = None
        if self.backbone.family == "classification":
            known = set(self.old_classes)
            self.old_classes += [c for c in training_label_space(task.train) if c not in known]

    @contextmanager
    def teacher(self) -> Iterator[None]:
        """The network with the pre-task values of the trained parameters, in eval mode."""
        params = self.trainable_parameters()
        if self._teacher[0].device != params[0].device:  # once, where the training runs
            self._teacher = [t.to(p.device) for t, p in zip(self._teacher, params, strict=True)]
        current = [p.data for p in params]
        was_training = self.backbone.training
        try:
            for p, t in zip(params, self._teacher, strict=True):
                p.data = t
            self.backbone.eval()
            with torch.no_grad():
                yield
        finally:
            for p, c in zip(params, current, strict=True):
                p.data = c
            self.backbone.train(was_training)

    # ------------------------------------------------------------------ step

    def forward(self, batch: dict):
        distilling = self.training and self._teacher is not None
        self._distill = None
        if self.backbone.family == "classification":
            return self._classify(batch, distilling)
        if distilling and "labels" in batch:
            with self.teacher():
                teacher = answer_logits(self.backbone(batch).logits, batch["labels"])
        outputs = self.backbone(batch)
        if distilling and "labels" in batch:
            student = answer_logits(outputs.logits, batch["labels"])
            self._distill = distillation(student, teacher, self.temperature)
        return outputs

    def _classify(self, batch: dict, distilling: bool) -> ClassifierOutput:
        """Cross-entropy among the batch's classes (the backbone's own loss), and the earlier
        classes' logits distilled."""
        backbone, pixels = self.backbone, batch["pixel_values"]
        old = self.old_classes if distilling else []
        if old:
            with self.teacher():
                teacher = backbone.logits(backbone.encode_image(pixels), old)
        features = backbone.encode_image(pixels)
        logits = backbone.logits(features, batch["classes"])
        labels = batch.get("labels")
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        if old:
            self._distill = distillation(backbone.logits(features, old), teacher,
                                         self.temperature)
        return ClassifierOutput(loss, logits)

    def loss(self, batch: dict, outputs) -> torch.Tensor:
        if self._distill is None:
            return outputs.loss
        distill, self._distill = self._distill, None
        return outputs.loss + self.weight * distill

    # ------------------------------------------------------------------ state

    def extra_state(self) -> dict:
        return {"old_classes": list(self.old_classes)}

    def load_extra_state(self, state: dict) -> None:
        self.old_classes = list(state["old_classes"])
