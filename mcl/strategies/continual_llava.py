"""Continual LLaVA (Cao et al. 2024, "Continual LLaVA: Continual Instruction Tuning in Large
Vision-Language Models", arXiv 2411.02564): the LVLM stays frozen and every instruction gets its
own weight increment, built from *dual increment embeddings* (Sec. 3.2).

- A pool of N low-rank increment embeddings P_n = B_n A_n (one pair per re-parameterised layer),
  each with a proxy key k_n. The instruction's surrogate embedding q picks the M keys most
  cosine-similar to it, and the *intrinsic* increment is sum_m cos(q, k_m) / sum cos * P_m.
- The entries a task selected are recorded (Z_t); their instance-wise average is that task's
  increment. The *contextual* increment at task t is sum_{l<t} w_l * sg(that average of task l),
  with learnable, unnormalised weights w and gradients stopped on the increments.
- Both are added to the attention's output linear projection of every decoder layer,
  h = W_o x + (dW_intrinsic + dW_contextual) x (Sec. 3.3; the paper's ablation finds the other
  three projections unnecessary). No task id is used: selection looks at the instruction only.
- Two training stages per task: the selected proxy keys are first aligned with the instructions
  (L_align = sum_m 1 - cos(q, k_m)); then the increments and the contextual weights learn from the
  answer loss, with the keys fixed.

- The instruction's surrogate embedding q comes from a frozen Sentence-BERT (Sec. 3.2): with
  `instruction_encoder` set to a local Sentence-BERT directory (Hugging Face format, e.g.
  sentence-transformers/all-MiniLM-L6-v2 saved with save_pretrained), q is that encoder's
  mean-pooled output (Sentence-BERT's pooling, Reimers & Gurevych 2019) on the decoded
  instruction text.

Departures, where the paper could not be followed here: with no `instruction_encoder` (the default,
since no second model can be fetched offline) q is the frozen language model's input embeddings
averaged over the instruction's text tokens; the decoded instruction includes the chat template's
fixed words, the same for every sample; the increments start as LoRA does (A random, B zero), the
keys uniform in [-1, 1] and w uniform in [0, 1) (the paper only says "random"); the record of a
task is taken after it from the final keys, which is what stage 2 sees since the keys no longer
move then. The paper's values of N, M, R and its optimiser settings live in its experiments
section (Sec. 4.1), which no copy available to mcl contains (see continual_llava.yaml).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mcl.backbones.base import Capability
from mcl.data.task import EncodedSamples, Sample, Task
from mcl.strategies.base import ContinualStrategy, register

_COS_FLOOR = 1e-6  # keeps cos / sum(cos) a convex mix when a selected cosine is <= 0


def select(queries: torch.Tensor, keys: torch.Tensor, top_m: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the `top_m` keys most cosine-similar to each query, and those cosines."""
    cosine = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T
    sims, indices = cosine.topk(top_m, dim=-1)
    return indices, sims


def intrinsic_coefficients(indices: torch.Tensor, sims: torch.Tensor, pool_size: int
                           ) -> torch.Tensor:
    """(batch, pool) weights of the intrinsic increment: cos / sum(cos) on the selected entries,
    zero elsewhere."""
    weights = sims.clamp_min(_COS_FLOOR)
    weights = weights / weights.sum(-1, keepdim=True)
    dense = torch.zeros(indices.shape[0], pool_size, dtype=weights.dtype, device=weights.device)
    return dense.scatter(1, indices, weights)


def contextual_coefficients(records: torch.Tensor, weights: torch.Tensor, task: int
                            ) -> torch.Tensor | None:
    """(pool,) weights of the contextual increment at task number `task`: sum_{l<task} w_l z_l,
    where z_l is task l's instance-averaged selection. None for the first task: it has no
    earlier task to draw on."""
    if task == 0:
        return None
    return weights[:task] @ records[:task].to(weights)


def low_rank_delta(x: torch.Tensor, down: torch.Tensor, up: torch.Tensor,
                   coefficients: torch.Tensor) -> torch.Tensor:
    """sum_n c[b, n] B_n A_n x[b] for inputs x (batch, length, d_in), down A (pool, rank, d_in),
    up B (pool, d_out, rank) and coefficients c (batch, pool)."""
    hidden = torch.einsum("bld,nrd->blnr", x, down)
    return torch.einsum("blnr,nor,bn->blo", hidden, up, coefficients)


