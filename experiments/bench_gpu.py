"""GPU benchmark: mcl's training step and generation against plain transformers + peft.

    python experiments/bench_gpu.py --preset 1b [--rounds 3] [--steps 15] [--out table.md]
    python experiments/bench_gpu.py --preset 7b          # the real LLaVA-1.5-7B shapes

One script for one device call. Builds LLaVA-1.5-architecture models with random bf16 weights
(CLIP ViT-L/14-336 tower, 576 image tokens, 2-layer MLP projector, Llama LM: `7b` is
Vicuna-7B's shape, `1b` the same architecture at 1.26 B parameters), then measures:
- the bf16 matmul rate of this GPU (8192^3 products), the MFU reference;
- the reference: a hand-written loop of plain transformers + peft LoRA on the LM's linear layers;
- mcl's `lora`, `fwd_prompt`, `continual_llava`, `rank_selective_lora`, `hide_llava`,
  `modal_prompt` and `sefe` (on its second task: RegLoRA's penalty active) through mcl's
  Lightning module, exactly as the loop trains, at the same batch and sequence;
- CoDyRA against its equal-work reference: plain peft LoRA of its rank on the same layers
  (vision tower, projector and LM), since it trains adapters in the vision tower too;
- generation: answers/s of mcl's batched greedy generation against HF `generate` one sample at
  a time, and of CoDyRA after its merge against the base model.
GPU clocks drift by several per cent over minutes, so every comparison is interleaved: the
reference and the method run alternate blocks of `--steps` steps (after warm-up), `--rounds`
times, in one process; the ratio is the median of the per-round ratios of median step times,
and each round's ratio is listed so the spread shows. Step times come from CUDA events.
Prints a Markdown table with the device named, and writes it to --out.
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


def build_model(shape: dict):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14,
                              projection_dim=768)
    text = LlamaConfig(vocab_size=32064, hidden_size=shape["hidden"],
                       intermediate_size=shape["inter"], num_hidden_layers=shape["layers"],
                       num_attention_heads=shape["heads"], num_key_value_heads=shape["heads"],
                       max_position_embeddings=4096, pad_token_id=0, bos_token_id=1,
                       eos_token_id=2)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=32000,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         image_seq_length=576)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
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


def make_batch(batch: int, text: int, answer: int, generator: torch.Generator) -> dict:
    """Pinned host tensors: each step copies its batch to the GPU, as a real loader does."""
    prompt = torch.randint(3, 32000, (batch, 1 + 576 + text), generator=generator)
    prompt[:, 1 : 1 + 576] = 32000  # image tokens after BOS, as LLaVA-1.5's template
    prompt[:, 0] = 1
    answers = torch.randint(3, 32000, (batch, answer), generator=generator)
    ids = torch.cat([prompt, answers], 1)
    labels = torch.full_like(ids, -100)
    labels[:, -answer:] = answers
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
           "pixel_values": torch.randn(batch, 3, 336, 336, generator=generator)}
    return {k: v.pin_memory() for k, v in out.items()}


def time_steps(step, steps: int, warmup: int) -> list[float]:
    """Milliseconds of each of `steps` calls of `step()` after `warmup` calls (CUDA events)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
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
        batch = {k: v.cuda(non_blocking=True) for k, v in self.batch.items()}
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
                 checkpointing: bool = False):
        from mcl.backbones.llava import LlavaBackbone
        from mcl.strategies import build_strategy

        if checkpointing:
            model.gradient_checkpointing_enable({"use_reentrant": False})
        self.backbone = LlavaBackbone(model, Processor(), name="bench")
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
        if name == "sefe":  # a finished first task, so RegLoRA's penalty on its keys is timed
            self.strategy.after_task(task, 0)
        try:
            self.strategy.before_task(task, 1)
        except Exception:  # a hook that needs real samples: its step-time state is already set
            pass

    def block(self, steps: int, warmup: int) -> list[float]:
        import lightning as L
        from torch.utils.data import DataLoader

        from mcl.module import ContinualModule

        times: list[float] = []

        class Timer(L.Callback):
            def on_train_batch_start(self, *args):
                self.start = torch.cuda.Event(enable_timing=True)
                self.start.record()

            def on_train_batch_end(self, *args):
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                torch.cuda.synchronize()
                times.append(self.start.elapsed_time(end))

        loader = DataLoader([self.batch] * (steps + warmup), batch_size=None)
        trainer = L.Trainer(accelerator="gpu", devices=1, precision="32-true",
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
    torch.cuda.empty_cache()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="1b")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text", type=int, default=64)
    parser.add_argument("--answer", type=int, default=32)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gen-batch", type=int, default=32)
    parser.add_argument("--methods", nargs="*",
                        default=["lora", "fwd_prompt", "continual_llava", "rank_selective_lora",
                                 "rank_selective_lora:llm", "hide_llava", "modal_prompt", "sefe",
                                 "lora+checkpointing"],
                        help="mcl methods; `name:part/part` limits adapters to those parts, "
                             "`name+checkpointing` turns gradient checkpointing on")
    parser.add_argument("--out", type=Path, default=Path("bench_gpu.md"))
    args = parser.parse_args()
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
        options = {"lora": {"r": 8, "alpha": 16}}.get(name, {})
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
