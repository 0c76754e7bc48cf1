"""L2P, DualPrompt and CODA-Prompt. On plain tensors: key-query selection, the pull loss, prefix
splitting, CODA's attention-weighted assembly and orthogonality. On the micro ViT: which prompts
each method actually hands to the encoder in training and at test time, what stays frozen, and
that an impossible backbone fails before loading."""

import math

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate

from mcl.compatibility import backbone_spec, check_run
from mcl.data.task import Task
from mcl.data.toy_classes import toy_classification_stream
from mcl.run import build_method
from mcl.strategies import build_strategy
from mcl.strategies.prompt_pool import (
    assemble,
    coda_weights,
    official_gram_schmidt,
    ortho_penalty,
    orthonormal_extension,
    pull_loss,
    select_top_k,
    split_prefix,
)


def test_top_k_picks_the_keys_with_the_highest_cosine_similarity_not_the_largest_dot():
    keys = torch.tensor([[1.0, 0.0], [10.0, 10.0], [0.0, 1.0], [-1.0, 0.0]])
    query = torch.tensor([[2.0, 0.1], [0.0, -3.0]])
    index, chosen = select_top_k(query, keys, 2)
    # query 0 is nearly along e1: key 0 (cos ~1) beats key 1 (cos ~0.74) despite its norm.
    assert index[0].tolist() == [0, 1]
    assert chosen[0, 0] == pytest.approx(2 / math.hypot(2, 0.1), abs=1e-6)
    assert chosen[0, 1] == pytest.approx((2 + 0.1) / (math.hypot(2, 0.1) * math.sqrt(2)),
                                         abs=1e-6)
    # query 1 points along -e2: every key has cos <= 0; the two with cos 0 win.
    assert sorted(index[1].tolist()) == [0, 3]


def test_pull_loss_is_one_minus_cosine_summed_over_chosen_keys_and_averaged_over_the_batch():
    chosen = torch.tensor([[1.0, 0.5], [0.0, -1.0]])
    assert pull_loss(chosen).item() == pytest.approx(((0 + 0.5) + (1 + 2)) / 2)
    # it pulls the chosen keys towards the query: its gradient w.r.t. a key moves it closer.
    key = torch.tensor([[0.0, 1.0]], requires_grad=True)
    query = torch.tensor([[1.0, 0.0]])
    _, sim = select_top_k(query, key, 1)
    pull_loss(sim).backward()
    moved = key.detach() - 0.1 * key.grad
    assert select_top_k(query, moved, 1)[1].item() > sim.item()


def test_prefix_split_gives_key_half_then_value_half():
    p = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    k, v = split_prefix(p)
    assert torch.equal(k, p[:, :3]) and torch.equal(v, p[:, 3:])
    with pytest.raises(ValueError, match="even, positive length"):
        split_prefix(p[:, :5])


def test_coda_weights_are_the_cosine_of_the_attended_query_and_the_key():
    torch.manual_seed(0)
    q, a, k = torch.randn(3, 5), torch.randn(4, 5), torch.randn(4, 5)
    w = coda_weights(q, a, k)
    for b in range(3):
        for m in range(4):
            expected = torch.nn.functional.cosine_similarity(q[b] * a[m], k[m], dim=0)
            assert w[b, m].item() == pytest.approx(expected.item(), abs=1e-6)
    # the attention vector selects features: with A_m = e1 only the query's first feature counts
    a1 = torch.zeros(1, 5)
    a1[0, 0] = 1.0
    q2 = torch.tensor([[3.0, 100.0, -7.0, 1.0, 2.0]])
    assert coda_weights(q2, a1, torch.tensor([[1.0, 0, 0, 0, 0]])).item() == pytest.approx(1.0)


def test_coda_prompt_is_the_weighted_sum_of_components():
    torch.manual_seed(1)
    w, comps = torch.randn(2, 3), torch.randn(3, 4, 6)
    p = assemble(w, comps)
    assert p.shape == (2, 4, 6)
    assert torch.allclose(p[1], w[1, 0] * comps[0] + w[1, 1] * comps[1] + w[1, 2] * comps[2],
                          atol=1e-6)