class IncrementPool(nn.Module):
    """The proxy keys, one low-rank increment per (layer, pool entry), the contextual weights."""

    def __init__(self, key_dim: int, layer_shapes: Sequence[tuple[int, int]], pool_size: int,
                 rank: int, max_tasks: int) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.empty(pool_size, key_dim).uniform_(-1.0, 1.0))
        # LoRA's start: A Kaiming-uniform (bound 1/sqrt(d_in)), B zero, so every increment is 0.
        self.down = nn.ParameterList(
            nn.Parameter(torch.empty(pool_size, rank, d_in).uniform_(-1, 1) / math.sqrt(d_in))
            for d_in, _ in layer_shapes)
        self.up = nn.ParameterList(nn.Parameter(torch.zeros(pool_size, d_out, rank))
                                   for _, d_out in layer_shapes)
        self.context_weights = nn.Parameter(torch.rand(max_tasks))


class SentenceEncoder:
    """A frozen Sentence-BERT (Reimers & Gurevych 2019) read from a local directory: the mean of
    its last hidden states over each text's real tokens. Kept outside the backbone, so it is
    neither trained nor saved with the strategy."""

    def __init__(self, path: str) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str], device: torch.device) -> torch.Tensor:
        if next(self.model.parameters()).device != device:
            self.model.to(device)  # follows the backbone, which Lightning moves after setup
        tokens = self.tokenizer(list(texts), padding=True, truncation=True,
                                return_tensors="pt").to(device)
        hidden = self.model(**tokens).last_hidden_state
        weights = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def target_linear(layer: nn.Module, target: str) -> nn.Linear:
    """The one nn.Linear named `target` inside a decoder layer."""
    found = [m for n, m in layer.named_modules()
             if n.rsplit(".", 1)[-1] == target and isinstance(m, nn.Linear)]
    if len(found) != 1:
        raise ValueError(f"continual_llava expects one nn.Linear named {target!r} per decoder "
                         f"layer, found {len(found)}; set method.target to the name of the "
                         "attention output projection of this language model")
    return found[0]


