"""MoE-Adapters: Boosting Continual Learning of Vision-Language Models via Mixture-of-Experts
Adapters (Yu et al., CVPR 2024, arXiv 2403.11549); official code JiazuoYu/MoE-Adapters4CL
(mtil/clip/model.py ResidualAttentionBlock, mtil/clip/adapter.py, mtil/src/models/finetune.py,
AutoEncoder.py; recipe mtil/scripts/train/train_full_shot_router11_experts22_1000iters.sh).

Every transformer block of both CLIP towers gets, parallel to its MLP, a mixture of `experts`
adapters (down-projection to `bottleneck`, ReLU, dropout 0.1, up-projection, scale 0.1; up = 0
at the start, adapter.py init_option="lora"), mixed by a router of the task: noisy top-k gating
(Shazeer et al. 2017) on the block's first token, softmax over the top-k logits, noise
softplus(x W_noise) + 1e-2 while training (model.py noisy_top_k_gating; routers and noise weights
start at zero). One router per task, the experts shared. After each task the `freeze_top` experts
chosen most often in each block are frozen for the rest of the stream (finetune.py writes them
to the frozen list, --frozen then excludes them from training).

DDAS, the Distribution Discriminative Auto-Selector: after each task an autoencoder (Linear ->
ReLU -> Linear -> Sigmoid, `code_dims`, trained by MSE with Adam lr 0.003, wd 1e-4,
AutoEncoder.py) learns to reconstruct sigmoid(features) of the task's training images. At test
time each image goes to the task whose autoencoder reconstructs it best; if even that error is
above `threshold`, the image is out of every learnt distribution and is answered by the frozen
zero-shot CLIP (model.py: val_task_id = -1 skips the adapters). `threshold_quantile` (not in the
official code; null by default) replaces the one absolute threshold by each autoencoder's own:
that quantile of its reconstruction errors on its task's training images, for features whose
error scale nobody has measured (the toy preset). While training, the task's own
router is used.

Departures from the official code, all forced by the backbone interface or the hardware of the
toy world, each documented:
- the adapter and the router read the MLP's input (the block's residual stream after its second
  layer norm; the official reads it before that norm), reached as the input of the MLP's first
  linear layer (`mlp_layers`), its output added to the MLP's second linear layer's;
- the autoencoders read the frozen backbone's image feature (`query`), not AlexNet's conv
  features (torchvision weights are not available offline); the threshold's scale is the
  features', so the toy preset sets its own;
- DDAS decides per image (the official decides per test batch by the batch-mean error), so an
  answer never depends on the rest of its batch;
- the official computes a load-balancing loss in each block but never adds it to the loss
  (model.py: `loss` is a local); nothing is added here either.
Freezing sets the frozen experts' gradients to None after backward, so it needs whole
gradients: not shardable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcl.backbones.classification import ClassifierOutput
from mcl.data.task import Task
from mcl.distributed import all_sum
from mcl.strategies.base import PartsStrategy, register
from mcl.strategies.wise_ft import warmup_cosine

ZERO_SHOT = -1  # the DDAS route of an out-of-distribution image: no adapters


class Expert(nn.Module):
    """adapter.py Adapter (layernorm_option none, add_residual False): scale * up(relu(down x))."""

    def __init__(self, width: int, bottleneck: int, dropout: float, scale: float) -> None:
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        self.dropout, self.scale = dropout, scale
        nn.init.kaiming_uniform_(self.down.weight, a=5 ** 0.5)
        for t in (self.up.weight, self.down.bias, self.up.bias):
            nn.init.zeros_(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(F.relu(self.down(x)), p=self.dropout, training=self.training)
        return self.up(h) * self.scale


def noisy_top_k(x: torch.Tensor, w_gate: torch.Tensor, w_noise: torch.Tensor, k: int,
                noisy: bool) -> torch.Tensor:
    """Gates [B, E]: softmax over the top-k of x W_gate (+ noise while training), 0 elsewhere."""
    logits = x @ w_gate.to(x.dtype)
    if noisy:
        std = F.softplus(x @ w_noise.to(x.dtype)) + 1e-2
        logits = logits + torch.randn_like(logits) * std
    top, index = logits.topk(min(k, logits.shape[-1]), dim=-1)
    return torch.zeros_like(logits).scatter(-1, index, F.softmax(top, dim=-1))


class MixtureOfAdapters(nn.Module):
    """The experts of one block and one router (gate and noise weights) per task."""

    def __init__(self, width: int, experts: int, bottleneck: int, dropout: float,
                 scale: float) -> None:
        super().__init__()
        self.experts = nn.ModuleList(Expert(width, bottleneck, dropout, scale)
                                     for _ in range(experts))
        self.gates = nn.ParameterList()
        self.noise = nn.ParameterList()
        self.register_buffer("chosen", torch.zeros(experts))  # picks in the running task

    def add_task(self) -> None:
        like = self.experts[0].up.weight
        width, experts = like.shape[0], len(self.experts)
        self.gates.append(nn.Parameter(like.new_zeros(width, experts)))
        self.noise.append(nn.Parameter(like.new_zeros(width, experts)))

    def forward(self, x: torch.Tensor, task: int, k: int) -> torch.Tensor:
        """sum_e gate_e * expert_e(x) for every token of each sample, gated on its first."""
        gates = noisy_top_k(x[:, 0], self.gates[task], self.noise[task], k, self.training)
        if self.training:
            self.chosen += (gates > 0).sum(0).to(self.chosen)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows = gates[:, e].nonzero().flatten()
            if len(rows):
                out[rows] += gates[rows, e, None, None].to(x.dtype) * expert(x[rows])
        return out


class AutoEncoder(nn.Module):
    """AutoEncoder.py Autoencoder: Linear -> ReLU -> Linear -> Sigmoid."""

    def __init__(self, dims: int, code_dims: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dims, code_dims), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(code_dims, dims), nn.Sigmoid())

    def error(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample mean squared reconstruction error."""
        return ((self.decoder(self.encoder(x)) - x) ** 2).mean(-1)


