"""Tiny, randomly initialised stand-ins of the real VLM checkpoints mcl has presets for, for
tests and smoke runs of the real loading path.

Each family's stand-in has the real classes (the model class `AutoModelForImageTextToText`
resolves, the family's processor and image processor with its defaults except for sizes), the
family's chat format and special tokens, and a word-level tokenizer over the toy world's
vocabulary; it is written with save_pretrained, so it loads through exactly the path the real
checkpoint does (`VlmBackbone.load(pretrained=<dir>)`). It has learnt nothing: runs with it
check plumbing, never results.

    python -m mcl.backbones.standin [FAMILY] [DIR]   # default: llava_1_5 into
                                                     # $MCL_CACHE/tiny_llava_1_5_standin

A backbone config with `tiny: {standin: FAMILY}` and `pretrained: null` builds the stand-in
once into the cache (`ensure_pretrained`), like the pre-trained tiny_llava.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from mcl.backbones.tiny_llava import (
    build_model,
    build_processor,
    cache_dir,
    cache_root,
    ensure_cached,
)
from mcl.backbones.vlm import images_only
from mcl.data import toy_world

# The chat template shipped in llava-hf/llava-1.5-7b-hf (chat_template.json): "USER: <image>\n
# <prompt> ASSISTANT:", the prompt format its model card gives, images before text.
LLAVA_1_5_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# LLaVA-1.5's shape (CLIP tower -> 2-layer GELU projector -> Llama, penultimate vision layer,
# CLS dropped), shrunk: 32 px images in 8 px patches, 32-wide Llama of one layer.
TINY = {
    "vision": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
               "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
    "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 2},
    "pretrain": {"seed": 0},
}
# Every other family's language model and vision tower: 2 layers, width 32.
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "tie_word_embeddings": False}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 2}
# Chat templates in each family's format (the real ones, reduced to one user turn with one image
# and the assistant's answer; words separated by spaces for the word-level tokenizer).
CHATML = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {% for c in m['content'] %}"
          "{% if c['type'] == 'image' %}{image}{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
          " <|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|> assistant "
          "{% endif %}")
IDEFICS3 = ("<|begin_of_text|> {% for m in messages %}{{ m['role'] | capitalize }}: "
            "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %} "
            "{{ c['text'] }}{% endif %}{% endfor %} <end_of_utterance> {% endfor %}"
            "{% if add_generation_prompt %}Assistant: {% endif %}")
LLAVA_NEXT = ("{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}"
              "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}"
              "{% endfor %} {% endfor %}{% if add_generation_prompt %}ASSISTANT: {% endif %}")
PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]  # anyres grids of 32 px tiles


def word_tokenizer(special: list[str], extra: dict[str, str] | None = None,
                   bos: str = "<s>", eos: str = "</s>") -> tf.PreTrainedTokenizerFast:
    """A word-level tokenizer over the toy world's vocabulary and the family's special tokens
    (split out before the whitespace pre-tokenizer, so "<a><b>" is two tokens)."""
    base = ["<pad>", "<unk>", bos, eos]
    words = [w for w in toy_world.vocabulary() + ["User:", "Assistant:", "USER:", "ASSISTANT:",
                                                  "user", "assistant", "system"]
             if w not in base + special]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(base + special + words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()  # joins word tokens with spaces
    tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token=bos, eos_token=eos,
        unk_token="<unk>", extra_special_tokens=extra or {})
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    return tokenizer


def _text(tokenizer, cls=tf.LlamaConfig, **extra):
    return cls(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               **TEXT, **extra)


def llava_1_5() -> tuple:
    vision = TINY["vision"]
    processor = build_processor(vision["image_size"], vision["patch_size"])
    processor.chat_template = LLAVA_1_5_CHAT_TEMPLATE
    model = build_model(TINY, processor)
    model.config.vision_feature_layer = -2  # LLaVA-1.5 reads the penultimate layer
    return model, processor


def llava_next() -> tuple:
    """LLaVA-NeXT (anyres): a CLIP tower over 32 px tiles of a grid picked per image."""
    tokenizer = word_tokenizer(["<image>"], {"image_token": "<image>"})
    images = tf.LlavaNextImageProcessorPil(size={"shortest_edge": 32},
                                           crop_size={"height": 32, "width": 32},
                                           image_grid_pinpoints=PINPOINTS)
    processor = tf.LlavaNextProcessor(images, tokenizer, patch_size=8,
                                      vision_feature_select_strategy="default",
                                      num_additional_image_tokens=1, chat_template=LLAVA_NEXT)
    config = tf.LlavaNextConfig(
        vision_config=tf.CLIPVisionConfig(**VISION, image_size=32, patch_size=8),
        text_config=_text(tokenizer), image_grid_pinpoints=PINPOINTS,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2)
    return tf.LlavaNextForConditionalGeneration(config), processor


def llava_onevision() -> tuple:
    """LLaVA-OneVision: a SigLIP tower, anyres tiles, a Qwen2 language model, ChatML."""
    tokenizer = word_tokenizer(["<image>", "<video>", "<|im_start|>", "<|im_end|>"],
                               {"image_token": "<image>", "video_token": "<video>"},
                               eos="<|endoftext|>")
    images = tf.LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32},
                                                image_grid_pinpoints=PINPOINTS)
    processor = tf.LlavaOnevisionProcessor(
        images, tokenizer, num_image_tokens=16,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        chat_template=CHATML.replace("{image}", "<image> "))
    config = tf.LlavaOnevisionConfig(
        vision_config=tf.SiglipVisionConfig(**VISION, image_size=32, patch_size=8),
        text_config=_text(tokenizer, tf.Qwen2Config), image_grid_pinpoints=PINPOINTS,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"), vision_feature_layer=-1,
        vision_feature_select_strategy="full")
    return tf.LlavaOnevisionForConditionalGeneration(config), processor


def _qwen_tokenizer():
    special = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]
    return word_tokenizer(special, {"image_token": "<|image_pad|>",
                                    "video_token": "<|video_pad|>",
                                    "vision_bos_token": "<|vision_start|>",
                                    "vision_eos_token": "<|vision_end|>"}, eos="<|im_end|>")


def _qwen_processor(tokenizer):
    # 8 px patches merged 2x2: a 32 px image gives 4 image tokens, a 64 x 32 one 8.
    images = tf.Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                                         min_pixels=16 * 16, max_pixels=64 * 64)
    template = CHATML.replace("{image}", "<|vision_start|> <|image_pad|> <|vision_end|> ")
    return tf.Qwen2VLProcessor(images, tokenizer, chat_template=template)


def _qwen(config_cls, model_cls, vision: dict) -> tuple:
    tokenizer = _qwen_tokenizer()
    text = _text(tokenizer, tf.Qwen2Config, rope_parameters={
        "rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
    ids = {f"{k}_token_id": tokenizer.convert_tokens_to_ids(t) for k, t in (
        ("image", "<|image_pad|>"), ("video", "<|video_pad|>"),
        ("vision_start", "<|vision_start|>"), ("vision_end", "<|vision_end|>"))}
    vision = {**vision, "depth": 2, "hidden_size": 32, "num_heads": 2, "patch_size": 8,
              "spatial_merge_size": 2, "temporal_patch_size": 2}
    config = config_cls(text_config=text.to_dict(), vision_config=vision, **ids)
    return model_cls(config), tokenizer


def qwen2_vl() -> tuple:
    """Qwen2-VL: dynamic resolution (image_grid_thw), M-RoPE, ChatML."""
    model, tokenizer = _qwen(tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration,
                             {"embed_dim": 32})
    return model, _qwen_processor(tokenizer)


def qwen2_5_vl() -> tuple:
    """Qwen2.5-VL: Qwen2-VL with windowed attention in the vision tower."""
    model, tokenizer = _qwen(tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration,
                             {"intermediate_size": 64, "window_size": 32, "out_hidden_size": 32,
                              "fullatt_block_indexes": [1]})
    processor = _qwen_processor(tokenizer)
    return model, tf.Qwen2_5_VLProcessor(processor.image_processor, tokenizer,
                                         chat_template=processor.chat_template)


def internvl() -> tuple:
    """InternVL (transformers-native, InternVL3-hf): 32 px tiles, pixel shuffle, Qwen2 LM."""
    special = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>", "<|im_start|>", "<|im_end|>"]
    tokenizer = word_tokenizer(special, {"start_image_token": "<img>",
                                         "end_image_token": "</img>",
                                         "context_image_token": "<IMG_CONTEXT>",
                                         "video_token": "<video>"}, eos="<|im_end|>")
    images = tf.GotOcr2ImageProcessorPil(size={"height": 32, "width": 32},
                                         crop_to_patches=True, min_patches=1, max_patches=4)
    processor = tf.InternVLProcessor(images, tokenizer,
                                     image_seq_length=4,
                                     chat_template=CHATML.replace("{image}", "<IMG_CONTEXT> "))
    config = tf.InternVLConfig(
        vision_config=tf.InternVLVisionConfig(**VISION, image_size=[32, 32], patch_size=[8, 8]),
        text_config=_text(tokenizer, tf.Qwen2Config),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=4,
        downsample_ratio=0.5, vision_feature_layer=-1)
    return tf.InternVLForConditionalGeneration(config), processor


def idefics3() -> tuple:
    """Idefics3 (and SmolVLM, which is this class): image split into 32 px tiles plus a global
    view, each tile 4 tokens after the pixel-shuffle connector."""
    special = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
               *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]]
    tokenizer = word_tokenizer(special, {"image_token": "<image>"}, bos="<|begin_of_text|>",
                               eos="<end_of_utterance>")
    images = tf.Idefics3ImageProcessorPil(size={"longest_edge": 64},
                                          max_image_size={"longest_edge": 32})
    processor = tf.Idefics3Processor(images, tokenizer, image_seq_len=4, chat_template=IDEFICS3)
    config = tf.Idefics3Config(
        vision_config=tf.Idefics3VisionConfig(**VISION, image_size=32, patch_size=8),
        text_config=_text(tokenizer), scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    return tf.Idefics3ForConditionalGeneration(config), processor


STANDINS: dict[str, Callable[[], tuple]] = {
    "llava_1_5": llava_1_5, "llava_next": llava_next, "llava_onevision": llava_onevision,
    "qwen2_vl": qwen2_vl, "qwen2_5_vl": qwen2_5_vl, "internvl": internvl, "idefics3": idefics3,
}


def default_dir() -> Path:
    return cache_root() / "tiny_llava_1_5_standin"


def save_standin(out_dir: str | Path | None = None, family: str = "llava_1_5",
                 seed: int = 0) -> Path:
    """Build the stand-in of `family` and save model + processor to `out_dir`."""
    if family not in STANDINS:
        raise ValueError(f"no stand-in for family {family!r}; known: {sorted(STANDINS)}")
    out = Path(out_dir) if out_dir is not None else default_dir()
    torch.manual_seed(seed)
    with images_only():  # built and saved without a video part where torchvision is missing
        model, processor = STANDINS[family]()
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return out


def ensure_pretrained(tiny: dict, force: bool = False) -> Path:
    """The cached stand-in directory for `tiny` ({"standin": family, "seed": s}), written the
    first time (random weights: nothing is trained)."""
    family, seed = tiny["standin"], tiny.get("seed", 0)
    return ensure_cached(cache_dir(tiny, kind="standin", recipe="1"),
                         lambda out: (save_standin(out, family, seed), {})[1], force)


if __name__ == "__main__":
    args = sys.argv[1:]
    family = args.pop(0) if args and args[0] in STANDINS else "llava_1_5"
    print(save_standin(args[0] if args else None, family))
