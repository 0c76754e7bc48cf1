"""ZSCL: Preventing Zero-Shot Transfer Degradation in Continual Learning of Vision-Language
Models (Zheng et al., ICCV 2023, arXiv 2303.06628); official code Thunderbeee/ZSCL
(mtil/src/models/finetune.py, helpers.py; recipe mtil/scripts/ZSCL.sh).

Sequential fine-tuning of the whole CLIP with, at every step:
- the task's cross-entropy with label smoothing (ZSCL.sh --ls 0.2);
- feature-space distillation from the initial (zero-shot) CLIP, the frozen teacher, on a batch of
  reference images and the set of reference texts. As the official loop computes it, with
  f = L2-normalised features and s = logit_scale:
      current = s * f_student(ref images) @ f_teacher(ref texts)^T
      teacher = s * f_teacher(ref images) @ f_teacher(ref texts)^T
      image loss = distillation(teacher, current)        (--image_loss)
      text loss  = distillation(teacher^T, current^T)    (--text_loss)
  distillation(t, s) = CE(s / T, softmax(t / T)) * T^2 (helpers.py `distillation`, T = 2).
  Both terms read the teacher's text features: no distillation gradient reaches the student's
  text tower (it learns only from the task loss), which is what the official code does;
- an L2 penalty sum ||theta - theta_task_start||^2 towards the weights the task started from
  (ZSCL.sh --l2 1; helpers.py `l2_loss`);
and weight ensembling (WE, --we --avg_freq 100): every `avg_every` steps (from the first) the
running average we <- (we * n + theta) / (n + 1), started from the task's initial weights
(helpers.py `merge_we`); after the task the averaged weights replace the trained ones.

The reference set (`reference`, a Hydra node) is any callable returning `Sample`s: their images
are the reference images, their answers the reference texts, encoded through the label template
("a photo of a {answer}."). The official run uses ImageNet's training images and Conceptual
Captions sentences (--ref-dataset ImageNet --ref-sentences conceptual_captions); mcl loads
neither, and raw sentences cannot go through the backbone's label-prompt encoder, so the default
is the toy world's pre-training distribution (`toy_pretraining_reference`: images and caption
words drawn like tiny_clip's pre-training pairs, styles clean/outline/noisy), never a stream's
data. Its official counterpart with class names is `--ref-sentences <dataset>` (the template
applied to that data set's class names).

The teacher is a frozen copy of the backbone taken at `setup` (before any task; on resume, from
a freshly loaded backbone: the zero-shot weights again), owned by the strategy.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mcl.data.task import Sample, Task
from mcl.strategies.base import register
from mcl.strategies.finetune import Finetune
from mcl.strategies.wise_ft import warmup_cosine


def distillation(teacher: torch.Tensor, student: torch.Tensor, temperature: float
                 ) -> torch.Tensor:
    """CE(student / T, softmax(teacher / T)) * T^2 averaged over rows (ZSCL helpers.py)."""
    target = F.softmax(teacher / temperature, dim=1)
    return F.cross_entropy(student / temperature, target) * temperature ** 2


def zscl_distillation(student_images: torch.Tensor, teacher_images: torch.Tensor,
                      teacher_texts: torch.Tensor, scale: torch.Tensor, temperature: float,
                      image_loss: bool = True, text_loss: bool = True) -> torch.Tensor:
    """The image and text distillation terms of ZSCL's training loop (features unnormalised)."""
    student_images = F.normalize(student_images, dim=-1)
    teacher_images = F.normalize(teacher_images, dim=-1)
    teacher_texts = F.normalize(teacher_texts, dim=-1)
    current = scale * student_images @ teacher_texts.T
    reference = scale * teacher_images @ teacher_texts.T
    loss = current.new_zeros(())
    if image_loss:
        loss = loss + distillation(reference, current, temperature)
    if text_loss:
        loss = loss + distillation(reference.T, current.T, temperature)
    return loss


def toy_pretraining_reference(size: int, seed: int) -> list[Sample]:
    """`size` image-caption pairs of tiny_clip's pre-training distribution (its own seed, so not
    the pre-training pairs themselves), the caption's words as the answer."""
    from mcl.backbones.tiny_clip import caption_pairs

    prefix, suffix = "a photo of a ", "."
    out = []
    for image, caption in caption_pairs(size, seed):
        assert caption.startswith(prefix) and caption.endswith(suffix), caption
        out.append(Sample(np.asarray(image), "", caption[len(prefix):-len(suffix)]))
    return out


