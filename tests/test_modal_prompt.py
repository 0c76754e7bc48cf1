"""ModalPrompt against hand computation: dual-modality guidance, prompt selection, insertion."""

import torch
import torch.nn.functional as F
from conftest import method_options

from mcl.data import toy_world
from mcl.strategies.guide_features import guide_features
from mcl.strategies.modal_prompt import ModalPrompt, guidance, select_tasks


def test_guidance_weighs_the_image_and_text_cosines_to_each_prototype():
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    image, text = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    r = 2 ** -0.5
    # image cosines (1, 0, r), text cosines (0, 1, r); lam = 0.25
    expected = torch.tensor([[0.25, 0.75, r]])
    torch.testing.assert_close(guidance(image, text, prototypes, 0.25), expected)


def test_selection_follows_the_official_rules():
    coef = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.0], [0.8, 0.2, 0.7, 0.9, 0.0]])
    # training, while task < transfer - 1: every prompt so far, in task order
    assert select_tasks(coef, 0, 3, True).tolist() == [[0], [0]]
    assert select_tasks(coef, 1, 3, True).tolist() == [[0, 1], [0, 1]]
    # training task 4: the two best earlier tasks (of 0..3), least similar first, then task 4
    assert select_tasks(coef, 4, 3, True).tolist() == [[2, 1, 4], [0, 3, 4]]
    assert select_tasks(coef, 4, 1, True).tolist() == [[4], [4]]
    # inference over T trained tasks: the min(T, 3) best, least similar first
    assert select_tasks(coef[:, :2], 0, 3, False).tolist() == [[0, 1], [1, 0]]
    assert select_tasks(coef[:, :4], 0, 3, False).tolist() == [[3, 2, 1], [2, 0, 3]]


def test_the_selected_prompts_follow_the_first_token_and_only_the_task_learns(micro_backbone):
    strategy = ModalPrompt(**method_options("modal_prompt", prompt_length=2, max_tasks=4))
    strategy.setup(micro_backbone)
    backbone = micro_backbone
    batch = backbone.collate_train(backbone.encode(
        toy_world.generate("capability_recognition", 3, 0, "train"), with_answer=True))
    strategy.task, strategy.trained = 3, 3  # training task 3: two earlier prompts + its own
    embeds, mask, labels, align = strategy.with_prompts(batch, training=True)
    image, text = guide_features(backbone, batch)
    protos = torch.stack([strategy.prototype(i) for i in range(4)]).detach()
    coef = 0.5 * (F.normalize(image, dim=-1) @ F.normalize(protos, dim=-1).T
                  + F.normalize(text, dim=-1) @ F.normalize(protos, dim=-1).T)
    base = backbone.embed(batch)
    n = 3 * 2
    for b in range(3):
        best = coef[b, :3].argsort(descending=True)[:2].flip(0).tolist() + [3]
        s = int(batch["attention_mask"][b].argmax()) + 1
        expected = torch.cat([strategy.prompts[i] for i in best])
        torch.testing.assert_close(embeds[b, s : s + n], expected)
        torch.testing.assert_close(embeds[b, :s], base[b, :s])
        torch.testing.assert_close(embeds[b, s + n :], base[b, s:])
        assert bool(mask[b, s : s + n].all()) and bool((labels[b, s : s + n] == -100).all())
    own = protos[3]
    by_hand = (2 - F.cosine_similarity(image, own[None]).mean()
               - F.cosine_similarity(text, own[None]).mean())
    torch.testing.assert_close(align, by_hand)
    (embeds.sum() + align).backward()
    assert strategy.prompts[3].grad is not None
    assert all(p.grad is not None for p in strategy.transforms[3].parameters())
    for i in range(3):
        assert strategy.prompts[i].grad is None
        assert all(p.grad is None for p in strategy.transforms[i].parameters())
