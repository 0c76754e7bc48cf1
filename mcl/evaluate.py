"""Evaluation by generation: answer every test sample, score it with the scorer its `match`
names (exact, option, or a benchmark's own: VQAv2 soft accuracy, relaxed, ANLS, IoU, top-1).

`evaluate_records` returns one record per sample (its index in the test split, the prediction,
the reference(s) it was scored against, the score); a cell's accuracy is `cell_score` of them, so
the stored predictions recompute it exactly."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from mcl.data.task import Sample
from mcl.distributed import rank_and_world
from mcl.metrics.benchmarks import score

GenerateFn = Callable[[dict], list[str]]


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def cell_score(records: Sequence[dict]) -> float:
    """The accuracy of one (row, task) cell: the mean score of its records (an exactly rounded
    sum, so it does not depend on the records' order)."""
    return math.fsum(r["score"] for r in records) / len(records)


@torch.no_grad()
def evaluate_records(generate: GenerateFn, backbone, items: Sequence[dict], batch_size: int,
                     device: torch.device | None = None) -> list[dict]:
    """Answer and score every encoded test item (batched greedy generation): one record
    {id, prediction, references, score} per item, in the items' order, on every rank. `items`
    may be a list or a lazy `mcl.data.task.EncodedSamples` (a slice is encoded when listed)."""
    if not items:
        raise ValueError("nothing to evaluate: the test split is empty")
    device = device or next(backbone.parameters()).device
    rank, world = rank_and_world()
    ids = range(rank, len(items), world)  # each process answers its share
    share = items[rank::world]
    records = []
    for start in range(0, len(share), batch_size):
        batch = backbone.collate_generate(list(share[start : start + batch_size]))
        predictions = generate(_to_device(batch, device))
        references = batch.get("references", batch["answers"])
        for k, (p, ref, answer, m) in enumerate(zip(predictions, references, batch["answers"],
                                                    batch["match"], strict=True)):
            records.append({"id": ids[start + k], "prediction": p,
                            "references": answer if ref is None else ref,
                            "score": float(score(p, ref, m))})
    if world > 1:
        shares = [None] * world
        dist.all_gather_object(shares, records)
        records = sorted((r for s in shares for r in s), key=lambda r: r["id"])
    return records


def evaluate_items(generate: GenerateFn, backbone, items: Sequence[dict], batch_size: int,
                   device: torch.device | None = None) -> float:
    """Mean score of `generate` on encoded test items (see `evaluate_records`)."""
    return cell_score(evaluate_records(generate, backbone, items, batch_size, device))


def evaluate_samples(generate: GenerateFn, backbone, samples: Sequence[Sample],
                     batch_size: int) -> float:
    """Accuracy of `generate` on raw samples (encodes them first)."""
    return evaluate_items(generate, backbone, backbone.encode(samples, with_answer=False),
                          batch_size)
