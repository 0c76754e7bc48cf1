"""VitBackbone: loading through save_pretrained, the growing head, prompts and prefixes against
hand computations, the head trained by every method."""

import pytest
import torch

from mcl.backbones import tiny_vit
from mcl.backbones.vit import VitBackbone
from mcl.data import toy_classes
from mcl.data.label_space import training_label_space
from mcl.strategies import build_strategy

TINY = {"vision": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                   "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        "pretrain": {"seed": 0}}


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    """A random tiny ViTModel + image processor written by save_pretrained."""
    path = tmp_path_factory.mktemp("vit")
    tiny_vit.build_model(TINY).save_pretrained(path)
    tiny_vit.build_processor(32).save_pretrained(path)
    return path


@pytest.fixture()
def vit(saved_dir) -> VitBackbone:
    return VitBackbone.load("tiny_random_vit", pretrained=str(saved_dir), max_classes=12)


@pytest.fixture(scope="module")
def stream():
    return toy_classes.toy_classification_stream("s", "mtil", ["shapes", "charts"], 8, 4, seed=0)


def test_feature_is_the_normalised_cls_token_of_the_model(vit, stream):
    pixels = vit.collate_generate(vit.encode(stream.tasks[0].test, False))["pixel_values"]
    expected = vit.model(pixel_values=pixels).last_hidden_state[:, 0]
    torch.testing.assert_close(vit.encode_image(pixels), expected)
    empty = pixels.new_zeros(len(pixels), 0, vit.hidden_size)
    torch.testing.assert_close(vit.encode_image(pixels, prompts=empty), expected)
    assert vit.feature_dim == vit.hidden_size == 16 and vit.num_layers == 2


def test_prompts_and_prefixes_follow_vpt_and_prefix_tuning(vit, stream):
    pixels = vit.collate_generate(vit.encode(stream.tasks[0].test, False))["pixel_values"]
    torch.manual_seed(0)
    b = len(pixels)
    prompts = torch.randn(b, 2, vit.hidden_size)
    key_prefix, value_prefix = torch.randn(2, b, 3, vit.hidden_size)
    tokens = vit.model.embeddings(pixels)
    h = torch.cat([tokens[:, :1], prompts, tokens[:, 1:]], dim=1)
    h = vit.model.layers[0](h)
    # Layer 1 by hand: keys and values get the prefixes after their projections.
    layer = vit.model.layers[1]
    attn = layer.attention
    x = layer.layernorm_before(h)
    q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    k, v = torch.cat([key_prefix, k], 1), torch.cat([value_prefix, v], 1)
    d = vit.hidden_size // 2
    heads = [torch.softmax(q[..., i * d:(i + 1) * d] @ k[..., i * d:(i + 1) * d].transpose(1, 2)
                           / d ** 0.5, -1) @ v[..., i * d:(i + 1) * d] for i in range(2)]
    h = h + attn.o_proj(torch.cat(heads, -1))
    h = h + layer.mlp(layer.layernorm_after(h))
    expected = vit.model.layernorm(h)[:, 0]
    got = vit.encode_image(pixels, prompts=prompts, prefixes={1: (key_prefix, value_prefix)})
    torch.testing.assert_close(got, expected)


def test_head_grows_as_classes_arrive_and_untrained_classes_score_zero(vit, stream):
    vit.encode(stream.tasks[0].train, True)
    assert vit.class_rows == {}  # encoding decides no label space (mcl.data.label_space does)
    features = torch.randn(3, vit.feature_dim)
    vit.logits(features, training_label_space(stream.tasks[0].train))
    first = dict(vit.class_rows)
    assert sorted(first) == sorted({s.answer for s in stream.tasks[0].train})
    vit.logits(features, training_label_space(stream.tasks[1].train))
    assert {k: vit.class_rows[k] for k in first} == first  # old rows keep their classes
    assert sorted(vit.class_rows.values()) == list(range(len(vit.class_rows)))
    assert torch.equal(vit.logits(features, ["circle", "rising chart"]), torch.zeros(3, 2))
    with torch.no_grad():
        vit.head.weight[vit.class_rows["circle"]] = 1.0
    torch.testing.assert_close(vit.logits(features, ["rising chart", "circle"])[:, 1],
                               features.sum(-1))
    with pytest.raises(ValueError, match="raise backbone.max_classes"):
        vit.register_classes([f"class {i}" for i in range(20)])


@pytest.mark.parametrize("method", ["finetune", "lora", "rank_selective_lora"])
def test_every_training_method_trains_the_new_head(vit, method):
    strategy = build_strategy(method)
    strategy.setup(vit)
    trainable = {id(p) for p in strategy.trainable_parameters()}
    assert all(id(p) in trainable for p in vit.head.parameters())
    if method != "finetune":  # adapters on the network, its weights frozen
        assert not vit.model.embeddings.patch_embeddings.projection.weight.requires_grad
