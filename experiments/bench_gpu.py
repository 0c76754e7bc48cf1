"""GPU benchmark: mcl's training step and generation against plain transformers + peft.

    python experiments/bench_gpu.py --preset 1b [--rounds 3] [--steps 15] [--out table.md]
    python experiments/bench_gpu.py --preset 7b          # the real LLaVA-1.5-7B shapes
    python experiments/bench_gpu.py --preset 7b --decode-only   # the decode table alone
    python experiments/bench_gpu.py --tiny               # a toy size on the CPU (a smoke run)
    python experiments/bench_gpu.py --arch qwen2_5_vl --preset 7b   # Qwen2.5-VL-7B's shapes
    python experiments/bench_gpu.py --arch qwen2_5_vl --preset tiny # seconds, also on a CPU

One script for one device call. Builds LLaVA-1.5-architecture models with random bf16 weights
(CLIP ViT-L/14-336 tower, 576 image tokens, 2-layer MLP projector, Llama LM: `7b` is
Vicuna-7B's shape, `1b` the same architecture at 1.26 B parameters), then measures:
- the bf16 matmul rate of this GPU (8192^3 products), the MFU reference;
- the reference: a hand-written loop of plain transformers + peft LoRA on the LM's linear layers;
- mcl's `lora`, `fwd_prompt`, `continual_llava`, `rank_selective_lora` and the MCIT baselines
  `moe_lora`, `replay`, `o_lora`, `ewc`, `lwf`, `hide_llava`, `modal_prompt`, `sefe` (at a
  second task, their mechanism on: old adapter, Fisher, teacher, RegLoRA's penalty) through
  mcl's Lightning module, exactly as the loop trains, at the same batch and sequence;
- CoDyRA against its equal-work reference: plain peft LoRA of its rank on the same layers
  (vision tower, projector and LM), since it trains adapters in the vision tower too;
- generation: answers/s of mcl's batched greedy generation against HF `generate` one sample at
  a time, and of CoDyRA after its merge against the base model;
- decoding (`decode_table`): mcl.generation's static cache + CUDA-graph step against today's
  path (transformers' `generate`, dynamic cache) at batch 32, prompts of 641 tokens, 16 and 128
  new tokens (the end token blocked, so every answer is that long), in interleaved rounds; the
  prefill and the per-step time (from runs of 1 and N new tokens) beside their bounds: the
  prefill's matmul FLOPs at the measured bf16 rate, a step's bytes (weights + the KV cache it
  reads) at the measured copy bandwidth; and how many answers of the two paths are identical.
  The static path's cache length follows N (mcl.generation.CACHE_BUCKET), so each of its timed
  runs follows an untimed one at the same N: its cache and graph are ready, as in a long
  evaluation where one shape serves many batches (the first call's time is listed apart).
GPU clocks drift by several per cent over minutes, so every comparison is interleaved: the
reference and the method run alternate blocks of `--steps` steps (after warm-up), `--rounds`
times, in one process; the ratio is the median of the per-round ratios of median step times,
and each round's ratio is listed so the spread shows. Step times come from CUDA events.
Prints a Markdown table with the device named, and writes it to --out.

`--arch qwen2_5_vl` builds Qwen2.5-VL instead (`7b`: Qwen2.5-VL-7B-Instruct's shapes, windowed
ViT of 32 blocks, 28-layer Qwen2 LM with GQA; one 448 px image per sample, 256 image tokens
after the 2x2 merger) and compares mcl's `lora` (through `Qwen2VlBackbone`, whose batches carry
pixel rows per sample) with the plain loop, in the same interleaved rounds and table; without a
GPU it runs on the CPU (wall-clock timing, no MFU), which is what `--preset tiny` is for.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

import torch

PRESETS = {  # Llama LM shapes; the vision tower and projector are LLaVA-1.5's in both
    "1b": {"hidden": 2048, "layers": 16, "inter": 5632, "heads": 16},
    "7b": {"hidden": 4096, "layers": 32, "inter": 11008, "heads": 32},  # Vicuna-7B v1.5
}
LLAVA_VISION = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                "num_attention_heads": 16, "image_size": 336, "patch_size": 14}
# --tiny: the same code at a toy size, on the CPU in fp32 (2 image tokens).
TINY = {"hidden": 64, "layers": 2, "inter": 128, "heads": 4,
        "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                   "num_attention_heads": 2, "image_size": 28, "patch_size": 14}}
# Qwen2.5-VL shapes: `7b` is Qwen2.5-VL-7B-Instruct's config.json; `tiny` runs on a CPU.
QWEN_PRESETS = {
    "7b": {"text": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064},
           "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420,
                      "num_heads": 16, "out_hidden_size": 3584, "window_size": 112,
                      "fullatt_block_indexes": [7, 15, 23, 31]},
           "mrope": [16, 24, 24], "grid": 32},  # 448 px: 32 x 32 patches of 14, 256 tokens
    "tiny": {"text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 152064},
             "vision": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                        "out_hidden_size": 64, "window_size": 112,
                        "fullatt_block_indexes": [1]},
             "mrope": [2, 3, 3], "grid": 8},
}
QWEN_TOKENS = {"image": 151655, "vision_start": 151652, "vision_end": 151653, "eos": 151645}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def matmul_tflops(n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12


def build_model(shape: dict, device: str = "cuda", dtype: torch.dtype = torch.bfloat16):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    vision = CLIPVisionConfig(**shape.get("vision", LLAVA_VISION), projection_dim=768)
    patches = (vision.image_size // vision.patch_size) ** 2
    text = LlamaConfig(vocab_size=shape.get("vocab", 32064), hidden_size=shape["hidden"],
                       intermediate_size=shape["inter"], num_hidden_layers=shape["layers"],
                       num_attention_heads=shape["heads"], num_key_value_heads=shape["heads"],
                       max_position_embeddings=4096, pad_token_id=0, bos_token_id=1,
                       eos_token_id=2)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=32000,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         image_seq_length=patches)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        torch.set_default_dtype(dtype)
        model = LlavaForConditionalGeneration(config)
        torch.set_default_dtype(torch.float32)
    return model


class Processor:
    """Just what LlavaBackbone reads for training and generation: token ids."""

    class tokenizer:  # noqa: N801
        pad_token_id, eos_token_id = 0, 2

        @staticmethod
        def batch_decode(ids, skip_special_tokens=True):
            return [" ".join(map(str, row.tolist())) for row in ids]


def make_batch(batch: int, text: int, answer: int, generator: torch.Generator,
               patches: int = 576, image_size: int = 336, vocab: int = 32000,
               pin: bool = True) -> dict:
    """Pinned host tensors: each step copies its batch to the GPU, as a real loader does."""
    prompt = torch.randint(3, vocab, (batch, 1 + patches + text), generator=generator)
    prompt[:, 1 : 1 + patches] = 32000  # image tokens after BOS, as LLaVA-1.5's template
    prompt[:, 0] = 1
    answers = torch.randint(3, vocab, (batch, answer), generator=generator)
    ids = torch.cat([prompt, answers], 1)
    labels = torch.full_like(ids, -100)
    labels[:, -answer:] = answers
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
           "pixel_values": torch.randn(batch, 3, image_size, image_size, generator=generator)}
    return {k: v.pin_memory() for k, v in out.items()} if pin else out


class Clock:
    """Milliseconds between `start()` and `stop()`: CUDA events on a GPU, wall clock on a CPU."""

    def start(self) -> None:
        if DEVICE == "cuda":
            self.begin = torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.begin = time.perf_counter()

    def stop(self) -> float:
        if DEVICE != "cuda":
            return (time.perf_counter() - self.begin) * 1e3
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        torch.cuda.synchronize()
        return self.begin.elapsed_time(end)


def time_steps(step, steps: int, warmup: int) -> list[float]:
    """Milliseconds of each of `steps` calls of `step()` after `warmup` calls."""
    for _ in range(warmup):
        step()
    times, clock = [], Clock()
    for _ in range(steps):
        clock.start()
        step()
        times.append(clock.stop())
    return times


class PlainLoRA:
    """The reference: a minimal hand-written transformers + peft LoRA loop."""

    def __init__(self, model, batch: dict, r: int, parts: tuple[str, ...] = ("language_model",)):
        from peft import LoraConfig, inject_adapter_in_model

        inner = model.model
        targets = [f"{part}.{n}" for part in parts
                   for n, m in getattr(inner, part).named_modules()
                   if isinstance(m, torch.nn.Linear)]
        inject_adapter_in_model(LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05,
                                           target_modules=targets), model)
        for n, p in model.named_parameters():
            p.requires_grad_("lora_" in n)
        self.model, self.batch = model, batch
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4, fused=True)

    def step(self) -> None:
        batch = {k: v.to(DEVICE, non_blocking=True) for k, v in self.batch.items()}
        loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def block(self, steps: int, warmup: int) -> list[float]:
        return time_steps(self.step, steps, warmup)


class McL:
    """mcl's step: the strategy's forward and loss inside ContinualModule, optimised by a
    Lightning Trainer exactly as the loop does (timed by a callback)."""

    def __init__(self, model, name: str, batch: dict, options: dict,
                 checkpointing: bool = False, backbone_cls=None):
        from mcl.backbones.llava import LlavaBackbone
        from mcl.strategies import build_strategy

        if checkpointing:
            model.gradient_checkpointing_enable({"use_reentrant": False})
        self.backbone = (backbone_cls or LlavaBackbone)(model, Processor(), name="bench")
        self.strategy = build_strategy(name, **options)
        self.strategy.setup(self.backbone)
        self.batch = batch
        # Second task (so Continual LLaVA's contextual term and Fwd-Prompt's protected subspace
        # exist); the per-task work on real samples (SVD, key alignment) is outside the steps.
        task = type("Task", (), {"train": [], "name": "bench"})()
        if name == "fwd_prompt":
            d = model.config.text_config.hidden_size
            self.strategy.task_grams = lambda samples: (torch.eye(d)[:, :64] @ torch.eye(d)[:64],
                                                        ) * 2
        # A finished first task: O-LoRA's orthogonality term and SEFE's RegLoRA penalty are on.
        if name in ("o_lora", "sefe"):
            self.strategy.after_task(task, 0)
        try:
            self.strategy.before_task(task, 1)  # LwF: the teacher is snapshot here
        except Exception:  # a hook that needs real samples: its step-time state is already set
            pass
        if name == "ewc":  # a first task's Fisher and anchor (estimated on real samples)
            params = self.strategy.trainable_parameters()
            self.strategy.fisher = [torch.ones_like(p, dtype=torch.float32) for p in params]
            self.strategy.anchor = [p.detach().float().clone() for p in params]

    def block(self, steps: int, warmup: int) -> list[float]:
        import lightning as L
        from torch.utils.data import DataLoader

        from mcl.module import ContinualModule

        times: list[float] = []

        class Timer(L.Callback):
            clock = Clock()

            def on_train_batch_start(self, *args):
                self.clock.start()

            def on_train_batch_end(self, *args):
                times.append(self.clock.stop())

        loader = DataLoader([self.batch] * (steps + warmup), batch_size=None)
        trainer = L.Trainer(accelerator="gpu" if DEVICE == "cuda" else "cpu", devices=1,
                            precision="32-true",
                            max_steps=steps + warmup, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            gradient_clip_val=1.0, callbacks=[Timer()])
        trainer.fit(ContinualModule(self.strategy, "bench"), train_dataloaders=loader)
        return times[warmup:]


def interleaved(runners: dict, rounds: int, steps: int, warmup: int) -> dict[str, list]:
    """Per runner, the median step time of each round; runners alternate within a round."""
    medians: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            medians[name].append(statistics.median(runner.block(steps, warmup)))
    return medians


def ratio(medians: dict[str, list], name: str, reference: str) -> tuple[float, list[float]]:
    per_round = [m / r for m, r in zip(medians[name], medians[reference], strict=True)]
    return statistics.median(per_round), per_round


def release() -> None:
    """Give the memory of dropped models back before the next one is built."""
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def build_qwen(shape: dict):
    """Qwen2.5-VL of `shape` with random bf16 weights (fp32 on a CPU), SDPA attention."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = {**shape["text"], "max_position_embeddings": 32768, "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "default", "mrope_section": shape["mrope"],
                                "rope_theta": 1000000.0}}
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config={**shape["vision"], "patch_size": 14,
                                         "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=QWEN_TOKENS["image"], vision_start_token_id=QWEN_TOKENS["vision_start"],
        vision_end_token_id=QWEN_TOKENS["vision_end"])
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    with torch.device(DEVICE):
        torch.set_default_dtype(dtype)
        model = Qwen2_5_VLForConditionalGeneration(config)
        torch.set_default_dtype(torch.float32)
    return model