@register("moe_adapters")
class MoEAdapters(PartsStrategy):
    """Mixture-of-experts adapters in every block, task routers, DDAS to zero-shot CLIP."""

    requires = frozenset({"linear_layers", "vision_prompts", "label_prompts"})
    families = frozenset({"classification"})
    shardable = False  # frozen experts' gradients are dropped after backward (whole gradients)

    def __init__(self, *, experts: int, top_k: int, bottleneck: int, dropout: float,
                 scale: float, freeze_top: int, mlp_layers: list[str], code_dims: int,
                 threshold: float, threshold_quantile: float | None, ae_steps: int,
                 ae_lr: float, ae_weight_decay: float, ae_batch_size: int,
                 warmup_steps: int, label_smoothing: float,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 < top_k <= experts:
            raise ValueError(f"method.top_k must be in 1..experts ({experts}), got {top_k}")
        if len(mlp_layers) != 2:
            raise ValueError("method.mlp_layers names the MLP's first and second linear layer "
                             f"(e.g. [fc1, fc2]), got {mlp_layers}")
        self.experts, self.top_k, self.bottleneck = experts, top_k, bottleneck
        self.dropout, self.scale, self.freeze_top = dropout, scale, freeze_top
        self.mlp_layers = list(mlp_layers)
        if threshold_quantile is not None and not 0 < threshold_quantile <= 1:
            raise ValueError(f"method.threshold_quantile must lie in (0, 1] or be null, got "
                             f"{threshold_quantile}")
        self.code_dims, self.threshold = code_dims, threshold
        self.threshold_quantile = threshold_quantile
        self.limits: list[float] = []  # per task: the error above which DDAS says "not mine"
        self.ae_steps, self.ae_lr, self.ae_weight_decay = ae_steps, ae_lr, ae_weight_decay
        self.ae_batch_size = ae_batch_size
        self.warmup_steps, self.label_smoothing = warmup_steps, label_smoothing
        self.mixtures = nn.ModuleDict()  # block (its MLP's name, dots as '|') -> mixture
        self.selectors = nn.ModuleList()  # DDAS: one autoencoder per task
        self.frozen: set[tuple[str, int]] = set()  # (block, expert) frozen by earlier tasks
        self.route = ZERO_SHOT  # the task whose router the hooks use now
        self._inputs: dict[str, torch.Tensor] = {}
        self._hooks: list = []

    def setup(self, backbone) -> None:
        super().setup(backbone)
        first, second = self.mlp_layers
        names = self.linear_layers_of_parts(backbone)
        blocks = [n.rsplit(".", 1)[0] for n in names if n.rsplit(".", 1)[-1] == first]
        blocks = [b for b in blocks if f"{b}.{second}" in names]
        if not blocks:
            raise ValueError(f"method moe_adapters: no MLP with linear layers {first!r} and "
                             f"{second!r} in parts {self.parts_for(backbone)} of "
                             f"{backbone.name!r}; set method.mlp_layers")
        for block in blocks:
            fc1 = backbone.linear_layer(f"{block}.{first}")
            key = block.replace(".", "|")
            self.mixtures[key] = MixtureOfAdapters(fc1.in_features, self.experts,
                                                   self.bottleneck, self.dropout, self.scale
                                                   ).to(fc1.weight)
            self._hooks.append(fc1.register_forward_pre_hook(self._keep_input(key)))
            self._hooks.append(backbone.linear_layer(f"{block}.{second}")
                               .register_forward_hook(self._add_mixture(key)))
        for p in self.trainable_parameters():
            p.requires_grad_(True)

    def _keep_input(self, key: str):
        def hook(module, args):
            self._inputs[key] = args[0]
        return hook

    def _add_mixture(self, key: str):
        def hook(module, args, out):
            if self.route == ZERO_SHOT:
                return out
            return out + self.mixtures[key](self._inputs.pop(key), self.route, self.top_k)
        return hook

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*self.mixtures.parameters(), *self.selectors.parameters()]

    # ------------------------------------------------------------------ task hooks

    def before_task(self, task: Task, index: int) -> None:
        while len(self.selectors) <= index:
            self._add_task()
        self.route = index
        for mixture in self.mixtures.values():
            mixture.chosen.zero_()

    def _add_task(self) -> None:
        for mixture in self.mixtures.values():
            mixture.add_task()
        device = next(iter(self.mixtures.values())).experts[0].up.weight.device
        auto = AutoEncoder(self.backbone.feature_dim, self.code_dims).to(device)
        self.selectors.append(auto.requires_grad_(True))

    def after_task(self, task: Task, index: int) -> None:
        for key, mixture in self.mixtures.items():
            # Every rank saw other batches: freeze by the counts over all of them (DDP).
            chosen = torch.tensor(all_sum(mixture.chosen.tolist()))
            top = chosen.topk(min(self.freeze_top, self.experts)).indices.tolist()
            self.frozen.update((key, e) for e in top)
        self._train_selector(task, index)
        self.route = ZERO_SHOT

    def on_after_backward(self) -> None:
        """Frozen experts take no step (--frozen: requires_grad False in the official)."""
        for key, e in self.frozen:
            for p in self.mixtures[key].experts[e].parameters():
                p.grad = None

    # ------------------------------------------------------------------ DDAS

    @torch.no_grad()
    def ddas_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """sigmoid of the frozen zero-shot image feature (adapters off)."""
        route, self.route = self.route, ZERO_SHOT
        try:
            return torch.sigmoid(self.backbone.query(pixel_values).float())
        finally:
            self.route = route

    def _train_selector(self, task: Task, index: int) -> None:
        backbone = self.backbone
        device = next(backbone.parameters()).device
        items = backbone.encode(task.train, with_answer=False)
        pixels = torch.stack([it["pixel_values"] for it in items])
        features = torch.cat([self.ddas_features(pixels[s:s + self.ae_batch_size].to(device))
                              for s in range(0, len(pixels), self.ae_batch_size)])
        auto = self.selectors[index]
        optimizer = torch.optim.Adam(auto.parameters(), lr=self.ae_lr,
                                     weight_decay=self.ae_weight_decay)
        generator = torch.Generator().manual_seed(index)
        with torch.enable_grad():
            for _ in range(self.ae_steps):
                rows = torch.randint(len(features), (self.ae_batch_size,), generator=generator)
                loss = auto.error(features[rows.to(device)]).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            errors = auto.error(features)
        limit = (self.threshold if self.threshold_quantile is None
                 else float(errors.quantile(self.threshold_quantile)))
        self.limits[index:] = [limit]
        print(f"moe_adapters: {task.name}: DDAS autoencoder trained, reconstruction error "
              f"{errors.mean():.4g} (threshold {limit:.4g})")

    @torch.no_grad()
    def routes(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Per image: the task whose autoencoder reconstructs it best, or ZERO_SHOT if every
        error exceeds the threshold (or no task was learnt yet)."""
        if not len(self.selectors):
            return torch.full((len(pixel_values),), ZERO_SHOT, dtype=torch.long)
        x = self.ddas_features(pixel_values)
        errors = torch.stack([auto.error(x) for auto in self.selectors], dim=-1)
        best, task = errors.min(-1)
        limits = torch.tensor([self.limits[i] if i < len(self.limits) else self.threshold
                               for i in range(len(self.selectors))], device=best.device)
        return torch.where(best > limits[task], ZERO_SHOT, task).cpu()

    # ------------------------------------------------------------------ compute

    def forward(self, batch: dict) -> ClassifierOutput:
        if self.training:  # the running task's router (set in before_task)
            return self.backbone(batch)
        routes = self.routes(batch["pixel_values"])
        logits = None
        for route in routes.unique().tolist():
            rows = (routes == route).nonzero().flatten()
            self.route = route
            # eval() clears CLIP's text-feature cache: the text tower's adapters follow the route.
            self.backbone.eval()
            part = {k: v[rows.to(v.device)] if isinstance(v, torch.Tensor) else v
                    for k, v in batch.items() if k != "labels"}
            out = self.backbone(part).logits
            if logits is None:
                logits = out.new_zeros(len(routes), out.shape[-1])
            logits[rows.to(out.device)] = out
        self.route = ZERO_SHOT
        self.backbone.eval()
        labels = batch.get("labels")
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ClassifierOutput(loss, logits)

    def loss(self, batch: dict, outputs) -> torch.Tensor:
        return F.cross_entropy(outputs.logits, batch["labels"],
                               label_smoothing=self.label_smoothing)

    def generate(self, batch: dict) -> list[str]:
        with torch.no_grad():
            logits = self.forward(batch).logits
        return self.backbone.predict(logits, batch["classes"])

    def configure_optimizer(self, params: list[nn.Parameter], total_steps: int):
        """AdamW, warm-up then cosine (finetune.py: utils.cosine_lr, as ZSCL and WiSE-FT)."""
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        return optimizer, warmup_cosine(optimizer, self.warmup_steps, total_steps)

    # ------------------------------------------------------------------ state

    def extra_state(self) -> dict:
        return {"tasks": len(self.selectors), "frozen": sorted(self.frozen),
                "route": self.route, "limits": list(self.limits),
                "chosen": {k: m.chosen.cpu().clone() for k, m in self.mixtures.items()}}

    def load_extra_state(self, state: dict) -> None:
        while len(self.selectors) < state["tasks"]:
            self._add_task()
        for p in self.trainable_parameters():
            p.requires_grad_(True)
        self.frozen = {(k, int(e)) for k, e in state["frozen"]}
        self.route = state["route"]
        self.limits = list(state["limits"])
        for key, chosen in state["chosen"].items():
            self.mixtures[key].chosen.copy_(chosen)
