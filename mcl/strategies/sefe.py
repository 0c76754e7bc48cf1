"""SEFE's RegLoRA: sequential LoRA, merged after every task, whose next adapters are kept away
from the key entries of the earlier tasks' weight updates.

Chen et al. 2025, "SEFE: Superficial and Essential Forgetting Eliminator for Multimodal Continual
Instruction Tuning" (arXiv 2505.02486); the code is MCITlib's SEFE (Ghy0501/MCITlib, SEFE/), read
for what it computes:

- Each task trains a fresh LoRA (rank 16, alpha 32) on the linear layers of the language model,
  which is merged into the weights after the task (scripts/Train_*/TaskN.sh run
  merge_lora_weights.py and start the next task from the merged model).
- Key elements (key_elements_identification.py): after task t, the update of each layer,
  dW = B A (without LoRA's alpha / r: the scale does not change which entries are largest), gives
  its top `key_fraction` = 2% entries by |dW| (torch.topk on the flattened matrix, k =
  int(0.02 * rows * cols)); the index lists of all tasks so far are concatenated (an entry picked
  twice is counted twice, as the concatenation there does).
- RegLoRA (modeling_llama.py LlamaDecoderLayer.forward, llava_llama.py): while a later task trains,
  each regularised layer adds mean |(B A)[keys]| of its new adapter; the sum over layers is divided
  by their number (the code's 224 = 32 layers x 7 projections of LLaVA-1.5-7B) and added to the
  answer loss times `reg_weight` = 2.5e3. The new adapter is thus pushed to leave the entries that
  mattered most for earlier tasks unchanged (their change -> 0), the rest of the weight is free.

Departures: the merge uses mcl's gated LoRA (`mcl.adapters.gated_lora`) with every gate fixed at
alpha / r, which computes peft's LoRA update scaling * B A exactly, but without LoRA dropout
(LLaVA's recipe has 0.05); the official LLaVA recipe also trains the projector at lr 2e-5 beside
the adapter, which mcl's LoRA methods leave frozen (the `lora` baseline does the same, so the
two compare like for like); the constant learning rate is mcl's LoRA default where the scripts
warm up for 3% and decay by cosine.

Answer-style diversification (ASD), SEFE's other half, is not implemented: it is a data step that
rewrites each task's answers into five styles (yes/no, multiple choice, short answer, brief and
detailed) by prompting an external MLLM with the templates of MCITlib's CoIN-ASD/prompts, so it
needs a generative model and its outputs (the released ASD-converted CoIN annotations), neither of
which mcl can produce offline; the paper fixes the templates and the proportion, not a
reproducible rewrite.
"""

from __future__ import annotations

import torch
from torch import nn

from mcl.adapters.gated_lora import GatedLoRA, adapter_of, inject, merge
from mcl.data.task import Task
from mcl.strategies.base import PartsStrategy, register


def key_entries(delta: torch.Tensor, fraction: float) -> torch.Tensor:
    """Flat indices of the int(fraction * numel) entries of `delta` largest in absolute value
    (key_elements_identification.py: torch.topk of |B A| flattened)."""
    count = int(fraction * delta.numel())
    indices = delta.detach().float().abs().flatten().topk(count).indices
    # int32 halves the memory of the lists (2% of a 7B model's LM weights is ~75M entries per
    # task); every weight of a 7B-13B model has fewer than 2^31 entries.
    return indices.to(torch.int32) if delta.numel() < 2**31 else indices


