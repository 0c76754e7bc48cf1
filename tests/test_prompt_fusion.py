"""PromptFusion: the fusion of the two branches' logits, the old/new weight mask and its loss,
herding, the checks before loading, training on the micro CLIP + micro ViT (mask applied from
the second task, frozen old contexts, class-balanced memory), the checkpoint round trip, and one
end-to-end run of all four issue-4 methods."""

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config
from hydra.utils import instantiate

from mcl.compatibility import backbone_spec, check_run
from mcl.data.toy_classes import toy_classification_stream
from mcl.memory import herding_order
from mcl.run import build_method, run
from mcl.strategies import build_strategy
from mcl.strategies.prompt_fusion import fuse, masked_nll, weight_mask

MICRO = ["backbone=tiny_clip_micro", "backbone@method.booster=tiny_vit_micro",
         "stream=toy_class_micro", "logger=none", "trainer.progress_bar=false"]


def test_fusion_is_the_sigmoid_weighted_mix_of_the_two_branches():
    s, b = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.0, 3.0]])
    assert torch.allclose(fuse(s, b, torch.tensor([0.0])), (s + b) / 2)
    lam = torch.tensor([1.5], requires_grad=True)
    w = 1 / (1 + np.exp(-1.5))
    fused = fuse(s, b, lam)
    assert torch.allclose(fused, (1 - w) * s + w * b)
    fused[0, 1].backward()  # d/d lambda = sigmoid'(lambda) * (booster - stabilizer)
    assert lam.grad.item() == pytest.approx(w * (1 - w) * (3.0 - -1.0), rel=1e-5)


def test_weight_mask_gives_new_classes_sigmoid_alpha_and_old_ones_theta_over_sigmoid_beta():
    alpha, beta = torch.tensor([0.0, 2.0]), torch.tensor([-1.0])
    theta = 3 / 2  # task index 3
    w = weight_mask(["old", "n1", "n0", "other"], ["n0", "n1"], ["old"], alpha, beta, theta)
    sig = torch.sigmoid
    expected = [theta / sig(torch.tensor(-1.0)), sig(torch.tensor(2.0)), 0.5, 1.0]
    assert torch.allclose(w, torch.tensor(expected))


def test_masked_loss_is_the_nll_of_the_weighted_log_softmax():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    weights = torch.tensor([0.5, 2.0, 1.5])
    log_p = F.log_softmax(logits, -1)
    manual = -(weights[labels] * log_p[torch.arange(4), labels]).mean()
    assert masked_nll(logits, weights, labels).item() == pytest.approx(manual.item(), rel=1e-6)
    plain = F.cross_entropy(logits, labels)
    assert masked_nll(logits, torch.ones(3), labels).item() == pytest.approx(plain.item())


def test_herding_picks_the_samples_whose_running_mean_tracks_the_class_mean():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -0.2]])
    order = herding_order(x, 4)
    unit = F.normalize(x, dim=-1)
    mean = unit.mean(0)
    assert order[0] == int((unit - mean).norm(dim=1).argmin())  # the sample nearest the mean
    second = min((i for i in range(4) if i != order[0]),
                 key=lambda i: float((mean - (unit[order[0]] + unit[i]) / 2).norm()))
    assert order[1] == second and sorted(order) == [0, 1, 2, 3]


def test_bad_pairs_and_boosters_fail_before_loading():
    cfg = compose_config(["method=prompt_fusion", "backbone=tiny_vit_micro"])
    with pytest.raises(ValueError, match="cannot run on backbone 'tiny_vit_micro'.*label_prompts"):
        check_run(build_method(cfg), backbone_spec(cfg.backbone))
    with pytest.raises(ValueError, match="method.booster must be null .* or the config"):
        build_strategy("prompt_fusion", booster={"name": "no target"})
    llava = dict(compose_config(["backbone=tiny_llava_micro"]).backbone)
    with pytest.raises(ValueError, match="Booster 'tiny_llava_micro' must be a classification"):
        build_strategy("prompt_fusion", booster=llava)


