"""L2P: Learning to Prompt for Continual Learning (Wang et al., CVPR 2022).

A frozen pre-trained ViT; a pool of M prompts of length L_p, each with a key. The query q(x) is
the frozen model's feature of the image (no prompts); the N prompts whose keys are most similar
to it (cosine) are concatenated and put in front of the image tokens at the input of the first
layer (prompt tuning, Sec. 4.1-4.2), and a surrogate loss pulls the chosen keys to the query
(Eq. 5, weight lambda). Only prompts, keys and the classifier train; no task identity is used
at training or test time. Defaults: conf/method/l2p.yaml, with their sources.

As in the official code (google-research/l2p, configs/cifar100_l2p.py, train_continual.py):
prompt tuning at the input (`use_prefix_tune_for_e_prompt=False`, so a prompt of length L_p is
L_p tokens), Adam at a constant rate with no warm-up, the configured rate being the rate for a
batch of 256, scaled to the global batch (`lr_reference_batch: 256`; null: lr as it is). The
class-incremental training mask (`train_mask=True`) is the backbones' training label space.

Prompts and keys start as the official code draws them, U[0, 0.01) (`prompt_init: official`);
`prompt_init: pytorch_port` is the PyTorch port's U(-1, 1), mcl's only init before the option.

Departures from the official code (each changes results):
- the classifier reads the backbone's pooled CLS feature; the code's `vit_classifier="prompt"`
  averages the outputs at the prompt positions. Not an option yet: the backbone's
  `encode_image` returns the pooled CLS feature only.
- prompts are chosen per image, not by the code's batch-wise majority vote
  (`batchwise_prompt=True`), so a prediction never depends on the rest of its batch.
- pixels are normalised by the backbone's processor; the code feeds [0, 1] pixels
  (`norm_01=True`): `raw_pixels: true`.
"""

from __future__ import annotations

import torch
from torch import nn

from mcl.strategies.base import register
from mcl.strategies.prompt_pool import (
    VisionPromptStrategy,
    check_prompt_init,
    constant_adam,
    prompt_parameter,
    pull_loss,
    select_top_k,
)


class PromptPool(nn.Module):
    """M prompts of L tokens (width H) and their keys in the query space (width D)."""

    def __init__(self, size: int, length: int, hidden: int, key_dim: int, init: str) -> None:
        super().__init__()
        self.prompts = prompt_parameter(init, size, length, hidden)
        self.keys = prompt_parameter(init, size, key_dim)


@register("l2p")
class L2P(VisionPromptStrategy):
    """Instance-wise prompt selection from a shared pool, prompts at the input."""

    def __init__(self, *, pool_size: int, prompt_length: int, top_k: int, pull_coeff: float,
                 lr_reference_batch: int | None, prompt_init: str, **kwargs) -> None:
        super().__init__(**kwargs)
        check_prompt_init(prompt_init)
        self.prompt_init = prompt_init
        if lr_reference_batch is not None and lr_reference_batch <= 0:
            raise ValueError("method.lr_reference_batch must be a positive batch size or null, "
                             f"got {lr_reference_batch}")
        self.lr_reference_batch = lr_reference_batch
        if not 0 < top_k <= pool_size or prompt_length <= 0:
            raise ValueError(f"method.top_k must be in 1..pool_size ({pool_size}) and "
                             f"method.prompt_length positive, got top_k={top_k}, "
                             f"prompt_length={prompt_length}")
        self.pool_size, self.prompt_length, self.top_k = pool_size, prompt_length, top_k
        self.pull_coeff = pull_coeff

    def build(self, backbone) -> PromptPool:
        return PromptPool(self.pool_size, self.prompt_length, backbone.hidden_size,
                          backbone.feature_dim, self.prompt_init)

    def prompted_features(self, pixel_values: torch.Tensor, query: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        index, chosen = select_top_k(query, self.prompts.keys, self.top_k)
        prompts = self.prompts.prompts[index].flatten(1, 2)  # B x (N * L_p) x H
        features = self.backbone.encode_image(pixel_values, prompts=prompts)
        return features, self.pull_coeff * pull_loss(chosen)

    def configure_optimizer(self, params: list[nn.Parameter], total_steps: int):
        """Adam, constant rate lr * batch_size / lr_reference_batch (`constant_adam`)."""
        return constant_adam(self, params, self.lr_reference_batch)
