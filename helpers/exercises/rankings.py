"""Exercises of notebooks 03 and 04: preference pairs and the ranking loss."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from helpers.exercises.checking import Case, Close, Exercise, KnownBug, exact, register


# --- Step 2: rankings and the reward model (notebooks 03 and 04) -----------------------------


def _pairs_inputs(ranks: list[int]) -> Callable[[], dict]:
    return lambda: {"ranks": list(ranks)}


def _as_pair_set(pairs, inputs) -> list:
    if not isinstance(pairs, (list, tuple, set)):
        raise TypeError(f"expected a list of (winner, loser) pairs, got {type(pairs).__name__}")
    return sorted(tuple(int(x) for x in p) for p in pairs)


def _pairs_keep_ties(ranks):
    return [(i, j) if ranks[i] <= ranks[j] else (j, i)
            for i in range(len(ranks)) for j in range(i + 1, len(ranks))]


def _pairs_reversed(ranks):
    return [(j, i) if ranks[i] < ranks[j] else (i, j)
            for i in range(len(ranks)) for j in range(i + 1, len(ranks)) if ranks[i] != ranks[j]]


def _pairs_adjacent_only(ranks):
    order = sorted(range(len(ranks)), key=lambda i: ranks[i])
    return [(a, b) for a, b in zip(order, order[1:]) if ranks[a] < ranks[b]]


register(Exercise(
    name="preference_pairs",
    reference="helpers.labelers:preference_pairs",
    difficulty=1, importance=3, minutes=10,
    cases=[
        Case("A > B > C > D (ranks [1, 2, 3, 4])", _pairs_inputs([1, 2, 3, 4]), _as_pair_set, exact()),
        Case("D > C > A = B (ranks [3, 3, 2, 1])", _pairs_inputs([3, 3, 2, 1]), _as_pair_set, exact()),
        Case("two responses tied for first of five", _pairs_inputs([1, 1, 3, 4, 5]), _as_pair_set, exact()),
        Case("all tied", _pairs_inputs([1, 1, 1]), _as_pair_set, exact()),
    ],
    bugs=[
        KnownBug("tied responses carry no preference: drop pairs with equal ranks", _pairs_keep_ties),
        KnownBug("rank 1 is the best: the winner of a pair is the response with the SMALLER rank",
                 _pairs_reversed),
        KnownBug("every two responses form a pair, not only neighbours in the ranking: K = 4 gives "
                 "C(4, 2) = 6 pairs", _pairs_adjacent_only),
    ],
    hints=[
        "Loop over every unordered pair i < j (itertools.combinations(range(K), 2)).",
        "If ranks[i] < ranks[j], response i won: append (i, j); if ranks[j] < ranks[i], append (j, i); "
        "equal ranks: skip.",
    ],
))


def _rm_inputs(rewards: list[float], ranks: list[int]) -> Callable[[], dict]:
    def make() -> dict:
        from helpers.labelers import preference_pairs

        return {"rewards": torch.tensor(rewards).requires_grad_(), "pairs": preference_pairs(ranks)}
    return make


def _rm_wrong_sign(rewards, pairs):
    w = torch.tensor([a for a, _ in pairs]); l = torch.tensor([b for _, b in pairs])  # noqa: E702
    return -F.logsigmoid(rewards[l] - rewards[w]).mean()


def _rm_sum(rewards, pairs):
    w = torch.tensor([a for a, _ in pairs]); l = torch.tensor([b for _, b in pairs])  # noqa: E702
    return -F.logsigmoid(rewards[w] - rewards[l]).sum()


def _rm_no_log(rewards, pairs):
    w = torch.tensor([a for a, _ in pairs]); l = torch.tensor([b for _, b in pairs])  # noqa: E702
    return -torch.sigmoid(rewards[w] - rewards[l]).mean()


def _rm_positive(rewards, pairs):
    w = torch.tensor([a for a, _ in pairs]); l = torch.tensor([b for _, b in pairs])  # noqa: E702
    return F.logsigmoid(rewards[w] - rewards[l]).mean()


register(Exercise(
    name="ranking_loss",
    reference="helpers.reward:ranking_loss",
    difficulty=2, importance=3, minutes=10,
    cases=[
        Case("K = 4, a full ranking (6 pairs)", _rm_inputs([0.5, -0.2, 1.5, 0.1], [2, 4, 1, 3])),
        Case("K = 4 with a tie (5 pairs)", _rm_inputs([1.0, 0.7, -0.3, 2.0], [3, 3, 2, 1])),
        Case("K = 2 (1 pair)", _rm_inputs([0.3, 0.9], [1, 2])),
        Case("K = 6, rewards far apart", _rm_inputs([4.0, -3.0, 0.0, 2.5, -1.0, 1.0], [1, 6, 4, 2, 5, 3])),
    ],
    bugs=[
        KnownBug("sign error: the preferred response should score higher, so the loss is "
                 "-log sigmoid(r_w - r_l), not -log sigmoid(r_l - r_w)", _rm_wrong_sign),
        KnownBug("divide by the number of pairs, C(K, 2): the paper's 1 / C(K, 2) keeps a prompt with "
                 "many responses from outweighing the others", _rm_sum),
        KnownBug("take the log: the loss is -log sigmoid(r_w - r_l) (the log-likelihood of the "
                 "labeler's choice under the Bradley-Terry model)", _rm_no_log),
        KnownBug("a loss must be minimised: put a minus sign in front of log sigmoid", _rm_positive),
    ],
    hints=[
        "Bradley-Terry: the probability that the labeler prefers w over l is sigmoid(r_w - r_l).",
        "Gather r_w and r_l with index tensors built from the pairs, then "
        "-F.logsigmoid(r_w - r_l).mean().",
    ],
))
