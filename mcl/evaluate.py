"""Evaluation by generation: answer every test sample, score it with the scorer its `match`
names (exact, option, or a benchmark's own: VQAv2 soft accuracy, relaxed, ANLS, IoU, top-1).

`evaluate_records` returns one record per sample (its index in the test split, the prediction,
the reference(s) it was scored against, the score); a cell's accuracy is `cell_score` of them, so
the stored predictions recompute it exactly. Samples are batched by prompt length (less padding,
so less prefill work and a shorter cache), and the batch is sized from the GPU's free memory
unless set (`mcl.generation`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from mcl.data.task import Sample
from mcl.distributed import rank_and_world
from mcl.generation import batch_size_for_memory
from mcl.metrics.benchmarks import score

GenerateFn = Callable[[dict], list[str]]
DEFAULT_BATCH_SIZE = 64  # when not set and not sized from GPU memory (CPU, classification)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def cell_score(records: Sequence[dict]) -> float:
    """The accuracy of one (row, task) cell: the mean score of its records (an exactly rounded
    sum, so it does not depend on the records' order)."""
    return math.fsum(r["score"] for r in records) / len(records)


def by_length(items: Sequence, indices: Sequence[int]) -> list[int]:
    """`indices` ordered by prompt length (stable): the instruction's characters for lazily
    encoded samples (image tokens are fixed), prompt tokens for encoded items."""
    samples = getattr(items, "samples", None)
    if samples is not None:
        return sorted(indices, key=lambda i: len(samples[i].prompt))
    return sorted(indices, key=lambda i: len(items[i].get("prompt_ids", ())))


def _get(items: Sequence, indices: Sequence[int]) -> list[dict]:
    if hasattr(items, "__getitems__"):  # EncodedSamples: one batched encode
        return items.__getitems__(list(indices))
    return [items[i] for i in indices]


def auto_batch_size(backbone, items: Sequence, longest: int, device: torch.device) -> int:
    """A batch that fits the GPU's free memory (what PyTorch holds cached counts as free) at
    the longest prompt of the set; DEFAULT_BATCH_SIZE off the GPU or for classification."""
    config = getattr(getattr(backbone, "model", None), "config", None)
    if device.type != "cuda" or config is None or not hasattr(backbone, "max_new_tokens"):
        return DEFAULT_BATCH_SIZE
    prompt = len(_get(items, [longest])[0]["prompt_ids"])
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    dtype = next(backbone.model.parameters()).dtype  # the config may not record it
    return batch_size_for_memory(config, prompt, backbone.max_new_tokens, free, dtype=dtype)


@torch.no_grad()
def evaluate_records(generate: GenerateFn, backbone, items: Sequence[dict],
                     batch_size: int | None, device: torch.device | None = None,
                     indices: Sequence[int] | None = None) -> list[dict]:
    """Answer and score encoded test items (batched greedy generation): one record {id,
    prediction, references, score} per item, in index order, on every rank. `items` may be a
    list or a lazy `mcl.data.task.EncodedSamples` (encoded a batch at a time). `indices`: only
    those items (all by default). `batch_size` None: sized from free GPU memory. `generate` may
    instead answer raw samples (`takes_samples`, an inference engine's)."""
    indices = list(range(len(items))) if indices is None else list(indices)
    if not indices:
        raise ValueError("nothing to evaluate: the test split is empty")
    device = device or next(backbone.parameters()).device
    rank, world = rank_and_world()
    order = by_length(items, indices[rank::world])  # each process answers its share
    if order and batch_size is None:
        batch_size = auto_batch_size(backbone, items, order[-1], device)
    records = []
    for start in range(0, len(order), batch_size or 1):
        chunk = order[start : start + (batch_size or 1)]
        if getattr(generate, "takes_samples", False):
            samples = [items.samples[i] for i in chunk]
            predictions = generate(samples)
            references = [s.scored_against for s in samples]
            answers, match = [s.answer for s in samples], [s.match for s in samples]
        else:
            batch = backbone.collate_generate(_get(items, chunk))
            predictions = generate(_to_device(batch, device))
            references = batch.get("references", batch["answers"])
            answers, match = batch["answers"], batch["match"]
        for i, p, ref, answer, m in zip(chunk, predictions, references, answers, match,
                                        strict=True):
            records.append({"id": i, "prediction": p,
                            "references": answer if ref is None else ref,
                            "score": float(score(p, ref, m))})
    if world > 1:
        shares = [None] * world
        dist.all_gather_object(shares, records)
        records = [r for share in shares for r in share]
    return sorted(records, key=lambda r: r["id"])


def evaluate_items(generate: GenerateFn, backbone, items: Sequence[dict],
                   batch_size: int | None, device: torch.device | None = None,
                   indices: Sequence[int] | None = None) -> float:
    """Mean score of `generate` on encoded test items (see `evaluate_records`)."""
    return cell_score(evaluate_records(generate, backbone, items, batch_size, device, indices))


def evaluate_samples(generate: GenerateFn, backbone, samples: Sequence[Sample],
                     batch_size: int) -> float:
    """Accuracy of `generate` on raw samples (encodes them first)."""
    return evaluate_items(generate, backbone, backbone.encode(samples, with_answer=False),
                          batch_size)
