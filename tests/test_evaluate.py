"""mcl.evaluate batches test samples by prompt length and sizes batches when not set."""

import torch

from mcl.data import toy_world
from mcl.data.task import EncodedSamples
from mcl.evaluate import DEFAULT_BATCH_SIZE, by_length, evaluate_items


def test_length_grouped_batches_pad_less_and_score_every_sample_once(micro_backbone):
    samples = [s for i in range(6) for t in ("dataset_caption", "capability_counting")
               for s in toy_world.generate(t, 1, i, "test")]
    items = EncodedSamples(micro_backbone, samples, with_answer=False)
    seen, padding = [], []

    def perfect(batch: dict) -> list[str]:  # answers every sample right, records the batch
        seen.extend(batch["answers"])
        padding.append(int((batch["attention_mask"] == 0).sum()))
        return batch["answers"]

    assert evaluate_items(perfect, micro_backbone, items, 4) == 1.0
    assert sorted(seen) == sorted(s.answer for s in samples)
    grouped = sum(padding)
    in_order = sum(int((micro_backbone.collate_generate(items[i : i + 4].__getitems__(range(
        len(items[i : i + 4]))))["attention_mask"] == 0).sum()) for i in range(0, 12, 4))
    assert grouped < in_order
    order = by_length(items, range(len(items)))
    assert [len(samples[i].prompt) for i in order] == sorted(len(s.prompt) for s in samples)


def test_unset_batch_size_off_the_gpu_is_the_default(micro_backbone):
    samples = toy_world.generate("capability_counting", DEFAULT_BATCH_SIZE + 3, 0, "test")
    items = EncodedSamples(micro_backbone, samples, with_answer=False)
    sizes = []

    def record(batch: dict) -> list[str]:
        sizes.append(len(batch["answers"]))
        return batch["answers"]

    evaluate_items(record, micro_backbone, items, None, device=torch.device("cpu"),
                   indices=range(DEFAULT_BATCH_SIZE + 1))
    assert sizes == [DEFAULT_BATCH_SIZE, 1]
