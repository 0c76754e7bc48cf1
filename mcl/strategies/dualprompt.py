"""DualPrompt: Complementary Prompting for Rehearsal-free Continual Learning (Wang et al.,
ECCV 2022).

A frozen pre-trained ViT with two kinds of prompts attached by prefix tuning (Sec. 4.2: a
prompt is split into a key part and a value part prepended to one layer's attention keys and
values; lengths below): a G(eneral)-prompt shared by all tasks at the first layers, and one
E(xpert)-prompt per task at the next layers, each with a key. Training on task t uses task t's
own E-prompt and pulls its key to the frozen query feature (Sec. 4.3, Eq. 3-4); at test time
the E-prompt whose key best matches the query is used (no task identity). Defaults:
conf/method/dualprompt.yaml, with their sources.

At test time the keys of the tasks trained so far compete (the pool holds one slot per task of
the stream; slots of tasks not reached are untrained).

Lengths follow the official code's convention (google-research/l2p models/prompt.py and
vit.py: a prefix prompt of length L has shape (2, L, heads, head_dim), L key AND L value
vectors): `g_length` L_g and `e_length` L_e are the tokens per key and per value, so a G-prompt
layer gets L_g key and L_g value prefixes (2 L_g vectors stored, the first L_g the keys), and a
layer with both prompts L_g + L_e of each. The PyTorch reproduction in GT-RIPL/CODA-Prompt
(models/zoo.py DualPrompt, `--prompt_param 10 20 6`) counts the TOTAL instead (its 20 is
10 key + 10 value): its set-up is g_length 3, e_length 10 here.

As in the official code: Adam at a constant rate, no warm-up, the configured rate being the rate
for a batch of 256, scaled to the global batch (`lr_reference_batch: 256`; null: lr as it is;
train_continual.py). Departure: prompts are chosen per image, never by the batch-wise vote
(`batchwise_prompt`: True in configs/cifar100_dualprompt.py, False in imr_dualprompt.py), so a
prediction never depends on the rest of its batch. Departure: pixels are normalised by the
backbone's processor; the code feeds [0, 1] pixels (`norm_01=True`): `raw_pixels: true`.
Prompts, the G-prefix and keys start as the official code draws them, U[0, 0.01)
(`prompt_init: official`); `prompt_init: pytorch_port` is the PyTorch port's U(-1, 1), mcl's
only init before the option.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mcl.strategies.base import register
from mcl.strategies.prompt_pool import (
    VisionPromptStrategy,
    check_prompt_init,
    constant_adam,
    cosine_similarity_matrix,
    prefixes_from,
    prompt_parameter,
    pull_loss,
    select_top_k,
)


class DualPrompts(nn.Module):
    """G-prompts (one per G layer), E-prompts (pool x E layers) and the E-prompts' keys."""

    def __init__(self, g_layers: int, g_length: int, pool: int, e_layers: int, e_length: int,
                 hidden: int, key_dim: int, init: str) -> None:
        super().__init__()
        self.g = prompt_parameter(init, g_layers, 2 * g_length, hidden)
        self.e = prompt_parameter(init, pool, e_layers, 2 * e_length, hidden)
        self.keys = prompt_parameter(init, pool, key_dim)


@register("dualprompt")
class DualPrompt(VisionPromptStrategy):
    """G-prompt + task-keyed E-prompts, prefix-tuned into the frozen encoder."""

    def __init__(self, *, pool_size: int, g_length: int, g_layers: Sequence[int],
                 e_length: int, e_layers: Sequence[int], pull_coeff: float,
                 lr_reference_batch: int | None, prompt_init: str, **kwargs) -> None:
        super().__init__(**kwargs)
        check_prompt_init(prompt_init)
        self.prompt_init = prompt_init
        if lr_reference_batch is not None and lr_reference_batch <= 0:
            raise ValueError("method.lr_reference_batch must be a positive batch size or null, "
                             f"got {lr_reference_batch}")
        self.lr_reference_batch = lr_reference_batch
        if pool_size <= 0 or g_length <= 0 or e_length <= 0:
            raise ValueError(f"method.pool_size, g_length and e_length must be positive, got "
                             f"{pool_size}, {g_length}, {e_length}")
        self.pool_size, self.g_length, self.e_length = pool_size, g_length, e_length
        self.g_layers, self.e_layers = list(g_layers), list(e_layers)
        self.pull_coeff = pull_coeff
        self.task_index = 0  # the task being trained (its E-prompt is used in training)
        self.seen = 0  # tasks trained so far: their keys are the candidates at test time

    def build(self, backbone) -> DualPrompts:
        bad = [i for i in self.g_layers + self.e_layers if not 0 <= i < backbone.num_layers]
        if bad:
            raise ValueError(f"method dualprompt: prompt layers {bad} do not exist in "
                             f"{backbone.name!r} (layers 0..{backbone.num_layers - 1}); set "
                             "method.g_layers / method.e_layers")
        return DualPrompts(len(self.g_layers), self.g_length, self.pool_size,
                           len(self.e_layers), self.e_length, backbone.hidden_size,
                           backbone.feature_dim, self.prompt_init)

    def before_task(self, task, index: int) -> None:
        if index >= self.pool_size:
            raise ValueError(f"DualPrompt keeps one E-prompt per task, and the pool has "
                             f"{self.pool_size}: task {index + 1} ({task.name}) has none. Set "
                             "method.pool_size to the number of tasks of the stream")
        self.task_index = index

    def after_task(self, task, index: int) -> None:
        self.seen = index + 1

    def prompted_features(self, pixel_values: torch.Tensor, query: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        pool, b = self.prompts, len(query)
        if self.backbone.training:  # the task's own E-prompt; pull its key to the query
            index = torch.full((b,), self.task_index, device=query.device)
            chosen = cosine_similarity_matrix(query, pool.keys[self.task_index:
                                                               self.task_index + 1])
        else:  # the best-matching key among the tasks trained so far
            candidates = pool.keys[:max(self.seen, 1)]
            index, chosen = select_top_k(query, candidates, 1)
            index = index[:, 0]
        layers = self.g_layers + self.e_layers
        prompts = [pool.g[j].expand(b, -1, -1) for j in range(len(self.g_layers))]
        prompts += [pool.e[index, j] for j in range(len(self.e_layers))]
        features = self.backbone.encode_image(pixel_values,
                                              prefixes=prefixes_from(layers, prompts))
        return features, self.pull_coeff * pull_loss(chosen)

    def configure_optimizer(self, params: list[nn.Parameter], total_steps: int):
        """Adam, constant rate lr * batch_size / lr_reference_batch (`constant_adam`)."""
        return constant_adam(self, params, self.lr_reference_batch)

    def extra_state(self) -> dict:
        return {"task_index": self.task_index, "seen": self.seen}

    def load_extra_state(self, state: dict) -> None:
        self.task_index, self.seen = state["task_index"], state["seen"]