def make_qwen_batches(batch: int, text: int, answer: int, grid: int,
                      generator: torch.Generator) -> tuple[dict, dict]:
    """One batch twice: as the model takes it (pixel rows of all images concatenated, as
    Qwen2.5-VL's processor gives them) for the plain loop, and as mcl's Qwen2VlBackbone
    collates it (sample-first, `<key>_rows`) for mcl's step."""
    tokens = grid * grid // 4  # after the 2 x 2 merger
    prompt = torch.randint(3, 151000, (batch, 2 + tokens + text), generator=generator)
    prompt[:, 0] = QWEN_TOKENS["vision_start"]
    prompt[:, 1 : 1 + tokens] = QWEN_TOKENS["image"]
    prompt[:, 1 + tokens] = QWEN_TOKENS["vision_end"]
    answers = torch.randint(3, 151000, (batch, answer), generator=generator)
    ids = torch.cat([prompt, answers], 1)
    labels = torch.full_like(ids, -100)
    labels[:, -answer:] = answers
    types = torch.zeros_like(ids, dtype=torch.int32)
    types[:, 1 : 1 + tokens] = 1  # image positions, for M-RoPE
    rows = torch.randn(batch, grid * grid, 3 * 2 * 14 * 14, generator=generator)
    thw = torch.tensor([[1, grid, grid]] * batch)
    text_part = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                 "mm_token_type_ids": types}
    plain = {**text_part, "pixel_values": rows.flatten(0, 1), "image_grid_thw": thw}
    mcl = {**text_part, "pixel_values": rows, "pixel_values_rows": torch.full((batch,), grid**2),
           "image_grid_thw": thw[:, None], "image_grid_thw_rows": torch.ones(batch, dtype=int)}
    pin = DEVICE == "cuda"
    return tuple({k: v.pin_memory() if pin else v for k, v in b.items()} for b in (plain, mcl))


