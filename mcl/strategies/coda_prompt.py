"""CODA-Prompt: COntinual Decomposed Attention-based Prompting for Rehearsal-Free Continual
Learning (Smith et al., CVPR 2023).

A frozen pre-trained ViT; at each prompted layer a set of M prompt components P_m (length L_p),
each with a key K_m and an attention vector A_m (Sec. 4). The prompt of an image is the weighted
sum p = sum_m alpha_m P_m with alpha_m = cos(q(x) * A_m, K_m) (Eq. 3-5), q(x) the frozen
model's feature; it is attached by prefix tuning (half keys, half values). The components are
split evenly over the tasks: task t trains only its own M / T components, the earlier ones are
used but frozen, the later ones unused (Sec. 4.2). A new task's components, keys and attention
vectors start orthonormal to the frozen ones (Gram-Schmidt, the authors' updated code
GT-RIPL/CODA-Prompt models/zoo.py `process_task_count`), and an optional penalty
mu * ||B B^T - I||^2 keeps them so (Eq. 6). Training is end-to-end with the classification loss,
no pull loss. Defaults: conf/method/coda_prompt.yaml, with their sources.

As in the authors' code: Adam (betas 0.9, 0.999: `momentum: 0.9`), the learning-rate schedule
of utils/schedulers.py `CosineSchedule` as learners/default.py steps it (`lr_schedule:
coda_cosine`): once per epoch, skipped before the second epoch, so with K epochs epoch e runs at
lr * cos(99 pi max(e - 1, 0) / (200 (K - 1))) and the last at cos(99 pi (K - 2) / (200 (K - 1)))
(0.047 at K = 50). `step_cosine` is a per-step cosine to 0 instead.

Departures from the authors' code:
- Gram-Schmidt (`gram_schmidt`): by default the new rows are orthogonal to the span of the old
  rows, exactly, also once training has made the old rows non-orthogonal (the paper's intent,
  Sec. 4.2). The code projects a random vector onto each old row separately, which is exact only
  for orthogonal old rows, so its new rows keep |cos| up to ~0.15 with trained old ones:
  `gram_schmidt: official`. Changes results slightly.
- With K = 1 epoch the code's schedule divides by K - 1 = 0; here one epoch runs at lr.
- pixels are normalised by the backbone's processor; the code feeds [0, 1] pixels
  (dataloaders/utils.py: mean 0, std 1): `raw_pixels: true`.
- Gradient clipping: the code clips nothing (learners/prompt.py update_model); mcl's loop clips
  the gradient norm at trainer.gradient_clip_val (1.0 by default): `trainer.gradient_clip_val=
  null` is the official behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mcl.strategies.base import cosine_schedule, epoch_schedule, register
from mcl.strategies.prompt_pool import (
    VisionPromptStrategy,
    assemble,
    coda_weights,
    official_gram_schmidt,
    ortho_penalty,
    orthonormal_extension,
    prefixes_from,
    uniform_parameter,
)

GRAM_SCHMIDT = {"exact": orthonormal_extension, "official": official_gram_schmidt}
LR_SCHEDULES = ("coda_cosine", "step_cosine")


def coda_cosine(epochs: int):
    """The factor of lr in epoch e (0-based) under CODA-Prompt's CosineSchedule(K=epochs) as
    learners/default.py steps it: `step()` before every epoch but the first, on a scheduler whose
    constructor leaves last_epoch at -1, so epochs 0 and 1 both run at cos(0) = 1."""
    span = 200 * max(epochs - 1, 1)
    return lambda epoch: math.cos(99 * math.pi * max(epoch - 1, 0) / span)


class Components(nn.Module):
    """Per prompted layer: M components (L x H), their keys and attention vectors (D)."""

    def __init__(self, layers: int, size: int, length: int, hidden: int, key_dim: int) -> None:
        super().__init__()
        self.components = uniform_parameter(layers, size, length, hidden)
        self.keys = uniform_parameter(layers, size, key_dim)
        self.attention = uniform_parameter(layers, size, key_dim)


@register("coda_prompt")
class CodaPrompt(VisionPromptStrategy):
    """Attention-weighted sums of task-allocated prompt components."""

    def __init__(self, *, pool_size: int, prompt_length: int, layers: Sequence[int],
                 num_tasks: int, ortho_coeff: float, gram_schmidt: str, lr_schedule: str,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if gram_schmidt not in GRAM_SCHMIDT:
            raise ValueError(f"method.gram_schmidt must be one of {sorted(GRAM_SCHMIDT)} (exact: "
                             "orthogonal to the old rows' span; official: the authors' "
                             f"row-by-row projection), got {gram_schmidt!r}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"method.lr_schedule must be one of {LR_SCHEDULES} (coda_cosine: "
                             f"the authors' per-epoch schedule), got {lr_schedule!r}")
        self.gram_schmidt, self.lr_schedule = gram_schmidt, lr_schedule
        if num_tasks <= 0 or pool_size < num_tasks:
            raise ValueError(f"method.pool_size ({pool_size}) must be at least method.num_tasks "
                             f"({num_tasks}), which must be positive: each task gets "
                             "pool_size // num_tasks components")
        if prompt_length <= 0 or prompt_length % 2:
            raise ValueError(f"method.prompt_length must be even (half keys, half values), got "
                             f"{prompt_length}")
        self.pool_size, self.prompt_length = pool_size, prompt_length
        self.layers, self.num_tasks = list(layers), num_tasks
        self.per_task = pool_size // num_tasks
        self.ortho_coeff = ortho_coeff
        self.task_index = -1  # the last task begun; -1: none (no components in use)

    def build(self, backbone) -> Components:
        bad = [i for i in self.layers if not 0 <= i < backbone.num_layers]
        if bad:
            raise ValueError(f"method coda_prompt: prompt layers {bad} do not exist in "
                             f"{backbone.name!r} (layers 0..{backbone.num_layers - 1}); set "
                             "method.layers")
        if self.pool_size > backbone.feature_dim:
            raise ValueError(f"method coda_prompt: {self.pool_size} orthogonal keys do not fit "
                             f"in the {backbone.feature_dim}-dimensional query space of "
                             f"{backbone.name!r}; lower method.pool_size")
        return Components(len(self.layers), self.pool_size, self.prompt_length,
                          backbone.hidden_size, backbone.feature_dim)

    def before_task(self, task, index: int) -> None:
        if index >= self.num_tasks:
            raise ValueError(f"CODA-Prompt splits its {self.pool_size} components over "
                             f"method.num_tasks={self.num_tasks} tasks; task {index + 1} "
                             f"({task.name}) has none left. Set method.num_tasks to the number "
                             "of tasks of the stream")
        self.task_index = index
        start, stop = index * self.per_task, (index + 1) * self.per_task
        c = self.prompts
        with torch.no_grad():
            for values in (c.components, c.keys, c.attention):
                for layer in values:  # layer: M x ... ; Gram-Schmidt on flattened rows
                    flat = layer.reshape(len(layer), -1)
                    new = GRAM_SCHMIDT[self.gram_schmidt](flat[:start].detach().cpu(),
                                                          self.per_task)
                    layer[start:stop] = new.reshape(-1, *layer.shape[1:]).to(layer)

    def active(self, values: torch.Tensor) -> torch.Tensor:
        """The components in use: up to the current task's; earlier ones frozen in training."""
        start, stop = self.task_index * self.per_task, (self.task_index + 1) * self.per_task
        if self.backbone.training:
            return torch.cat([values[:start].detach(), values[start:stop]])
        return values[:stop]

    def prompted_features(self, pixel_values: torch.Tensor, query: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor | float]:
        c = self.prompts
        if self.task_index < 0:  # before the first task nothing is allocated: the plain model
            return self.backbone.encode_image(pixel_values), 0.0
        prompts, penalty = [], 0.0
        for j in range(len(self.layers)):
            keys, attention = self.active(c.keys[j]), self.active(c.attention[j])
            components = self.active(c.components[j])
            weights = coda_weights(query.to(keys.dtype), attention, keys)
            prompts.append(assemble(weights, components))
            if self.backbone.training and self.ortho_coeff > 0:
                penalty = penalty + self.ortho_coeff * (
                    ortho_penalty(keys) + ortho_penalty(attention)
                    + ortho_penalty(components.flatten(1)))
        features = self.backbone.encode_image(pixel_values,
                                              prefixes=prefixes_from(self.layers, prompts))
        return features, penalty

    def configure_optimizer(self, params: list[nn.Parameter], total_steps: int):
        """Adam (configs/*_prompt.yaml `optimizer: Adam`, momentum 0.9 = beta1) under
        `lr_schedule` (`schedule_type: cosine` = coda_cosine, see the module docstring)."""
        optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "step_cosine":
            return optimizer, cosine_schedule(optimizer, total_steps)
        return optimizer, epoch_schedule(optimizer, total_steps, self.epochs,
                                         coda_cosine(self.epochs))

    def extra_state(self) -> dict:
        return {"task_index": self.task_index}

    def load_extra_state(self, state: dict) -> None:
        self.task_index = state["task_index"]
