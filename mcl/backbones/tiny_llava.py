"""The tiny LLaVA of the toy world: built from small configs, pre-trained once, cached.

The result is an ordinary `save_pretrained` directory (model, tokenizer, image processor, chat
template), so it loads through exactly the code that loads `llava-hf/llava-1.5-7b-hf`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from mcl.data import toy_world

# Bump when the toy world or the pre-training recipe changes, so stale caches are not reused.
RECIPE_VERSION = "2"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "USER:", "ASSISTANT:"]
# LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT:"), on one line.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %} {% else %}ASSISTANT: {{ m['content'][0]['text'] }} </s> "
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


# A cached model's weight files, and the file that keeps their digest beside them.
WEIGHT_FILES = ("*.safetensors", "*.bin")
DIGEST_FILE = "weights.sha256"


def weights_digest(directory: str | Path) -> str:
    """sha256 of a save_pretrained directory's weight files (names and bytes), kept in
    DIGEST_FILE after the first computation. It tells apart two pre-trainings of one config:
    the config hash that names the cache does not identify the weights (another torch, CUDA
    or GPU model computes other bits, and pre-trainings before deterministic_kernels differed
    from run to run on a GPU)."""
    directory = Path(directory)
    stored = directory / DIGEST_FILE
    if stored.is_file():
        return stored.read_text().strip()
    digest = hashlib.sha256()
    for path in sorted(p for pattern in WEIGHT_FILES for p in directory.glob(pattern)):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    value = digest.hexdigest()
    try:  # atomically; a read-only cache only means computing it again next time
        partial = stored.with_name(f".{DIGEST_FILE}.{os.getpid()}")
        partial.write_text(value + "\n")
        os.replace(partial, stored)
    except OSError:
        pass
    return value


def cached_weights(source: str | Path | None) -> dict | None:
    """{cache: <kind>/<hash>, sha256: digest} when `source` (a model's `name_or_path`) is one
    of mcl's cached pre-trained models, else None (a Hub id or a user's directory: the config's
    `pretrained` names those)."""
    if not source:
        return None
    path, root = Path(source).expanduser().resolve(), cache_root().resolve()
    if not path.is_dir() or root not in path.parents:
        return None
    return {"cache": path.relative_to(root).as_posix(), "sha256": weights_digest(path)}


def cache_root() -> Path:
    """Where pre-trained tiny backbones live: $MCL_CACHE, else ~/.cache/mcl."""
    return Path(os.environ.get("MCL_CACHE", Path.home() / ".cache" / "mcl")).expanduser()


def cache_dir(tiny: dict, kind: str = "tiny_llava", recipe: str = RECIPE_VERSION) -> Path:
    """The cache directory for one tiny config of a `kind` of model: keyed by a hash of the
    config and the recipe version."""
    key = json.dumps({"tiny": tiny, "recipe": recipe}, sort_keys=True)
    return cache_root() / kind / hashlib.sha256(key.encode()).hexdigest()[:16]


def build_processor(image_size: int, patch_size: int) -> LlavaProcessor:
    """A word-level tokenizer over the toy world's vocabulary, a CLIP image processor for
    `image_size` images, and LLaVA-1.5's chat format."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + toy_world.vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()  # joins word tokens with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    images = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def build_model(tiny: dict, processor: LlavaProcessor) -> LlavaForConditionalGeneration:
    """A randomly initialised LLaVA of the sizes in `tiny` (CLIP vision tower + Llama LM)."""
    vision = CLIPVisionConfig(**tiny["vision"])
    tokenizer = processor.tokenizer
    text = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=256,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
                       **tiny["text"])
    patches = (vision.image_size // vision.patch_size) ** 2
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         image_seq_length=patches)
    torch.manual_seed(tiny["pretrain"]["seed"])
    return LlavaForConditionalGeneration(config)


