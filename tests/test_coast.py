"""COAST read from a few-sample copy in mcl's documented layout, and end-to-end runs of the
instruction benchmarks on the tiny llava-1.5 stand-in (real classes, real loading path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_fixtures import stream_tasks, write_coast, write_coin
from conftest import compose_config

from mcl.backbones.llava import LlavaBackbone
from mcl.data.coast import MissingDataError
from mcl.run import build, run

FAST = ["logger=none", "trainer.progress_bar=false", "resume=false"]


@pytest.fixture(scope="session")
def standin() -> Path:
    """The tiny llava-1.5 stand-in, saved where conf/backbone/tiny_llava_1_5_standin.yaml looks."""
    from mcl.backbones.standin import save_standin

    return save_standin()


@pytest.mark.parametrize("config,order", [
    ("domain", ["ChartQA", "DocVQA", "IconQA", "MedicalQA"]),  # conf/stream/coast_domain.yaml
    ("capability", [t["name"] for t in stream_tasks("coast_capability")]),
    ("dataset", [t["name"] for t in stream_tasks("coast_dataset")]),
])
def test_coast_tasks_order_counts_and_fields(tmp_path, config, order):
    bench = write_coast(tmp_path, config, n_train=3, n_test=2)
    stream = build(compose_config([f"stream=coast_{config}", f"data_root={tmp_path}"]).stream,
                   seed=0)
    assert stream.name == f"coast_{config}" and stream.task_names == order
    for task in stream.tasks:
        assert (len(task.train), len(task.test)) == (3, 2)
        assert all(Path(s.image).is_relative_to(bench / "images" / config)
                   for s in task.train + task.test)
        assert task.train[2].prompt == f"Question 2 about {task.name}?"
        assert task.test[1].prompt == f"Question 1 about {task.name}?"
        assert task.meta["bad_images"] == {"train": [], "test": []}
    if config == "domain":
        assert [t.meta["match"] for t in stream.tasks] == ["relaxed", "anls", "exact", "exact"]


def test_missing_coast_names_benchmark_path_and_prepare_command(tmp_path):
    cfg = compose_config(["stream=coast_domain", f"data_root={tmp_path}"])
    with pytest.raises(MissingDataError) as err:
        build(cfg.stream, seed=0)
    message = str(err.value)
    assert "COAST-domain" in message and str(tmp_path / "coast" / "domain") in message
    assert f"python -m mcl.data prepare coast --data-root {tmp_path}" in message


def test_fwd_prompt_on_coast_domain_with_the_llava_standin_end_to_end(tmp_path, standin):
    """`python -m mcl.run method=fwd_prompt stream=coast_domain data_root=<fixture>
    backbone=tiny_llava_1_5_standin`, in process; one image deleted and skipped by the flag."""
    bench = write_coast(tmp_path / "data", "domain", n_train=4, n_test=2)
    missing = sorted((bench / "images" / "domain").glob("DocVQA_train_*.jpg"))[0]
    missing.unlink()
    cfg = compose_config(["method=fwd_prompt", "stream=coast_domain", *FAST,
                          f"data_root={tmp_path / 'data'}", "backbone=tiny_llava_1_5_standin",
                          "max_unknown_words=null",  # the stand-in reads only toy words
                          "stream.skip_bad_images=true", "method.batch_size=4"])
    assert Path(cfg.backbone.pretrained) == standin
    result = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["tasks"] == ["ChartQA", "DocVQA", "IconQA", "MedicalQA"]
    assert saved["completed_tasks"] == 4 and saved["backbone"] == "tiny_llava_1_5_standin"
    matrix = np.array(result["matrix"])
    assert matrix.shape == (5, 4) and np.isfinite(matrix).all()
    assert saved["skipped_images"]["DocVQA"] == {"train": 1, "test": 0}
    assert saved["skipped_images"]["ChartQA"] == {"train": 0, "test": 0}


def test_coin_run_scores_each_task_with_its_metric(tmp_path, standin, monkeypatch):
    """A model that answers with the training target scores 1 on every CoIN task, through the
    lazy encoding of image files and each task's own scorer (option, VQA soft accuracy over the
    joined TextVQA answers, top-1, exact, IoU); one that answers nonsense scores 0."""
    write_coin(tmp_path / "data", n_train=2, n_test=2)
    cfg = compose_config(["method=zero_shot", "stream=coin", *FAST,
                          f"data_root={tmp_path / 'data'}", "backbone=tiny_llava_1_5_standin",
                          "max_unknown_words=null"])  # the stand-in reads only toy words
    monkeypatch.setattr(LlavaBackbone, "generate", lambda self, batch: list(batch["answers"]))
    right = run(cfg, tmp_path / "right")
    assert np.array(right["matrix"]).min() == 1.0
    monkeypatch.setattr(LlavaBackbone, "generate", lambda self, batch: ["zzz"] * len(
        batch["answers"]))
    wrong = run(cfg, tmp_path / "wrong")
    assert np.array(wrong["matrix"]).max() == 0.0


def test_llava_1_5_pads_images_to_a_square_of_the_mean_colour(standin):
    cfg = compose_config(["backbone=tiny_llava_1_5_standin",
                          "max_unknown_words=null"])  # the stand-in reads only toy words
    assert cfg.backbone.pad_to_square and cfg.backbone.dtype == "float32"
    backbone = build(cfg.backbone, _convert_="all")
    image = np.full((30, 40, 3), 7, np.uint8)
    square = backbone._pad_to_square(image)
    mean = np.round(np.asarray(backbone.processor.image_processor.image_mean) * 255)
    assert square.shape == (40, 40, 3)
    assert (square[5:35] == 7).all()  # the image, centred, uncropped
    assert (square[:5] == mean).all() and (square[35:] == mean).all()
    assert backbone.prompt_text("Q?") == "USER: <image>\nQ? ASSISTANT:"  # the model card's
