"""Several processes, one run: the rank helpers the loop needs around Lightning's DDP/FSDP.

Launch with torchrun (`torchrun --nproc_per_node N -m mcl.run trainer=ddp ...`, on one node or
several), with srun / submitit under SLURM (`hydra/launcher=slurm`), or through mcl's local
launcher (`hydra/launcher=parallel`, which starts torchrun per job): every rank runs the same loop
in lockstep on the same run directory; evaluation is split across ranks and the counts are
summed once; only rank 0 writes files and logs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_world()[0] == 0


def cluster_environment():
    """The cluster environment Lightning's Trainer will pick for this process (torchrun's before
    SLURM's, in Lightning's order), or None when neither launched it."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    for environment in (TorchElasticEnvironment, SLURMEnvironment):
        if environment.detect():
            return environment()
    return None


def init_from_env(accelerator: str) -> None:
    """Join the process group that torchrun or SLURM (srun, submitit) describes, before any
    work, so that the zero-shot evaluation is already shared and only rank 0 writes; Lightning
    then reuses the group. Ranks, world size and the main address come from Lightning's cluster
    environment, so they are the ones its Trainer uses."""
    if dist.is_initialized():
        return
    environment = cluster_environment()
    if environment is None or environment.world_size() == 1:
        return
    os.environ["MASTER_ADDR"] = environment.main_address
    os.environ["MASTER_PORT"] = str(environment.main_port)
    gpu = accelerator in ("gpu", "cuda") and torch.cuda.is_available()
    if gpu:
        torch.cuda.set_device(environment.local_rank())
    dist.init_process_group(backend="nccl" if gpu else "gloo", rank=environment.global_rank(),
                            world_size=environment.world_size())


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum of `values` over all ranks (the values themselves with one process)."""
    if rank_and_world()[1] == 1:
        return values
    backend_gpu = dist.get_backend() == "nccl"
    tensor = torch.tensor(values, dtype=torch.float64,
                          device="cuda" if backend_gpu else "cpu")
    dist.all_reduce(tensor)
    return tensor.tolist()


class GlobalBatches(Sampler[list[int]]):
    """The batches of one process: each epoch shuffles all `n` items (as a RandomSampler with a
    generator seeded `seed` would, epoch after epoch) into global batches of `batch_size`, and
    rank r takes positions r, r + world, ... of each. With one process these are exactly
    DataLoader(shuffle=True)'s batches; with several, the ranks together see the same global
    batches, so averaged gradients match one process's whenever every sample carries the same
    number of tokens.

    Every iteration is one epoch. The order of epoch e is a pure function of (seed, e), so a
    task resumed from a step checkpoint (`resume_at`) trains on exactly the batches an
    uninterrupted run would have trained on next. Lightning 2.6 does not guarantee this for a
    custom batch sampler (it restores a loader only through the loader's own state_dict, and
    its fetcher may read ahead), so the position is ours: the number of batches trained.

    With `lengths` (one per item), batches are grouped by length as HF Trainer's
    `group_by_length` does: each run of `group` shuffled batches' worth of items is sorted by
    length before it is cut into batches, so a batch pads to a similar length (less padding
    compute on data of mixed lengths) while the epoch stays a random, seeded permutation.
    """

    def __init__(self, n: int, batch_size: int, seed: int,
                 lengths: Sequence[int] | None = None, group: int = 50) -> None:
        self.rank, self.world = rank_and_world()
        if batch_size % self.world:
            raise ValueError(f"method.batch_size ({batch_size}) is the global batch and must be "
                             f"divisible by the number of processes ({self.world})")
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"GlobalBatches got {len(lengths)} lengths for {n} items")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.lengths, self.group = lengths, group
        self.epoch = 0  # the epoch the next iteration yields
        self.skip = 0  # batches of that epoch trained before a resume

    def resume_at(self, batches_done: int) -> None:
        """Continue after the first `batches_done` batches of the task (all epochs together):
        the next iteration is the rest of that epoch."""
        self.epoch, self.skip = divmod(batches_done, len(self))

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epoch):  # the earlier epochs' draws, as an uninterrupted run made them
            torch.randperm(self.n, generator=generator)
        order = torch.randperm(self.n, generator=generator).tolist()
        if self.lengths is not None:
            span = self.batch_size * self.group
            order = [i for start in range(0, self.n, span)
                     for i in sorted(order[start : start + span],
                                     key=lambda i: -self.lengths[i])]
        skip, self.skip = self.skip, 0
        self.epoch += 1
        batches = [order[start : start + self.batch_size]
                   for start in range(0, self.n, self.batch_size)]
        for batch in batches[skip : len(self)]:  # len(self) drops a tail too small for every rank
            yield batch[self.rank :: self.world]

    def __len__(self) -> int:
        full, tail = divmod(self.n, self.batch_size)
        return full + (tail >= self.world)
