"""PromptFusion: Decoupling Stability and Plasticity for Continual Learning (Chen, Wu, Han, Jia,
Jiang; arXiv 2303.07223, ECCV 2024).

Two prompt-tuned frozen models see every image:

- the Stabilizer, a CLIP (the run's backbone) with CoOp prompts: learnable context vectors in
  front of each class name (Zhou et al. 2022; class-specific contexts, one set per task, frozen
  once their task is over) and a learnable image prompt shared by all tasks; its logits are
  logit_scale * cos(image feature, text feature);
- the Booster, a ViT (`method.booster`, a backbone config) with VPT-shallow prompts (Jia et al.
  2022) and a linear head. With `method.booster: null` the Booster prompts the Stabilizer's own
  image tower (separately) and trains its own linear head: one model in memory instead of two,
  a lighter variant that is not the paper's set-up.

Their logits are fused with a learnable weight lambda,
    logits = (1 - sigmoid(lambda)) * stabilizer + sigmoid(lambda) * booster,
and, from the second task on, the log-probabilities are multiplied by a weight mask that
balances old and new classes before the NLL loss:
    w_c = sigmoid(alpha_c) for the current task's classes,  w_c = theta / sigmoid(beta_c) for
    earlier classes,  theta = t / 2 (t = 0-based task index), alpha and beta learnable.
The mask is a training device only: prediction is the arg-max of the fused logits. Training
mixes the task's data with a class-balanced exemplar memory chosen by herding (barycenter,
iCaRL) on the frozen CLIP image features, as the official code does (memory 5000).

Only the abstract of the paper could be read; the mechanism and every default follow the
authors' code, HaoranChen/PromptFusion (model.py Clip_PF, train_pf.py, prompt.py, main.py,
config/pf_cifar.json), cited next to each number in conf/method/prompt_fusion.yaml. As in that
code:

- the text of a class is [SOS] ctx_1..ctx_M X..X (M times) name . [EOS] (`text_layout:
  official`): prompt.py `clip_text_prompt_genarator` tokenizes 2M "X" placeholders before the
  name and replaces only the first M by the context vectors. Plain CoOp ([SOS] ctx_1..ctx_M
  name . [EOS], Zhou et al. 2022) is `text_layout: coop`;
- the learning rate follows torch's CosineAnnealingLR(T_max=epochs) stepped once per epoch
  (train_pf.py: `scheduler.step()` after each epoch), so 3 epochs run at x1, x0.75, x0.25 of
  lr (`lr_schedule: epoch_cosine`; `step_cosine` decays it every optimiser step instead);
- the Booster is the ViT-B/16 that main.py's `create_model('vit_base_patch16_224',
  pretrained=True)` loads. The repository registers its own `vit_base_patch16_224`
  (vision_transformer.py, taken from the l2p-pytorch port) whose weight URL is the original
  ViT paper's ImageNet-21k checkpoint `vit_models/imagenet21k/ViT-B_16.npz` (pre-trained on
  ImageNet-21k, NOT fine-tuned on ImageNet-1k; the in21k -> in1k URL is commented out there,
  and the docstring's "ImageNet-1k weights fine-tuned from in21k" is timm's, left unedited).
  The transformers port of that checkpoint is `google/vit-base-patch16-224-in21k` (conf/backbone
  /vit_b16_in21k.yaml), the default here. Different checkpoints: `google/vit-base-patch16-224`
  (in21k pre-trained, in1k fine-tuned) and timm's own current `vit_base_patch16_224` (AugReg,
  in21k -> in1k).

Departures from that code, each documented here:
- alpha and beta are one value per class (the code keeps one per batch row and class, an
  artefact of its fixed batch size with drop_last); alpha is re-created per task like beta (the
  code keeps a fixed-size alpha, which assumes equal-sized tasks). Equal in value at init (all
  ones) and on equal-sized tasks up to that per-row duplication; no option.
- image features are the CLS tokens; the code's CLIP image branch (model.py VisionEncoder)
  averages the outputs at its prompt positions before ln_post. Changes results; not an option
  yet: the backbone's `encode_image` returns the pooled CLS feature only.
- pixels: by default both models read normalised pixels (CLIP's processor's, re-normalised to
  the Booster's own), as they were pre-trained; the code feeds the same ToTensor [0, 1] pixels,
  unnormalised, to CLIP and to the ViT (dataset.py build_transform has no Normalize):
  `raw_pixels: true`. Changes results. (The herding features stay the normalised CLIP's.)
- batches: the loop keeps an epoch's last, smaller batch; train_pf.py drops it (drop_last=True).
  One batch per epoch; no option (the loop's sampler serves every method).
"""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn import functional as F

