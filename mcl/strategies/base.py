"""`ContinualStrategy`, the one interface every continual-learning method implements, and its
registry. With `mcl.backbones.base` (the backbone interface) this is all a new method reads.

A strategy decides what is trainable, what data a task trains on, the loss, what happens around
a task (subspaces, merges, stored keys) and what state must survive a checkpoint. The loop calls
the hooks and knows nothing about any one method; a method overrides only the hooks it needs.

Ownership: a strategy is an `nn.Module` whose child `backbone` is set by `setup`. A method
registers its own modules (prompt pools, gates, second towers, keys) by assigning them to
attributes of the strategy (`self.pool = PromptPool(...)`), never onto the backbone: then the
loop's device moves, Lightning's train/eval modes, DDP/FSDP wrapping (the LightningModule holds
the strategy), checkpoints (`checkpoint_state`) and the contract test all see them. Parameter
names are the strategy's (`backbone.<own names>`, `pool.keys`). Adapters that live inside backbone
layers (LoRA) go through the backbone's `adapter_root()` / `linear_layer(name)`, never through
attributes of the backbone itself.

Compatibility: a method declares `families` (task families it supports), `requires` (backbone
capabilities, `mcl.backbones.base.Capability`) and `shardable`; `check_backbone(spec)` refuses
an impossible backbone from its class-level `BackboneSpec` before any weight loads, and
`mcl.compatibility.check_run` (method x backbone x stream x trainer) calls it once per run.
A method whose constructor can say more (e.g. that a named part exists) overrides
`check_backbone` and calls super.

Defaults: a method's constructor takes keyword arguments without defaults; its YAML
(conf/method/<name>.yaml) gives every one, each number cited, so a value lives in one place.
`build_strategy(name, **overrides)` reads that YAML for tests and scripts; mcl.run passes the
composed config. Scale presets are experiments (conf/experiment/<name>_tiny.yaml), not methods.

Hooks, in loop order: `setup(backbone)`; per task `before_task`, `train_samples`, then per step
`forward` -> `loss` -> backward -> `on_after_backward` -> optimiser step ->
`after_optimizer_step` (optimiser from `configure_optimizer`), then `after_task`; evaluation calls
`generate`. State: the trainable parameters' values plus `extra_state()` (plain data or tensors)
are what `checkpoint_state()` writes after every task; `load_checkpoint_state` restores them
after `setup` on a freshly loaded backbone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from mcl.backbones.base import Backbone, BackboneSpec
from mcl.data.task import Sample, Task

STRATEGIES: dict[str, type[ContinualStrategy]] = {}
# Version of `checkpoint_state`: 2 = parameters named from the strategy (modules owned by it).
CHECKPOINT_FORMAT = 2


def register(name: str) -> Callable[[type[ContinualStrategy]], type[ContinualStrategy]]:
    """Class decorator: make a strategy selectable as `method=<name>`."""

    def add(cls: type[ContinualStrategy]) -> type[ContinualStrategy]:
        if name in STRATEGIES:
            raise ValueError(f"strategy name {name!r} is already registered by {STRATEGIES[name]}")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return add


def _spec(backbone: Backbone | BackboneSpec) -> BackboneSpec:
    return backbone if isinstance(backbone, BackboneSpec) else backbone.spec


class ContinualStrategy(nn.Module):
    """Base class: by default trains nothing and answers with the backbone as it is."""

    name: ClassVar[str] = "base"
    requires: ClassVar[frozenset[str]] = frozenset()
    families: ClassVar[frozenset[str]] = frozenset({"instruction"})
    # False for a method whose step hooks need whole gradients or parameters (e.g. gradient
    # projection): under FSDP each rank holds only a shard of them, so trainer=fsdp refuses it.
    shardable: ClassVar[bool] = True

    def __init__(self, *, lr: float, weight_decay: float, epochs: int, batch_size: int) -> None:
        super().__init__()
        if epochs <= 0:
            raise ValueError(f"method.epochs must be a positive integer, got {epochs}")
        if batch_size <= 0:
            raise ValueError(f"method.batch_size must be a positive integer, got {batch_size}")
        if lr <= 0:
            raise ValueError(f"method.lr must be positive, got {lr}")
        self.lr, self.weight_decay = lr, weight_decay
        self.epochs, self.batch_size = epochs, batch_size
        self.backbone: Backbone | None = None  # a child module once `setup` ran

    # ------------------------------------------------------------------ set-up

    def check_backbone(self, backbone: Backbone | BackboneSpec) -> None:
        """Raise a ValueError saying why this strategy cannot run on `backbone` (a loaded one or
        the `BackboneSpec` of a class not loaded yet), if it cannot."""
        spec = _spec(backbone)
        missing = self.requires - spec.capabilities
        if missing:
            why = "".join(f" ({c}: {reason})" for c, reason in spec.limitations if c in missing)
            raise ValueError(
                f"method {self.name!r} cannot run on backbone {spec.name!r}: it needs the "
                f"capabilities {sorted(missing)}, which this backbone does not expose{why}")
        if spec.family not in self.families:
            raise ValueError(
                f"method {self.name!r} supports {sorted(self.families)} backbones, but "
                f"{spec.name!r} is a {spec.family!r} backbone")

    def setup(self, backbone: Backbone) -> None:
        """Take the backbone as a child, freeze it, then (in subclasses) add the method's own
        modules as attributes of the strategy and unfreeze what it trains."""
        self.check_backbone(backbone)
        self.backbone = backbone
        backbone.requires_grad_(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters this method trains (all others stay frozen)."""
        return []

    def named_trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The trainable parameters by their names in the strategy (`backbone....`, own
        modules' names), the names checkpoints use."""
        trainable = {id(p) for p in self.trainable_parameters()}
        return {n: p for n, p in self.named_parameters() if id(p) in trainable}

    @property
    def trains(self) -> bool:
        return bool(self.trainable_parameters())

    # ------------------------------------------------------------------ task hooks

    def train_samples(self, seen: Sequence[Task]) -> list[Sample]:
        """What to train on when the last of `seen` arrives: by default its own samples."""
        return list(seen[-1].train)

    def before_task(self, task: Task, index: int) -> None:
        """Called before training task number `index` (0-based)."""

    def after_task(self, task: Task, index: int) -> None:
        """Called after training task number `index`, before evaluation."""

    # ------------------------------------------------------------------ step hooks

    def forward(self, batch: dict):
        """Teacher-forced forward pass; returns the backbone output (with `.loss`)."""
        return self.backbone(batch)

    def loss(self, batch: dict, outputs) -> torch.Tensor:
        """Task loss plus any method terms."""
        return outputs.loss

    def on_after_backward(self) -> None:
        """Called after backward, before the optimiser step (e.g. gradient projection)."""

    def after_optimizer_step(self) -> None:
        """Called after every optimiser step (e.g. a proximal step on the updated values)."""

    def configure_optimizer(self, params: list[nn.Parameter], total_steps: int
                            ) -> tuple[torch.optim.Optimizer,
                                       torch.optim.lr_scheduler.LRScheduler | None]:
        """The optimiser for one task's `total_steps` steps, and an optional per-step learning
        rate schedule. AdamW at a constant rate unless a method's paper says otherwise."""
        fused = bool(params) and all(p.is_cuda for p in params)  # one kernel for all tensors
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay,
                                 fused=fused), None

    def generate(self, batch: dict) -> list[str]:
        """Answers for an evaluation batch."""
        return self.backbone.generate(batch)

    # ------------------------------------------------------------------ state

    def extra_state(self) -> dict:
        """Method state beyond trainable parameters (subspaces, keys, counters)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what `extra_state` returned."""

    def checkpoint_state(self) -> dict:
        """All method state: the trainable parameters' values, the extra state and the
        backbone's own extra state (e.g. which head row is which class)."""
        params = {n: p.detach().cpu().clone() for n, p in self.named_trainable_parameters().items()}
        return {"format": CHECKPOINT_FORMAT, "params": params, "extra": self.extra_state(),
                "backbone": self.backbone.extra_state()}

    def load_checkpoint_state(self, state: dict) -> None:
        """Restore a `checkpoint_state` (after `setup` on a freshly loaded backbone)."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"this checkpoint of method {self.name!r} was written by an older mcl (format "
                f"{state.get('format', 1)}, before strategies owned their modules; this mcl "
                f"reads format {CHECKPOINT_FORMAT}), so it cannot be resumed: re-run into a new "
                "output directory (hydra.run.dir=...) or with resume=false")
        self.load_extra_state(state["extra"])
        self.backbone.load_extra_state(state["backbone"])
        params = self.named_trainable_parameters()
        missing = set(state["params"]) ^ set(params)
        if missing:
            raise ValueError(f"checkpoint does not match method {self.name!r}: parameters "
                             f"{sorted(missing)[:5]} differ; was it written by another method?")
        with torch.no_grad():
            for name, value in state["params"].items():
                params[name].copy_(value)

    def describe(self) -> str:
        """One line for the start of a run: how much of the model this method trains."""
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = sum(p.numel() for p in self.parameters())
        return (f"method {self.name}: {trainable:,} trainable parameters of {total:,} "
                f"({100 * trainable / max(total, 1):.2f}%)")


def strategy_class(name: str) -> type[ContinualStrategy]:
    """The registered strategy `name`, with a clear error for unknown names."""
    import mcl.strategies  # noqa: F401  (registers every built-in strategy)

    if name not in STRATEGIES:
        raise ValueError(f"unknown method {name!r}; registered methods: "
                         f"{', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]


def method_defaults(name: str) -> dict:
    """The options of conf/method/<name>.yaml (its defaults list composed, resolved): a method's
    one source of defaults. Composes with Hydra, so call it outside a running Hydra app."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"method={name}"])
    options = OmegaConf.to_container(cfg.method, resolve=True)
    options.pop("name")
    return options


