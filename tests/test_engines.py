"""Choosing how answers are generated: mcl's decoders, or vLLM when it is installed.

The vLLM path itself is NOT run here (no GPU, no vLLM in CI): its selection and errors are."""

import importlib.util

import pytest
from conftest import MICRO, compose_config

from mcl.engines import check_backend, use_backend
from mcl.eval_policy import EvalConfig
from mcl.run import run
from mcl.strategies import build_strategy

VLLM_MISSING = importlib.util.find_spec("vllm") is None


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(ValueError, match="evaluation.backend='trt' is not one of"):
        EvalConfig(backend="trt")


@pytest.mark.skipif(not VLLM_MISSING, reason="vLLM is installed here")
def test_missing_vllm_says_how_to_get_it_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(ImportError, match="needs vLLM.*pip install vllm.*backend=static"):
        check_backend("vllm")
    import mcl.run

    loaded = []
    monkeypatch.setattr(mcl.run, "build", lambda *a, **k: loaded.append(a) or 1 / 0)
    with pytest.raises(ImportError, match="needs vLLM"):  # before the stream or the weights
        run(compose_config([*MICRO, "evaluation.backend=vllm"]), tmp_path)
    assert loaded == []


def test_backend_sets_the_backbones_decoding(micro_backbone):
    strategy = build_strategy("zero_shot")
    strategy.setup(micro_backbone)
    for name in ("hf", "static"):
        use_backend(strategy, name)
        assert micro_backbone.decoding == name


def test_vllm_refuses_a_method_with_its_own_generation(micro_backbone, monkeypatch):
    """A method that answers through its own modules cannot be served by vLLM's weights."""
    import mcl.engines

    monkeypatch.setattr(mcl.engines, "check_backend", lambda name: None)  # as if installed
    strategy = build_strategy("fwd_prompt")
    strategy.setup(micro_backbone)
    with pytest.raises(ValueError, match="serves the backbone's weights alone.*fwd_prompt"):
        use_backend(strategy, "vllm")
    plain = build_strategy("zero_shot")
    plain.setup(micro_backbone)
    use_backend(plain, "vllm")  # accepted: the backbone's own generate
