"""ModalPrompt: per-task prompts selected by image and instruction similarity to per-task
prototype features, on a frozen MLLM.

Zeng et al. 2024, "ModalPrompt: Dual-Modality Guided Prompt for Continual Learning of Large
Multimodal Models" (arXiv 2410.05849); read for what it computes: the official code,
AuroraZengfh/ModalPrompt (llava/model/llava_arch.py `prepare_inputs_labels_for_multimodal`,
llava/model/language_model/ModalPrompt.py, llava/train/llava_trainer.py, scripts/ModalPrompt/).

- Each task t owns `prompt_length` = 10 prompt tokens P_t (new rows of the token table, each
  initialised as a copy of a random vocabulary row) and a prompt transform g_t (Linear H->H, SiLU,
  Linear H->D). Its prototype is p_t = g_t(mean of P_t's embeddings).
- Dual-modality guidance: coef[b, i] = lam cos(f_img[b], p_i) + (1 - lam) cos(f_txt[b], p_i),
  lam = 0.5, from the sample's image and instruction features.
- Training task t (transfer_num = 3): while t < transfer - 1 every prompt so far is used,
  [P_0, ..., P_t]; afterwards the transfer - 1 earlier tasks of highest coef (among tasks < t),
  least similar first, then P_t ("always select cur prompts and put it at the nearest position").
  Only P_t and g_t train (the other rows and transforms are frozen); the loss adds to the answer
  loss (1 - mean_b cos(f_img, p_t)) + (1 - mean_b cos(f_txt, p_t)).
- Inference: the min(T, transfer) tasks of highest coef among the T trained, least similar
  first. The prompts go right after the first token (BOS in LLaVA-1.5's template).

Departures: by default (`clip_encoder: null`) the image and instruction features are the frozen
LM input embeddings pooled over the image-feature and instruction positions
(`mcl.strategies.guide_features`), not CLIP ViT-L/14-336's image embedding and text-tower
output, which the backbone interface does not expose, and the prototype has the LM's width (D =
H) instead of CLIP's 768; `clip_encoder=<local CLIP directory>` uses the paper's CLIP features.
The prompts are the strategy's parameters put into the input embeddings (`Capability.EMBEDS`)
rather than new rows of the tokenizer and token table (the same values, without changing the
backbone's vocabulary). The learning rate is constant where the scripts warm up 3% and decay by
cosine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcl.backbones.base import IGNORE_INDEX, Capability
from mcl.data.task import Task
from mcl.strategies.base import ContinualStrategy, register
from mcl.strategies.guide_features import make_guide


def guidance(image: torch.Tensor, text: torch.Tensor, prototypes: torch.Tensor,
             image_weight: float) -> torch.Tensor:
    """[B, T]: lam cos(image, p_i) + (1 - lam) cos(text, p_i) for every prototype p_i."""
    protos = F.normalize(prototypes, dim=-1)
    return (image_weight * F.normalize(image, dim=-1) @ protos.T
            + (1 - image_weight) * F.normalize(text, dim=-1) @ protos.T)


def select_tasks(coef: torch.Tensor, task: int, transfer: int, training: bool) -> torch.Tensor:
    """[B, k] task indices whose prompts each sample gets, in input order (llava_arch.py).

    Training task `task`: all tasks 0..task while task < transfer - 1, else the transfer - 1
    earlier tasks of highest coef, least similar first, then `task`. Inference (`coef` over the
    trained tasks): the min(T, transfer) of highest coef, least similar first."""
    batch = coef.shape[0]
    if not training:
        return coef.topk(min(coef.shape[1], transfer), dim=-1).indices.flip(1)
    if transfer == 1 or task < transfer - 1:
        first = 0 if transfer > 1 else task
        return torch.arange(first, task + 1, device=coef.device).expand(batch, -1)
    earlier = coef[:, :task].topk(transfer - 1, dim=-1).indices.flip(1)
    return torch.cat([earlier, earlier.new_full((batch, 1), task)], dim=1)


@register("modal_prompt")
class ModalPrompt(ContinualStrategy):
    """Frozen MLLM + per-task prompts chosen by dual-modality similarity to task prototypes."""

    requires = frozenset({Capability.INPUT_EMBEDDINGS, Capability.EMBEDS,
                          Capability.TOKEN_MASKS})
    families = frozenset({"instruction"})

    def __init__(self, *, prompt_length: int, max_tasks: int, transfer: int,
                 image_weight: float, clip_encoder: str | None, **kwargs) -> None:
        super().__init__(**kwargs)
        if prompt_length <= 0 or max_tasks <= 0 or transfer <= 0:
            raise ValueError("method.prompt_length, method.max_tasks and method.transfer must be "
                             f"positive, got {prompt_length}, {max_tasks}, {transfer}")
        if not 0 <= image_weight <= 1:
            raise ValueError(f"method.image_weight must lie in [0, 1], got {image_weight}")
        if kwargs["weight_decay"] != 0:
            raise ValueError("modal_prompt trains one task's prompt at a time and the optimiser "
                             "sees all of them: a non-zero method.weight_decay would shrink the "
                             "finished tasks' prompts. ModalPrompt's recipe uses 0")
        self.prompt_length, self.max_tasks = prompt_length, max_tasks
        self.transfer, self.image_weight = transfer, image_weight
        self.guide = make_guide(clip_encoder)  # the guiding features (module docstring)
        self.prompts: nn.ParameterList | None = None
        self.transforms: nn.ModuleList | None = None
        self.task = 0  # the task being trained, or the last one trained
        self.trained = 0  # tasks finished

    def setup(self, backbone) -> None:
        super().setup(backbone)
        table = backbone.input_embeddings().weight
        width = table.shape[1]
        image_dim, text_dim = self.guide.dims(backbone)
        if image_dim != text_dim:
            raise ValueError(f"modal_prompt compares image ({image_dim}) and text ({text_dim}) "
                             "features with one prototype per task: method.clip_encoder must "
                             "give both the same width (CLIP ViT-L/14: 768 and 768)")
        # ModalPrompt.py add_prompt_tokens: each prompt row a copy of a random vocabulary row.
        rows = torch.randint(table.shape[0], (self.max_tasks, self.prompt_length))
        self.prompts = nn.ParameterList(nn.Parameter(table[r.to(table.device)].detach().clone())
                                        for r in rows)
        self.transforms = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, image_dim))
            for _ in range(self.max_tasks)).to(device=table.device, dtype=table.dtype)
        for p in self.trainable_parameters():
            p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        # All tasks' prompts and transforms (each is checkpointed); only the running task's get
        # a gradient (earlier ones enter detached), so AdamW leaves the others as they are.
        if self.prompts is None:
            return []
        return [*self.prompts, *self.transforms.parameters()]

    # ------------------------------------------------------------------ prompts

    def prototype(self, task: int) -> torch.Tensor:
        """p_task = g_task(mean of P_task)."""
        return self.transforms[task](self.prompts[task].mean(0))

    def with_prompts(self, batch: dict, training: bool
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                torch.Tensor | None]:
        """Input embeddings with the selected prompts after each row's first token, the extended
        attention mask and labels, and (training) the prototype alignment loss."""
        backbone = self.backbone
        embeds = backbone.embed(batch)
        image, text = self.guide(backbone, batch, embeds)
        count = self.task + 1 if training else self.trained
        with torch.no_grad():  # selection only: the earlier tasks stay frozen
            protos = torch.stack([self.prototype(i) for i in range(count)]).float()
            chosen = select_tasks(guidance(image, text, protos, self.image_weight), self.task,
                                  self.transfer, training)
        prompts = [p if training and i == self.task else p.detach()
                   for i, p in enumerate(self.prompts[:count])]
        selected = torch.stack(prompts)[chosen].flatten(1, 2).to(embeds.dtype)  # B x kL x H
        align = None
        if training:
            own = self.prototype(self.task).float()
            align = ((1 - F.cosine_similarity(image, own[None], dim=-1).mean())
                     + (1 - F.cosine_similarity(text, own[None], dim=-1).mean()))
        attention = batch["attention_mask"]
        n = selected.shape[1]
        ones = attention.new_ones(n)
        rows, masks, labels = [], [], []
        for b, first in enumerate(attention.argmax(dim=1).tolist()):
            s = first + 1  # after the first real token (BOS), as the official code
            rows.append(torch.cat([embeds[b, :s], selected[b], embeds[b, s:]]))
            masks.append(torch.cat([attention[b, :s], ones, attention[b, s:]]))
            if "labels" in batch:
                y = batch["labels"][b]
                labels.append(torch.cat([y[:s], y.new_full((n,), IGNORE_INDEX), y[s:]]))
        return (torch.stack(rows), torch.stack(masks),
                torch.stack(labels) if labels else None, align)

    def forward(self, batch: dict):
        training = self.backbone.training
        if not training and self.trained == 0:
            raise RuntimeError("modal_prompt has no trained task's prompts to select yet")
        embeds, mask, labels, align = self.with_prompts(batch, training)
        outputs = self.backbone.forward_embeds(embeds, mask, labels)
        if align is not None:
            outputs["align"] = align
        return outputs

    def loss(self, batch: dict, outputs) -> torch.Tensor:
        """llava_trainer.py: loss + image_cos_sim_loss + text_cos_sim_loss."""
        return outputs.loss + outputs["align"].to(outputs.loss.dtype)

    def generate(self, batch: dict) -> list[str]:
        if self.trained == 0:  # before any task: the pre-trained model (zero-shot row)
            return self.backbone.generate(batch)
        with torch.no_grad():
            embeds, mask, _, _ = self.with_prompts(batch, training=False)
        return self.backbone.generate_embeds(embeds, mask)

    # ------------------------------------------------------------------ task hooks

    def before_task(self, task: Task, index: int) -> None:
        if index >= self.max_tasks:
            raise ValueError(f"modal_prompt has prompts for {self.max_tasks} tasks "
                             f"(method.max_tasks); task number {index + 1} needs more")
        self.task = index

    def after_task(self, task: Task, index: int) -> None:
        self.trained = index + 1

    def extra_state(self) -> dict:
        return {"task": self.task, "trained": self.trained}

    def load_extra_state(self, state: dict) -> None:
        self.task, self.trained = state["task"], state["trained"]
