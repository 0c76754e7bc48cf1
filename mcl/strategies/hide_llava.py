"""HiDe-LLaVA: task-specific LoRA experts in the top decoder layer, routed by feature
similarity to per-task prototypes, and task-general fusion of the LoRAs in every other layer.

Guo et al. 2025, "HiDe-LLaVA: Hierarchical Decoupling for Continual Instruction Tuning of
Multimodal Large Language Model" (arXiv 2503.12941); read for what it computes: the official
code, Ghy0501/HiDe-LLaVA (also MCITlib's HiDe, the same files): HiDe/peft/tuners/clitmoelora.py
(the layers), llava/model/llava_arch.py (anchors and routing), scripts/HiDe/Train_*/TaskN.sh.

- Every linear layer of the language model gets one LoRA expert per task (A_t, B_t of rank
  lora_r / expert_num = 8; scale lora_alpha / lora_r = 2). Training task t uses only expert t, in
  every layer (HiDeMOELinearA/B.forward with training=True: loraA[cur_task]); the earlier experts
  are loaded and frozen, and take no part in the forward pass.
- Task-general fusion (every layer but the top one, `layer != 31`): at inference the experts of
  tasks 0..t are merged with weight 1: h = W x + s (sum_i B_i)(sum_i A_i) x, the product of the
  summed matrices (`fused_weight += merge_weight * loraA[i].weight`, merge_weight = 1.0), not
  the sum of the products.
- Task-specific expansion (the top decoder layer): h = W x + s sum_i w_i B_i A_i x with
  w = softmax(sim / 0.1) and sim_i = (cos(f_img, a_img_i) + cos(f_txt, a_txt_i)) / 2, the
  cosines between the sample's image and instruction features and task i's image and text
  anchors (prototypes). An anchor is the mean of its task's training features (the code keeps a
  running mean over the training forward passes).

Departures: by default (`clip_encoder: null`) the features are the frozen LM input embeddings
pooled over the image-feature and instruction positions (`mcl.strategies.guide_features`)
instead of CLIP ViT-L/14-336's image and text embeddings, which the backbone interface does not
expose; `clip_encoder=<local CLIP directory>` uses the paper's CLIP features; the anchors are
computed in one pass over the task's training samples after it (the official running mean over
the forward passes equals it when every epoch sees each sample once); routing covers the tasks
trained so far (the code's softmax also covers the `expert_num - t - 1` untrained experts with
random anchors, whose B = 0 adds nothing but takes a share of the weights); the eval batch may
hold several samples, each routed by its own features (the code evaluates one at a time); the
projector stays frozen (LLaVA's LoRA recipe trains it at 2e-5, mcl's LoRA methods leave it), and
the learning rate is constant (mcl's LoRA default; the scripts warm up 3% and decay by cosine).

`fusion`: "product_of_sums" (the default, the official code) or "sum_of_products",
h = W x + s sum_i B_i A_i x, which drops the cross terms B_i A_j (i != j). The option exists for
the ablation behind the toy table (experiments/results/compare_toy_h200.md): it separates what the
cross terms cost from the rest of the gap between training (one expert) and inference (all).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from mcl.backbones.base import Capability
from mcl.data.task import EncodedSamples, Task
from mcl.strategies.base import PartsStrategy, register
from mcl.strategies.guide_features import make_guide

FUSIONS = ("product_of_sums", "sum_of_products")  # the official, and the ablation


def routing_weights(image: torch.Tensor, text: torch.Tensor, image_anchors: torch.Tensor,
                    text_anchors: torch.Tensor, temperature: float) -> torch.Tensor:
    """[B, T] softmax over tasks of the mean of the image and text cosines to each task's
    anchors, divided by `temperature` (llava_arch.py: softmax(((img + txt) / 2) / 0.1))."""
    image_sim = F.normalize(image, dim=-1) @ F.normalize(image_anchors, dim=-1).T
    text_sim = F.normalize(text, dim=-1) @ F.normalize(text_anchors, dim=-1).T
    return torch.softmax((image_sim + text_sim) / 2 / temperature, dim=-1)


class TaskExperts(nn.Module):
    """One LoRA expert (A_t: r x in, B_t: out x r) per task for one linear layer."""

    def __init__(self, in_features: int, out_features: int, r: int, tasks: int,
                 like: torch.Tensor) -> None:
        super().__init__()
        # clitmoelora.py reset_lora_parameters: A ~ N(0, 0.01^2), B = 0.
        self.lora_A = nn.ParameterList(nn.Parameter(like.new_empty(r, in_features).normal_(0, 0.01))
                                       for _ in range(tasks))
        self.lora_B = nn.ParameterList(nn.Parameter(like.new_zeros(out_features, r))
                                       for _ in range(tasks))

    def expert(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return x @ self.lora_A[task].T @ self.lora_B[task].T

    def fused(self, tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum_i A_i, sum_i B_i) over the first `tasks` experts."""
        return (torch.stack(list(self.lora_A[:tasks])).sum(0),
                torch.stack(list(self.lora_B[:tasks])).sum(0))

    def routed(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum_i w[b, i] B_i A_i x[b] over the experts weights covers ([B, T])."""
        out = 0.0
        for i in range(weights.shape[1]):
            w = weights[:, i].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
            out = out + w * self.expert(x, i)
        return out


@register("hide_llava")
class HideLlava(PartsStrategy):
    """Per-task LoRA experts: routed in the top decoder layer, fused in the others."""

    requires = frozenset({Capability.LINEAR_LAYERS, Capability.DECODER_LAYERS,
                          Capability.EMBEDS, Capability.TOKEN_MASKS})
    families = frozenset({"instruction"})

    def __init__(self, *, r: int, alpha: float, dropout: float, max_tasks: int,
                 temperature: float, clip_encoder: str | None,
                 fusion: str, **kwargs) -> None:
        super().__init__(**kwargs)
        if fusion not in FUSIONS:
            raise ValueError(f"method.fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.fusion = fusion
        if r <= 0 or max_tasks <= 0:
            raise ValueError(f"method.r and method.max_tasks must be positive, got {r}, "
                             f"{max_tasks}")
        if temperature <= 0:
            raise ValueError(f"method.temperature must be positive, got {temperature}")
        if kwargs["weight_decay"] != 0:
            raise ValueError("hide_llava trains one task's experts at a time and the optimiser "
                             "sees all of them: a non-zero method.weight_decay would shrink the "
                             "finished tasks' experts. HiDe's recipe uses 0 (--weight_decay 0.)")
        self.r, self.scaling, self.dropout = r, alpha / r, dropout
        self.max_tasks, self.temperature = max_tasks, temperature
        self.guide = make_guide(clip_encoder)  # the routing features (module docstring)
        self.experts = nn.ModuleDict()  # per wrapped layer (dots of its name as "__")
        self.top: set[str] = set()  # the wrapped layers inside the top decoder layer
        self.task = 0  # the task being trained, or the last one trained
        self.trained = 0  # tasks finished (their anchors exist)
        self.image_anchors: torch.Tensor | None = None  # [max_tasks, H]
        self.text_anchors: torch.Tensor | None = None
        self._mode: tuple | None = None  # set only inside forward / generate
        self._fused: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # inside one call

    def setup(self, backbone) -> None:
        super().setup(backbone)
        top_layer = backbone.decoder_layers()[-1]
        top_ids = {id(m) for m in top_layer.modules() if isinstance(m, nn.Linear)}
        for name in self.linear_layers_of_parts(backbone):
            layer = backbone.linear_layer(name)
            key = name.replace(".", "__")
            self.experts[key] = TaskExperts(layer.in_features, layer.out_features, self.r,
                                            self.max_tasks, layer.weight)
            if id(layer) in top_ids:
                self.top.add(key)
            layer.register_forward_hook(self._hook(key))
        if not self.top:
            raise ValueError(f"hide_llava found no trained linear layer in the top decoder layer "
                             f"of {backbone.name!r}; method.parts must include the language "
                             "model (llm)")
        image_dim, text_dim = self.guide.dims(backbone)
        self.image_anchors = torch.zeros(self.max_tasks, image_dim)
        self.text_anchors = torch.zeros(self.max_tasks, text_dim)
        for p in self.trainable_parameters():
            p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        # Every task's expert is a parameter throughout (so each is checkpointed); only the
        # running task's receives a gradient, the others have none and AdamW skips them.
        return list(self.experts.parameters())

    # ------------------------------------------------------------------ the layers

    def _hook(self, key: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if self._mode is None:  # outside the strategy's forward / generate
                return None
            experts, x = self.experts[key], args[0]
            if self._mode[0] == "train":
                x = F.dropout(x, self.dropout, training=True)
                delta = experts.expert(x, self.task)
            elif key in self.top:
                delta = experts.routed(x, self._mode[1])
            elif self.fusion == "sum_of_products":
                delta = sum(experts.expert(x, i) for i in range(self.trained))
            else:  # summed once per forward / generate call, not once per generated token
                if key not in self._fused:
                    self._fused[key] = experts.fused(self.trained)
                down, up = self._fused[key]
                delta = x @ down.T @ up.T
            return output + (self.scaling * delta).to(output.dtype)

        return hook

    def routing(self, batch: dict) -> torch.Tensor:
        """[B, tasks trained] weights of the top layer's experts for each sample."""
        image, text = self.guide(self.backbone, batch)
        t = self.trained
        return routing_weights(image, text, self.image_anchors[:t].to(image),
                               self.text_anchors[:t].to(text), self.temperature)

    @contextmanager
    def _experts(self, batch: dict, train: bool) -> Iterator[None]:
        if not train and self.trained == 0:
            raise RuntimeError("hide_llava has no trained task to route to yet")
        self._mode = ("train",) if train else ("infer", self.routing(batch))
        try:
            yield
        finally:
            self._mode = None
            self._fused = {}

    def forward(self, batch: dict):
        with self._experts(batch, train=self.backbone.training):
            return self.backbone(batch)

    def generate(self, batch: dict) -> list[str]:
        if self.trained == 0:  # before any task: the pre-trained model (zero-shot row)
            return self.backbone.generate(batch)
        with self._experts(batch, train=False):
            return self.backbone.generate(batch)

    # ------------------------------------------------------------------ task hooks

    def before_task(self, task: Task, index: int) -> None:
        if index >= self.max_tasks:
            raise ValueError(f"hide_llava has experts for {self.max_tasks} tasks "
                             f"(method.max_tasks); task number {index + 1} needs more")
        self.task = index

    @torch.no_grad()
    def after_task(self, task: Task, index: int) -> None:
        """Task `index`'s anchors: the mean image and text features of its training samples."""
        device = next(self.backbone.parameters()).device
        items = EncodedSamples(self.backbone, task.train, with_answer=True)
        image_sum = text_sum = 0.0
        for start in range(0, len(items), self.batch_size):
            batch = self.backbone.collate_train(list(items[start : start + self.batch_size]))
            image, text = self.guide(self.backbone, {k: v.to(device) for k, v in batch.items()})
            image_sum, text_sum = image_sum + image.sum(0), text_sum + text.sum(0)
        count = max(len(items), 1)
        self.image_anchors[index] = (image_sum / count).cpu()
        self.text_anchors[index] = (text_sum / count).cpu()
        self.trained = index + 1

    # ------------------------------------------------------------------ state

    def extra_state(self) -> dict:
        return {"image_anchors": self.image_anchors.clone(),
                "text_anchors": self.text_anchors.clone(), "task": self.task,
                "trained": self.trained}

    def load_extra_state(self, state: dict) -> None:
        self.image_anchors = state["image_anchors"].clone()
        self.text_anchors = state["text_anchors"].clone()
        self.task, self.trained = state["task"], state["trained"]

    def describe(self) -> str:
        per_task = sum(p.numel() for p in self.experts.parameters()) // self.max_tasks
        return (super().describe() + f"; {per_task:,} trained per task (rank {self.r}), "
                f"{len(self.top)} routed layers, {len(self.experts) - len(self.top)} fused")

