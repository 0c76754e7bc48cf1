"""experiments/bench_gpu.py's Qwen2.5-VL comparison runs on a CPU at a tiny size, and its two
batches are one input: mcl's collated form computes the loss the plain loop's form does."""

import importlib.util
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    path = ROOT / "experiments" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_and_mcl_batches_are_the_same_input():
    from mcl.backbones.vlm import Qwen2VlBackbone

    bench = _bench()
    model = bench.build_qwen(bench.QWEN_PRESETS["tiny"]).eval()
    plain, mine = bench.make_qwen_batches(2, 4, 3, 8, torch.Generator().manual_seed(0))
    backbone = Qwen2VlBackbone(model, bench.Processor(), name="bench")
    with torch.no_grad():
        expected = model(**plain).loss
        torch.testing.assert_close(backbone(mine).loss, expected)


def test_qwen_comparison_runs_on_cpu_and_prints_the_table(tmp_path, monkeypatch):
    bench = _bench()
    out = tmp_path / "bench.md"
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py", "--arch", "qwen2_5_vl", "--preset", "tiny",
                                      "--batch", "1", "--text", "4", "--answer", "2",
                                      "--steps", "1", "--warmup", "0", "--rounds", "1",
                                      "--out", str(out)])
    bench.main()
    text = out.read_text()
    assert "device: CPU" in text and "Qwen2.5-VL architecture" in text
    ratio = re.search(r"\| mcl lora \| [\d.]+ \| ([\d.]+) \(", text)
    assert ratio and float(ratio.group(1)) > 0
    assert "| plain transformers + peft LoRA (reference) |" in text
