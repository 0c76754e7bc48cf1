"""InfLoRA: Interference-Free Low-Rank Adaptation for Continual Learning (Liang & Li, CVPR 2024,
arXiv 2404.00228); official code liangyanshuo/InfLoRA (methods/inflora.py, models/vit_inflora.py,
configs/*_inflora.json).

Every wrapped linear layer W (default: the key and value projections of every attention, as
vit_inflora.py's Attention_LoRA) gets, per task t, the update B_t A_t: A_t [r, d_in] is designed
before the task and stays fixed, only B_t [d_out, r] (zero at the start) trains.

Designing A_t (inflora.py `_train`, before training): the input covariance C = mean over all
input tokens x of x x^T is collected on the task's training data (`get_cur_feat`); it is
projected off the old tasks' gradient space M (`remove`: C - M M^T C) or onto the free space F
kept instead when M fills more than half the dimensions (`retain`: F F^T C); A_t = the top-r left
singular vectors of the result, transposed, / sqrt(3). So every row of A_t lies outside the old
gradient space, and the update B_t A_t has no component in it: inputs of old tasks (which span M)
see no change (B_t A_t M = 0), whatever B_t learns. Departure, for degenerate sizes only: a
singular vector whose singular value is ~0 (r larger than the free dimensions left) is an
arbitrary null-space direction that may lie in M; its row of A_t is set to zero here.

The memory (DualGPM, inflora.py `update_DualGPM`): after the task, the covariance is collected
again with the trained update, and M grows by the fewest new directions whose energy brings the
captured share up to the threshold lamb + (lame - lamb) t / T (t = the task's 0-based index,
T = `num_tasks`); once M spans more than half the space the complement F is stored instead
(`retain`) and shrinks. After each task B_t A_t is merged into W (the official sums all tasks'
B_t A_t at every forward: the same weights) and the next task gets a fresh B = 0.

Training: Adam (betas 0.9, 0.999) with the official CosineSchedule, lr * cos(99 pi e /
(200 (K - 1))) at epoch e of K (`inflora_cosine`). The official trains a new classifier head per
task; here the backbone classifies (CLIP's text tower stays frozen, ViT's head trains beside).
No step hook touches whole gradients (A is fixed, nothing is projected at steps), so FSDP can
shard it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mcl.data.task import Task
from mcl.strategies.base import PartsStrategy, register

REMOVE, RETAIN = "remove", "retain"


def inflora_cosine(optimizer: torch.optim.Optimizer, epochs: int, total_steps: int
                   ) -> torch.optim.lr_scheduler.LRScheduler:
    """The official CosineSchedule (utils/schedulers.py), per epoch, on a per-step scheduler."""
    per_epoch = max(total_steps // max(epochs, 1), 1)

    def factor(step: int) -> float:
        epoch = min(step // per_epoch, epochs - 1)
        return math.cos(99 * math.pi * epoch / (200 * (epochs - 1))) if epochs > 1 else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def design_a(covariance: torch.Tensor, rank: int, basis: torch.Tensor | None, kind: str | None
             ) -> torch.Tensor:
    """A_t [rank, d] from the input covariance, outside the old gradient space (float64)."""
    c = covariance.double()
    if basis is not None:
        projection = basis @ basis.T
        c = c - projection @ c if kind == REMOVE else projection @ c
    u, s, _ = torch.linalg.svd(c, full_matrices=False)
    a = u[:, :rank].T / math.sqrt(3)
    degenerate = s[:rank] <= 1e-10 * s.max().clamp_min(1e-300)  # arbitrary null directions
    a[degenerate] = 0
    return a


def update_dual_gpm(basis: torch.Tensor | None, kind: str | None, covariance: torch.Tensor,
                    threshold: float) -> tuple[torch.Tensor, str]:
    """One layer's DualGPM memory after a task (inflora.py update_DualGPM), in float64."""
    act = covariance.double()
    d = act.shape[0]
    if basis is None:
        u, s, _ = torch.linalg.svd(act, full_matrices=False)
        ratio = s ** 2 / (s ** 2).sum()
        r = int((torch.cumsum(ratio, 0) < threshold).sum())
        basis, kind = u[:, :max(r, 1)], (REMOVE if r < d / 2 else RETAIN)
    elif kind == REMOVE:
        total = (torch.linalg.svdvals(act) ** 2).sum()
        hat = act - basis @ (basis.T @ act)
        u, s, _ = torch.linalg.svd(hat, full_matrices=False)
        ratio = s ** 2 / total
        captured = float((total - (s ** 2).sum()) / total)
        r = 0
        while r < len(ratio) and captured < threshold:
            captured += float(ratio[r])
            r += 1
        if r:
            basis = torch.cat([basis, u[:, :r]], dim=1)[:, :d]
    else:
        total = (torch.linalg.svdvals(act) ** 2).sum()
        hat = basis @ (basis.T @ act)
        u, s, _ = torch.linalg.svd(hat, full_matrices=False)
        ratio = s ** 2 / total
        captured = float((s ** 2).sum() / total)
        r = 0
        while r < len(ratio) and captured >= 1 - threshold:
            captured -= float(ratio[r])
            r += 1
        if r:
            rest = basis - u[:, :r] @ (u[:, :r].T @ basis)
            full, _, _ = torch.linalg.svd(rest)
            basis = full[:, :basis.shape[1] - r]
    if kind == REMOVE and basis.shape[1] > d / 2:  # store the smaller complement instead
        full, _, _ = torch.linalg.svd(basis)
        basis, kind = full[:, basis.shape[1]:], RETAIN
    return basis, kind


