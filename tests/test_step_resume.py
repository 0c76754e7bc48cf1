"""Resuming a task from a step checkpoint trains exactly what an uninterrupted fit trains.

CoDyRA (rank_selective_lora) is the hard case: its own optimiser betas, a cosine LR schedule and
a proximal-step counter outside the parameters (the kappa staircase). The task runs 2 epochs of
3 batches; a step checkpoint is written every `every` steps and the "kill" (an exception at the
start of a batch) lands after it, so the fresh process must restore parameters, optimiser,
schedule, counter, RNG and the position in the shuffled data, mid-epoch or at an epoch's end.
"""

import lightning as L
import pytest
import torch
from conftest import method_options

from mcl.backbones.llava import LlavaBackbone
from mcl.checkpointing import AtomicCheckpointIO, step_checkpoint_path
from mcl.data import toy_world
from mcl.data.task import Task
from mcl.distributed import GlobalBatches
from mcl.loop import LoopConfig, fit_task
from mcl.strategies.rank_selective_lora import RankSelectiveLora


class Killed(Exception):
    """Stands in for SIGKILL inside the test process."""


class KillAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise Killed


SAMPLES = toy_world.generate("capability_colour", 24, 0, "train")


def _fresh(micro_tiny: dict) -> RankSelectiveLora:
    """The strategy as the loop hands it to fit_task: set up, before its first task."""
    backbone = LlavaBackbone.load("tiny_llava_micro", tiny=micro_tiny)
    strategy = RankSelectiveLora(**method_options(
        "rank_selective_lora", r=4, lr=3e-3, epochs=2, batch_size=8, max_kappa=0.03,
        dense_fraction=0.2, kappa_levels=3))
    torch.manual_seed(0)  # the same initial adapters in every "process"
    strategy.setup(backbone)
    strategy.before_task(Task("t", SAMPLES, SAMPLES[:4]), 0)
    return strategy


def _items(strategy: RankSelectiveLora) -> list[dict]:
    return strategy.backbone.encode(SAMPLES, with_answer=True)


@pytest.fixture(scope="module")
def uninterrupted(micro_tiny, tmp_path_factory) -> dict:
    """The trainable parameters after the whole task, trained without a break."""
    reference = _fresh(micro_tiny)
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    fit_task(reference, _items(reference), "t", LoopConfig(progress_bar=False), seed=0,
             loggers=[], run_dir=run_dir)
    assert reference._steps == 6
    return reference.checkpoint_state()["params"]


@pytest.mark.parametrize(("every", "kill_at", "resumed_from"),
                         [(2, 5, 4),    # mid-epoch 2: resumes after batch 1 of 3
                          (2, 3, 2),    # mid-epoch 1, then crosses into epoch 2
                          (3, 4, 3)])   # the end of epoch 1 exactly
def test_resumed_fit_equals_uninterrupted_fit(micro_tiny, uninterrupted, tmp_path, every,
                                              kill_at, resumed_from):
    cfg = LoopConfig(progress_bar=False, checkpoint_every_n_steps=every)
    killed = _fresh(micro_tiny)
    with pytest.raises(Killed):
        fit_task(killed, _items(killed), "t",
                 LoopConfig(progress_bar=False, checkpoint_every_n_steps=every,
                            extra={"callbacks": [KillAt(kill_at)]}),
                 seed=0, loggers=[], run_dir=tmp_path)
    assert not list((tmp_path / "checkpoints").glob(".*"))  # no temporary file left
    checkpoint = AtomicCheckpointIO().load_checkpoint(step_checkpoint_path(tmp_path, 0))
    trainable = {f"strategy.{n}" for n in killed.named_trainable_parameters()}
    assert set(checkpoint["state_dict"]) == trainable  # not the frozen backbone
    assert checkpoint["global_step"] == checkpoint["mcl"]["batches_done"] == resumed_from
    assert checkpoint["mcl"]["extra"]["steps"] == resumed_from  # CoDyRA's proximal steps
    assert len(checkpoint["optimizer_states"]) == 1 and checkpoint["lr_schedulers"]

    resumed = _fresh(micro_tiny)  # a new process: nothing survives but the files
    module = fit_task(resumed, _items(resumed), "t", cfg, seed=0, loggers=[], run_dir=tmp_path,
                      resume=True)
    assert module.resumed_from == resumed_from
    assert module.batches_done == 6
    assert resumed._steps == 6  # the proximal-step counter continued from the checkpoint
    got = resumed.checkpoint_state()["params"]
    assert got.keys() == uninterrupted.keys()
    for name in uninterrupted:
        torch.testing.assert_close(got[name], uninterrupted[name], atol=1e-6, rtol=0)
    # Training moved the parameters well beyond the tolerance: the comparison above can fail.
    untrained = _fresh(micro_tiny).checkpoint_state()["params"]
    assert max((uninterrupted[n] - untrained[n]).abs().max().item()
               for n in uninterrupted) > 1e-3


def test_batches_resume_where_they_stopped():
    whole = GlobalBatches(10, 4, seed=3)
    epochs = [list(whole) for _ in range(3)]  # 3 batches an epoch (4, 4, 2)
    flat = [b for epoch in epochs for b in epoch]
    for done in range(len(flat)):
        resumed = GlobalBatches(10, 4, seed=3)
        resumed.resume_at(done)
        rest = [b for _ in range(3 - done // 3) for b in resumed]
        assert rest == flat[done:]
    assert epochs[0] != epochs[1]  # every epoch is shuffled anew


def test_length_grouped_batches_pad_less_and_still_cover_every_item_once():
    lengths = [int(x) for x in torch.randint(5, 500, (400,), generator=torch.Generator()
                                             .manual_seed(0))]

    def padding(sampler: GlobalBatches) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b)
                   for b in sampler)

    grouped = GlobalBatches(400, 16, seed=1, lengths=lengths, group=10)
    for _ in range(2):  # every epoch is a permutation of all items
        assert sorted(i for b in grouped for i in b) == list(range(400))
    plain = GlobalBatches(400, 16, seed=1)
    assert padding(GlobalBatches(400, 16, seed=1, lengths=lengths, group=10)) \
        < padding(plain) / 5
    # Seeded and resumable like the plain order.
    first = list(GlobalBatches(400, 16, seed=1, lengths=lengths, group=10))
    resumed = GlobalBatches(400, 16, seed=1, lengths=lengths, group=10)
    resumed.resume_at(7)
    assert list(resumed) == first[7:]