def main_qwen(args) -> str:
    """mcl `lora` on Qwen2.5-VL against the plain transformers + peft loop, interleaved."""
    from mcl.backbones.vlm import Qwen2VlBackbone

    shape = QWEN_PRESETS[args.preset]
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU"
    peak = matmul_tflops() if DEVICE == "cuda" else None
    plain, mine = make_qwen_batches(args.batch, args.text, args.answer, shape["grid"],
                                    torch.Generator().manual_seed(0))
    tokens = plain["input_ids"].numel()
    reference = PlainLoRA(build_qwen(shape), plain, r=8)
    n_params = sum(p.numel() for p in reference.model.parameters())
    reference.block(1, 1)
    mcl = McL(build_qwen(shape), "lora", mine, {"r": 8, "alpha": 16},
              backbone_cls=Qwen2VlBackbone)
    mcl.block(1, 1)
    medians = interleaved({"plain": reference, "mcl": mcl}, args.rounds, args.steps,
                          args.warmup)

    def row(label: str, ms: float, vs: str) -> str:
        mfu = ("n/a", "n/a") if peak is None else tuple(
            f"{100 * k * n_params * tokens / (ms / 1e3) / 1e12 / peak:.1f}" for k in (6, 4))
        return (f"| {label} | {ms:.1f} | {vs} | {args.batch / ms * 1e3:.1f} | "
                f"{tokens / ms * 1e3:,.0f} | | {mfu[0]} | {mfu[1]} |")

    r, per_round = ratio(medians, "mcl", "plain")
    return "\n".join([
        f"device: {device}; model: Qwen2.5-VL architecture ({args.preset} preset: LM hidden "
        f"{shape['text']['hidden_size']}, {shape['text']['num_hidden_layers']} layers, ViT of "
        f"{shape['vision']['depth']} blocks), {n_params / 1e9:.2f} B parameters, random "
        f"weights, SDPA attention; batch {args.batch} x {tokens // args.batch} tokens "
        f"({shape['grid'] ** 2 // 4} image); {args.rounds} interleaved rounds of {args.steps} "
        f"steps after {args.warmup} warm-up. `vs plain LoRA`: median of per-round ratios "
        "(each round in brackets).",
        "",
        "| training step | ms | vs plain LoRA | samples/s | tokens/s | peak GiB | MFU 6NT % "
        "| MFU 4NT % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        row("plain transformers + peft LoRA (reference)", statistics.median(medians["plain"]),
            "1.000"),
        row("mcl lora", statistics.median(medians["mcl"]),
            f"{r:.3f} ({', '.join(f'{x:.3f}' for x in per_round)})"),
    ])


