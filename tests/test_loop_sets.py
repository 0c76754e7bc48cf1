"""The loop's view of a task's samples: label spaces decided per set, shared test sets once."""

import numpy as np
import torch

from mcl.data.task import EncodedSamples, Sample
from mcl.loop import LoopConfig, evaluate_stream


class FakeBackbone(torch.nn.Module):
    """Encodes a sample as its answer; answers every question with the first class it may."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.encoded = 0

    def encode(self, samples, with_answer):
        self.encoded += len(samples)
        return [{"answer": s.answer, "match": "exact", "classes": sorted({s.answer})}
                for s in samples]

    def collate_generate(self, items):
        return {"answers": [it["answer"] for it in items], "match": [it["match"] for it in items],
                "classes": items[0]["classes"]}


def _samples(answers):
    return [Sample(np.zeros((2, 2, 3), np.uint8), "", a) for a in answers]


def test_extra_reaches_every_item_and_leaves_the_cached_encodings_alone():
    backbone = FakeBackbone()
    plain = EncodedSamples(backbone, _samples(["a", "b", "c"]), with_answer=False)
    spaced = plain.with_extra({"classes": ["a", "b", "c"]})
    assert [it["classes"] for it in spaced] == [["a", "b", "c"]] * 3
    assert [it["classes"] for it in spaced[1:]] == [["a", "b", "c"]] * 2  # slices keep it
    assert [it["classes"] for it in plain] == [["a"], ["b"], ["c"]]  # the default, per encode
    assert backbone.encoded == 3  # one cache for both views: encoded once


def test_tasks_sharing_a_test_set_are_evaluated_once():
    backbone = FakeBackbone()
    shared = _samples(["a", "b", "a", "a"])
    own = _samples(["b", "b"])
    sets = [EncodedSamples(backbone, s, with_answer=False) for s in (shared, shared, own)]
    calls = []

    class Strategy(torch.nn.Module):  # the loop moves a strategy (and so its backbone)
        def __init__(self):
            super().__init__()
            self.backbone = backbone

        def generate(self, batch):
            calls.append(len(batch["answers"]))
            return [batch["classes"][0]] * len(batch["answers"])

    cfg = LoopConfig(progress_bar=False, eval_batch_size=8)
    strategy = Strategy()
    row, records = evaluate_stream(strategy.generate, strategy, sets, cfg, "test",
                                   classes=[["a", "b"], ["a", "b"], ["b", "a"]])
    assert [len(r) for r in records] == [4, 4, 2] and records[0] is records[1]
    assert row.tolist() == [0.75, 0.75, 1.0]
    assert calls == [4, 2]  # the shared set once, then the third task's own
    # Different label spaces over the same samples are different evaluations.
    calls.clear()
    row, _ = evaluate_stream(strategy.generate, strategy, sets[:2], cfg, "test",
                             classes=[["a", "b"], ["b", "a"]])
    assert row.tolist() == [0.75, 0.25] and calls == [4, 4]
