"""Reward model: the ranking loss by hand, grouped vs shuffled batching, scores at the last token."""

import math

import pytest
import torch

from helpers import reward
from helpers.labelers import Ranking, preference_pairs


def test_ranking_loss_by_hand():
    rewards = torch.tensor([2.0, 0.0, 1.0])
    pairs = [(0, 1), (0, 2), (2, 1)]  # A > C > B: all C(3, 2) = 3 pairs
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = -(math.log(sig(2.0)) + math.log(sig(1.0)) + math.log(sig(1.0))) / 3
    assert reward.ranking_loss(rewards, pairs).item() == pytest.approx(expected, rel=1e-6)


def test_ranking_loss_is_mean_over_pairs_and_sign_matters():
    rewards = torch.tensor([0.3, -0.2, 0.9, 0.1])
    pairs = preference_pairs([1, 2, 2, 3])  # one tie: 5 pairs
    assert len(pairs) == 5
    per_pair = [-torch.nn.functional.logsigmoid(rewards[w] - rewards[l]) for w, l in pairs]
    assert reward.ranking_loss(rewards, pairs).item() == pytest.approx(sum(per_pair).item() / 5)
    # a perfectly ordered RM has a lower loss than one that orders everything backwards
    good = torch.tensor([3.0, 2.0, 2.0, 1.0])
    assert reward.ranking_loss(good, pairs) < reward.ranking_loss(-good, pairs)


def test_no_pairs_gives_zero_loss_with_gradient_path():
    rewards = torch.tensor([1.0, 1.0], requires_grad=True)
    loss = reward.ranking_loss(rewards, [])
    loss.backward()
    assert loss.item() == 0.0 and rewards.grad is not None


def test_pairwise_accuracy_counts_strict_wins():
    assert reward.pairwise_accuracy(torch.tensor([1.0, 0.5, 0.5]), [(0, 1), (1, 2), (2, 0)]) == (1, 3)


def _rankings(n):
    return [Ranking(f"p{i}", f"prompt {i}", "chat", ["a", "b", "c", "d"], [1, 2, 3, 4], "x")
            for i in range(n)]


def test_grouped_batches_keep_a_prompts_pairs_together():
    import random
    settings = reward.RMSettings(prompts_per_batch=3)
    batches = list(reward._grouped_batches(_rankings(7), settings, random.Random(0)))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert all(len(pairs) == 6 and len(rs) == 4 for b in batches for _, rs, pairs in b)
    shuffled = list(reward._shuffled_pair_batches(_rankings(7), reward.RMSettings(pairs_per_batch=10),
                                                 random.Random(0)))
    assert sum(len(b) for b in shuffled) == 7 * 6  # every pair once, each as its own example
