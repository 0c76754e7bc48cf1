"""Fwd-Prompt: prompt tuning of a frozen MLLM whose prompt gradients are projected away from old
tasks' input subspaces and onto the pre-trained subspace.

Zheng et al. 2024, "Beyond Anti-Forgetting: Multimodal Continual Instruction Tuning with
Positive Forward Transfer" (arXiv 2401.09181). The model stays frozen; a pool of soft prompts
with keys is matched against a multimodal query (image features and instruction embeddings) and
the best `top_k` prompts are put in front of the language model's input. Before each task the
SVD of that task's multimodal input embeddings gives its core subspace (the top singular
directions holding `task_threshold` of the energy, the criterion of GPM, Saha et al. 2021); the
union of old tasks' core subspaces is protected. The SVD of the pre-trained input-embedding table
gives the pre-trained subspace (`pretrained_threshold` of its energy). Prompt gradients are then
projected onto the pre-trained subspace as it lies in the residual space (the orthogonal
complement of the protected one): no step moves a prompt inside an old task's subspace
(anti-forgetting), and every step stays in directions the pre-trained model knows (forward
transfer). Prompt pool, keys and query matching follow L2P (Wang et al. 2022), on which the
paper builds; PGP (Qiao et al. 2024) is the same projection idea without the pre-trained part.
What the paper's text available to mcl fixes (the abstract of arXiv 2401.09181v1, the only part
of the paper that the stored copies return; checked again 2026-11-23): frozen MLLM, prompt
tuning, an SVD of input embeddings, prompt gradients projected to the residual space of old tasks
and to the pre-trained subspace, no old samples. Its method section (the exact projection
equations, how the pre-trained subspace is built, the thresholds) and its implementation details
(backbone, pool, prompt length, optimiser) could not be read, so the subspace definitions here
are a reading of the abstract and conf/method/fwd_prompt.yaml names the source of every number.
"""

from __future__ import annotations

import torch
from torch import nn

from mcl.backbones.base import IGNORE_INDEX
from mcl.data.task import EncodedSamples
from mcl.strategies.base import ContinualStrategy, register


def energy_rank(energies: torch.Tensor, threshold: float) -> int:
    """Fewest leading components (energies = squared singular values, descending) whose sum
    reaches `threshold` of the total: ||X_k||_F^2 >= threshold ||X||_F^2 (GPM's criterion)."""
    total = float(energies.sum())
    if total <= 0:
        return 0
    below = torch.cumsum(energies, 0) < threshold * total
    return min(int(below.sum()) + 1, len(energies))


def extend_basis(basis: torch.Tensor, gram: torch.Tensor, threshold: float) -> torch.Tensor:
    """GPM's memory update: add to the orthonormal `basis` (d x k) the top singular directions
    of a task's inputs X (given as gram = X^T X) that `basis` misses, until basis and new
    directions together hold `threshold` of ||X||_F^2."""
    gram = gram.double()
    basis = basis.to(gram)
    total = float(torch.trace(gram))
    residual = gram - basis @ (basis.T @ gram)
    residual = residual - (residual @ basis) @ basis.T  # (I - BB^T) G (I - BB^T)
    captured = total - float(torch.trace(residual))
    need = threshold * total - captured
    if need <= 0:  # also when X is empty
        return basis
    energies, vectors = torch.linalg.eigh(residual)  # right singular vectors of X(I - BB^T)
    energies, vectors = energies.flip(0).clamp_min(0), vectors.flip(1)
    # Fewest new directions that bring the captured energy up to threshold * total.
    k = min(energy_rank(energies, need / float(energies.sum())),
            gram.shape[0] - basis.shape[1])
    new = vectors[:, :k]
    new = new - basis @ (basis.T @ new)  # numerical clean-up: keep the union orthonormal
    return torch.cat([basis, torch.linalg.qr(new).Q], dim=1)