def generation_rate(backbone, batch: dict, new_tokens: int, one_at_a_time: bool = False
                    ) -> float:
    gen = {k: batch[k].cuda() for k in ("input_ids", "attention_mask", "pixel_values")}
    n = gen["input_ids"].shape[0]
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        if one_at_a_time:
            for i in range(n):
                backbone.model.generate(**{k: v[i : i + 1] for k, v in gen.items()},
                                        max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                        do_sample=False, pad_token_id=0)
        else:
            backbone.generate(gen, min_new_tokens=new_tokens)
    torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


@torch.no_grad()
def prefill(backbone, batch: dict) -> None:
    backbone.model(**{k: batch[k].cuda(non_blocking=True)
                      for k in ("input_ids", "attention_mask", "pixel_values")})


def copy_bandwidth(gib: float = 4.0, reps: int = 10) -> float:
    """Bytes read + written per second by a device-to-device copy (the HBM reference)."""
    a = torch.empty(int(gib * 2**30), dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        b.copy_(a)
    end.record()
    torch.cuda.synchronize()
    return 2 * a.numel() * reps / (start.elapsed_time(end) / 1e3)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_decode(backbone, decoding: str, batch: dict, new_tokens: int
                 ) -> tuple[float, torch.Tensor]:
    """Seconds for one batch of `new_tokens` answers (the end token blocked) and their ids."""
    backbone.decoding, backbone.max_new_tokens = decoding, new_tokens
    sync()
    start = time.perf_counter()
    with torch.no_grad():
        ids = backbone._new_tokens(batch["attention_mask"], min_new_tokens=new_tokens,
                                   input_ids=batch["input_ids"],
                                   pixel_values=batch["pixel_values"].to(backbone.model.dtype))
    sync()
    return time.perf_counter() - start, ids


def decode_table(backbone, batch: dict, new_tokens: list[int], rounds: int,
                 matmul_rate: float | None, bandwidth: float | None) -> list[str]:
    """Static cache + CUDA graphs (mcl.generation) against transformers' generate, interleaved:
    answers/s per round, the ratio, identical answers, prefill and per-step times and bounds."""
    model = backbone.model
    first_call = {}
    for path in ("static", "hf"):  # warm-up: kernel selection, the static path's capture
        first_call[path] = timed_decode(backbone, path, batch, max(new_tokens))[0]
    seconds = {(p, n): [] for p in ("static", "hf") for n in [1, *new_tokens]}
    identical = {}
    for r in range(rounds):
        for n in [1, *new_tokens]:
            ids = {}
            for path in (("static", "hf") if r % 2 == 0 else ("hf", "static")):
                if path == "static":  # untimed: this N's cache and graph, as in a long eval
                    timed_decode(backbone, path, batch, n)
                t, ids[path] = timed_decode(backbone, path, batch, n)
                seconds[path, n].append(t)
            identical[n] = int((ids["static"] == ids["hf"]).all(1).sum())
    size = batch["input_ids"].shape[0]
    prompt = batch["input_ids"].shape[1]
    text = model.config.get_text_config(decoder=True)
    vision_params = sum(p.numel() for p in model.model.vision_tower.parameters())
    lm_params = sum(p.numel() for n, p in model.named_parameters()
                    if "vision_tower" not in n and "embed_tokens" not in n)
    patches = model.config.image_seq_length
    # Prefill work: every weight once per token (vision tower per patch), and attention's two
    # products over the prompt (SDPA computes the full square when given a mask).
    prefill_flops = 2 * size * (lm_params * prompt + vision_params * (patches + 1)
                                + 2 * text.num_hidden_layers * prompt ** 2 * text.hidden_size)
    from mcl.generation import kv_bytes_per_token

    lines = [f"| answers of N tokens, batch {size} x {prompt} prompt tokens | N | answers/s, "
             "today | answers/s, static + graphs | ratio (per round) | identical answers |",
             "|---|---:|---:|---:|---:|---:|"]
    for n in new_tokens:
        per_round = [h / s for h, s in zip(seconds["hf", n], seconds["static", n], strict=True)]
        lines.append(f"| {'' if n != new_tokens[0] else 'random weights'} | {n} | "
                     f"{size / statistics.median(seconds['hf', n]):.2f} | "
                     f"{size / statistics.median(seconds['static', n]):.2f} | "
                     f"{statistics.median(per_round):.2f} "
                     f"({', '.join(f'{x:.2f}' for x in per_round)}) | "
                     f"{identical[n]} / {size} |")
    lines += ["", "| phase | today ms | static + graphs ms | bound ms | bound from |",
              "|---|---:|---:|---:|---|"]
    prefill = {p: 1e3 * statistics.median(seconds[p, 1]) for p in ("hf", "static")}
    bound = "" if matmul_rate is None else f"{1e3 * prefill_flops / matmul_rate:.1f}"
    lines.append(f"| prefill (1 new token) | {prefill['hf']:.1f} | {prefill['static']:.1f} | "
                 f"{bound} | {prefill_flops / 1e12:.1f} TFLOP at the measured matmul rate |")
    n = max(new_tokens)
    timed_decode(backbone, "static", batch, n)
    decoder = backbone._decoder
    cache_len = decoder._shape[-1]  # the static cache's slots at N = n
    weight_bytes = sum(p.numel() * p.element_size() for name, p in model.named_parameters()
                       if "vision_tower" not in name and "projector" not in name)
    weight_bytes -= model.lm_head.weight.numel() * model.lm_head.weight.element_size() * (
        model.lm_head.weight is model.get_input_embeddings().weight)
    embed = model.get_input_embeddings().weight
    weight_bytes -= embed.numel() * embed.element_size()  # a step reads one row of it
    weight_bytes += model.lm_head.weight.numel() * model.lm_head.weight.element_size() * (
        model.lm_head.weight is embed)
    per_token = kv_bytes_per_token(model.config, model.dtype)  # the cache is in the weights' dtype
    # Slots a step reads: all those written (the bound, on average over the answer); the
    # static path reads whole windows of CACHE_BUCKET slots (mcl.generation).
    from mcl.generation import CACHE_BUCKET, bucketed
    windows = [min(bucketed(prompt + s), cache_len) for s in range(1, n)]
    step_bytes = {"hf": weight_bytes + size * (prompt + n / 2) * per_token,
                  "static": weight_bytes + size * statistics.mean(windows) * per_token}
    for_step = {p: 1e3 * (statistics.median(seconds[p, n]) - statistics.median(seconds[p, 1]))
                / (n - 1) for p in ("hf", "static")}
    # A device copy's rate counts bytes read and written; a step mostly reads.
    bound = "" if bandwidth is None else f"{1e3 * step_bytes['hf'] / bandwidth:.2f}"
    lines.append(f"| one decode step (from N={n} and N=1) | {for_step['hf']:.2f} | "
                 f"{for_step['static']:.2f} | {bound} | {step_bytes['hf'] / 1e9:.1f} GB "
                 f"(weights + the mean KV cache written so far, {per_token / 2**20:.2f} MiB a "
                 f"token; the static path reads {step_bytes['static'] / 1e9:.1f} GB: windows of "
                 f"{CACHE_BUCKET} slots, {cache_len} allocated) at the measured copy bandwidth |")
    lines += ["", f"First call at N={max(new_tokens)} (kernel selection; the static path also "
              f"captures its CUDA graphs): today {first_call['hf']:.1f} s, static "
              f"{first_call['static']:.1f} s. CUDA graphs: "
              + ("captured" if decoder.graph_failed is None and sync_is_cuda()
                 else f"not used ({decoder.graph_failed or 'no CUDA'})") + "."]
    return lines


def kernel_profile(backbone, batch: dict, new_tokens: int, top: int = 8) -> list[str]:
    """Where the GPU time of the prefill and of a decode step goes: the `top` kernels by CUDA
    time in torch.profiler, for a prefill and for a run of `new_tokens` answers on the static
    path (eager steps, no graph, so each kernel is listed; the graph replays the same ones)."""
    from torch.profiler import ProfilerActivity, profile

    decoder = backbone._decoder
    cuda = torch.cuda.is_available()  # off the GPU (--tiny): CPU operators instead of kernels
    activity = ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU
    own = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    lines = []
    for label, graphs, n in (("prefill (1 new token)", None, 1),
                             (f"{new_tokens - 1} decode steps, eager", False, new_tokens)):
        decoder.cuda_graphs = graphs
        timed_decode(backbone, "static", batch, n)
        with profile(activities=[activity]) as prof:
            timed_decode(backbone, "static", batch, n)
        events = [e for e in prof.key_averages() if own(e) > 0]
        total = sum(own(e) for e in events)
        events.sort(key=lambda e: -own(e))
        where = "GPU" if cuda else "CPU"
        lines += ["", f"Kernels of the {label}: {total / 1e3:.1f} ms of {where} time "
                  f"in all ({len(events)} kinds)", "", "| kernel | ms | share | calls |",
                  "|---|---:|---:|---:|"]
        for e in events[:top]:
            lines.append(f"| `{e.key[:90]}` | {own(e) / 1e3:.1f} | "
                         f"{100 * own(e) / total:.0f}% | {e.count} |")
    decoder.cuda_graphs = None
    return lines


def sync_is_cuda() -> bool:
    return torch.cuda.is_available()


def decode_only(args) -> None:
    """The decode table alone (`--decode-only`, `--tiny`)."""
    from mcl.backbones.llava import LlavaBackbone

    shape = TINY if args.tiny else PRESETS[args.preset]
    device = "cpu" if args.tiny else "cuda"
    dtype = torch.float32 if args.tiny else torch.bfloat16
    vision = shape.get("vision", LLAVA_VISION)
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    g = torch.Generator().manual_seed(0)
    batch = make_batch(args.gen_batch, args.text, 1, g, patches, vision["image_size"],
                       pin=not args.tiny)
    batch = {k: (v[:, :-1] if k != "pixel_values" else v).to(device)
             for k, v in batch.items() if k in ("input_ids", "attention_mask", "pixel_values")}
    backbone = LlavaBackbone(build_model(shape, device, dtype).eval(), Processor(), name="bench")
    rate = bandwidth = None
    machine = f"CPU ({torch.get_num_threads()} threads)"
    if device == "cuda":
        machine = torch.cuda.get_device_name()
        rate, bandwidth = matmul_tflops() * 1e12, copy_bandwidth()
    n_params = sum(p.numel() for p in backbone.model.parameters())
    lines = [f"device: {machine}; "
             + ("" if rate is None else f"bf16 matmul rate measured here: {rate / 1e12:.0f} "
                f"TFLOP/s, device copy {bandwidth / 1e12:.2f} TB/s (read + written); ")
             + f"model: LLaVA-1.5 architecture ({'tiny' if args.tiny else args.preset}), "
             f"{n_params / 1e9:.3f} B parameters, random {str(dtype).split('.')[-1]} weights, "
             f"SDPA; {args.rounds} interleaved rounds; `today` = transformers' generate "
             "(dynamic cache), mcl's path before this change.", "",
             *decode_table(backbone, batch, args.new_tokens, args.rounds, rate, bandwidth)]
    if args.profile:
        lines += kernel_profile(backbone, batch, max(args.new_tokens))
    text = "\n".join(lines)
    args.out.write_text(text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["llava", "qwen2_5_vl"], default="llava")
    parser.add_argument("--preset", choices=sorted(PRESETS | QWEN_PRESETS), default="1b")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text", type=int, default=64)
    parser.add_argument("--answer", type=int, default=32)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gen-batch", type=int, default=32)
    parser.add_argument("--methods", nargs="*",
                        default=["lora", "fwd_prompt", "continual_llava", "rank_selective_lora",
                                 "rank_selective_lora:llm", "lora+checkpointing", "moe_lora",
                                 "replay", "o_lora", "ewc", "lwf", "hide_llava", "modal_prompt",
                                 "sefe"],
                        help="mcl methods; `name:part/part` limits adapters to those parts, "
                             "`name+checkpointing` turns gradient checkpointing on")
    parser.add_argument("--out", type=Path, default=Path("bench_gpu.md"))
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--profile", action="store_true",
                        help="with --decode-only: the top kernels of a prefill and of decode steps")
    parser.add_argument("--decode-only", action="store_true",
                        help="only the static-cache decode table (no training benchmarks)")
    parser.add_argument("--no-generation", action="store_true",
                        help="the training-step table alone (no generation section)")
    parser.add_argument("--tiny", action="store_true",
                        help="the decode table at a toy size on the CPU (implies --decode-only)")
    args = parser.parse_args()
    if args.arch == "qwen2_5_vl":
        if args.preset not in QWEN_PRESETS:
            parser.error(f"--arch qwen2_5_vl takes --preset {sorted(QWEN_PRESETS)}")
        text = main_qwen(args)
        args.out.write_text(text + "\n")
        print(text)
        return
    if args.tiny or args.decode_only:
        decode_only(args)
        return
    if args.preset not in PRESETS:
        parser.error(f"--arch llava takes --preset {sorted(PRESETS)}")
    from mcl.backbones.llava import LlavaBackbone
    from mcl.strategies import build_strategy

    torch.backends.cuda.matmul.allow_tf32 = True
    shape = PRESETS[args.preset]
    device = torch.cuda.get_device_name()
    peak = matmul_tflops()
    g = torch.Generator().manual_seed(0)
    batch = make_batch(args.batch, args.text, args.answer, g)
    tokens = batch["input_ids"].numel()
    run = (args.rounds, args.steps, args.warmup)

    reference = PlainLoRA(build_model(shape), batch, r=8)
    n_params = sum(p.numel() for p in reference.model.parameters())

    def row(label: str, ms: float, vs: str, peak_gib: float | None) -> str:
        flops6 = 6 * n_params * tokens / (ms / 1e3) / 1e12
        flops4 = 4 * n_params * tokens / (ms / 1e3) / 1e12
        memory = "" if peak_gib is None else f"{peak_gib:.1f}"
        return (f"| {label} | {ms:.1f} | {vs} | {args.batch / ms * 1e3:.1f} | "
                f"{tokens / ms * 1e3:,.0f} | {memory} | {100 * flops6 / peak:.1f} | "
                f"{100 * flops4 / peak:.1f} |")

    def rounds(per_round: list[float]) -> str:
        return ", ".join(f"{x:.3f}" for x in per_round)

    torch.cuda.reset_peak_memory_stats()
    reference.block(args.steps, args.warmup)
    reference_peak = torch.cuda.max_memory_allocated() / 2**30  # the only model: its own peak
    reference_ms: list[float] = []
    method_rows: list[str] = []
    for method in args.methods:
        spec, _, parts = method.partition(":")
        name, _, extra = spec.partition("+")
        # Methods on a plain LoRA at the reference's rank, so a ratio is their mechanism's cost;
        # moe_lora at CoIN's rank 128 in 8 experts of 16.
        same_lora = {"r": 8, "alpha": 16}
        options = dict({"lora": same_lora, "replay": same_lora, "o_lora": same_lora,
                        "ewc": same_lora, "lwf": same_lora}.get(name, {}))
        if parts:  # e.g. rank_selective_lora:llm  (adapters on the language model only)
            options["parts"] = parts.split("/")
        label = (f"mcl {name}" + (f" on {parts} only" if parts else "")
                 + (" + gradient checkpointing" if extra else ""))
        mcl = runners = None
        try:
            resident = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            mcl = McL(build_model(shape), name, batch, options, checkpointing=bool(extra))
            mcl.block(2, 1)
            own_peak = (torch.cuda.max_memory_allocated() - resident) / 2**30
            runners = {"plain": reference, "mcl": mcl}
            if name == "rank_selective_lora" and not parts:
                # Its equal-work reference: peft LoRA of the same rank on the same layers.
                runners["plain_all"] = PlainLoRA(
                    build_model(shape), batch, r=mcl.strategy.r,
                    parts=("vision_tower", "multi_modal_projector", "language_model"))
            medians = interleaved(runners, *run)
        except Exception as err:  # report, keep measuring the others
            method_rows.append(f"| {label} | failed: {type(err).__name__}: {str(err)[:100]} |"
                               " | | | | | |")
            continue
        finally:
            mcl = runners = None
            release()
        reference_ms += medians["plain"]
        r, per_round = ratio(medians, "mcl", "plain")
        method_rows.append(row(label, statistics.median(medians["mcl"]),
                               f"{r:.3f} ({rounds(per_round)})", own_peak))
        print(method_rows[-1], flush=True)  # a run cut short still shows what it measured
        if "plain_all" in medians:
            r_ref, per_ref = ratio(medians, "plain_all", "plain")
            r_all, per_all = ratio(medians, "mcl", "plain_all")
            method_rows.append(row(
                "plain peft LoRA r=16 on vision + projector + LM (CoDyRA's equal-work reference)",
                statistics.median(medians["plain_all"]), f"{r_ref:.3f} ({rounds(per_ref)})", None))
            method_rows.append(f"| mcl rank_selective_lora / its equal-work reference | | "
                               f"{r_all:.3f} ({rounds(per_all)}) | | | | | |")
    rows = [row("plain transformers + peft LoRA (reference)", statistics.median(reference_ms),
                "1.000", reference_peak), *method_rows]
    reference = None
    release()
    header = [
        f"device: {device}; bf16 matmul rate measured here: {peak:.0f} TFLOP/s; model: "
        f"LLaVA-1.5 architecture ({args.preset} preset: LM hidden {shape['hidden']}, "
        f"{shape['layers']} layers), {n_params / 1e9:.2f} B parameters, random bf16 weights, "
        f"SDPA attention; batch {args.batch} x {tokens // args.batch} tokens (576 image); "
        f"{args.rounds} interleaved rounds of {args.steps} steps after {args.warmup} warm-up; "
        "CUDA events. `vs plain LoRA`: median of per-round ratios (each round in brackets). "
        "MFU 6NT counts forward + backward of every weight; 4NT the frozen-base LoRA work "
        "(no weight gradients); both against the matmul rate above.",
        "",
        "| training step | ms | vs plain LoRA | samples/s | tokens/s | peak GiB | MFU 6NT % "
        "| MFU 4NT % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    if args.no_generation:
        text = "\n".join(header)
        args.out.write_text(text + "\n")
        print(text)
        return

    # Generation: the base model vs CoDyRA merged (its hooks removed), alternated.
    gen_batch = make_batch(args.gen_batch, args.text, 1, g)
    gen_batch = {k: v[:, :-1] if k != "pixel_values" else v for k, v in gen_batch.items()}
    base = LlavaBackbone(build_model(shape).eval(), Processor(), name="bench",
                         max_new_tokens=16)
    merged = LlavaBackbone(build_model(shape).eval(), Processor(), name="bench",
                           max_new_tokens=16)
    codyra = build_strategy("rank_selective_lora")
    codyra.setup(merged)
    task = type("T", (), {"name": "t"})()
    codyra.before_task(task, 0)
    codyra.after_task(task, 0)  # merge: adapters folded into the weights, hooks removed
    generation_rate(base, gen_batch, 4)  # warm-up at this shape (kernel selection)
    generation_rate(merged, gen_batch, 4)
    # The forward pass over the prompts (prefill) is GPU-bound: it shows whether the merged
    # model computes anything the base does not. Generation is host-bound at this size (one
    # Python step per token), so its run-to-run spread is reported beside it.
    base_ms, merged_ms, base_rates, merged_rates = [], [], [], []
    for i in range(7):
        order = [(base, base_ms, base_rates), (merged, merged_ms, merged_rates)]
        for backbone, ms, rates in order if i % 2 == 0 else order[::-1]:
            ms.append(statistics.median(time_steps(lambda b=backbone: prefill(b, gen_batch),
                                                   5, 1)))
            rates.append(generation_rate(backbone, gen_batch, 16))
    single = generation_rate(base, {k: v[:8] for k, v in gen_batch.items()}, 16,
                             one_at_a_time=True)
    batched, merged_rate = statistics.median(base_rates), statistics.median(merged_rates)
    spread = (f"base {min(base_rates):.1f}-{max(base_rates):.1f}, merged "
              f"{min(merged_rates):.1f}-{max(merged_rates):.1f}")
    forward_base, forward_merged = statistics.median(base_ms), statistics.median(merged_ms)
    lines = [
        *header,
        "",
        "| evaluation (16 new tokens, prompts of 641 tokens) | answers/s |",
        "|---|---:|",
        f"| HF generate, one sample at a time | {single:.2f} |",
        f"| mcl batched generation (batch {args.gen_batch}), base model | {batched:.2f} |",
        f"| mcl batched generation, CoDyRA merged | {merged_rate:.2f} "
        f"({100 * (merged_rate / batched - 1):+.1f}% vs base; medians of 7 alternated runs; "
        f"range {spread}) |",
        "",
        f"| forward pass over the {args.gen_batch} prompts (prefill) | ms |",
        "|---|---:|",
        f"| base model | {forward_base:.1f} |",
        f"| CoDyRA merged | {forward_merged:.1f} ({100 * (forward_merged / forward_base - 1):+.1f}%"
        " vs base; medians of 7 alternated runs of 5) |",
    ]
    text = "\n".join(lines)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