def test_a_context_longer_than_the_text_tower_fails_with_the_fix(stream):
    s = _strategy(context_length=31)  # the micro text tower has 32 positions
    with pytest.raises(ValueError, match="exceed the 32 positions.*lower method.context_length"):
        s.before_task(stream.tasks[0], 0)


def _strategy(**overrides):
    cfg = compose_config(MICRO + ["experiment=prompt_fusion_tiny", "method.memory_size=8",
                                  *[f"method.{k}={v}" for k, v in overrides.items()]])
    s = build_method(cfg)
    s.setup(instantiate(cfg.backbone, _convert_="all"))
    return s


@pytest.fixture(scope="module")
def stream():
    return toy_classification_stream("s", "class_incremental", views=["shapes"], num_tasks=2,
                                     styles=["clean"], train_size=8, test_size=4, seed=0)


def _train(s, stream, steps: int = 2):
    """A few steps per task by hand; returns the last (batch, outputs) of task 2."""
    backbone = s.backbone
    for i, task in enumerate(stream.tasks):
        s.before_task(task, i)
        batch = backbone.collate_train(backbone.encode(s.train_samples(stream.tasks[:i + 1]),
                                                       with_answer=True))
        backbone.train()
        optimizer, _ = s.configure_optimizer(s.trainable_parameters(), steps)
        for _ in range(steps):
            out = s.forward(batch)
            optimizer.zero_grad()
            s.loss(batch, out).backward()
            optimizer.step()
        if i == 0:
            first_context = s.fusion.contexts[0].detach().clone()
        s.after_task(task, i)
    return batch, out, first_context


def test_second_task_trains_on_memory_with_the_mask_and_keeps_old_contexts(stream):
    s = _strategy()
    batch, out, first_context = _train(s, stream)
    t0, t1 = stream.tasks[0].meta["classes"], stream.tasks[1].meta["classes"]
    # memory: 8 exemplars over the (task, class) groups, 2 each after two 2-class tasks
    groups = [(t, c) for t, _, c in s.memory.entries]
    assert len(s.memory) == 8 and all(groups.count(g) == 2 for g in set(groups))
    assert set(batch["classes"]) == set(t0) | set(t1)  # old classes come back through memory
    assert s.new_classes == t1 and s.old_classes == t0
    # the loss of task 2 is the masked NLL of the fused logits
    s.backbone.train()
    out = s.forward(batch)
    stab, boost = s.branch_logits(batch["pixel_values"], batch["classes"])
    fused = fuse(stab, boost, s.fusion.lam)
    mask = weight_mask(batch["classes"], t1, t0, s.fusion.alpha, s.fusion.beta, 1 / 2)
    assert torch.allclose(out.logits, fused, atol=1e-5)
    assert out.loss.item() == pytest.approx(masked_nll(fused, mask, batch["labels"]).item(),
                                            rel=1e-5)
    # task 1's contexts were frozen during task 2 (no gradient reaches them)
    assert torch.equal(s.fusion.contexts[0], first_context)
    assert len(s.fusion.contexts) == 2 and s.fusion.contexts[1].shape[0] == len(t1)


def test_booster_sees_the_pixels_its_own_processor_would_give(stream):
    s = _strategy()
    images = [sample.image for sample in stream.tasks[0].train[:3]]
    clip_pixels = s.backbone.image_processor(images, return_tensors="pt")["pixel_values"]
    own = s.booster.image_processor(images, return_tensors="pt")["pixel_values"]
    assert not torch.allclose(clip_pixels, own, atol=1e-2)  # the two normalisations differ
    assert torch.allclose(s.booster_pixels(clip_pixels), own, atol=1e-4)


def test_state_round_trips_with_identical_predictions(stream):
    trained = _strategy()
    _train(trained, stream)
    buffer = io.BytesIO()
    torch.save(trained.checkpoint_state(), buffer)
    buffer.seek(0)
    restored = _strategy()
    restored.load_checkpoint_state(torch.load(buffer, weights_only=False))
    outputs = []
    for s in (trained, restored):
        backbone = s.backbone.eval()
        items = backbone.encode(stream.tasks[0].test + stream.tasks[1].test, with_answer=True)
        with torch.no_grad():
            outputs.append((s.forward(backbone.collate_train(items)).logits,
                            s.generate(backbone.collate_generate(items))))
    assert torch.equal(outputs[0][0], outputs[1][0]) and outputs[0][1] == outputs[1][1]
    assert restored.memory.entries == trained.memory.entries


