"""End to end at LLaVA-1.5-7B shapes: `python -m mcl.run` with method=lora on a CoIN-format
fixture stream, and where its time and memory go.

    PYTHONPATH=. python experiments/e2e_gpu_7b.py --out /tmp/e2e        # one GPU, bf16
    PYTHONPATH=. python experiments/e2e_gpu_7b.py --tiny --out /tmp/e2e # toy size, CPU

1. Builds LLaVA-1.5-7B's architecture (experiments/bench_gpu.py's 7b preset: CLIP ViT-L/14-336,
   576 image tokens, Vicuna-7B's Llama shape) with random bf16 weights and the tiny toy-world
   processor (a word-level tokenizer: the prompts are short, the image tokens are real), and
   writes it with save_pretrained.
2. Writes CoIN's eight tasks in CoIN's file layout (tests/benchmark_fixtures.py) with --train
   and --test samples per task.
3. Runs `python -m mcl.run backbone=llava_1_5_7b backbone.pretrained=<dir> stream=coin
   method=lora trainer=gpu` in a subprocess (as a user would), then prints, from its
   results.json, the per-task training, evaluation and checkpointing seconds, the peak GPU
   memory and the checkpoint sizes on disk, and writes that table to <out>/e2e.md.
Random weights never end an answer, so every evaluation answer is --max-new-tokens long: the
evaluation time is an upper bound for a trained model's short answers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "experiments"), str(ROOT / "tests"), str(ROOT)]


def write_model(out: Path, tiny: bool) -> Path:
    """Random LLaVA-1.5 weights at 7B (or toy) shapes, with a processor, via save_pretrained."""
    from bench_gpu import PRESETS, TINY, build_model

    from mcl.backbones.tiny_llava import build_processor

    shape = TINY if tiny else PRESETS["7b"]
    vision = shape.get("vision", {"image_size": 336, "patch_size": 14})
    processor = build_processor(vision["image_size"], vision["patch_size"])
    device, dtype = ("cpu", torch.float32) if tiny else ("cuda", torch.bfloat16)
    model = build_model(shape, device, dtype)
    tok = processor.tokenizer
    model.config.image_token_id = tok.convert_tokens_to_ids("<image>")
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        setattr(model.config.text_config, key, getattr(tok, key))
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    directory = out / "model"
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    del model
    torch.cuda.empty_cache()  # the run below is another process: leave it the whole GPU
    return directory


def table(results: dict, timings: list[dict], run_dir: Path, wall_s: float) -> str:
    rows = ["| after | train s | eval s | checkpoint s | peak GPU GiB | checkpoint MiB |",
            "|---|---:|---:|---:|---:|---:|"]
    def fmt(t: dict, key: str, scale: float = 1.0) -> str:
        return "" if key not in t else f"{t[key] / scale:.1f}"

    for t in timings:
        rows.append(f"| {t['task']} | {t['train_s']:.1f} | {t['eval_s']:.1f} | "
                    f"{fmt(t, 'checkpoint_s')} | {fmt(t, 'peak_gpu_gib')} | "
                    f"{fmt(t, 'checkpoint_bytes', 2**20)} |")
    total = {k: sum(t.get(k, 0.0) for t in timings)
             for k in ("train_s", "eval_s", "checkpoint_s")}
    on_disk = sum(p.stat().st_size for p in (run_dir / "checkpoints").glob("*"))
    rows.append(f"| total | {total['train_s']:.1f} | {total['eval_s']:.1f} | "
                f"{total['checkpoint_s']:.1f} | | {on_disk / 2**20:.1f} on disk |")
    env = results.get("versions", {})
    samples = results["evaluation"]["samples"]
    answered = sum(n for row in samples for n in row if n is not None)
    return "\n".join([
        f"mcl.run wall-clock {wall_s:.0f} s (model load and start-up included); "
        f"{len(results['tasks'])} tasks; {answered} answers scored over the run "
        f"(policy {results['evaluation']['policy']}, backend "
        f"{results['evaluation']['backend']}); torch {env.get('torch')}, transformers "
        f"{env.get('transformers')}; device "
        f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}.", "", *rows])


def first_tasks(tasks: list[dict]) -> str:
    """A Hydra override that keeps these of CoIN's task entries."""
    entries = ",".join("{" + ",".join(f"{k}:'{v}'" for k, v in t.items()) + "}" for t in tasks)
    return f"stream.tasks=[{entries}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (smoke run)")
    parser.add_argument("--train", type=int, default=200, help="training samples per task")
    parser.add_argument("--test", type=int, default=50, help="test samples per task")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=64)  # llava_1_5_7b.yaml's
    parser.add_argument("--tasks", type=int, default=8, help="the first N of CoIN's 8 tasks")
    parser.add_argument("overrides", nargs="*", help="more mcl.run overrides")
    args = parser.parse_args()
    from benchmark_fixtures import stream_tasks, write_coin

    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = write_model(args.out, args.tiny)
    write_coin(args.out / "data", n_train=args.train, n_test=args.test)
    run_dir = args.out / "run"
    command = [sys.executable, "-m", "mcl.run", "backbone=llava_1_5_7b",
               f"backbone.pretrained={model_dir}",
               f"backbone.max_new_tokens={args.max_new_tokens}", "stream=coin",
               f"data_root={args.out / 'data'}", "method=lora", f"method.epochs={args.epochs}",
               "logger=none", "trainer.progress_bar=false", f"hydra.run.dir={run_dir}",
               # Random weights behind the toy world's word-level tokenizer: the vocabulary
               # check would rightly refuse CoIN's words, which do not matter for timing.
               "max_unknown_words=null",
               *(["trainer=cpu", "backbone.dtype=float32", "method.batch_size=4",
                  "trainer.eval_batch_size=8"] if args.tiny
                 # bench_gpu.py's batch of 8 (53 GiB peak at 7B); lora.yaml's 32 of the toy
                 # recipe does not fit 7B activations in 140 GiB without checkpointing.
                 else ["trainer=gpu", "method.batch_size=8"]),
               *([first_tasks(stream_tasks("coin")[: args.tasks])] if args.tasks < 8 else []),
               *args.overrides]
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    results = json.loads((run_dir / "results.json").read_text())
    timings = json.loads((run_dir / "timings.json").read_text())
    text = table(results, timings, run_dir, wall)
    (args.out / "e2e.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