def allowed_basis(pretrained: torch.Tensor, protected: torch.Tensor,
                  tol: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis of (I - PP^T) span(pretrained), P = protected: the pre-trained
    subspace as seen from the residual space, where prompt gradients may move."""
    pretrained, protected = pretrained.double(), protected.double()
    residual = pretrained - protected @ (protected.T @ pretrained)
    u, s, _ = torch.linalg.svd(residual, full_matrices=False)
    u = u[:, s > tol]
    u = u - protected @ (protected.T @ u)  # again, so rounding leaves nothing protected
    return torch.linalg.qr(u).Q


PROJECTIONS = ("full", "old_tasks", "none")


def project(grad: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Orthogonal projection of every row vector of `grad` (last dim d) onto span(basis)."""
    g = grad.reshape(-1, grad.shape[-1]).double()
    b = basis.to(g)
    return ((g @ b) @ b.T).reshape(grad.shape).to(grad.dtype)


class PromptPool(nn.Module):
    """`size` prompts of `length` tokens, each with a key in the query space (L2P)."""

    def __init__(self, prompts: torch.Tensor, key_dim: int) -> None:
        super().__init__()
        self.prompts = nn.Parameter(prompts)  # size x length x d
        # L2P initialises keys uniformly in [-1, 1]; matching is by cosine similarity.
        self.keys = nn.Parameter(torch.empty(prompts.shape[0], key_dim,
                                             dtype=prompts.dtype).uniform_(-1, 1))


@register("fwd_prompt")
class FwdPrompt(ContinualStrategy):
    """Prompt pool on a frozen backbone with subspace-projected prompt gradients."""

    shardable = False  # projects the prompts' whole gradient and update
    requires = frozenset({"embeds", "input_embeddings", "token_masks"})

    def __init__(self, *, pool_size: int, prompt_length: int, top_k: int, pull_coeff: float,
                 task_threshold: float, pretrained_threshold: float, svd_batch_size: int,
                 projection: str, **kwargs) -> None:
        super().__init__(**kwargs)
        if projection not in PROJECTIONS:
            raise ValueError(f"method.projection={projection!r}: choose one of {PROJECTIONS} "
                             "(full: Fwd-Prompt's; old_tasks: PGP's residual space alone; "
                             "none: a plain prompt pool, L2P)")
        # An ablation of the method's two projections (experiments/fwd_prompt_diagnosis.sh):
        # `full` is the method; the others drop the pre-trained subspace, or both.
        self.projection = projection
        if not 0 < top_k <= pool_size or prompt_length <= 0:
            raise ValueError(f"method.top_k must be in 1..pool_size ({pool_size}) and "
                             f"prompt_length positive, got top_k={top_k}, "
                             f"prompt_length={prompt_length}")
        for name, value in (("task_threshold", task_threshold),
                            ("pretrained_threshold", pretrained_threshold)):
            if not 0 < value <= 1:
                raise ValueError(f"method.{name} is an energy fraction in (0, 1], got {value}")
        self.pool_size, self.prompt_length, self.top_k = pool_size, prompt_length, top_k
        self.pull_coeff = pull_coeff
        self.task_threshold, self.pretrained_threshold = task_threshold, pretrained_threshold
        self.svd_batch_size = svd_batch_size
        self.pool: PromptPool | None = None
        self.pretrained = self.protected = self.allowed = self.task_start = torch.empty(0, 0)

    # ------------------------------------------------------------------ set-up

    def setup(self, backbone) -> None:
        super().setup(backbone)
        table = backbone.input_embeddings().weight.detach()
        # Prompts start as embeddings of random vocabulary tokens (Lester et al. 2021), so they
        # begin inside the pre-trained embedding space at its scale.
        ids = torch.randint(len(table), (self.pool_size * self.prompt_length,))
        prompts = table[ids].reshape(self.pool_size, self.prompt_length, -1).clone()
        self.pool = PromptPool(prompts, key_dim=2 * table.shape[1]).to(table.device)  # owned
        d = table.shape[1]
        empty = torch.empty(d, 0, dtype=torch.float64)
        self.pretrained = extend_basis(empty, table.double().T @ table.double(),
                                       self.pretrained_threshold).cpu()
        self.protected = empty
        self.allowed = self.pretrained
        self.task_start = self.pool.prompts.detach().clone()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.pool.prompts, self.pool.keys]

    # ------------------------------------------------------------------ task hooks

    @torch.no_grad()
    def task_grams(self, samples) -> tuple[torch.Tensor, torch.Tensor]:
        """X^T X of the image-feature rows and of the instruction rows of the language model's
        input embeddings of `samples` (no padding, no answers), under the frozen model."""
        backbone = self.backbone
        device = next(backbone.parameters()).device
        items = EncodedSamples(backbone, samples, with_answer=True)  # a batch decoded at a time
        d = backbone.input_embeddings().weight.shape[1]
        grams = torch.zeros(2, d, d, dtype=torch.float64, device=device)
        for start in range(0, len(items), self.svd_batch_size):
            batch = backbone.collate_train(list(items[start:start + self.svd_batch_size]))
            batch = {k: v.to(device) for k, v in batch.items()}
            embeds = backbone.embed(batch).double()
            instruction = backbone.instruction_mask(batch)
            for g, mask in zip(grams, (_input_mask(batch) & ~instruction, instruction),
                               strict=True):
                g += embeds[mask].T @ embeds[mask]
        return grams[0].cpu(), grams[1].cpu()

    def before_task(self, task, index: int) -> None:
        # This task moves only outside the subspaces of the tasks before it; its own core
        # subspace is then protected from the next task on (the order of PGP's code).
        # The ablations are the same construction with R^d for the pre-trained subspace
        # (old_tasks: PGP's residual space) and nothing protected as well (none: R^d).
        whole = torch.eye(self.pretrained.shape[0], dtype=torch.float64)
        self.allowed = allowed_basis(
            self.pretrained if self.projection == "full" else whole,
            self.protected if self.projection != "none" else self.protected[:, :0])
        self.task_start = self.pool.prompts.detach().clone()
        # One SVD per modality: image features have ~100x the norm of token embeddings, so a
        # joint energy criterion would keep image directions only and leave the instruction
        # subspace unprotected.
        for gram in self.task_grams(task.train):
            self.protected = extend_basis(self.protected, gram, self.task_threshold)

    # ------------------------------------------------------------------ step hooks

    def with_prompts(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                             torch.Tensor]:
        """Input embeddings with the selected prompts in front of each sample's first real
        token (so right- and left-padded batches both work), the extended attention mask and
        labels, and the key-query pull term."""
        backbone, pool = self.backbone, self.pool
        embeds = backbone.embed(batch)
        attention = batch["attention_mask"]
        query = _query(embeds, batch, backbone.instruction_mask(batch))
        sim = nn.functional.normalize(query, dim=-1) @ nn.functional.normalize(pool.keys,
                                                                              dim=-1).T
        top, index = sim.topk(self.top_k, dim=1)
        prompts = pool.prompts[index].flatten(1, 2).to(embeds.dtype)  # B x (k*L) x d
        n = prompts.shape[1]
        start = attention.argmax(dim=1)  # first attended position of each row
        rows, masks, labels = [], [], []
        ones = attention.new_ones(n)
        for b, s in enumerate(start.tolist()):
            rows.append(torch.cat([embeds[b, :s], prompts[b], embeds[b, s:]]))
            masks.append(torch.cat([attention[b, :s], ones, attention[b, s:]]))
            if "labels" in batch:
                y = batch["labels"][b]
                labels.append(torch.cat([y[:s], y.new_full((n,), IGNORE_INDEX), y[s:]]))
        pull = (1 - top).sum(dim=1).mean()  # L2P's surrogate loss pulling keys to queries
        return (torch.stack(rows), torch.stack(masks),
                torch.stack(labels) if labels else None, pull)

    def forward(self, batch: dict):
        embeds, mask, labels, pull = self.with_prompts(batch)
        outputs = self.backbone.forward_embeds(embeds, mask, labels)
        outputs["pull"] = pull
        return outputs

    def loss(self, batch: dict, outputs) -> torch.Tensor:
        return outputs.loss + self.pull_coeff * outputs["pull"]

    def on_after_backward(self) -> None:
        prompts = self.pool.prompts
        self.allowed = self.allowed.to(prompts.device)  # once: the basis stays there
        if prompts.grad is not None:
            prompts.grad.copy_(project(prompts.grad, self.allowed))

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Keep the prompts' change since the task began inside the allowed subspace. AdamW
        (the loop's optimiser) rescales each coordinate, so its step leaves the subspace of the
        projected gradient: on the tiny model ~12% of a task's prompt change fell inside old
        tasks' subspaces with gradient projection alone."""
        prompts = self.pool.prompts
        start = self.task_start.to(prompts.device)
        prompts.copy_(start + project(prompts - start, self.allowed.to(prompts.device)))

    def generate(self, batch: dict) -> list[str]:
        with torch.no_grad():
            embeds, mask, _, _ = self.with_prompts(batch)
        return self.backbone.generate_embeds(embeds, mask)

    # ------------------------------------------------------------------ state

    _STATE = ("pretrained", "protected", "allowed", "task_start")

    def extra_state(self) -> dict:
        return {name: getattr(self, name).detach().cpu().clone() for name in self._STATE}

    def load_extra_state(self, state: dict) -> None:
        for name in self._STATE:
            setattr(self, name, state[name].clone())


def _input_mask(batch: dict) -> torch.Tensor:
    """True at the model's input tokens: attended and not an answer token."""
    mask = batch["attention_mask"].bool()
    if "labels" in batch:
        mask &= batch["labels"] == IGNORE_INDEX
    return mask


def _query(embeds: torch.Tensor, batch: dict, instruction: torch.Tensor) -> torch.Tensor:
    """Multimodal query: mean image-feature embedding and mean instruction embedding, each
    L2-normalised so that neither modality dominates, side by side (B x 2d)."""
    image = _input_mask(batch) & ~instruction

    def mean(mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(embeds.dtype)
        return (embeds * m).sum(1) / m.sum(1).clamp_min(1)

    return torch.cat([nn.functional.normalize(mean(image), dim=-1),
                      nn.functional.normalize(mean(instruction), dim=-1)], dim=-1).detach()