from mcl.backbones.base import BackboneSpec, Capability
from mcl.backbones.classification import ClassifierOutput
from mcl.backbones.vit import VitBackbone
from mcl.memory import ExemplarMemory, herding_order
from mcl.strategies.base import (
    ContinualStrategy,
    cosine_schedule,
    epoch_cosine,
    epoch_schedule,
    register,
)
from mcl.strategies.prompt_pool import unit_range

TEXT_LAYOUTS = ("official", "coop")
LR_SCHEDULES = ("epoch_cosine", "step_cosine")


def fuse(stabilizer: torch.Tensor, booster: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """(1 - sigmoid(lambda)) * stabilizer + sigmoid(lambda) * booster logits."""
    w = torch.sigmoid(lam)
    return (1 - w) * stabilizer + w * booster


def weight_mask(classes: list[str], new: list[str], old: list[str], alpha: torch.Tensor,
                beta: torch.Tensor, theta: float) -> torch.Tensor:
    """Per-class weights over the label space `classes`: sigmoid(alpha_i) for the i-th class of
    `new` (this task's), theta / sigmoid(beta_j) for the j-th class of `old` (earlier tasks'),
    1 for a class in neither (model.py generate_weight_mask, per class)."""
    new_at = {c: i for i, c in enumerate(new)}
    old_at = {c: j for j, c in enumerate(old)}
    weights = []
    for c in classes:
        if c in new_at:
            weights.append(torch.sigmoid(alpha[new_at[c]]))
        elif c in old_at:
            weights.append(theta / torch.sigmoid(beta[old_at[c]]))
        else:
            weights.append(alpha.new_ones(()))
    return torch.stack(weights)


def masked_nll(logits: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor
               ) -> torch.Tensor:
    """NLL of log_softmax(logits) multiplied class-wise by `weights` (the official loss:
    F.nll_loss(log_softmax(logits) * weight, label))."""
    return F.nll_loss(F.log_softmax(logits, dim=-1) * weights, labels)


def class_text(name: str, context_length: int, layout: str) -> str:
    """The words of a class's CoOp text; the context vectors go between [SOS] and them.

    `official` (prompt.py): M "X" placeholders, then the name, so the text tower reads [SOS]
    ctx x M, X x M, name, ".", [EOS]. `coop`: the name alone, [SOS] ctx x M, name, ".", [EOS].
    Underscores become spaces, as both PromptFusion's and CoOp's code write class names."""
    words = name.replace("_", " ")
    if layout == "official":
        return " ".join(["X"] * context_length + [words])
    return words


class TowerBooster(nn.Module):
    """The Booster on the Stabilizer's image tower (`method.booster: null`): VPT prompts through
    the CLIP image encoder, then a linear head over class rows exactly like VitBackbone's (its
    head methods are reused as they are)."""

    def __init__(self, clip, max_classes: int = 256) -> None:
        super().__init__()
        self._clip = [clip]  # a list: the tower belongs to the backbone, not to this module
        self.name = f"{clip.name} (own image tower)"
        self.hidden_size = clip.hidden_size
        self.image_processor = clip.image_processor
        self.head = nn.Linear(clip.feature_dim, max_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.class_rows: dict[str, int] = {}

    def encode_image(self, pixel_values: torch.Tensor, prompts: torch.Tensor | None = None
                     ) -> torch.Tensor:
        return self._clip[0].encode_image(pixel_values, prompts=prompts)

    register_classes = VitBackbone.register_classes
    logits = VitBackbone.logits
    head_parameters = VitBackbone.head_parameters
    extra_state = VitBackbone.extra_state
    load_extra_state = VitBackbone.load_extra_state


class FusionParameters(nn.Module):
    """Everything PromptFusion learns besides the Booster's head."""

    def __init__(self, clip_hidden: int, clip_prompt_length: int, booster_hidden: int,
                 booster_prompt_length: int) -> None:
        super().__init__()
        # Official: image prompt torch.randn, VPT prompt U(-1, 1), lambda_ ones (model.py,
        # prompt.py VPT_Prompt prompt_init='uniform').
        self.image_prompt = nn.Parameter(torch.randn(clip_prompt_length, clip_hidden))
        self.booster_prompt = nn.Parameter(
            torch.empty(booster_prompt_length, booster_hidden).uniform_(-1, 1))
        self.lam = nn.Parameter(torch.ones(1))
        self.contexts = nn.ParameterList()  # one [classes of task t, M, H_text] per task
        self.alpha = nn.Parameter(torch.ones(0))
        self.beta = nn.Parameter(torch.ones(0))


@register("prompt_fusion")
class PromptFusion(ContinualStrategy):
    """Stabilizer (CoOp on CLIP) + Booster (VPT on a ViT), fused logits, old/new weight mask."""

    requires = frozenset({"vision_prompts", "label_prompts"})
    families = frozenset({"classification"})

    def __init__(self, *, booster: dict | None, context_length: int, clip_prompt_length: int,
                 booster_prompt_length: int, memory_size: int, feature_batch_size: int,
                 text_layout: str, lr_schedule: str, raw_pixels: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        if text_layout not in TEXT_LAYOUTS:
            raise ValueError(f"method.text_layout must be one of {TEXT_LAYOUTS} (official: the "
                             f"authors' [SOS] ctx X..X name . [EOS]; coop: plain CoOp), got "
                             f"{text_layout!r}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"method.lr_schedule must be one of {LR_SCHEDULES} (epoch_cosine: "
                             "the authors' per-epoch CosineAnnealingLR), got "
                             f"{lr_schedule!r}")
        self.text_layout, self.lr_schedule = text_layout, lr_schedule
        self.raw_pixels = raw_pixels  # True: both models read [0, 1] pixels, as the code does
        if isinstance(booster, DictConfig):
            booster = OmegaConf.to_container(booster, resolve=True)
        _check_booster(booster)
        for name, value in (("context_length", context_length),
                            ("clip_prompt_length", clip_prompt_length),
                            ("booster_prompt_length", booster_prompt_length)):
            if value <= 0:
                raise ValueError(f"method.{name} must be positive, got {value}")
        if memory_size < 0:
            raise ValueError(f"method.memory_size must be >= 0, got {memory_size}")
        self.booster_cfg = booster
        self.context_length = context_length
        self.clip_prompt_length, self.booster_prompt_length = (clip_prompt_length,
                                                               booster_prompt_length)
        self.memory_size, self.feature_batch_size = memory_size, feature_batch_size
        self.booster = None
        self.fusion: FusionParameters | None = None
        self.task_index = -1
        self.context_classes: list[list[str]] = []  # classes of each context block
        self.new_classes: list[str] = []  # the current task's alpha
        self.old_classes: list[str] = []  # the current task's beta
        self.memory = ExemplarMemory(memory_size)  # class-balanced, herding order per group
        self._frozen_text: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ set-up

    def setup(self, backbone) -> None:
        super().setup(backbone)
        if self.booster_cfg is None:
            booster = TowerBooster(backbone)
        else:
            booster = instantiate(self.booster_cfg, _convert_="all")
        booster.requires_grad_(False)
        for p in booster.head_parameters():
            p.requires_grad_(True)
        reference = next(backbone.parameters())
        self.booster = booster.to(reference.device).eval()
        # Both owned by the strategy (its children): moved, trained and saved with it.
        self.fusion = FusionParameters(backbone.hidden_size, self.clip_prompt_length,
                                       booster.hidden_size, self.booster_prompt_length
                                       ).to(reference.device)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.fusion.parameters()) + list(self.booster.head_parameters())

    def describe(self) -> str:
        return super().describe() + f" (Booster {self.booster.name} included)"

    # ------------------------------------------------------------------ task hooks

    def train_samples(self, seen):
        """The task's samples and the exemplar memory of the earlier ones."""
        return list(seen[-1].train) + self.memory.samples(seen)

    def before_task(self, task, index: int) -> None:
        self.task_index = index
        classes = _task_classes(task)
        known = {c for block in self.context_classes for c in block}
        new = [c for c in classes if c not in known]
        device = self.fusion.lam.device
        if new:  # CoOp contexts for the new classes, N(0, 0.01^2) as prompt.py / model.py
            self._check_text_fits(new)
            context = torch.empty(len(new), self.context_length, self.backbone.text_hidden_size,
                                  device=device).normal_(std=0.01)
            self.fusion.contexts.append(nn.Parameter(context))
            self.context_classes.append(new)
        self._set_mask_classes(new, sorted(known, key=self._class_order))
        self.booster.register_classes(sorted(set(classes) | known, key=self._class_order))
        self._frozen_text.clear()

    def _text(self, name: str) -> str:
        return class_text(name, self.context_length, self.text_layout)

    def _check_text_fits(self, classes: list[str]) -> None:
        """Context + [SOS] (placeholders) name . [EOS] must fit the text tower's positions."""
        limit = self.backbone.text_context_length
        longest = max(len(ids) for ids in self.backbone.tokenizer(
            [f"{self._text(c)}." for c in classes])["input_ids"])
        if self.context_length + longest > limit:
            raise ValueError(f"method prompt_fusion: {self.context_length} context vectors + "
                             f"{longest} tokens of the longest class prompt (text_layout "
                             f"{self.text_layout}) exceed the {limit} positions of "
                             f"{self.backbone.name!r}'s text tower; lower "
                             "method.context_length")

    def _set_mask_classes(self, new: list[str], old: list[str]) -> None:
        """Fresh alpha (new classes) and beta (old classes), initialised to ones (model.py)."""
        device = self.fusion.lam.device
        self.new_classes, self.old_classes = new, old
        self.fusion.alpha = nn.Parameter(torch.ones(len(new), device=device))
        self.fusion.beta = nn.Parameter(torch.ones(len(old), device=device))

    def _class_order(self, name: str) -> int:
        order = [c for block in self.context_classes for c in block]
        return order.index(name) if name in order else len(order)

    def after_task(self, task, index: int) -> None:
        self._frozen_text.clear()
        if self.memory_size:
            self._update_memory(task, index)

    @torch.no_grad()
    def _update_memory(self, task, index: int) -> None:
        """Class-balanced memory: every (task, class) group keeps memory_size // groups samples,
        in herding order of the frozen CLIP image features."""
        backbone = self.backbone
        device = next(backbone.parameters()).device
        was_training = backbone.training
        backbone.eval()
        items = backbone.encode(task.train, with_answer=False)
        feats = [backbone.query(torch.stack([it["pixel_values"] for it in
                                             items[s:s + self.feature_batch_size]]).to(device))
                 for s in range(0, len(items), self.feature_batch_size)]
        features = torch.cat(feats).cpu()
        answers = [s.answer for s in task.train]
        new = {}
        for c in dict.fromkeys(answers):
            rows = [i for i, a in enumerate(answers) if a == c]
            new[(index, c)] = [rows[j] for j in herding_order(features[rows], len(rows))]
        self.memory.rebalance(new)
        backbone.train(was_training)

    # ------------------------------------------------------------------ logits

    def stabilizer_text(self, classes: list[str]) -> torch.Tensor:
        """Text features [C, D]: CoOp text of each class with a context, CLIP's own template for
        a class with none yet (a task not reached: zero-shot). Frozen blocks are cached."""
        clip, out = self.backbone, []
        frozen_blocks = len(self.context_classes) - (1 if self._training_task_has_context()
                                                      else 0)
        where = {c: (b, r) for b, block in enumerate(self.context_classes)
                 for r, c in enumerate(block)}
        for c in classes:
            if c not in where:
                with torch.no_grad():
                    out.append(clip.encode_text([c])[0])
                continue
            b, r = where[c]
            if b < frozen_blocks:
                if c not in self._frozen_text:
                    with torch.no_grad():
                        self._frozen_text[c] = clip.encode_text(
                            [self._text(c)], self.fusion.contexts[b][r])[0]
                out.append(self._frozen_text[c])
            else:
                out.append(clip.encode_text([self._text(c)], self.fusion.contexts[b][r])[0])
        return torch.stack(out)

    def _training_task_has_context(self) -> bool:
        """Whether the last context block belongs to the task being trained (still learning)."""
        return bool(self.backbone.training and self.context_classes and self.new_classes
                    and self.context_classes[-1] == self.new_classes)

    def booster_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised pixels re-normalised (and resized) for the Booster's processor; with
        `raw_pixels`, in [0, 1] (resized) instead."""
        if isinstance(self.booster, TowerBooster):
            if self.raw_pixels:
                return unit_range(pixel_values, self.backbone.image_processor)
            return pixel_values
        x = unit_range(pixel_values.float(), self.backbone.image_processor)
        size = self.booster.image_size
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if self.raw_pixels:
            return x
        mean, std = _stats(self.booster.image_processor, x)
        return (x - mean) / std

    def branch_logits(self, pixel_values: torch.Tensor, classes: list[str]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        clip, f, b = self.backbone, self.fusion, len(pixel_values)
        clip_pixels = (unit_range(pixel_values, clip.image_processor) if self.raw_pixels
                       else pixel_values)
        image = clip.encode_image(clip_pixels, prompts=f.image_prompt.expand(b, -1, -1))
        text = self.stabilizer_text(classes)
        stabilizer = clip.logit_scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
        boosted = self.booster.encode_image(self.booster_pixels(pixel_values),
                                            prompts=f.booster_prompt.expand(b, -1, -1))
        return stabilizer, self.booster.logits(boosted, classes)

    def forward(self, batch: dict) -> ClassifierOutput:
        classes = list(batch["classes"])
        stabilizer, booster = self.branch_logits(batch["pixel_values"], classes)
        logits = fuse(stabilizer, booster, self.fusion.lam)
        labels = batch.get("labels")
        loss = None
        if labels is not None:
            if self.backbone.training and self.task_index > 0:
                loss = masked_nll(logits, self.mask_for(classes), labels)
            else:
                loss = F.cross_entropy(logits, labels)
        return ClassifierOutput(loss, logits)

    def mask_for(self, classes: list[str]) -> torch.Tensor:
        """The weight mask over a label space from this task's alpha and beta;
        theta = t / 2 (model.py update_parameters: theta = task_id / 2)."""
        return weight_mask(classes, self.new_classes, self.old_classes, self.fusion.alpha,
                           self.fusion.beta, self.task_index / 2)

    def generate(self, batch: dict) -> list[str]:
        with torch.no_grad():
            out = self.forward({k: v for k, v in batch.items() if k != "labels"})
        return self.backbone.predict(out.logits, batch["classes"])

    def configure_optimizer(self, params: list[nn.Parameter], total_steps: int):
        """AdamW (train_pf.py: a fresh AdamW per task) with `lr_schedule`: epoch_cosine is
        train_pf.py's CosineAnnealingLR(T_max=epochs), stepped after every epoch."""
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "step_cosine":
            return optimizer, cosine_schedule(optimizer, total_steps)
        return optimizer, epoch_schedule(optimizer, total_steps, self.epochs,
                                         epoch_cosine(self.epochs))

    # ------------------------------------------------------------------ state

    def extra_state(self) -> dict:
        return {"task_index": self.task_index, "context_classes": self.context_classes,
                "new_classes": self.new_classes, "old_classes": self.old_classes,
                "memory": self.memory.state(),
                "booster": self.booster.extra_state()}

    def load_extra_state(self, state: dict) -> None:
        """Re-create the per-task parameters with their shapes; values come after."""
        device = self.fusion.lam.device
        self.task_index = state["task_index"]
        self.context_classes = [list(b) for b in state["context_classes"]]
        self.fusion.contexts = nn.ParameterList(
            nn.Parameter(torch.zeros(len(b), self.context_length,
                                     self.backbone.text_hidden_size, device=device))
            for b in self.context_classes)
        self._set_mask_classes(list(state["new_classes"]), list(state["old_classes"]))
        self.memory.load_state(state["memory"])
        self.booster.load_extra_state(state["booster"])
        self._frozen_text.clear()


def _task_classes(task) -> list[str]:
    if "classes" in task.meta:
        return list(task.meta["classes"])
    return sorted({s.answer for s in task.train})


def _stats(processor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(processor.image_mean, dtype=like.dtype, device=like.device)
    std = torch.tensor(processor.image_std, dtype=like.dtype, device=like.device)
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def _check_booster(booster: dict | None) -> None:
    """Fail before loading anything if the Booster config is malformed or cannot take VPT."""
    if booster is None:
        return
    if not isinstance(booster, dict) or "_target_" not in booster:
        raise ValueError("method.booster must be null (Booster on CLIP's own image tower) or the "
                         "config of the Booster ViT, a backbone config with _target_ such as "
                         f"conf/backbone/vit_b16_in21k.yaml; got {booster!r}")
    try:
        spec = BackboneSpec.of_target(booster["_target_"], booster.get("name", "booster"))
    except ValueError as err:
        raise ValueError(f"method.booster._target_ {booster['_target_']!r} is not a backbone "
                         f"loader: {err}") from err
    if spec.family != "classification" or Capability.VISION_PROMPTS not in spec.capabilities:
        raise ValueError(f"method prompt_fusion: the Booster {booster.get('name')!r} must be a "
                         "classification backbone with the capability 'vision_prompts' (VPT), "
                         f"but it is a {spec.family!r} backbone with "
                         f"{sorted(spec.capabilities)}")
