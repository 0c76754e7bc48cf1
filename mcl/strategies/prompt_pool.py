"""Shared mechanics of the prompt-pool methods (L2P, DualPrompt, CODA-Prompt) and the strategy
base class they share on the classification family's frozen image encoders.

- key-query matching (L2P, Wang et al. CVPR 2022, Sec. 4.2): a frozen pre-trained feature of the
  image is the query q(x); prompts are chosen by the cosine similarity of their keys to it, and
  a surrogate loss pulls the chosen keys towards the query (Eq. 5);
- prefix tuning (DualPrompt, Wang et al. ECCV 2022, Sec. 4.2 "Pre-T"): a prompt p of length
  L_p is split into a key part and a value part that are prepended to one attention layer's keys
  and values;
- CODA-Prompt (Smith et al. CVPR 2023, Sec. 4, Eq. 3-6): the prompt is a weighted sum of
  components, alpha_m = cos(q * A_m, K_m), components of old tasks frozen, new components
  initialised orthogonal to the old ones (Gram-Schmidt, the authors' updated code
  GT-RIPL/CODA-Prompt models/zoo.py: exact against the span of the old rows, or the code's
  row-by-row projection) and optionally an orthogonality penalty ||BB^T - I||^2;
- `VisionPromptStrategy`: query -> prompts -> prompted image feature -> the backbone's classifier
  over the batch's label space. The class-incremental training mask of the L2P/DualPrompt/CODA
  code (`train_mask`: logits of classes outside the current task set to -inf) is the backbones'
  default training label space: the classes of the samples trained on together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mcl.backbones.classification import ClassifierOutput, Prefixes
from mcl.strategies.base import ContinualStrategy


def unit_range(pixel_values: torch.Tensor, processor) -> torch.Tensor:
    """Pixels with the image processor's normalisation undone, in [0, 1]: what the official code
    of L2P and DualPrompt (google-research/l2p `norm_01=True`), CODA-Prompt (dataloaders/utils.py
    mean 0, std 1) and PromptFusion (dataset.py, ToTensor only) feed their pre-trained models."""
    shape = (1, -1, 1, 1)
    mean = torch.tensor(processor.image_mean, dtype=pixel_values.dtype,
                        device=pixel_values.device).view(shape)
    std = torch.tensor(processor.image_std, dtype=pixel_values.dtype,
                       device=pixel_values.device).view(shape)
    return pixel_values * std + mean


def cosine_similarity_matrix(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """cos(q_b, k_m) for every query row b and key row m: B x M."""
    return F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T


def select_top_k(query: torch.Tensor, keys: torch.Tensor, top_k: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """L2P's instance-wise selection (Sec. 4.2, Eq. 3): the `top_k` keys most similar to each
    query. Returns their indices (B x k) and similarities (B x k), best first."""
    similarity = cosine_similarity_matrix(query, keys)
    chosen, index = similarity.topk(top_k, dim=1)
    return index, chosen


def pull_loss(chosen_similarity: torch.Tensor) -> torch.Tensor:
    """L2P's surrogate loss (Eq. 5) sum_i gamma(q(x), k_si) with gamma = 1 - cos, summed over
    the chosen keys and averaged over the batch (google-research/l2p: reduce_sim / batch)."""
    return (1 - chosen_similarity).sum(dim=1).mean()


def split_prefix(prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefix tuning (DualPrompt Sec. 4.2): a prompt B x L x H is split along its length into
    the key prefix (first half) and the value prefix (second half) of one attention layer."""
    half = prompt.shape[1] // 2
    if half == 0 or prompt.shape[1] % 2:
        raise ValueError(f"a prefix prompt needs an even, positive length, got {prompt.shape[1]}")
    return prompt[:, :half], prompt[:, half:]


def coda_weights(query: torch.Tensor, attention: torch.Tensor, keys: torch.Tensor
                 ) -> torch.Tensor:
    """CODA-Prompt's component weights (Eq. 4-5): alpha_{b,m} = cos(q_b * A_m, K_m), the query
    re-weighted feature-wise by component m's attention vector, then compared to its key."""
    attended = query.unsqueeze(1) * attention.unsqueeze(0)  # B x M x D
    return (F.normalize(attended, dim=-1) * F.normalize(keys, dim=-1).unsqueeze(0)).sum(-1)