def old_space(basis: torch.Tensor, kind: str) -> torch.Tensor:
    """An orthonormal basis of the old tasks' gradient space (for checks and tests)."""
    if kind == REMOVE:
        return basis
    full, _, _ = torch.linalg.svd(basis)
    return full[:, basis.shape[1]:]


class InfLoRAUpdate(nn.Module):
    """B A for one layer: A fixed (a buffer, designed per task), B trained."""

    def __init__(self, in_features: int, out_features: int, rank: int, like: torch.Tensor
                 ) -> None:
        super().__init__()
        self.register_buffer("lora_A", like.new_zeros(rank, in_features))
        self.lora_B = nn.Parameter(like.new_zeros(out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.lora_A.T.to(x.dtype)) @ self.lora_B.T.to(x.dtype)

    def delta_weight(self) -> torch.Tensor:
        return self.lora_B @ self.lora_A


@register("inflora")
class InfLoRA(PartsStrategy):
    """Per-task LoRA with A designed outside old tasks' gradient spaces, DualGPM memory."""

    requires = frozenset({"linear_layers"})
    families = frozenset({"instruction", "classification"})

    def __init__(self, *, r: int, targets: list[str], lamb: float, lame: float, num_tasks: int,
                 covariance_batch_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if r <= 0:
            raise ValueError(f"method.r (the LoRA rank) must be positive, got {r}")
        if not 0 < lamb <= lame <= 1:
            raise ValueError(f"method.lamb and method.lame (DualGPM's first and last energy "
                             f"thresholds) need 0 < lamb <= lame <= 1, got {lamb}, {lame}")
        if num_tasks <= 0:
            raise ValueError(f"method.num_tasks must be positive, got {num_tasks}")
        self.r, self.targets = r, list(targets)
        self.lamb, self.lame, self.num_tasks = lamb, lame, num_tasks
        self.covariance_batch_size = covariance_batch_size
        self.updates = nn.ModuleDict()  # owned by the strategy: layer name (dots as '|') -> B A
        self.layers: dict[str, nn.Module] = {}
        self.memory: dict[str, tuple[torch.Tensor, str]] = {}  # layer -> (basis, kind)
        self._hooks: list = []

    # ------------------------------------------------------------------ set-up

    def setup(self, backbone) -> None:
        super().setup(backbone)
        names = [n for n in self.linear_layers_of_parts(backbone)
                 if n.rsplit(".", 1)[-1] in self.targets]
        if not names:
            raise ValueError(f"method inflora: no linear layer of parts "
                             f"{self.parts_for(backbone)} of {backbone.name!r} ends in one of "
                             f"method.targets={self.targets}")
        for name in names:
            layer = backbone.linear_layer(name)
            weight = layer.weight.detach()  # a buffer: merging rewrites it, nothing trains it
            del layer.weight
            layer.register_buffer("weight", weight)
            self.layers[name] = layer
            self.updates[name.replace(".", "|")] = InfLoRAUpdate(
                layer.in_features, layer.out_features, self.r, weight)
        for p in self.trainable_parameters():
            p.requires_grad_(True)

    def update(self, name: str) -> InfLoRAUpdate:
        return self.updates[name.replace(".", "|")]

    def trainable_parameters(self) -> list[nn.Parameter]:
        head = self.backbone.head_parameters() if self.backbone is not None else []
        return [u.lora_B for u in self.updates.values()] + list(head)

    def _attach(self) -> None:
        for name, layer in self.layers.items():
            update = self.update(name)
            self._hooks.append(layer.register_forward_hook(
                lambda module, args, out, update=update: out + update(args[0])))

    def _detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    # ------------------------------------------------------------------ covariances

    @torch.no_grad()
    def covariances(self, task: Task) -> dict[str, torch.Tensor]:
        """Mean x x^T over every input token of every wrapped layer, on the task's training
        data, through the model as it is now (`get_cur_feat`)."""
        sums = {n: torch.zeros(layer.in_features, layer.in_features, dtype=torch.float64)
                for n, layer in self.layers.items()}
        counts = dict.fromkeys(self.layers, 0)

        def collect(name):
            def hook(module, args):
                x = args[0].detach().flatten(0, -2).double()
                sums[name] += (x.T @ x).cpu()
                counts[name] += x.shape[0]
            return hook

        handles = [layer.register_forward_pre_hook(collect(n)) for n, layer in self.layers.items()]
        backbone = self.backbone
        was_training = self.training
        self.eval()
        device = next(backbone.parameters()).device
        try:
            samples = list(task.train)
            for start in range(0, len(samples), self.covariance_batch_size):
                items = backbone.encode(samples[start:start + self.covariance_batch_size],
                                        with_answer=True)
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                         for k, v in backbone.collate_train(items).items()}
                self.forward(batch)
        finally:
            for handle in handles:
                handle.remove()
            self.train(was_training)
        return {n: sums[n] / max(counts[n], 1) for n in self.layers}

    # ------------------------------------------------------------------ task hooks

    def before_task(self, task: Task, index: int) -> None:
        """Design every layer's A outside the old gradient space; a fresh B = 0; attach."""
        self._detach()
        covariances = self.covariances(task)
        with torch.no_grad():
            for name, update in ((n, self.update(n)) for n in self.layers):
                basis, kind = self.memory.get(name, (None, None))
                update.lora_A.copy_(design_a(covariances[name], self.r, basis, kind))
                update.lora_B.zero_()
        self._attach()

    def after_task(self, task: Task, index: int) -> None:
        """Grow the DualGPM memory from the trained model's covariances, then merge B A."""
        covariances = self.covariances(task)
        threshold = min(self.lame, (self.lame - self.lamb) * index / self.num_tasks + self.lamb)
        for name in self.layers:
            basis, kind = self.memory.get(name, (None, None))
            self.memory[name] = update_dual_gpm(basis, kind, covariances[name], threshold)
        self._detach()
        with torch.no_grad():
            for name, layer in self.layers.items():
                update = self.update(name)
                # B keeps the task's values (detached, no effect) until the next task zeroes it.
                layer.weight += update.delta_weight().to(layer.weight.dtype)
        spans = [old_space(*m).shape[1] for m in self.memory.values()]
        print(f"inflora: {task.name}: threshold {threshold:.3f}, old gradient space "
              f"{min(spans)}-{max(spans)} of {next(iter(self.layers.values())).in_features} "
              f"dimensions per layer")

    def configure_optimizer(self, params: list[nn.Parameter], total_steps: int):
        """Adam (betas 0.9, 0.999) with the official per-epoch cosine (inflora.py _train)."""
        optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay,
                                     betas=(0.9, 0.999))
        return optimizer, inflora_cosine(optimizer, self.epochs, total_steps)

    # ------------------------------------------------------------------ state

    def extra_state(self) -> dict:
        """The merged weights, each layer's memory, the A of the running task and whether the
        update is attached (a step checkpoint is taken inside a task)."""
        return {"weights": {n: layer.weight.detach().cpu().clone()
                            for n, layer in self.layers.items()},
                "memory": {n: (b.cpu().clone(), k) for n, (b, k) in self.memory.items()},
                "A": {n: self.update(n).lora_A.detach().cpu().clone() for n in self.layers},
                "attached": bool(self._hooks)}

    def load_extra_state(self, state: dict) -> None:
        with torch.no_grad():
            for name, weight in state["weights"].items():
                self.layers[name].weight.copy_(weight)
            for name, a in state["A"].items():
                self.update(name).lora_A.copy_(a)
        self.memory = {n: (b.clone(), k) for n, (b, k) in state["memory"].items()}
        self._detach()
        if state["attached"]:
            self._attach()
