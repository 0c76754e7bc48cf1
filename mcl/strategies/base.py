"""`ContinualStrategy`, the one interface every continual-learning method implements, and its
registry.

A strategy decides what is trainable, what data a task trains on, the loss, what happens around
a task (subspaces, merges, stored keys) and what state must survive a checkpoint. The loop calls
the hooks and knows nothing about any one method; a method overrides only the hooks it needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from mcl.data.task import Sample, Task

STRATEGIES: dict[str, type[ContinualStrategy]] = {}


def register(name: str) -> Callable[[type[ContinualStrategy]], type[ContinualStrategy]]:
    """Class decorator: make a strategy selectable as `method=<name>`."""

    def add(cls: type[ContinualStrategy]) -> type[ContinualStrategy]:
        if name in STRATEGIES:
            raise ValueError(f"strategy name {name!r} is already registered by {STRATEGIES[name]}")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return add


class ContinualStrategy:
    """Base class: by default trains nothing and answers with the backbone as it is.

    Subclasses declare `requires` (backbone capabilities they use) and `families` (the task
    families they support), so an impossible method x backbone pair fails before any work.
    """

    name = "base"
    requires: frozenset[str] = frozenset()
    families: frozenset[str] = frozenset({"instruction"})
    # False for a method whose step hooks need whole gradients or parameters (e.g. gradient
    # projection): under FSDP each rank holds only a shard of them, so trainer=fsdp refuses it.
    shardable: bool = True

    def __init__(self, lr: float = 1e-4, weight_decay: float = 0.0, epochs: int = 1,
                 batch_size: int = 32) -> None:
        if epochs <= 0:
            raise ValueError(f"method.epochs must be a positive integer, got {epochs}")
        if batch_size <= 0:
            raise ValueError(f"method.batch_size must be a positive integer, got {batch_size}")
        if lr <= 0:
            raise ValueError(f"method.lr must be positive, got {lr}")
        self.lr, self.weight_decay = lr, weight_decay
        self.epochs, self.batch_size = epochs, batch_size
        self.backbone: nn.Module | None = None

    # ------------------------------------------------------------------ set-up

    @classmethod
    def check_backbone(cls, backbone) -> None:
        """Raise a ValueError saying why this strategy cannot run on `backbone`, if it cannot."""
        missing = cls.requires - set(backbone.capabilities)
        if missing:
            raise ValueError(
                f"method {cls.name!r} cannot run on backbone {backbone.name!r}: it needs the "
                f"capabilities {sorted(missing)}, which this backbone does not expose")
        if backbone.family not in cls.families:
            raise ValueError(
                f"method {cls.name!r} supports {sorted(cls.families)} backbones, but "
                f"{backbone.name!r} is a {backbone.family!r} backbone")

    def setup(self, backbone) -> None:
        """Attach to the backbone: add adapters or prompts, freeze what the method freezes."""
        self.check_backbone(backbone)
        self.backbone = backbone
        backbone.requires_grad_(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters this method trains (all others stay frozen)."""
        return []

    def named_trainable_parameters(self) -> dict[str, nn.Parameter]:
        trainable = {id(p) for p in self.trainable_parameters()}
        return {n: p for n, p in self.backbone.named_parameters() if id(p) in trainable}

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

    def state_dict(self) -> dict:
        """All method state: the trainable parameters' values and the extra state."""
        params = {n: p.detach().cpu().clone() for n, p in self.named_trainable_parameters().items()}
        state = {"params": params, "extra": self.extra_state()}
        if hasattr(self.backbone, "extra_state"):  # e.g. which head row is which class
            state["backbone"] = self.backbone.extra_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict` (after `setup` on a freshly loaded backbone)."""
        self.load_extra_state(state["extra"])
        if "backbone" in state:
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
        total = sum(p.numel() for p in self.backbone.parameters())
        return (f"method {self.name}: {trainable:,} trainable parameters of {total:,} "
                f"({100 * trainable / max(total, 1):.2f}%)")


def build_strategy(name: str, **kwargs) -> ContinualStrategy:
    """Instantiate a registered strategy by name, with a clear error for unknown names."""
    import mcl.strategies  # noqa: F401  (registers every built-in strategy)

    if name not in STRATEGIES:
        raise ValueError(f"unknown method {name!r}; registered methods: "
                         f"{', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name](**kwargs)


class PartsStrategy(ContinualStrategy):
    """A method that trains named backbone parts, or adapters on their linear layers.

    `parts` chooses them; when it is None, the class's `default_parts` for the backbone's family
    (or the config's `family_parts`) does, so one method file serves every family.
    """

    default_parts: dict[str, tuple[str, ...]] = {}

    def __init__(self, parts: Sequence[str] | None = None,
                 family_parts: dict[str, Sequence[str]] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.parts = list(parts) if parts is not None else None
        self.family_parts = dict(family_parts or self.default_parts)

    def parts_for(self, backbone) -> list[str]:
        """The parts trained on `backbone`; a ValueError naming the valid ones if it lacks one."""
        if self.parts is not None:
            parts = list(self.parts)
        elif backbone.family in self.family_parts:
            parts = list(self.family_parts[backbone.family])
        else:
            raise ValueError(f"method {self.name!r} has no default parts for {backbone.family!r} "
                             f"backbones; set method.parts (parts of {backbone.name!r}: "
                             f"{sorted(getattr(backbone, 'part_names', ()))})")
        valid = getattr(backbone, "part_names", None)  # a class-level probe may not list them
        missing = [p for p in parts if valid is not None and p not in valid]
        if missing:
            raise ValueError(f"method {self.name!r} trains parts {missing}, which backbone "
                             f"{backbone.name!r} does not have; its parts are {sorted(valid)}. "
                             "Set method.parts to some of them.")
        return parts

    def check_backbone(self, backbone) -> None:
        super().check_backbone(backbone)
        self.parts_for(backbone)

    def linear_layers_of_parts(self, backbone) -> list[str]:
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