@register("zscl")
class ZSCL(Finetune):
    """Fine-tuning with distillation from the zero-shot CLIP on reference data, L2 to the task's
    start, and weight ensembling within each task."""

    requires = frozenset({"parts", "vision_prompts", "label_prompts"})
    families = frozenset({"classification"})

    def __init__(self, *, reference: dict, reference_batch_size: int, temperature: float,
                 image_loss: bool, text_loss: bool, l2: float, weight_ensemble: bool,
                 avg_every: int, warmup_steps: int, label_smoothing: float, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(reference, DictConfig):
            reference = OmegaConf.to_container(reference, resolve=True)
        if not isinstance(reference, dict) or "_target_" not in reference:
            raise ValueError("method.reference must be a node with _target_ (a callable returning "
                             "the reference Samples: images, and texts as answers), e.g. "
                             "{_target_: mcl.strategies.zscl.toy_pretraining_reference, size: 1024,"
                             f" seed: 1}}; got {reference!r}")
        for name, value in (("reference_batch_size", reference_batch_size),
                            ("avg_every", avg_every), ("temperature", temperature)):
            if value <= 0:
                raise ValueError(f"method.{name} must be positive, got {value}")
        self.reference_cfg = reference
        self.reference_batch_size, self.temperature = reference_batch_size, temperature
        self.image_loss, self.text_loss, self.l2 = image_loss, text_loss, l2
        self.weight_ensemble, self.avg_every = weight_ensemble, avg_every
        self.warmup_steps, self.label_smoothing = warmup_steps, label_smoothing
        self.teacher = None
        self._ref_pixels: torch.Tensor | None = None
        self._ref_texts: list[str] = []
        self._ref_seen = 0  # reference images consumed so far (where the next batch starts)
        self._start: list[torch.Tensor] = []  # the task's initial weights (L2 anchor)
        self._we: list[torch.Tensor] | None = None
        self._we_n = 0
        self._steps = 0

    def setup(self, backbone) -> None:
        super().setup(backbone)
        teacher = copy.deepcopy(backbone)  # the zero-shot CLIP, frozen
        teacher.requires_grad_(False)
        self.teacher = teacher.eval()
        samples = instantiate(self.reference_cfg, _convert_="all")
        if not samples:
            raise ValueError("method.reference gave no samples; ZSCL needs reference images")
        items = backbone.encode(samples, with_answer=False)
        self._ref_pixels = torch.stack([it["pixel_values"] for it in items])
        self._ref_texts = list(dict.fromkeys(s.answer for s in samples))

    def describe(self) -> str:
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = sum(p.numel() for p in self.backbone.parameters())
        return (f"method {self.name}: {trainable:,} trainable parameters of {total:,} "
                f"({100 * trainable / total:.2f}%), plus a frozen zero-shot copy as the teacher; "
                f"{len(self._ref_pixels)} reference images, {len(self._ref_texts)} texts")

    def train(self, mode: bool = True) -> ZSCL:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher never trains (and its text features stay cached)
        return self

    # ------------------------------------------------------------------ task hooks

    def before_task(self, task: Task, index: int) -> None:
        params = self.trainable_parameters()
        self._start = [p.detach().clone() for p in params]
        self._we = [p.detach().clone() for p in params] if self.weight_ensemble else None
        self._we_n = self._steps = 0

    @torch.no_grad()
    def after_task(self, task: Task, index: int) -> None:
        if self._we is not None:
            for p, averaged in zip(self.trainable_parameters(), self._we, strict=True):
                p.copy_(averaged)
        self._we, self._start = None, []

    # ------------------------------------------------------------------ step hooks

    def reference_batch(self, device: torch.device) -> torch.Tensor:
        """The next `reference_batch_size` reference images, cycling through the set in a
        seeded shuffled order per pass (the official iterates a shuffled loader)."""
        n = len(self._ref_pixels)
        rows = []
        while len(rows) < min(self.reference_batch_size, n):
            epoch, at = divmod(self._ref_seen, n)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
            take = min(self.reference_batch_size - len(rows), n - at)
            rows.extend(order[at:at + take].tolist())
            self._ref_seen += take
        return self._ref_pixels[rows].to(device)

    def distillation_loss(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_texts = self.teacher.encode_text(self._ref_texts)
            teacher_images = self.teacher.encode_image(pixel_values)
        student_images = self.backbone.encode_image(pixel_values)
        return zscl_distillation(student_images, teacher_images, teacher_texts,
                                 self.backbone.logit_scale, self.temperature, self.image_loss,
                                 self.text_loss)

    def loss(self, batch: dict, outputs) -> torch.Tensor:
        loss = F.cross_entropy(outputs.logits, batch["labels"],
                               label_smoothing=self.label_smoothing)
        if self.l2 > 0 and self._start:
            loss = loss + self.l2 * sum(F.mse_loss(p, s, reduction="sum") for p, s in
                                        zip(self.trainable_parameters(), self._start,
                                            strict=True))
        if self.image_loss or self.text_loss:
            loss = loss + self.distillation_loss(
                self.reference_batch(batch["pixel_values"].device))
        return loss

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Weight ensembling at steps 0, avg_every, 2 avg_every, ... (helpers.py merge_we)."""
        if self._we is not None and self._steps % self.avg_every == 0:
            self._we_n += 1
            for averaged, p in zip(self._we, self.trainable_parameters(), strict=True):
                averaged.mul_(self._we_n).add_(p.detach()).div_(self._we_n + 1)
        self._steps += 1

    def configure_optimizer(self, params: list[nn.Parameter], total_steps: int):
        """AdamW with a linear warm-up then cosine (ZSCL finetune.py: utils.cosine_lr)."""
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        return optimizer, warmup_cosine(optimizer, self.warmup_steps, total_steps)

    # ------------------------------------------------------------------ state

    def extra_state(self) -> dict:
        """Within a task: the running weight average, its count, the steps and the reference
        position (a resumed task continues them). Between tasks: only the reference position."""
        return {"we": [t.detach().cpu().clone() for t in self._we] if self._we else None,
                "we_n": self._we_n, "steps": self._steps, "ref_seen": self._ref_seen}

    def load_extra_state(self, state: dict) -> None:
        if state["we"] is not None:
            device = self.trainable_parameters()[0].device
            self._we = [t.to(device) for t in state["we"]]
        self._we_n, self._steps = state["we_n"], state["steps"]
        self._ref_seen = state["ref_seen"]
