"""The tiny CLIP of the toy world: built from small configs, pre-trained contrastively once, cached.

Pre-training pairs rendered toy objects (shapes, digits, textures, charts, in any colour) with
captions such as "a photo of a red digit seven." in the styles `clean`, `outline` and `noisy`
(`paper` is held out: a domain the streams can bring that CLIP has not seen). A caption drops the
colour or the object now and then, so both words are learnt on their own as well as together.
The loss is CLIP's symmetric contrastive loss (Radford et al. 2021, Fig. 3) with every pair that
shares a caption counted as a positive (identical captions are frequent in a small world).

The result is an ordinary `save_pretrained` directory (CLIPModel, tokenizer, image processor), so
it loads through exactly the code that loads `openai/clip-vit-base-patch16`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    PreTrainedTokenizerFast,
)

from mcl.backbones.tiny_llava import _train, cache_dir, ensure_cached, save_pretrained_dir
from mcl.data import toy_classes, toy_world

RECIPE_VERSION = "1"
PRETRAIN_STYLES = ("clean", "outline", "noisy")
SPECIAL_TOKENS = ["<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"]


def vocabulary() -> list[str]:
    """Every word of a caption or a class name of the toy classification world."""
    words = {"a", "photo", "of", "."}
    for classes, _ in toy_classes.VIEWS.values():
        for name in classes:
            words.update(name.split())
    words.update(toy_world.vocabulary())
    return sorted(words)


def build_processor(image_size: int) -> CLIPProcessor:
    """A word-level tokenizer (lower-cased, punctuation split off) that frames every text as
    CLIP does, <|startoftext|> ... <|endoftext|>, and a CLIP image processor for `image_size`."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[(t, vocab[t]) for t in ("<|startoftext|>", "<|endoftext|>")])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                        unk_token="<unk>", bos_token="<|startoftext|>",
                                        eos_token="<|endoftext|>")
    images = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    return CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def build_model(tiny: dict, processor: CLIPProcessor) -> CLIPModel:
    """A randomly initialised CLIPModel of the sizes in `tiny`."""
    tokenizer = processor.tokenizer
    # 32 text positions unless the config names its own (the small tier: CLIP's 77, which
    # PromptFusion's official class-text layout of 2 x 30 context tokens needs).
    text = {"max_position_embeddings": 32, **tiny["text"], "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id}
    config = CLIPConfig(text_config=text, vision_config=dict(tiny["vision"]),
                        projection_dim=tiny["projection_dim"])
    torch.manual_seed(tiny["pretrain"]["seed"])
    return CLIPModel(config)


def caption_pairs(n: int, seed: int) -> list[tuple[np.ndarray, str]]:
    """`n` (image, caption) pairs of the pre-training world."""
    rng = np.random.default_rng([seed, 7])
    pairs = []
    for _ in range(n):
        kind, obj = toy_classes.random_object(rng)
        colour = tuple(toy_world.COLOURS)[rng.integers(len(toy_world.COLOURS))]
        style = PRETRAIN_STYLES[rng.integers(len(PRETRAIN_STYLES))]
        image = toy_classes.render(kind, obj, colour, style, rng)
        name = toy_classes.object_name(kind, obj)
        roll = rng.random()
        words = name if roll < 0.15 else colour if roll < 0.3 else f"{colour} {name}"
        pairs.append((image, f"a photo of a {words}."))
    return pairs


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
                     same: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch; `same[i, j]` marks pairs with the same caption, which
    share the target mass."""
    logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    target = same.float() / same.float().sum(-1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@torch.no_grad()
def zero_shot_accuracy(backbone, view: str, n: int, seed: int,
                       styles: tuple[str, ...] = tuple(toy_world.STYLES)) -> float:
    """Accuracy of label-prompt zero-shot classification on a toy view."""
    classes = toy_classes.VIEWS[view][0]
    test = toy_classes.samples(view, classes, styles, n, seed, f"zero-shot/{view}")
    items = backbone.encode(test, with_answer=False)
    for it in items:
        it["classes"] = classes
    batch = backbone.collate_generate(items)
    device = next(backbone.parameters()).device
    batch["pixel_values"] = batch["pixel_values"].to(device)
    predicted = backbone.generate(batch)
    return float(np.mean([p == a for p, a in zip(predicted, batch["answers"], strict=True)]))


def pretrain(tiny: dict, out_dir: Path) -> dict:
    """Pre-train a tiny CLIP contrastively on toy captions and save it to `out_dir`."""
    from mcl.backbones.clip import ClipBackbone

    recipe = tiny["pretrain"]
    processor = build_processor(tiny["vision"]["image_size"])
    model = build_model(tiny, processor)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    start = time.perf_counter()
    pairs = caption_pairs(recipe["samples"], recipe["seed"])
    pixels = processor.image_processor([img for img, _ in pairs],
                                       return_tensors="pt")["pixel_values"].to(device)
    captions = sorted({c for _, c in pairs})
    caption_ids = torch.tensor([captions.index(c) for _, c in pairs], device=device)
    tokens = processor.tokenizer(captions, padding=True, return_tensors="pt").to(device)

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(device)
        ids = caption_ids[idx]
        unique, inverse = ids.unique(return_inverse=True)  # encode each caption once
        text = model.get_text_features(input_ids=tokens["input_ids"][unique],
                                       attention_mask=tokens["attention_mask"][unique])
        text = text if isinstance(text, torch.Tensor) else text.pooler_output
        image = model.get_image_features(pixel_values=pixels[idx])
        image = image if isinstance(image, torch.Tensor) else image.pooler_output
        same = ids[:, None] == ids[None, :]
        return contrastive_loss(image, text[inverse], model.logit_scale.exp(), same)

    model.train()
    final_loss = _train(loss_of, list(model.parameters()), len(pairs), recipe["batch_size"],
                        recipe["epochs"], recipe["lr"], weight_decay=0.1, seed=recipe["seed"],
                        clip=1.0, desc="pre-training tiny_clip (once, then cached)")
    model.eval()
    backbone = ClipBackbone(model, processor, name="tiny_clip")
    report = {"seconds": time.perf_counter() - start, "final_loss": final_loss,
              "device": str(device), "tiny": tiny, "recipe_version": RECIPE_VERSION}
    for view in toy_classes.VIEWS:
        report[f"zero_shot_{view}"] = zero_shot_accuracy(backbone, view, recipe["test_samples"],
                                                         recipe["seed"])
    return save_pretrained_dir(model, processor, out_dir, report)


def ensure_pretrained(tiny: dict, force: bool = False) -> Path:
    """The cached pre-trained tiny CLIP directory for `tiny`, pre-training it if missing."""
    return ensure_cached(cache_dir(tiny, "tiny_clip", RECIPE_VERSION),
                         lambda out: pretrain(tiny, out), force)
