"""End-of-run logging: TensorBoard's HPARAMS tab holds the run's options and final metrics."""

from pathlib import Path

import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from mcl.heatmap import plot_matrix
from mcl.loggers import log_final


def test_tensorboard_hparams_hold_the_method_options_and_final_metrics(tmp_path: Path):
    R = np.array([[0.1, 0.2], [0.8, 0.3], [0.6, 0.9]])
    plot_matrix(R, ["a", "b"], tmp_path / "matrix.png")
    results = {"tasks": ["a", "b"], "matrix": R.tolist(), "metrics": {"last": 0.75, "fwt": None},
               "config": {"method": {"name": "lora", "lr": 0.003}, "stream": {"name": "toy"},
                          "backbone": {"name": "tiny"}, "seed": 1}}
    logger = TensorBoardLogger(str(tmp_path), name="tb", version=0)
    log_final([logger], results, tmp_path / "matrix.png")

    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    hparams = {k: v.string_value or v.number_value for k, v in session.hparams.items()}
    assert hparams["method/name"] == "lora" and hparams["method/lr"] == 0.003
    assert hparams["stream"] == "toy" and hparams["seed"] == 1
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["final/last"]
