"""GRPO and RLOO: advantages by hand (and a group whose rewards are all equal), and a short GRPO
run through TRL's GRPOTrainer that raises a toy reward."""

import math

import pytest
import torch

from helpers import grpo, world
from helpers.models import build_causal_lm


def test_group_advantages_by_hand():
    # two prompts, G = 3: rewards 1, 2, 4 and 5, 5, 5
    rewards = torch.tensor([1.0, 2.0, 4.0, 5.0, 5.0, 5.0])
    # group 1: mean 7/3, deviations -4/3, -1/3, 5/3; sample variance (16 + 1 + 25) / 9 / 2 = 7/3
    std = math.sqrt(7 / 3)
    expected = [d / (std + grpo.STD_EPS) for d in (-4 / 3, -1 / 3, 5 / 3)] + [0.0, 0.0, 0.0]
    assert grpo.group_advantages(rewards, 3).tolist() == pytest.approx(expected, rel=1e-6)
    # without scaling (Dr. GRPO): only centred
    assert grpo.group_advantages(rewards, 3, scale=False).tolist() == pytest.approx(
        [-4 / 3, -1 / 3, 5 / 3, 0, 0, 0], rel=1e-6)


def test_a_group_of_equal_rewards_teaches_nothing():
    advantages = grpo.group_advantages(torch.tensor([0.7, 0.7, 0.7, 0.7]), 4)
    assert torch.isfinite(advantages).all()  # no 0 / 0
    assert advantages.abs().max().item() == 0.0


def test_group_advantages_sum_to_zero_and_ignore_the_reward_scale():
    torch.manual_seed(0)
    rewards = torch.randn(5 * 4)
    advantages = grpo.group_advantages(rewards, 4)
    assert advantages.view(5, 4).sum(1).abs().max().item() < 1e-5
    # the same answers scored on another scale (a * r + b, a > 0) get (almost) the same advantages
    rescaled = grpo.group_advantages(3.0 * rewards - 7.0, 4)
    assert rescaled.tolist() == pytest.approx(advantages.tolist(), rel=1e-3)
    # groups are consecutive answers: reading the batch as interleaved prompts gives other numbers
    interleaved = grpo.group_advantages(rewards.view(4, 5).T.reshape(-1), 4)
    assert not torch.allclose(interleaved, advantages)


def test_rloo_advantages_by_hand():
    rewards = torch.tensor([1.0, 2.0, 6.0, 3.0, 3.0, 3.0])
    # 1 - (2 + 6) / 2 = -3;  2 - (1 + 6) / 2 = -1.5;  6 - (1 + 2) / 2 = 4.5; equal rewards: 0
    assert grpo.rloo_advantages(rewards, 3).tolist() == pytest.approx([-3, -1.5, 4.5, 0, 0, 0])
    # the same as K / (K - 1) times the centred reward
    centred = grpo.group_advantages(rewards, 3, scale=False)
    assert grpo.rloo_advantages(rewards, 3).tolist() == pytest.approx((1.5 * centred).tolist())


def test_groups_must_fit():
    with pytest.raises(ValueError):
        grpo.group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError):
        grpo.group_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError):
        grpo.rloo_advantages(torch.zeros(4), 1)


def shorter_is_better(examples, responses):
    """A toy reward: minus the answer's length in characters."""
    return [-float(len(r)) for r in responses]


def fewer_words_is_better(examples, responses):
    """A second toy score, only watched (the gold labeler's place in a real run)."""
    return [-float(len(r.split())) for r in responses]


def test_short_grpo_run_raises_a_toy_reward(small_tokenizer, tmp_path, one_thread):
    tok = small_tokenizer
    torch.manual_seed(0)
    build_causal_lm(tok, "tiny").save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")
    examples = world.prompts("ppo", n=32)
    settings = grpo.GRPOSettings(total_prompts=48, prompts_per_step=4, group_size=8, max_new_tokens=8,
                                 learning_rate=3e-3, beta=0.04)
    model, history = grpo.train_grpo(tmp_path / "sft", tok, examples, shorter_is_better, settings,
                                     progress=False, gold_fn=fewer_words_is_better)
    assert len(history.reward) == len(history.gold) == settings.steps
    assert all(math.isfinite(g) for g in history.gold)  # logged beside the reward, not optimized
    # the first step's KL is measured before any update: the policy is still the reference
    assert history.kl[0] == pytest.approx(0.0, abs=1e-6)
    assert max(history.kl) > 0
    first, last = history.reward[:3], history.reward[-3:]
    assert sum(last) / 3 > sum(first) / 3 + 2.0, history.reward