def test_new_components_are_orthonormal_to_each_other_and_to_the_frozen_ones():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(3, 10, generator=g)  # frozen components of earlier tasks (not unit)
    new = orthonormal_extension(old, 4, g)
    assert new.shape == (4, 10)
    assert torch.allclose(new @ new.T, torch.eye(4), atol=1e-5)
    assert (old @ new.T).abs().max() < 1e-5
    first = orthonormal_extension(torch.empty(0, 10), 3, g)
    assert ortho_penalty(first).item() == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="cannot add"):
        orthonormal_extension(old, 8, g)


def test_official_gram_schmidt_projects_on_each_old_row_and_so_leaks_on_trained_rows():
    g = torch.Generator().manual_seed(0)
    orthonormal = orthonormal_extension(torch.empty(0, 12), 4, g)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    # orthonormal old rows: the two procedures give the same new rows from the same draws
    assert torch.allclose(official_gram_schmidt(orthonormal, 3, g1),
                          orthonormal_extension(orthonormal, 3, g2), atol=1e-6)
    # trained (no longer orthogonal) old rows: by hand, v - sum_j (v.u_j / u_j.u_j) u_j
    old = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    v = torch.randn(3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    u = v - sum((v @ r) / (r @ r) * r for r in old.double())
    new = official_gram_schmidt(old, 1, torch.Generator().manual_seed(2))
    assert torch.allclose(new[0].double(), u / u.norm(), atol=1e-6)
    assert (old @ new.T).abs().max() > 1e-3  # not orthogonal to the old rows
    exact = orthonormal_extension(old, 1, torch.Generator().manual_seed(2))
    assert (old @ exact.T).abs().max() < 1e-6  # mcl's default is


def test_ortho_penalty_is_the_mean_squared_deviation_of_the_gram_from_identity():
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # B B^T = [[1, 1], [1, 2]] -> minus I = [[0, 1], [1, 1]] -> mean of squares = 3 / 4
    assert ortho_penalty(b).item() == pytest.approx(0.75)


# ---------------------------------------------------------------------- on the micro ViT


def _micro_vit():
    return instantiate(compose_config(["backbone=tiny_vit_micro"]).backbone, _convert_="all")


@pytest.fixture(scope="module")
def stream():
    return toy_classification_stream("s", "class_incremental", views=["shapes"], num_tasks=2,
                                     styles=["clean"], train_size=8, test_size=4, seed=0)


def _batch(backbone, task: Task) -> dict:
    return backbone.collate_train(backbone.encode(task.train, with_answer=True))


def _record(backbone) -> list[dict]:
    """Wrap encode_image to record the prompts / prefixes it receives."""
    calls, original = [], backbone.encode_image

    def spy(pixel_values, prompts=None, prefixes=None):
        calls.append({"prompts": prompts, "prefixes": prefixes})
        return original(pixel_values, prompts=prompts, prefixes=prefixes)

    backbone.encode_image = spy
    return calls


def test_l2p_prepends_the_top_k_prompts_of_the_query(stream):
    backbone = _micro_vit()
    s = build_strategy("l2p", pool_size=6, prompt_length=2, top_k=3)
    s.setup(backbone)
    calls = _record(backbone)
    batch = _batch(backbone, stream.tasks[0])
    out = s.forward(batch)
    query = backbone.query(batch["pixel_values"])
    index, chosen = select_top_k(query, s.prompts.keys, 3)
    expected = s.prompts.prompts[index].flatten(1, 2)
    assert torch.equal(calls[0]["prompts"], expected)  # B x (3 * 2) x H, best key first
    assert out.aux.item() == pytest.approx(pull_loss(chosen).item(), rel=1e-6)
    s.loss(batch, out).backward()
    unused = sorted(set(range(6)) - set(index.flatten().tolist()))
    for m in unused:  # only the chosen prompts and keys receive gradient
        assert s.prompts.prompts.grad[m].abs().sum() == 0
        assert s.prompts.keys.grad[m].abs().sum() == 0


def _dualprompt_training_forward(stream, task: int, **options):
    """A DualPrompt on the micro ViT, one training forward on task `task`'s batch: (strategy,
    backbone, the recorded backbone calls, the batch)."""
    backbone = _micro_vit()
    s = build_strategy("dualprompt", **options)
    s.setup(backbone)
    calls = _record(backbone)
    batch = _batch(backbone, stream.tasks[task])
    s.before_task(stream.tasks[task], task)
    backbone.train()
    s.forward(batch)
    return s, backbone, calls, batch


def test_dualprompt_trains_the_task_prompt_and_tests_with_the_best_key(stream):
    s, backbone, calls, batch = _dualprompt_training_forward(
        stream, 1, pool_size=2, g_length=1, g_layers=[0], e_length=2, e_layers=[1])
    prefixes = calls[-1]["prefixes"]
    g, e = s.prompts.g, s.prompts.e
    assert torch.equal(prefixes[0][0][0], g[0, :1]) and torch.equal(prefixes[0][1][0], g[0, 1:])
    # training: task 1's own E-prompt for every image, key half then value half
    assert torch.equal(prefixes[1][0], e[1, 0, :2].expand(len(batch["labels"]), -1, -1))
    assert torch.equal(prefixes[1][1], e[1, 0, 2:].expand(len(batch["labels"]), -1, -1))
    s.after_task(stream.tasks[1], 1)
    backbone.eval()
    with torch.no_grad():
        s.prompts.keys[0] = backbone.query(batch["pixel_values"]).mean(0)  # key 0 fits best
        s.prompts.keys[1] = -s.prompts.keys[0]
        s.forward(batch)
    assert torch.equal(calls[-1]["prefixes"][1][0], e[[0] * len(batch["labels"]), 0, :2])
    with pytest.raises(ValueError, match="one E-prompt per task.*pool_size"):
        s.before_task(stream.tasks[0], 2)


@pytest.mark.parametrize("gram_schmidt", ["exact", "official"])
def test_coda_initialises_a_new_task_with_the_chosen_gram_schmidt(stream, gram_schmidt):
    s = build_strategy("coda_prompt", pool_size=4, num_tasks=2, prompt_length=2, layers=[0],
                       gram_schmidt=gram_schmidt)
    s.setup(_micro_vit())
    s.before_task(stream.tasks[0], 0)
    with torch.no_grad():  # training has moved task 1's keys: no longer orthogonal
        s.prompts.keys[0, 1] += 0.5 * s.prompts.keys[0, 0]
    s.before_task(stream.tasks[1], 1)
    keys = s.prompts.keys[0].detach()
    overlap = (keys[:2] @ keys[2:].T).abs().max().item()
    assert overlap < 1e-5 if gram_schmidt == "exact" else overlap > 1e-3


def test_dualprompt_prefix_lengths_per_layer_are_tokens_per_key_and_per_value(stream):
    """google-research's convention: L_g key + L_g value vectors at a G layer, L_e + L_e at an
    E layer, L_g + L_e of each at a layer with both; CODA-Prompt's "20 6" is e 10, g 3 here."""
    s, backbone, calls, batch = _dualprompt_training_forward(
        stream, 0, pool_size=2, g_length=3, g_layers=[0, 1], e_length=10, e_layers=[1])
    b, hidden = len(batch["labels"]), backbone.hidden_size
    prefixes = calls[-1]["prefixes"]
    assert sorted(prefixes) == [0, 1]
    assert [tuple(t.shape) for t in prefixes[0]] == [(b, 3, hidden)] * 2  # G only
    assert [tuple(t.shape) for t in prefixes[1]] == [(b, 13, hidden)] * 2  # G + E
    assert s.prompts.g.shape[1] == 6 and s.prompts.e.shape[2] == 20  # stored: keys, values


def test_coda_assembles_prompts_from_orthogonal_task_components_and_freezes_old_ones(stream):
    backbone = _micro_vit()
    s = build_strategy("coda_prompt", pool_size=8, num_tasks=2, prompt_length=2, layers=[0, 1],
                       ortho_coeff=0.5)
    s.setup(backbone)
    calls = _record(backbone)
    batch = _batch(backbone, stream.tasks[0])
    c = s.prompts
    s.before_task(stream.tasks[0], 0)
    s.before_task(stream.tasks[1], 1)  # components 4..7 start orthogonal to 0..3
    for values in (c.components, c.keys, c.attention):
        rows = values[1].detach().flatten(1)
        assert torch.allclose(rows @ rows.T, torch.eye(8), atol=1e-5)
    backbone.train()
    out = s.forward(batch)
    query = backbone.query(batch["pixel_values"])
    for j in range(2):
        expected = assemble(coda_weights(query, c.attention[j], c.keys[j]), c.components[j])
        k, v = calls[-1]["prefixes"][j]
        assert torch.allclose(torch.cat([k, v], 1), expected, atol=1e-6)
    expected_penalty = 0.5 * sum(ortho_penalty(c.keys[j]) + ortho_penalty(c.attention[j])
                                 + ortho_penalty(c.components[j].flatten(1)) for j in range(2))
    assert out.aux.item() == pytest.approx(expected_penalty.item(), rel=1e-5)
    s.loss(batch, out).backward()
    for values in (c.components, c.keys, c.attention):
        assert values.grad[:, :4].abs().sum() == 0  # task 0's components: used, frozen
        assert values.grad[:, 4:].abs().sum() > 0
    backbone.eval()
    s.before_task(stream.tasks[0], 0)  # evaluating after task 0 uses its 4 components only
    with torch.no_grad():
        s.forward(batch)
    query = backbone.query(batch["pixel_values"])
    expected = assemble(coda_weights(query, c.attention[0, :4], c.keys[0, :4]),
                        c.components[0, :4])
    assert torch.allclose(torch.cat(calls[-1]["prefixes"][0], 1), expected, atol=1e-6)


@pytest.mark.parametrize("method", ["l2p", "dualprompt", "coda_prompt"])
def test_prompt_pool_methods_refuse_an_instruction_backbone_before_loading(method):
    cfg = compose_config([f"method={method}", "backbone=tiny_llava_micro"])
    reason = f"method '{method}' cannot run on backbone 'tiny_llava_micro'.*vision_prompts"
    with pytest.raises(ValueError, match=reason):
        check_run(build_method(cfg), backbone_spec(cfg.backbone))


def test_raw_pixels_hand_the_backbone_the_unnormalised_0_1_pixels_of_the_official_code(stream):
    backbone = _micro_vit()
    s = build_strategy("l2p", pool_size=4, prompt_length=2, top_k=2, raw_pixels=True)
    s.setup(backbone)
    calls, original = [], backbone.query
    backbone.query = lambda pixels: calls.append(pixels) or original(pixels)
    images = [sample.image for sample in stream.tasks[0].train[:3]]
    normalised = backbone.image_processor(images, return_tensors="pt")["pixel_values"]
    unit = backbone.image_processor(images, do_normalize=False, return_tensors="pt")
    s.forward({"pixel_values": normalised, "classes": stream.tasks[0].meta["classes"]})
    assert not torch.allclose(normalised, unit["pixel_values"], atol=1e-2)
    assert torch.allclose(calls[0], unit["pixel_values"], atol=1e-5)


@pytest.mark.parametrize("method", ["l2p", "dualprompt"])
def test_prompts_and_keys_start_as_the_official_code_or_the_pytorch_port_draws_them(method):
    """official: Flax's nn.initializers.uniform() in google-research/l2p, U[0, 0.01);
    pytorch_port: U(-1, 1). Every prompt, prefix and key parameter follows the option."""
    options = {"l2p": {"pool_size": 6, "prompt_length": 2, "top_k": 3},
               "dualprompt": {"pool_size": 2, "g_length": 1, "g_layers": [0], "e_length": 2,
                              "e_layers": [1]}}[method]
    ranges = {}
    for init in ("official", "pytorch_port"):
        s = build_strategy(method, prompt_init=init, **options)
        s.setup(_micro_vit())
        values = torch.cat([p.detach().flatten() for p in s.prompts.parameters()])
        ranges[init] = (values.min().item(), values.max().item())
    assert 0 <= ranges["official"][0] and ranges["official"][1] < 0.01
    assert -1 <= ranges["pytorch_port"][0] < -0.5 and 0.5 < ranges["pytorch_port"][1] <= 1
    assert build_strategy(method, **options).prompt_init == "official"  # the default
    with pytest.raises(ValueError, match="method.prompt_init must be one of"):
        build_strategy(method, prompt_init="normal", **options)
