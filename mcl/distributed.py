"""Several processes, one run: the rank helpers the loop needs around Lightning's DDP/FSDP.

Launch with torchrun (`torchrun --nproc_per_node N -m mcl.run trainer=ddp ...`): every rank runs
the same loop in lockstep on the same run directory; evaluation is split across ranks and the
counts are summed once; only rank 0 writes files and logs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

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


def init_from_env(accelerator: str) -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1) before any work, so that the
    zero-shot evaluation is already shared; Lightning then reuses the group."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        gpu = accelerator in ("gpu", "cuda") and torch.cuda.is_available()
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if gpu else "gloo")


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
    """The batches of one process: each epoch shuffles all `n` items with `generator` (as a
    RandomSampler would) into global batches of `batch_size`, and rank r takes positions
    r, r + world, ... of each. With one process these are exactly DataLoader(shuffle=True)'s
    batches; with several, the ranks together see the same global batches, so averaged
    gradients match one process's whenever every sample carries the same number of tokens."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.rank, self.world = rank_and_world()
        if batch_size % self.world:
            raise ValueError(f"method.batch_size ({batch_size}) is the global batch and must be "
                             f"divisible by the number of processes ({self.world})")
        self.n, self.batch_size, self.generator = n, batch_size, generator

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        for start in range(0, self.n, self.batch_size):
            batch = order[start : start + self.batch_size]
            if len(batch) < self.world:  # a tail too small to give every rank a sample
                break
            yield batch[self.rank :: self.world]

    def __len__(self) -> int:
        full, tail = divmod(self.n, self.batch_size)
        return full + (tail >= self.world)
