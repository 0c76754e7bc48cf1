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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mcl.strategies.base import cosine_schedule, register
from mcl.strategies.prompt_pool import (
    VisionPromptStrategy,
    assemble,
    coda_weights,
    ortho_penalty,
    orthonormal_extension,
    prefixes_from,
    uniform_parameter,
)


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

    # Constructor defaults fit any backbone of >= 2 layers and query width >= 10 (the strategy
    # contract builds every method with them on micro models); the paper's (100 components at
    # layers 0-4) are in conf/method/coda_prompt.yaml, which every run composes.
    def __init__(self, *, pool_size: int, prompt_length: int, layers: Sequence[int],
                 num_tasks: int, ortho_coeff: float, **kwargs) -> None:
        super().__init__(**kwargs)
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
                    new = orthonormal_extension(flat[:start].detach().cpu(), self.per_task)
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
        """Adam with a cosine decay of the learning rate over the task (the official configs:
        `optimizer: Adam`, `schedule_type: cosine`)."""
        optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return optimizer, cosine_schedule(optimizer, total_steps)

    def extra_state(self) -> dict:
        return {"task_index": self.task_index}

    def load_extra_state(self, state: dict) -> None:
        self.task_index = state["task_index"]