def build_strategy(name: str, **overrides) -> ContinualStrategy:
    """The registered strategy `name` with its YAML's options (`method_defaults`), `overrides`
    replacing some: for tests and scripts (mcl.run passes the composed config instead)."""
    cls = strategy_class(name)
    return cls(**(method_defaults(name) | overrides))


class PartsStrategy(ContinualStrategy):
    """A method that trains named backbone parts, or adapters on their linear layers.

    `parts` chooses them; when it is None, `family_parts[<the backbone's family>]` (set in the
    method's YAML) does, so one method file serves every family.
    """

    def __init__(self, *, parts: Sequence[str] | None,
                 family_parts: dict[str, Sequence[str]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.parts = list(parts) if parts is not None else None
        self.family_parts = dict(family_parts)

    def parts_for(self, backbone: Backbone | BackboneSpec) -> list[str]:
        """The parts trained on `backbone`; a ValueError naming the valid ones if it lacks one."""
        spec = _spec(backbone)
        if self.parts is not None:
            parts = list(self.parts)
        elif spec.family in self.family_parts:
            parts = list(self.family_parts[spec.family])
        else:
            raise ValueError(f"method {self.name!r} has no default parts for {spec.family!r} "
                             f"backbones; set method.parts (parts of {spec.name!r}: "
                             f"{sorted(spec.part_names)})")
        missing = [p for p in parts if p not in spec.part_names]
        if missing:
            raise ValueError(f"method {self.name!r} trains parts {missing}, which backbone "
                             f"{spec.name!r} does not have; its parts are "
                             f"{sorted(spec.part_names)}. Set method.parts to some of them.")
        return parts

    def check_backbone(self, backbone: Backbone | BackboneSpec) -> None:
        super().check_backbone(backbone)
        self.parts_for(backbone)

    def linear_layers_of_parts(self, backbone: Backbone) -> list[str]:
        """Names of the linear layers in the trained parts (a ValueError if there are none)."""
        parts = self.parts_for(backbone)
        names = backbone.linear_layer_names(parts)
        if not names:
            raise ValueError(f"backbone {backbone.name!r} has no linear layers in parts "
                             f"{parts} for method {self.name!r} to wrap")
        return names


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int
                    ) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step cosine decay, no warm-up: optimiser step s (0-based) of `total_steps` runs at
    lr * (1 + cos(pi * s / total_steps)) / 2, so the first step is at lr and the last just above
    0. This is CoDyRA's schedule (Artificer-AI-Lab/CoDyRA utils.py `cosine_lr`, called with the
    iteration before every step, warmup_length 0); methods whose official loop steps a schedule
    per epoch use `epoch_schedule` instead."""
    steps = max(total_steps, 1)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))


def epoch_schedule(optimizer: torch.optim.Optimizer, total_steps: int, epochs: int,
                   factor: Callable[[int], float]) -> torch.optim.lr_scheduler.LambdaLR:
    """A learning rate that changes once per epoch, as in a loop that calls `scheduler.step()`
    after each epoch: every optimiser step of epoch e (0-based) runs at lr * factor(e). The loop
    steps this schedule per optimiser step, so epoch e is steps [e * n, (e + 1) * n) with
    n = total_steps // epochs (the loop's task has `epochs` epochs of equal length)."""
    per_epoch = max(total_steps // max(epochs, 1), 1)
    last = max(epochs, 1) - 1
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: factor(min(step // per_epoch, last)))


def epoch_cosine(epochs: int) -> Callable[[int], float]:
    """torch's CosineAnnealingLR(T_max=epochs, eta_min=0) stepped once per epoch: epoch e runs at
    (1 + cos(pi * e / epochs)) / 2 of the rate (3 epochs: x1, x0.75, x0.25)."""
    return lambda epoch: 0.5 * (1 + math.cos(math.pi * epoch / epochs))


def parameters_of(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """Unique parameters of several modules, in order."""
    seen: dict[int, nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())
