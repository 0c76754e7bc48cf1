"""The toy world is deterministic, well-formed, and its pre-training mix is apart from streams."""

import numpy as np
import pytest

from mcl.data import toy_world
from mcl.data.toy_streams import toy_stream


def test_same_seed_same_data_other_seed_other_data():
    a = toy_world.generate("domain_icons", 20, seed=3, split="train")
    b = toy_world.generate("domain_icons", 20, seed=3, split="train")
    c = toy_world.generate("domain_icons", 20, seed=4, split="train")
    assert all(np.array_equal(x.image, y.image) and x.prompt == y.prompt and x.answer == y.answer
               for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c, strict=True))


def test_train_and_test_splits_differ():
    train = toy_world.generate("capability_counting", 20, seed=0, split="train")
    test = toy_world.generate("capability_counting", 20, seed=0, split="test")
    assert not any(np.array_equal(x.image, y.image) for x in train for y in test)


@pytest.mark.parametrize("task", sorted(toy_world.TASKS))
def test_every_task_is_well_formed(task):
    vocab = set(toy_world.vocabulary())
    samples = toy_world.generate(task, 50, seed=0, split="train")
    for s in samples:
        assert s.image.shape == (toy_world.IMAGE_SIZE, toy_world.IMAGE_SIZE, 3)
        assert s.image.dtype == np.uint8
        assert s.answer and s.match in ("exact", "option")
        assert set(s.prompt.split()) <= vocab and set(s.answer.split()) <= vocab
    # Not degenerate: more than one answer and more than one image.
    assert len({s.answer for s in samples}) > 1
    assert len({s.image.tobytes() for s in samples}) > 1


def test_pretraining_templates_appear_in_no_stream_task():
    def templates(task):
        return {s.prompt for s in toy_world.generate(task, 30, seed=0, split="train")}

    pretrain = set().union(*(templates(t) for t in toy_world.PRETRAIN_MIX))
    streams = set().union(*(templates(t) for t in toy_world.TASKS
                            if t not in toy_world.PRETRAIN_MIX))
    assert pretrain and streams and not pretrain & streams


def test_multiple_choice_letter_points_at_the_answer():
    for s in toy_world.generate("dataset_multiple_choice", 30, seed=0, split="test"):
        words = s.prompt.split()
        chosen = words[words.index(s.answer) + 2]  # "<letter> . <option>"
        assert chosen in toy_world.COLOURS


def test_stream_rejects_unknown_and_empty_tasks():
    with pytest.raises(ValueError, match="unknown toy tasks.*valid tasks"):
        toy_stream("s", ["no_such_task"], 4, 4, seed=0)
    with pytest.raises(ValueError, match="lists no tasks"):
        toy_stream("s", [], 4, 4, seed=0)
    with pytest.raises(ValueError, match="must be positive"):
        toy_stream("s", ["domain_icons"], 0, 4, seed=0)
