"""ClipBackbone: loading through save_pretrained, the zero-shot head from label prompts, CoOp
context, VPT prompts and prefix tuning against hand computations, pre-load pair checks."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config

from mcl.backbones import tiny_clip
from mcl.backbones.classification import LayerView, attention
from mcl.backbones.clip import TEMPLATE, ClipBackbone
from mcl.compatibility import backbone_spec, check_run
from mcl.data import toy_classes
from mcl.run import build_method

TINY = {"vision": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                   "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        "text": {"hidden_size": 24, "intermediate_size": 32, "num_hidden_layers": 1,
                 "num_attention_heads": 2},
        "projection_dim": 12, "pretrain": {"seed": 0}}


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    """A random tiny CLIPModel + processor written by save_pretrained, like a Hub snapshot."""
    path = tmp_path_factory.mktemp("clip")
    processor = tiny_clip.build_processor(32)
    tiny_clip.build_model(TINY, processor).save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture()
def clip(saved_dir) -> ClipBackbone:
    return ClipBackbone.load("tiny_random_clip", pretrained=str(saved_dir))


@pytest.fixture(scope="module")
def pixels():
    stream = toy_classes.toy_classification_stream("s", "mtil", ["shapes"], 6, 2, seed=0)
    processor = tiny_clip.build_processor(32)
    return processor.image_processor([s.image for s in stream.tasks[0].train],
                                      return_tensors="pt")["pixel_values"]


def test_loads_a_save_pretrained_directory(clip):
    assert clip.family == "classification"
    assert clip.hidden_size == 16 and clip.text_hidden_size == 24 and clip.feature_dim == 12
    assert clip.num_layers == 2


def test_zero_shot_head_is_scaled_cosine_to_label_prompts(clip, pixels):
    classes = ["red circle", "blue square", "digit seven"]
    features = clip.encode_image(pixels)
    tokens = clip.tokenizer([f"a photo of a {c}." for c in classes], padding=True,
                            return_tensors="pt")
    text = clip.model.get_text_features(input_ids=tokens["input_ids"],
                                        attention_mask=tokens["attention_mask"]).pooler_output
    cosine = F.normalize(features, dim=-1) @ F.normalize(text, dim=-1).T
    expected = clip.model.logit_scale.exp() * cosine
    torch.testing.assert_close(clip.logits(features, classes), expected)
    assert TEMPLATE == "a photo of a {}."
    # The head is the label space: reordering the classes reorders the columns.
    torch.testing.assert_close(clip.logits(features, classes[::-1]), expected.flip(-1))
    batch = {"pixel_values": pixels, "classes": classes}
    best = expected.argmax(-1).tolist()
    assert clip.generate(batch) == [classes[i] for i in best]


def test_contrastive_loss_shares_the_target_among_identical_captions():
    image, text = torch.randn(3, 4), torch.randn(3, 4)
    same = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    scale = torch.tensor(2.0)
    logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    target = torch.tensor([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]])
    by_hand = (-(target * logits.log_softmax(-1)).sum(-1).mean()
               - (target * logits.T.log_softmax(-1)).sum(-1).mean()) / 2
    torch.testing.assert_close(tiny_clip.contrastive_loss(image, text, scale, same), by_hand)


def test_text_features_are_cached_only_in_eval(clip):
    clip.eval()
    with torch.no_grad():
        first = clip.encode_text(["red circle"])
        assert clip.encode_text(["red circle"]) is first
    clip.train()
    with torch.no_grad():
        assert clip.encode_text(["red circle"]) is not first


def test_coop_context_of_the_template_words_reproduces_the_template(clip):
    classes = ["red circle", "digit seven", "stripes"]
    words = clip.tokenizer(["a photo of a"], add_special_tokens=False,
                           return_tensors="pt").input_ids[0]
    context = clip.model.text_model.embeddings.token_embedding(words)
    torch.testing.assert_close(clip.encode_text(classes, context=context),
                               clip.encode_text(classes))
    other = torch.randn_like(context, requires_grad=True)
    moved = clip.encode_text(classes, context=other)
    assert not torch.allclose(moved, clip.encode_text(classes))
    moved.sum().backward()
    assert other.grad is not None and other.grad.abs().sum() > 0


def test_prompted_path_without_prompts_equals_the_model_forward(clip, pixels):
    empty = pixels.new_zeros(len(pixels), 0, clip.hidden_size)
    torch.testing.assert_close(clip.encode_image(pixels, prompts=empty),
                               clip.encode_image(pixels))
    assert clip.query(pixels).requires_grad is False


def test_prompts_enter_after_cls_at_the_first_layer(clip, pixels):
    torch.manual_seed(0)
    prompts = torch.randn(len(pixels), 3, clip.hidden_size)
    vision = clip.model.vision_model
    tokens = vision.embeddings(pixels)
    h = vision.pre_layrnorm(torch.cat([tokens[:, :1], prompts, tokens[:, 1:]], dim=1))
    for layer in vision.encoder.layers:
        h = layer(h, attention_mask=None)
    expected = clip.model.visual_projection(vision.post_layernorm(h[:, 0]))
    torch.testing.assert_close(clip.encode_image(pixels, prompts=prompts), expected)


def _hand_prefix_attention(view: LayerView, x, key_prefix, value_prefix):
    """Prefix tuning written out head by head: softmax(q [p_k; k]^T / sqrt(d)) [p_v; v]."""
    q, k, v = view.q(x), view.k(x), view.v(x)
    k, v = torch.cat([key_prefix, k], 1), torch.cat([value_prefix, v], 1)
    d = q.shape[-1] // view.heads
    heads = []
    for i in range(view.heads):
        sl = slice(i * d, (i + 1) * d)
        weights = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d), -1)
        heads.append(weights @ v[..., sl])
    return view.out(torch.cat(heads, -1))


def test_prefixes_extend_keys_and_values_as_prefix_tuning_defines(clip, pixels):
    torch.manual_seed(1)
    view = clip.layer_views()[0]
    b, lp = len(pixels), 4
    key_prefix, value_prefix = torch.randn(2, b, lp, clip.hidden_size)
    x = torch.randn(b, 5, clip.hidden_size)
    torch.testing.assert_close(attention(view, x, (key_prefix, value_prefix)),
                               _hand_prefix_attention(view, x, key_prefix, value_prefix))
    # Through the whole tower: the prefix at layer 1 only, layer 0 as the model computes it.
    vision = clip.model.vision_model
    h = vision.encoder.layers[0](vision.pre_layrnorm(vision.embeddings(pixels)),
                                 attention_mask=None)
    view1 = clip.layer_views()[1]
    h = h + _hand_prefix_attention(view1, view1.norm1(h), key_prefix, value_prefix)
    h = h + view1.mlp(view1.norm2(h))
    expected = clip.model.visual_projection(vision.post_layernorm(h[:, 0]))
    got = clip.encode_image(pixels, prefixes={1: (key_prefix, value_prefix)})
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, clip.encode_image(pixels))
    with pytest.raises(ValueError, match="prefix layers \\[5\\] do not exist"):
        clip.encode_image(pixels, prefixes={5: (key_prefix, value_prefix)})


def test_a_batch_with_two_label_spaces_is_refused(clip):
    stream = toy_classes.toy_classification_stream("s", "mtil", ["shapes", "charts"], 2, 2, 0)
    items = clip.encode(stream.tasks[0].test, False) + clip.encode(stream.tasks[1].test, False)
    with pytest.raises(ValueError, match="different label spaces"):
        clip.collate_generate(items)


@pytest.mark.parametrize(("overrides", "reason"), [
    (["method=fwd_prompt"], "cannot run on backbone 'tiny_clip'.*input_embeddings"),
    (["method=continual_llava"], "input_embeddings"),
    (["method=finetune", "method.parts=[projector,llm]"],
     "parts \\['projector', 'llm'\\].*its parts are \\['head', 'text', 'vision'\\]"),
])
def test_impossible_pairs_fail_before_loading(overrides, reason):
    cfg = compose_config(["backbone=tiny_clip", "backbone.pretrained=/nonexistent", *overrides])
    with pytest.raises(ValueError, match=reason):
        check_run(build_method(cfg), backbone_spec(cfg.backbone))


@pytest.mark.parametrize("target", ["mcl.backbones.clip.ClipBackbone",
                                    "mcl.backbones.vit.VitBackbone"])
def test_missing_weights_say_what_to_give(target, tmp_path):
    from hydra.utils import get_class

    with pytest.raises(FileNotFoundError, match="give a local directory written by "
                                                "save_pretrained"):
        get_class(target).load("real", pretrained=str(tmp_path / "absent"))
