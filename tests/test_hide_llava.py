"""HiDe-LLaVA against hand computation: routing, fused and routed layers, anchors."""

import math

import torch
from conftest import method_options

from mcl.data import toy_world
from mcl.data.task import Task
from mcl.strategies.guide_features import guide_features
from mcl.strategies.hide_llava import HideLlava, routing_weights


def test_routing_is_the_softmax_of_the_mean_image_and_text_cosines():
    image_anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text_anchors = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, -1.0]])
    image, text = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    # cosines: image (1, 0, 1/sqrt2), text (1, 0, -1/sqrt2) -> sims (1, 0, 0)
    sims = torch.tensor([1.0, 0.0, 0.0])
    expected = torch.exp(sims / 0.1) / torch.exp(sims / 0.1).sum()
    weights = routing_weights(image, text, image_anchors, text_anchors, 0.1)
    torch.testing.assert_close(weights[0], expected)
    assert int(weights.argmax()) == 0  # the task whose anchors are nearest in both modalities
    assert math.isclose(float(weights.sum()), 1.0, rel_tol=1e-6)


def _strategy(backbone, tasks: int = 3):
    strategy = HideLlava(**method_options("hide_llava", max_tasks=tasks, dropout=0.0))
    strategy.setup(backbone)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in strategy.experts.parameters():
            p.normal_()
    return strategy


def test_training_uses_only_the_running_tasks_expert_and_only_it_learns(micro_backbone):
    strategy = _strategy(micro_backbone)
    strategy.task = 1
    name = micro_backbone.linear_layer_names(["llm"])[0]
    layer, experts = micro_backbone.linear_layer(name), strategy.experts[name.replace(".", "__")]
    x = torch.randn(2, 5, layer.in_features)
    strategy._mode = ("train",)
    out = layer(x)
    strategy._mode = None
    a, b = experts.lora_A[1], experts.lora_B[1]
    torch.testing.assert_close(out, layer(x) + strategy.scaling * x @ a.T @ b.T)
    out.sum().backward()
    assert a.grad is not None and b.grad is not None
    assert all(experts.lora_A[i].grad is None and experts.lora_B[i].grad is None for i in (0, 2))


def test_inference_fuses_lower_layers_and_routes_the_top_layer(micro_backbone):
    strategy = _strategy(micro_backbone)
    strategy.trained = 2  # tasks 0 and 1 done, expert 2 not yet trained
    weights = torch.tensor([[0.25, 0.75], [0.9, 0.1]])
    names = micro_backbone.linear_layer_names(["llm"])
    top_layer = micro_backbone.decoder_layers()[-1]
    in_top = {n for n in names if any(m is micro_backbone.linear_layer(n)
                                      for m in top_layer.modules())}
    assert strategy.top == {n.replace(".", "__") for n in in_top}
    # The micro LM has one decoder layer (all of it is the top); treat one layer as a lower one.
    top, lower = sorted(in_top)[:1], sorted(in_top)[1:2]
    strategy.top.discard(lower[0].replace(".", "__"))
    for name in (lower[0], top[0]):
        layer = micro_backbone.linear_layer(name)
        experts = strategy.experts[name.replace(".", "__")]
        x = torch.randn(2, 5, layer.in_features)
        with torch.no_grad():
            strategy._mode = ("infer", weights)
            out = layer(x)
            strategy._mode = None
            base = layer(x)
            a, b = experts.lora_A, experts.lora_B
            if name in lower:  # (B_0 + B_1)(A_0 + A_1) x: the product of the sums
                expected = base + strategy.scaling * x @ (a[0] + a[1]).T @ (b[0] + b[1]).T
            else:  # per sample sum_i w_i B_i A_i x
                expected = base + strategy.scaling * sum(
                    weights[:, i, None, None] * (x @ a[i].T @ b[i].T) for i in range(2))
        torch.testing.assert_close(out, expected)


def test_sum_of_products_fusion_drops_the_cross_terms(micro_backbone):
    strategy = _strategy(micro_backbone)
    strategy.fusion, strategy.trained = "sum_of_products", 2
    name = sorted(strategy.top)[0]
    strategy.top.discard(name)  # a lower (fused) layer
    layer = micro_backbone.linear_layer(name.replace("__", "."))
    experts = strategy.experts[name]
    x = torch.randn(2, 5, layer.in_features)
    with torch.no_grad():
        strategy._mode = ("infer", torch.full((2, 2), 0.5))
        out = layer(x)
        strategy._mode = None
        base = layer(x)
        a, b = experts.lora_A, experts.lora_B
        expected = base + strategy.scaling * (x @ a[0].T @ b[0].T + x @ a[1].T @ b[1].T)
        official = base + strategy.scaling * x @ (a[0] + a[1]).T @ (b[0] + b[1]).T
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, official)  # the cross terms B_0 A_1 + B_1 A_0 are gone


def test_anchors_are_task_means_and_routing_picks_the_nearest_task(micro_backbone):
    strategy = _strategy(micro_backbone, tasks=2)
    samples = {name: toy_world.generate(name, 6, 0, "train")
               for name in ("capability_recognition", "capability_colour")}
    for index, (name, train) in enumerate(samples.items()):
        strategy.after_task(Task(name, train, []), index)
    backbone = micro_backbone
    first = backbone.collate_train(backbone.encode(samples["capability_recognition"], True))
    image, text = guide_features(backbone, first)
    torch.testing.assert_close(strategy.image_anchors[0], image.mean(0))
    torch.testing.assert_close(strategy.text_anchors[0], text.mean(0))
    # Put task 1's anchors on one sample's features: that sample routes to task 1.
    strategy.image_anchors[1], strategy.text_anchors[1] = image[0], text[0]
    strategy.image_anchors[0], strategy.text_anchors[0] = -image[0], -text[0]
    weights = strategy.routing(first)
    assert weights.shape == (6, 2)
    assert float(weights[0, 1]) > 0.99
    by_hand = routing_weights(image, text, strategy.image_anchors, strategy.text_anchors, 0.1)
    torch.testing.assert_close(weights, by_hand)