def assemble(weights: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """CODA-Prompt's prompt (Eq. 3): p_b = sum_m alpha_{b,m} P_m; weights B x M, components
    M x L x H -> B x L x H."""
    return torch.einsum("bm,mlh->blh", weights, components)


def orthonormal_extension(existing: torch.Tensor, count: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """`count` unit rows orthogonal to each other and to every row of `existing` (s x n):
    Gram-Schmidt of random vectors against an orthonormal basis of the old rows' span, so the
    new rows are orthogonal to the old ones even after training has made those non-orthogonal
    (what the paper intends; the authors' code projects onto each old row separately, see
    `official_gram_schmidt`). Needs s + count <= n."""
    n = existing.shape[1]
    if existing.shape[0] + count > n:
        raise ValueError(f"cannot add {count} orthogonal rows to {existing.shape[0]} in "
                         f"dimension {n}: lower method.pool_size or the prompt length")
    basis = existing.double()
    if len(basis):
        basis = torch.linalg.qr(basis.T).Q.T  # orthonormal rows spanning the old components
    rows = []
    for _ in range(count):
        v = torch.randn(n, generator=generator, dtype=torch.float64)
        for _ in range(2):  # twice: classical Gram-Schmidt is exact only in exact arithmetic
            v = v - basis.T @ (basis @ v)
        v = v / v.norm()
        rows.append(v)
        basis = torch.cat([basis, v.unsqueeze(0)])
    return torch.stack(rows).to(existing.dtype) if rows else existing.new_empty(0, n)


def official_gram_schmidt(existing: torch.Tensor, count: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """`count` new unit rows as GT-RIPL/CODA-Prompt models/zoo.py `gram_schmidt` makes them:
    each random v_k minus its projections (v_k . u_j / u_j . u_j) u_j onto every earlier row u_j
    taken separately (the old rows as they are, then the new rows before normalisation), all new
    rows normalised at the end. Equal to `orthonormal_extension` while the old rows are
    orthogonal; once trained they are not, and the new rows keep a small overlap with them
    (and with each other). Zero old rows are skipped (the official code would redraw forever)."""
    rows = [r for r in existing.double() if float(r @ r) >= 1e-8]
    new: list[torch.Tensor] = []
    for _ in range(count):
        v = torch.randn(existing.shape[1], generator=generator, dtype=torch.float64)
        u = v.clone()
        for r in rows + new:  # every projection uses v itself (classical Gram-Schmidt)
            u -= (v @ r) / (r @ r) * r
        new.append(u)
    if not new:
        return existing.new_empty(0, existing.shape[1])
    return torch.stack([u / u.norm() for u in new]).to(existing.dtype)


def ortho_penalty(matrix: torch.Tensor) -> torch.Tensor:
    """CODA-Prompt's orthogonality regulariser (Eq. 6): mean of (B B^T - I)^2 over the rows of
    `matrix` (the official code takes the mean, not the sum)."""
    gram = matrix @ matrix.T
    return (gram - torch.eye(len(matrix), dtype=gram.dtype, device=gram.device)).square().mean()


def uniform_parameter(*shape: int) -> nn.Parameter:
    """A parameter drawn from U(-1, 1): how the PyTorch port of L2P/DualPrompt
    (JH-LEE-KR/l2p-pytorch, prompt.py, `prompt_init='uniform'`) initialises prompts and keys."""
    return nn.Parameter(torch.empty(*shape).uniform_(-1, 1))


# L2P's and DualPrompt's prompt and key initialisations: `official` is the authors' code
# (google-research/l2p models/prompt.py and vit.py: Flax's `nn.initializers.uniform()`, whose
# default scale draws from U[0, 0.01), for the prompt pool, the G-prefix and the keys, as the
# configs' initializer / prompt_key_init "uniform" select); `pytorch_port` is JH-LEE-KR's
# l2p-pytorch / dualprompt-pytorch, U(-1, 1): mcl's only init before.
PROMPT_INITS = ("official", "pytorch_port")


def prompt_parameter(init: str, *shape: int) -> nn.Parameter:
    """A prompt or key parameter drawn as `init` (one of PROMPT_INITS) says."""
    if init == "official":
        return nn.Parameter(torch.empty(*shape).uniform_(0, 0.01))
    return uniform_parameter(*shape)


def check_prompt_init(init: str) -> None:
    if init not in PROMPT_INITS:
        raise ValueError(f"method.prompt_init must be one of {PROMPT_INITS} (official: the "
                         "authors' code, U[0, 0.01); pytorch_port: U(-1, 1)), got "
                         f"{init!r}")


@dataclass
class PromptedOutput(ClassifierOutput):
    """The classifier output plus the method's own loss term (pull / orthogonality), already
    weighted by its coefficient."""

    aux: torch.Tensor | float = 0.0


class VisionPromptStrategy(ContinualStrategy):
    """Frozen classification backbone + prompts chosen from the frozen query feature.

    Subclasses build their prompt module (`build`) and turn (pixels, query) into the prompted
    image feature and their auxiliary loss (`prompted_features`). The classifier is the
    backbone's over the batch's label space (ViT: its linear head, trained beside the prompts as
    in every prompt method's code; CLIP: the text tower over label prompts, frozen).
    """

    requires = frozenset({"vision_prompts"})
    families = frozenset({"classification"})

    def __init__(self, *, raw_pixels: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.prompts: nn.Module | None = None
        # True: the backbone reads [0, 1] pixels, as the official code feeds them (`unit_range`);
        # False (default): the pixels its image processor normalises, as it was pre-trained.
        self.raw_pixels = raw_pixels

    def build(self, backbone) -> nn.Module:
        raise NotImplementedError

    def prompted_features(self, pixel_values: torch.Tensor, query: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor | float]:
        raise NotImplementedError

    def setup(self, backbone) -> None:
        super().setup(backbone)
        reference = next(backbone.parameters())
        self.prompts = self.build(backbone).to(reference.device)  # owned: a strategy child
        for p in backbone.head_parameters():
            p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.prompts.parameters()) + list(self.backbone.head_parameters())

    def forward(self, batch: dict) -> PromptedOutput:
        pixels = batch["pixel_values"]
        if self.raw_pixels:
            pixels = unit_range(pixels, self.backbone.image_processor)
        features, aux = self.prompted_features(pixels, self.backbone.query(pixels))
        logits = self.backbone.logits(features, batch["classes"])
        labels = batch.get("labels")
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return PromptedOutput(loss, logits, aux)

    def loss(self, batch: dict, outputs: PromptedOutput) -> torch.Tensor:
        return outputs.loss + outputs.aux

    def generate(self, batch: dict) -> list[str]:
        with torch.no_grad():
            out = self.forward({k: v for k, v in batch.items() if k != "labels"})
        return self.backbone.predict(out.logits, batch["classes"])


def reference_batch_lr(lr: float, batch_size: int, reference_batch: int | None) -> float:
    """The rate L2P's and DualPrompt's code train with: the configured rate is "the learning
    rate for batch size 256", scaled linearly to the global batch (google-research/l2p
    train_continual.py: base_learning_rate = learning_rate * global_batch_size / 256.0).
    `reference_batch=None` uses `lr` as it is."""
    return lr if reference_batch is None else lr * batch_size / reference_batch


def constant_adam(strategy: ContinualStrategy, params: list[nn.Parameter],
                  reference_batch: int | None) -> tuple[torch.optim.Optimizer, None]:
    """L2P's and DualPrompt's optimiser: Adam at a constant rate, no warm-up (configs/*.py:
    optim "adam", learning_rate_schedule "constant", warmup_epochs 0), the rate scaled by
    `reference_batch_lr`. No schedule: the rate never changes within a task."""
    lr = reference_batch_lr(strategy.lr, strategy.batch_size, reference_batch)
    return torch.optim.Adam(params, lr=lr, weight_decay=strategy.weight_decay), None


def prefixes_from(layers: list[int], prompts: list[torch.Tensor]) -> Prefixes:
    """{layer: (key prefix, value prefix)} from one prompt [B, L, H] per layer; prompts for the
    same layer are concatenated along the length (DualPrompt's E- and G-prompt at one layer)."""
    out: Prefixes = {}
    for layer, prompt in zip(layers, prompts, strict=True):
        k, v = split_prefix(prompt)
        if layer in out:
            k, v = torch.cat([out[layer][0], k], 1), torch.cat([out[layer][1], v], 1)
        out[layer] = (k, v)
    return out