def _train(loss_of, params: list[nn.Parameter], n: int, batch: int, epochs: int, lr: float,
           weight_decay: float, seed: int, desc: str, clip: float | None = None) -> float:
    """AdamW with a one-cycle schedule over `epochs` shuffled passes of `n` examples;
    `loss_of(indices)` gives a batch's loss. Returns the last loss."""
    steps = epochs * (n // batch)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps,
                                                   pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    progress = tqdm(total=steps, desc=desc, unit="step")
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for b in range(n // batch):
            loss = loss_of(order[b * batch : (b + 1) * batch])
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            progress.update()
            progress.set_postfix(loss=f"{loss.item():.3f}")
    progress.close()
    return loss.item()


def train_on_scenes(features, encoder: nn.Module, width: int, image_processor, samples: int,
                    held_out: int, batch: int, epochs: int, lr: float, seed: int, stream: int,
                    desc: str) -> tuple[float, float]:
    """Supervised pre-training of an image encoder on labelled toy scenes (the role ImageNet or
    CLIP pre-training plays for a real tower): one linear head per scene label on
    `features(pixels) -> [B, width]`. `stream` picks the scenes' random stream. Returns the final
    loss and the held-out object accuracy of the heads."""
    import numpy as np

    device = next(encoder.parameters()).device
    heads = nn.ModuleDict({k: nn.Linear(width, len(v)) for k, v in toy_world.SCENE_LABELS.items()})
    heads.to(device)
    rng = np.random.default_rng([seed, stream])
    n = samples + held_out
    scenes = [toy_world.labelled_scene(rng) for _ in range(n)]
    pixels = image_processor([img for img, _ in scenes], return_tensors="pt")
    pixels = pixels["pixel_values"].to(device)
    labels = {k: torch.tensor([lab[k] for _, lab in scenes], device=device) for k in heads}

    def logits(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = features(pixels[idx])
        return {k: head(pooled) for k, head in heads.items()}

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(device)
        out = logits(idx)
        return sum(nn.functional.cross_entropy(out[k], labels[k][idx], ignore_index=-1)
                   for k in heads)

    encoder.train()
    final_loss = _train(loss_of, [*encoder.parameters(), *heads.parameters()], samples, batch,
                        epochs, lr, weight_decay=0.05, seed=seed, desc=desc)
    encoder.eval()
    with torch.no_grad():
        idx = torch.arange(samples, n, device=device)
        predicted = logits(idx)["object"].argmax(-1)
    return final_loss, (predicted == labels["object"][idx]).float().mean().item()


def _pretrain_vision(model: LlavaForConditionalGeneration, processor: LlavaProcessor,
                     recipe: dict) -> float:
    """Stage 0: the vision tower on labelled toy scenes. Returns held-out object accuracy."""
    tower = model.model.vision_tower
    return train_on_scenes(
        lambda pixels: tower(pixel_values=pixels).pooler_output, tower,
        tower.config.hidden_size, processor.image_processor, recipe["vision_samples"], 1000,
        recipe["vision_batch_size"], recipe["vision_epochs"], recipe["vision_lr"],
        recipe["seed"], 1, "pre-training the vision tower")[1]


def pretrain(tiny: dict, out_dir: Path) -> dict:
    """Pre-train a tiny LLaVA on the toy world and save it to `out_dir`: the vision tower on
    labelled scenes, then projector and language model on the pre-training mix of
    instructions (LLaVA's alignment, with the tower frozen)."""
    from mcl.backbones.llava import LlavaBackbone
    from mcl.evaluate import evaluate_samples

    recipe = tiny["pretrain"]
    processor = build_processor(tiny["vision"]["image_size"], tiny["vision"]["patch_size"])
    model = build_model(tiny, processor)
    # A GPU, where there is one, makes the one-off pre-training faster; CPU otherwise.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = LlavaBackbone(model.to(device), processor, name="tiny_llava")
    start = time.perf_counter()
    vision_accuracy = _pretrain_vision(model, processor, recipe)
    model.model.vision_tower.requires_grad_(False)
    train, test = [], []
    for task in toy_world.PRETRAIN_MIX:
        train += toy_world.generate(task, recipe["samples_per_task"], recipe["seed"], "train")
        test += toy_world.generate(task, recipe["test_per_task"], recipe["seed"], "test")
    items = backbone.encode(train, with_answer=True)

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        batch = backbone.collate_train([items[i] for i in idx.tolist()])
        return backbone({k: v.to(device) for k, v in batch.items()}).loss

    model.train()
    final_loss = _train(loss_of, [p for p in model.parameters() if p.requires_grad], len(items),
                        recipe["batch_size"], recipe["epochs"], recipe["lr"], weight_decay=0.01,
                        seed=recipe["seed"], clip=1.0,
                        desc="pre-training tiny_llava (once, then cached)")
    model.requires_grad_(True)
    model.eval()
    accuracy = evaluate_samples(backbone.generate, backbone, test, batch_size=256)
    report = {"seconds": time.perf_counter() - start, "final_loss": final_loss,
              "vision_object_accuracy": vision_accuracy, "heldout_accuracy": accuracy,
              "device": str(device), "tiny": tiny, "recipe_version": RECIPE_VERSION}
    return save_pretrained_dir(model, processor, out_dir, report)


def save_pretrained_dir(model, processor, out_dir: Path, report: dict) -> dict:
    """Write a pre-trained tiny model as an ordinary save_pretrained directory (loadable like a
    Hub checkpoint) with its pre-training report; returns the report."""
    model.to("cpu").save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "pretrain.json").write_text(json.dumps(report, indent=2))
    return report


@contextmanager
def deterministic_kernels() -> Iterator[None]:
    """Deterministic kernels while pre-training (torch.use_deterministic_algorithms), so that one
    config pre-trained twice on one kind of GPU and software gives the same weights: a sweep's
    finished runs then stay valid on the next machine, which pre-trains the cache again (too
    big to carry). Without it the GPU's atomics (embedding and attention backward, cuBLAS
    split-K) made every pre-training differ. The CPU's kernels are deterministic already."""
    # cuBLAS reads it when its handle is created: before the first matmul on the GPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def ensure_cached(target: Path, pretrain_fn, force: bool = False) -> Path:
    """`target`, filled by `pretrain_fn(staging_dir) -> report` first if it is missing.

    The directory appears atomically (written beside, then renamed), so a killed pre-training
    never leaves a half-written cache that a later run would trust.
    """
    if target.exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    with deterministic_kernels():
        report = pretrain_fn(staging)
    weights_digest(staging)  # recorded with the weights it identifies
    if force:
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:  # another process finished first: keep its result
        shutil.rmtree(staging, ignore_errors=True)
    summary = {k: v for k, v in report.items() if isinstance(v, float)}
    print(f"{target.parent.name} pre-trained: "
          + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()) + f"; cached at {target}")
    return target


def ensure_pretrained(tiny: dict, force: bool = False) -> Path:
    """The cached pre-trained tiny LLaVA directory for `tiny`, pre-training it if missing."""
    return ensure_cached(cache_dir(tiny), lambda out: pretrain(tiny, out), force)
