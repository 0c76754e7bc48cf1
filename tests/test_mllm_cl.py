"""MLLM-CL read from few-sample copies in its released layout, each task with its eval script's
scorer (or the marked fallback), and end-to-end runs on the tiny llava-1.5 stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_fixtures import write_mllm_cl
from conftest import compose_config

from mcl.backbones.llava import LlavaBackbone
from mcl.data import prepare
from mcl.metrics.benchmarks import score
from mcl.run import build, run

FAST = ["logger=none", "trainer.progress_bar=false", "resume=false"]
# scripts/LLaVA/Train_dom/1_..5_ and Train_ability/1_..4_, with the eval script each task uses.
SETTINGS = {
    "domain": {"RS": "mllm_cl_contains", "Med": "mllm_cl_pvqa", "AD": "mllm_cl_contains",
               "Sci": "mllm_cl_sci", "Fin": "mllm_cl_finvis"},
    "ability": {"OCR": "mllm_cl_ocr", "Math": "exact_fallback", "VP": "mllm_cl_sat",
                "APP": "option"},
}


@pytest.fixture(scope="module")
def standin() -> Path:
    from mcl.backbones.standin import save_standin

    return save_standin()


@pytest.mark.parametrize("config", ["domain", "ability"])
def test_mllm_cl_tasks_order_counts_fields_and_scorers(tmp_path, config):
    bench = write_mllm_cl(tmp_path, config, n_train=3, n_test=2)
    cfg = compose_config([f"stream=mllm_cl_{config}", f"data_root={tmp_path}"])
    stream = build(cfg.stream, seed=0)
    assert stream.task_names == list(SETTINGS[config])
    assert {t.name: t.meta["match"] for t in stream.tasks} == SETTINGS[config]
    for task, spec in zip(stream.tasks, cfg.stream.tasks, strict=True):
        assert (len(task.train), len(task.test)) == (3, 2)
        for split in ("train", "test"):  # each split's images beside its own files
            folder = bench / spec[f"{split}_images"] / "images"
            assert all(Path(s.image).parent == folder and Path(s.image).is_file()
                       for s in getattr(task, split))
    external = {t.name: t.meta.get("official_scorer") for t in stream.tasks}
    if config == "ability":  # the fallbacks say what the benchmark's own score needs
        assert "GPT-4" in external["Math"] and "MMT-Bench" in external["APP"]
        ocr = stream.tasks[0].test[1]
        assert ocr.scored_against == {"answers": ["answer 1", "alt 1"],
                                      "category": "Regular Text Recognition"}
        assert score("it reads ALT 1", ocr.scored_against, ocr.match) == 1.0
    else:
        assert set(external.values()) == {None}
        sci = stream.tasks[3].test
        assert [s.scored_against["source"] for s in sci] == ["AI2D", "MapQA"]
        assert score("utah", sci[1].scored_against, sci[1].match) == 0.5


def test_prepare_mllm_cl_checks_order_and_reads_both_settings(tmp_path, capsys):
    write_mllm_cl(tmp_path, "domain")
    write_mllm_cl(tmp_path, "ability")
    assert prepare.main(["prepare", "mllm_cl", "--data-root", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "mllm_cl/mcl_prepared/report.json").read_text())
    assert len(report["rows"]) == 2 * (5 + 4) and report["complete"]
    # The prepared table keeps the scorers' structured references.
    stream = build(compose_config(["stream=mllm_cl_domain", f"data_root={tmp_path}"]).stream,
                   seed=0)
    assert stream.tasks[3].test[0].scored_against["source"] == "AI2D"


@pytest.mark.parametrize("config", ["domain", "ability"])
def test_mllm_cl_end_to_end_scores_each_task_with_its_scorer(tmp_path, standin, monkeypatch,
                                                              config):
    """`python -m mcl.run method=zero_shot stream=mllm_cl_<config> data_root=<fixture>
    backbone=tiny_llava_1_5_standin`, in process: the targets score 1 on every task through
    the real loading path and each task's scorer, nonsense 0 (a training run on a stream of the
    same reader: tests/test_ucit.py)."""
    write_mllm_cl(tmp_path / "data", config, n_train=2, n_test=2)
    common = [f"stream=mllm_cl_{config}", *FAST, f"data_root={tmp_path / 'data'}",
              "backbone=tiny_llava_1_5_standin",
              "max_unknown_words=null"]  # the stand-in reads only toy words
    cfg = compose_config(["method=zero_shot", *common])
    monkeypatch.setattr(LlavaBackbone, "generate", lambda self, batch: list(batch["answers"]))
    assert np.array(run(cfg, tmp_path / "right")["matrix"]).min() == 1.0
    saved = json.loads((tmp_path / "right" / "results.json").read_text())
    assert sorted(saved.get("fallback_scorers", {})) == (["APP", "Math"] if config == "ability"
                                                         else [])
    monkeypatch.setattr(LlavaBackbone, "generate",
                        lambda self, batch: ["zzz"] * len(batch["answers"]))
    assert np.array(run(cfg, tmp_path / "wrong")["matrix"]).max() == 0.0
