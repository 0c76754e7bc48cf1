"""Grid over the tiny backbone's recipe: does the toy world separate methods?

For each recipe variant (pre-training length, fine-tuning epochs, ...), pre-trains a tiny_llava
and runs finetune / lora / joint on the three toy streams, in parallel processes, and prints per
variant: pre-training time and accuracy, joint's Last, finetune's Forgetting. It calls the loop
directly (no Hydra), so it also runs where only torch/transformers/lightning/peft exist (the
device machine). The issue's criteria: joint Last >= 0.80 and finetune Forgetting >= 0.15 on
every stream.

    python experiments/tune_toy_world.py --accelerator gpu --out results.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STREAMS = ("toy_domain", "toy_capability", "toy_dataset")

# Each variant: dotted overrides of conf/backbone/tiny_llava.yaml (tiny.*) and of the method
# configs (method.*) and streams (stream.*).
VARIANTS = {
    "base": {},
    "v20": {"tiny.pretrain.vision_epochs": 20},
    "v20_ft6": {"tiny.pretrain.vision_epochs": 20, "method.epochs": 6},
    "v30_ft6": {"tiny.pretrain.vision_epochs": 30, "method.epochs": 6},
    "v20_lm8_ft6": {"tiny.pretrain.vision_epochs": 20, "tiny.pretrain.epochs": 8,
                    "method.epochs": 6},
    "v20_ft6_lr2": {"tiny.pretrain.vision_epochs": 20, "method.epochs": 6, "method.lr_scale": 2.0},
    "img48_v20_ft6": {"tiny.vision.image_size": 48, "tiny.vision.patch_size": 12,
                      "tiny.pretrain.vision_epochs": 20, "method.epochs": 6},
    "v20_ft6_n2000": {"tiny.pretrain.vision_epochs": 20, "method.epochs": 6,
                      "stream.train_size": 2000},
}


def _set(tree: dict, dotted: str, value) -> None:
    *path, key = dotted.split(".")
    for p in path:
        tree = tree[p]
    tree[key] = value


def run_variant(name: str, overrides: dict, accelerator: str, out: str, methods: list[str]):
    import torch

    torch.set_num_threads(2)
    os.environ["MCL_CACHE"] = tempfile.mkdtemp(prefix=f"cache-{name}-")
    from mcl.backbones.llava import LlavaBackbone
    from mcl.backbones.tiny_llava import ensure_pretrained
    from mcl.data.toy_streams import toy_stream
    from mcl.loop import LoopConfig, run_stream
    from mcl.strategies import build_strategy

    backbone_cfg = yaml.safe_load((ROOT / "conf/backbone/tiny_llava.yaml").read_text())
    tiny = copy.deepcopy(backbone_cfg["tiny"])
    for k, v in overrides.items():
        if k.startswith("tiny."):
            _set(tiny, k[5:], v)
    start = time.perf_counter()
    path = ensure_pretrained(tiny)
    report = json.loads((path / "pretrain.json").read_text())
    record = {"variant": name, "pretrain_s": time.perf_counter() - start,
              "vision_acc": report["vision_object_accuracy"],
              "pretrain_acc": report["heldout_accuracy"], "runs": {}}
    cfg = LoopConfig(accelerator=accelerator, progress_bar=False, deterministic=False,
                     eval_batch_size=200)
    for stream_name in STREAMS:
        scfg = yaml.safe_load((ROOT / f"conf/stream/{stream_name}.yaml").read_text())
        scfg.pop("_target_")
        for k, v in overrides.items():
            if k.startswith("stream."):
                scfg[k[7:]] = v
        stream = toy_stream(**scfg, seed=0)
        for method in methods:
            mcfg = yaml.safe_load((ROOT / f"conf/method/{method}.yaml").read_text())
            mcfg.pop("name")
            for k, v in overrides.items():
                if k == "method.lr_scale":
                    mcfg["lr"] = mcfg.get("lr", 1e-3) * v
                elif k.startswith("method.") and method != "zero_shot":
                    mcfg[k[7:]] = v
            strategy = build_strategy(method, **mcfg)
            strategy.setup(LlavaBackbone.load("tiny_llava", pretrained=str(path)))
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as run_dir:
                res = run_stream(strategy, stream, run_dir, cfg, seed=0, resume=False)
            record["runs"][f"{stream_name}/{method}"] = {
                "seconds": time.perf_counter() - t0, "metrics": res["metrics"],
                "matrix": res["matrix"]}
            with open(out, "a") as f:
                f.write(json.dumps({"variant": name, "stream": stream_name, "method": method,
                                    **record["runs"][f"{stream_name}/{method}"],
                                    "pretrain_s": record["pretrain_s"],
                                    "vision_acc": record["vision_acc"],
                                    "pretrain_acc": record["pretrain_acc"]}) + "\n")


def summarize(out: str) -> str:
    rows: dict[str, dict] = {}
    for line in Path(out).read_text().splitlines():
        r = json.loads(line)
        v = rows.setdefault(r["variant"], {"pre": (r["pretrain_s"], r["vision_acc"],
                                                   r["pretrain_acc"])})
        m = r["metrics"]
        v[f"{r['stream']}/{r['method']}"] = (m["last"], m["forgetting"], r["seconds"])
    lines = ["| variant | pretrain s | vision acc | pretrain acc | " +
             " | ".join(f"{s} joint Last | {s} ft Forg | {s} ft s" for s in STREAMS) + " |"]
    for name, v in rows.items():
        cells = [f"{v['pre'][0]:.0f}", f"{v['pre'][1]:.2f}", f"{v['pre'][2]:.2f}"]
        for s in STREAMS:
            joint, ft = v.get(f"{s}/joint"), v.get(f"{s}/finetune")
            cells += [f"{joint[0]:.2f}" if joint else "-", f"{ft[1]:.2f}" if ft else "-",
                      f"{ft[2]:.0f}" if ft else "-"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--out", default="tune_toy_world.jsonl")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--methods", nargs="+", default=["finetune", "joint", "lora"])
    parser.add_argument("--summarize", action="store_true")
    args = parser.parse_args()
    if not args.summarize:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=run_variant,
                             args=(n, VARIANTS[n], args.accelerator, args.out, args.methods))
                 for n in args.variants]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    print(summarize(args.out))


if __name__ == "__main__":
    main()
