"""UCIT read from a few-sample copy in HiDe-LLaVA's released layout; its manifest checked by
`python -m mcl.data prepare ucit`; an end-to-end run on the tiny llava-1.5 stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_fixtures import write_ucit
from conftest import compose_config
from omegaconf import OmegaConf

from mcl.backbones.llava import LlavaBackbone
from mcl.data import prepare
from mcl.metrics.benchmarks import score
from mcl.run import build, run

# HiDe-LLaVA scripts/HiDe/Train_UCIT/Task1.sh .. Task6.sh
UCIT_ORDER = ["ImageNet-R", "ArxivQA", "VizWiz", "IconQA", "CLEVR-Math", "Flickr30k"]
FAST = ["logger=none", "trainer.progress_bar=false", "resume=false"]


@pytest.fixture(scope="module")
def standin() -> Path:
    from mcl.backbones.standin import save_standin

    return save_standin()


def ucit(data_root: Path):
    return build(compose_config(["stream=ucit", f"data_root={data_root}"]).stream, seed=0)


def test_ucit_tasks_order_counts_fields_and_scorers(tmp_path):
    bench = write_ucit(tmp_path, n_train=3, n_test=2)
    stream = ucit(tmp_path)
    assert stream.task_names == UCIT_ORDER
    for task in stream.tasks:
        assert (len(task.train), len(task.test)) == (3, 2)
        for sample in task.train + task.test:
            assert Path(sample.image).is_relative_to(bench / "datasets" / task.name)
            assert Path(sample.image).is_file() and "<image>" not in sample.prompt
    assert {t.name: t.meta["match"] for t in stream.tasks} == {
        "ImageNet-R": "exact_case", "ArxivQA": "exact_case", "VizWiz": "cider",
        "IconQA": "exact_case", "CLEVR-Math": "exact_case", "Flickr30k": "cider"}
    flickr = stream.tasks[5].test
    # The k-th question is scored against the COCO captions of image_id k.
    assert list(flickr[1].scored_against) == ["answer 1", "another caption 2"]
    both = [score(s.answer, s.scored_against, "cider") for s in flickr]
    assert all(value > 0 for value in both)
    assert score("zzz", flickr[0].scored_against, "cider") == 0.0
    arxiv = stream.tasks[1].test[0]
    assert score("ANSWER 0", arxiv.scored_against, arxiv.match) == 1.0


def test_prepare_ucit_reports_a_count_mismatch(tmp_path, capsys):
    write_ucit(tmp_path, n_train=3, n_test=2)
    assert prepare.main(["prepare", "ucit", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "ucit: INCOMPLETE" in out
    assert "count mismatch: ImageNet-R test has 2 entries" in out and "the release has 3000" in out
    assert out.count("count mismatch") == 6


def test_prepare_ucit_is_complete_when_the_files_match_the_manifest(tmp_path, monkeypatch,
                                                                  capsys):
    write_ucit(tmp_path, n_train=3, n_test=2)
    yaml = prepare._stream_yaml

    def two_per_test(stream):
        cfg = yaml(stream)
        for task in cfg.manifest.tasks:
            task.test = 2
        return cfg

    monkeypatch.setattr(prepare, "_stream_yaml", two_per_test)
    assert prepare.main(["prepare", "ucit", "--data-root", str(tmp_path)]) == 0
    assert "ucit: complete" in capsys.readouterr().out
    # Read back from the prepared table, the caption references get the split's statistics.
    flickr = ucit(tmp_path).tasks[5].test
    assert flickr[0].scored_against.corpus is flickr[1].scored_against.corpus is not None
    # A reordered stream is reported against the published order.
    def reordered(stream):
        cfg = two_per_test(stream)
        cfg.tasks = OmegaConf.create([cfg.tasks[1], cfg.tasks[0], *cfg.tasks[2:]])
        return cfg

    monkeypatch.setattr(prepare, "_stream_yaml", reordered)
    rows, complete = prepare.prepare("ucit", str(tmp_path))
    assert not complete and any("differs from the published order" in r["status"] for r in rows)


def test_continual_llava_on_ucit_with_the_llava_standin_end_to_end(tmp_path, standin,
                                                                    monkeypatch):
    """`python -m mcl.run experiment=continual_llava_tiny stream=ucit data_root=<fixture>
    backbone=tiny_llava_1_5_standin`, in process; then answers equal to the targets score 1 on
    the exact tasks and a positive CIDEr on the caption tasks, nonsense 0 everywhere."""
    write_ucit(tmp_path / "data", n_train=2, n_test=2)
    common = ["stream=ucit", *FAST, f"data_root={tmp_path / 'data'}",
              "backbone=tiny_llava_1_5_standin",
              "max_unknown_words=null"]  # the stand-in reads only toy words
    cfg = compose_config(["experiment=continual_llava_tiny", *common, "method.epochs=1",
                          "method.batch_size=4"])
    result = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["tasks"] == UCIT_ORDER and saved["completed_tasks"] == 6
    assert np.array(result["matrix"]).shape == (7, 6)
    assert np.isfinite(result["matrix"]).all()

    cfg = compose_config(["method=zero_shot", *common])
    monkeypatch.setattr(LlavaBackbone, "generate", lambda self, batch: list(batch["answers"]))
    right = np.array(run(cfg, tmp_path / "right")["matrix"])
    assert (right[:, [0, 1, 3, 4]] == 1.0).all() and (right[:, [2, 5]] > 0).all()
    monkeypatch.setattr(LlavaBackbone, "generate",
                        lambda self, batch: ["zzz"] * len(batch["answers"]))
    assert np.array(run(cfg, tmp_path / "wrong")["matrix"]).max() == 0.0
