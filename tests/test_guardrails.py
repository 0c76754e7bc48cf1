"""A NaN loss stops the task with a clear message and keeps the last good checkpoint."""

import json

import pytest
import torch
from conftest import method_options

from mcl.data.toy_streams import toy_stream
from mcl.loop import LoopConfig, run_stream
from mcl.module import NonFiniteLossError
from mcl.strategies.finetune import Finetune


class NanOnSecondTask(Finetune):
    """Finetune whose loss turns NaN during the second task (not registered)."""

    name = "nan_on_second_task"

    def before_task(self, task, index):
        self.index = index

    def loss(self, batch, outputs):
        return outputs.loss * (float("nan") if self.index == 1 else 1.0)


def test_nan_loss_stops_with_a_message_and_the_last_good_checkpoint_resumes(micro_tiny,
                                                                            tmp_path):
    from mcl.backbones.llava import LlavaBackbone

    stream = toy_stream("s", ["capability_recognition", "capability_colour"], 16, 8, seed=0)
    cfg = LoopConfig(progress_bar=False)
    strategy = NanOnSecondTask(**method_options("finetune", epochs=1, batch_size=8, lr=1e-2))
    strategy.setup(LlavaBackbone.load("m", tiny=micro_tiny))
    with pytest.raises(NonFiniteLossError, match="capability_colour.*became nan.*method.lr"):
        run_stream(strategy, stream, tmp_path, cfg, seed=0)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["completed_tasks"] == 1
    good = torch.load(tmp_path / "checkpoints" / "task_000.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in good["strategy"]["params"].values())
    assert not (tmp_path / "checkpoints" / "task_001.pt").exists()

    fixed = Finetune(**method_options("finetune", epochs=1, batch_size=8, lr=1e-2))
    fixed.setup(LlavaBackbone.load("m", tiny=micro_tiny))
    results = run_stream(fixed, stream, tmp_path, cfg, seed=0)  # resumes at the second task
    assert results["completed_tasks"] == 2
    assert results["matrix"][1] == saved["matrix"][1]  # the finished row was kept, not redone