@register("continual_llava")
class ContinualLlava(ContinualStrategy):
    """Frozen LVLM + instruction-selected intrinsic and cross-task contextual increments."""

    requires = frozenset({Capability.INPUT_EMBEDDINGS, Capability.DECODER_LAYERS,
                          Capability.TOKEN_MASKS})

    def __init__(self, *, pool_size: int, top_m: int, rank: int, target: str, max_tasks: int,
                 align_epochs: int, instruction_encoder: str | None, **kwargs) -> None:
        super().__init__(**kwargs)
        if instruction_encoder is not None and not Path(instruction_encoder).is_dir():
            raise FileNotFoundError(
                f"method.instruction_encoder={instruction_encoder!r} is not a directory; give a "
                "local Sentence-BERT saved with save_pretrained (model + tokenizer), or null to "
                "use the language model's own input embeddings")
        if not 0 < top_m <= pool_size:
            raise ValueError(f"method.top_m must be in [1, pool_size={pool_size}], got {top_m}")
        if rank <= 0 or max_tasks <= 0 or align_epochs < 0:
            raise ValueError("method.rank and method.max_tasks must be positive and "
                             f"method.align_epochs non-negative, got {rank}, {max_tasks}, "
                             f"{align_epochs}")
        self.pool_size, self.top_m, self.rank, self.target = pool_size, top_m, rank, target
        self.max_tasks, self.align_epochs = max_tasks, align_epochs
        self.instruction_encoder = instruction_encoder
        self.sentence_encoder: SentenceEncoder | None = None
        self.pool: IncrementPool | None = None
        # records[t]: task t's instance-averaged selection over the pool (the paper's Z_t).
        self.records = torch.zeros(max_tasks, pool_size)
        self.task = 0  # the task being trained, or the last one trained (what inference uses)
        self._coefficients: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def setup(self, backbone) -> None:
        super().setup(backbone)
        targets = [target_linear(layer, self.target) for layer in backbone.decoder_layers()]
        embeddings = backbone.input_embeddings().weight
        key_dim = embeddings.shape[1]
        if self.instruction_encoder is not None:
            self.sentence_encoder = SentenceEncoder(self.instruction_encoder)
            key_dim = self.sentence_encoder.dim
        self.pool = IncrementPool(key_dim,
                                  [(t.in_features, t.out_features) for t in targets],
                                  self.pool_size, self.rank, self.max_tasks)
        # Owned by the strategy (a child module): moved, trained and saved with it.
        self.pool.to(device=embeddings.device, dtype=targets[0].weight.dtype)
        for layer, linear in enumerate(targets):
            linear.register_forward_hook(self._reparameterise(layer))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.pool.parameters())

    # ------------------------------------------------------------------ increments

    def _reparameterise(self, layer: int) -> Callable:
        """Forward hook on one output projection: W_o x + (dW_intrinsic + dW_contextual) x."""

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if self._coefficients is None:  # outside the strategy's forward/generate
                return None
            intrinsic, contextual = self._coefficients
            x, down, up = args[0], self.pool.down[layer], self.pool.up[layer]
            delta = low_rank_delta(x, down, up, intrinsic)
            if contextual is not None:
                # sg(.): earlier tasks' increments enter as constants, only w learns from them.
                delta = delta + low_rank_delta(x, down.detach(), up.detach(),
                                               contextual.expand_as(intrinsic))
            return output + delta.to(output.dtype)

        return hook

    def instruction_features(self, batch: dict) -> torch.Tensor:
        """Each instruction's surrogate embedding: the frozen Sentence-BERT's embedding of the
        instruction text when one is given, else the frozen input embeddings averaged over the
        prompt's text tokens (image, padding and answer tokens left out)."""
        mask = self.backbone.instruction_mask(batch)
        with torch.no_grad():
            if self.sentence_encoder is not None:
                decode = self.backbone.tokenizer.decode
                texts = [decode(ids[keep], skip_special_tokens=True).strip()
                         for ids, keep in zip(batch["input_ids"], mask, strict=True)]
                features = self.sentence_encoder(texts, batch["input_ids"].device)
                return features.to(self.pool.keys.dtype)
            embeds = self.backbone.input_embeddings()(batch["input_ids"])
            weights = mask.unsqueeze(-1).to(embeds.dtype)
            return (embeds * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    @contextmanager
    def _increments(self, batch: dict) -> Iterator[None]:
        """Select this batch's increments (by instruction, no task id) for the hooks to add."""
        queries = self.instruction_features(batch)
        # Keys detached: in stage 2 they only select, the answer loss does not move them.
        indices, sims = select(queries, self.pool.keys.detach(), self.top_m)
        intrinsic = intrinsic_coefficients(indices, sims, self.pool_size)
        contextual = contextual_coefficients(self.records, self.pool.context_weights, self.task)
        self._coefficients = (intrinsic, contextual)
        try:
            yield
        finally:
            self._coefficients = None

    def forward(self, batch: dict):
        with self._increments(batch):
            return self.backbone(batch)

    def generate(self, batch: dict) -> list[str]:
        with self._increments(batch):
            return self.backbone.generate(batch)

    # ------------------------------------------------------------------ task hooks

    def _task_features(self, samples: Sequence[Sample]) -> torch.Tensor:
        """Surrogate embeddings of a task's training instructions."""
        device = next(self.backbone.parameters()).device
        items = EncodedSamples(self.backbone, samples, with_answer=True)  # a batch at a time
        features = []
        for start in range(0, len(items), self.batch_size):
            batch = self.backbone.collate_train(list(items[start : start + self.batch_size]))
            features.append(self.instruction_features({k: v.to(device) for k, v in batch.items()}))
        return torch.cat(features)

    def before_task(self, task: Task, index: int) -> None:
        """Stage 1: align the proxy keys each instruction selects with that instruction."""
        if index >= self.max_tasks:
            raise ValueError(f"continual_llava has contextual weights for {self.max_tasks} "
                             f"tasks (method.max_tasks); task number {index + 1} needs more")
        self.task = index
        features = self._task_features(task.train)
        keys = self.pool.keys
        optimizer = torch.optim.AdamW([keys], lr=self.lr, weight_decay=self.weight_decay)
        for _ in range(self.align_epochs):
            for chunk in torch.randperm(len(features)).split(self.batch_size):
                _, sims = select(features[chunk.to(features.device)], keys, self.top_m)
                loss = (1.0 - sims).sum(-1).mean()  # only the selected keys get a gradient
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        keys.grad = None

    def after_task(self, task: Task, index: int) -> None:
        """Record Z_t: the task's selection over the pool, averaged over its instances."""
        with torch.no_grad():
            indices, sims = select(self._task_features(task.train), self.pool.keys, self.top_m)
            selection = intrinsic_coefficients(indices, sims, self.pool_size)
            self.records[index] = selection.mean(0).cpu()

    # ------------------------------------------------------------------ state

    def extra_state(self) -> dict:
        return {"records": self.records.clone(), "task": self.task}

    def load_extra_state(self, state: dict) -> None:
        self.records = state["records"].clone()
        self.task = state["task"]