def key_penalty(lora_a: torch.Tensor, lora_b: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """mean |(B A)[keys]| over the flat indices `keys` of the (out x in) update. The update is
    formed densely, one layer at a time, as the official code does: autograd keeps only A, B and
    the indices, where gathering rows of B and columns of A per key would keep 2 x rank values
    per key (gigabytes for 2% of a 7B model's weights)."""
    return (lora_b @ lora_a).flatten()[keys].abs().mean()


@register("sefe")
class Sefe(PartsStrategy):
    """Sequential LoRA merged per task, regularised on the earlier tasks' key update entries."""

    requires = frozenset({"linear_layers"})
    families = frozenset({"instruction", "classification"})
    # The penalty reads the adapters of every layer in `loss`, outside the layers' forward, where
    # FSDP holds only each rank's shard of them (the official code computes it inside the decoder
    # layer's forward; mcl keeps the backbone's layers unmodified).
    shardable = False

    def __init__(self, *, r: int, alpha: float, key_fraction: float, reg_weight: float,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if r <= 0:
            raise ValueError(f"method.r (the LoRA rank) must be positive, got {r}")
        if not 0 < key_fraction <= 1:
            raise ValueError(f"method.key_fraction must lie in (0, 1], got {key_fraction}")
        if reg_weight < 0:
            raise ValueError(f"method.reg_weight must be non-negative, got {reg_weight}")
        self.r, self.scaling = r, alpha / r
        self.key_fraction, self.reg_weight = key_fraction, reg_weight
        self.layers: dict[str, nn.Linear] = {}
        self.keys: dict[str, torch.Tensor] = {}  # per layer: flat key indices of tasks so far

    def setup(self, backbone) -> None:
        super().setup(backbone)
        for name in self.linear_layers_of_parts(backbone):
            layer = backbone.linear_layer(name)
            inject(layer, self.r)  # weight -> buffer (merged into), adapter as the layer's child
            self._fresh(adapter_of(layer))
            self.layers[name] = layer
        for p in self.trainable_parameters():
            p.requires_grad_(True)

    @torch.no_grad()
    def _fresh(self, adapter: GatedLoRA) -> None:
        """A new LoRA: A Kaiming-uniform, B = 0, and every gate the fixed scale alpha / r."""
        adapter.reset()
        adapter.gate.fill_(self.scaling)
        adapter.gate.requires_grad_(False)

    def adapters(self) -> list[GatedLoRA]:
        return [adapter_of(layer) for layer in self.layers.values()]

    def trainable_parameters(self) -> list[nn.Parameter]:
        if self.backbone is None:
            return []
        adapters = [p for a in self.adapters() for p in (a.lora_A, a.lora_B)]
        return [*adapters, *self.backbone.head_parameters()]

    # ------------------------------------------------------------------ task hooks

    def before_task(self, task: Task, index: int) -> None:
        for layer in self.layers.values():
            adapter_of(layer).attach(layer)

    def regularisation(self) -> torch.Tensor | None:
        """RegLoRA's term: the mean over regularised layers of mean |(B A)[keys]| (None before
        any task has set keys)."""
        if not self.keys:
            return None
        total = 0.0
        for name, layer in self.layers.items():
            adapter = adapter_of(layer)
            keys = self.keys[name] = self.keys[name].to(adapter.lora_A.device)
            total = total + key_penalty(adapter.lora_A, adapter.lora_B, keys)
        return total / len(self.layers)

    def loss(self, batch: dict, outputs) -> torch.Tensor:
        penalty = self.regularisation()
        if penalty is None:
            return outputs.loss
        return outputs.loss + self.reg_weight * penalty.to(outputs.loss.dtype)

    @torch.no_grad()
    def after_task(self, task: Task, index: int) -> None:
        """Add this task's key entries to each layer's, merge its adapter, start a fresh one."""
        for name, layer in self.layers.items():
            adapter = adapter_of(layer)
            new = key_entries(adapter.lora_B @ adapter.lora_A, self.key_fraction)
            old = self.keys.get(name)
            self.keys[name] = new if old is None else torch.cat([old.to(new.device), new])
            merge(layer)
            self._fresh(adapter)
            adapter.detach()

    # ------------------------------------------------------------------ state

    def extra_state(self) -> dict:
        """The merged weights and the key entries of every wrapped layer."""
        return {"weights": {n: layer.weight.detach().cpu().clone()
                            for n, layer in self.layers.items()},
                "keys": {n: k.cpu().clone() for n, k in self.keys.items()}}

    def load_extra_state(self, state: dict) -> None:
        with torch.no_grad():
            for name, weight in state["weights"].items():
                self.layers[name].weight.copy_(weight)
        self.keys = {n: k.clone() for n, k in state["keys"].items()}

    def describe(self) -> str:
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = (sum(p.numel() for p in self.backbone.parameters())
                 + sum(layer.weight.numel() for layer in self.layers.values()))
        return (f"method {self.name}: {trainable:,} trainable parameters of {total:,} "
                f"({100 * trainable / total:.2f}%); {len(self.layers)} layers, rank {self.r}")