def test_all_four_methods_run_end_to_end_on_the_micro_classification_stream(tmp_path, capsys):
    common = ["stream=toy_class_micro", "logger=none", "trainer.progress_bar=false",
              "method.epochs=1", "method.batch_size=8"]
    runs = {
        "l2p": ["experiment=l2p_tiny", "backbone=tiny_vit_micro"],
        "dualprompt": ["experiment=dualprompt_tiny", "backbone=tiny_vit_micro",
                       "method.pool_size=2"],
        "coda_prompt": ["experiment=coda_prompt_tiny", "backbone=tiny_vit_micro",
                        "method.pool_size=8", "method.num_tasks=2"],
        "prompt_fusion": ["experiment=prompt_fusion_tiny", "backbone=tiny_clip_micro",
                          "backbone@method.booster=tiny_vit_micro", "method.memory_size=8"],
    }
    for method, overrides in runs.items():
        run(compose_config(common + overrides), tmp_path / method)
        saved = json.loads((tmp_path / method / "results.json").read_text())
        assert saved["method"] == method and saved["completed_tasks"] == 2
        matrix = np.array(saved["matrix"], dtype=float)
        assert matrix.shape == (3, 2) and not np.isnan(matrix).any()
        assert {"last", "avg_incremental", "forgetting"} <= set(saved["metrics"])
        assert (tmp_path / method / "checkpoints" / "task_001.pt").exists()
        assert f"method {method}: " in capsys.readouterr().out  # describe(): parameter counts


@pytest.mark.parametrize("layout", ["official", "coop"])
def test_the_text_tower_reads_the_official_layout_or_plain_coop(stream, layout):
    """official (prompt.py): [SOS] ctx x M, "X" x M, name, ".", [EOS]; coop: [SOS] ctx x M,
    name, ".", [EOS]. Checked on the embeddings the text tower's embedding layer receives."""
    s = _strategy(text_layout=layout)
    s.before_task(stream.tasks[0], 0)
    name = stream.tasks[0].meta["classes"][0]
    seen = []
    embeddings = s.backbone.model.text_model.embeddings
    hook = embeddings.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"]), with_kwargs=True)
    s.backbone.train()
    s.stabilizer_text([name])
    hook.remove()
    tok, m = s.backbone.tokenizer, s.context_length
    named = tok(f"{name}.")["input_ids"]  # [SOS] name . [EOS]
    x = tok("X")["input_ids"][1:-1]
    assert len(x) == 1  # one placeholder token per "X"
    words = named[1:] if layout == "coop" else x * m + named[1:]
    table = embeddings.token_embedding.weight
    expected = torch.cat([table[named[:1]], s.fusion.contexts[0][0], table[words]])
    assert seen[0].shape[1] == 1 + m + (m if layout == "official" else 0) + len(named) - 1
    assert torch.equal(seen[0][0], expected)


def test_raw_pixels_give_the_booster_and_clip_the_unnormalised_0_1_pixels(stream):
    s = _strategy(raw_pixels=True)
    images = [sample.image for sample in stream.tasks[0].train[:3]]
    clip_pixels = s.backbone.image_processor(images, return_tensors="pt")["pixel_values"]
    unit = s.booster.image_processor(images, do_normalize=False, return_tensors="pt")
    assert torch.allclose(s.booster_pixels(clip_pixels), unit["pixel_values"], atol=1e-4)
    s.before_task(stream.tasks[0], 0)
    seen, encode = [], s.backbone.encode_image
    s.backbone.encode_image = lambda px, prompts=None: seen.append(px) or encode(px, prompts)
    s.branch_logits(clip_pixels, stream.tasks[0].meta["classes"])
    clip_unit = s.backbone.image_processor(images, do_normalize=False, return_tensors="pt")
    assert torch.allclose(seen[0], clip_unit["pixel_values"], atol=1e-5)
