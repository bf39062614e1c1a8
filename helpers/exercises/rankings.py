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


# --- inter-annotator agreement (notebook 03) --------------------------------------------------


def _ranking(ranks: list[int], labeler: str, prompt: int) -> "Ranking":
    from helpers.labelers import Ranking

    letters = "ABCDEFGH"
    return Ranking(prompt_id=f"p{prompt}", prompt=f"prompt {prompt}", family="chat",
                   responses=[f"response {letters[i]}" for i in range(len(ranks))],
                   ranks=list(ranks), labeler=labeler)


def _agreement_inputs(*pairs_of_ranks) -> Callable[[], dict]:
    """Two labelers' rankings of the same prompts: pairs_of_ranks = ((ranks_a, ranks_b), ...)."""
    return lambda: {"rankings_a": [_ranking(a, "a", i) for i, (a, _) in enumerate(pairs_of_ranks)],
                    "rankings_b": [_ranking(b, "b", i) for i, (_, b) in enumerate(pairs_of_ranks)]}


def _agreement_ties_agree(rankings_a, rankings_b):
    agree = total = 0
    for a, b in zip(rankings_a, rankings_b):
        for i in range(len(a.ranks)):
            for j in range(i + 1, len(a.ranks)):
                da, db = a.ranks[i] - a.ranks[j], b.ranks[i] - b.ranks[j]
                total += 1
                agree += (a.ranks[i] < a.ranks[j]) == (b.ranks[i] < b.ranks[j])  # ties not skipped
    return agree / total


def _agreement_equal_ranks(rankings_a, rankings_b):
    same = total = 0
    for a, b in zip(rankings_a, rankings_b):
        same += sum(x == y for x, y in zip(a.ranks, b.ranks))
        total += len(a.ranks)
    return same / total


def _agreement_all_pairs_in_total(rankings_a, rankings_b):
    agree = total = 0
    for a, b in zip(rankings_a, rankings_b):
        for i in range(len(a.ranks)):
            for j in range(i + 1, len(a.ranks)):
                da, db = a.ranks[i] - a.ranks[j], b.ranks[i] - b.ranks[j]
                total += 1
                agree += bool(da and db and (da > 0) == (db > 0))
    return agree / total


def _agreement_adjacent_only(rankings_a, rankings_b):
    agree = total = 0
    for a, b in zip(rankings_a, rankings_b):
        order = sorted(range(len(a.ranks)), key=lambda i: a.ranks[i])  # a's ranking, best first
        for i, j in zip(order, order[1:]):
            da, db = a.ranks[i] - a.ranks[j], b.ranks[i] - b.ranks[j]
            if da and db:
                total += 1
                agree += (da > 0) == (db > 0)
    return agree / total


def _agreement_mean_per_prompt(rankings_a, rankings_b):
    shares = []
    for a, b in zip(rankings_a, rankings_b):
        agree = total = 0
        for i in range(len(a.ranks)):
            for j in range(i + 1, len(a.ranks)):
                da, db = a.ranks[i] - a.ranks[j], b.ranks[i] - b.ranks[j]
                if da and db:
                    total += 1
                    agree += (da > 0) == (db > 0)
        if total:
            shares.append(agree / total)
    return sum(shares) / len(shares)


register(Exercise(
    name="pairwise_agreement",
    reference="helpers.labelers:pairwise_agreement",
    difficulty=2, importance=2, minutes=15,
    cases=[
        Case("one prompt, no ties: A > B > C > D against B > A > C > D",
             _agreement_inputs(([1, 2, 3, 4], [2, 1, 3, 4]))),
        Case("the same order written with different numbers: [1, 2, 2, 3] against [1, 2, 2, 4]",
             _agreement_inputs(([1, 2, 2, 3], [1, 2, 2, 4]))),
        Case("two prompts, ties in both rankings",
             _agreement_inputs(([1, 1, 3, 4], [1, 2, 3, 3]), ([2, 1, 4, 3], [1, 2, 3, 4]))),
        Case("three prompts of K = 3, 4 and 5 responses",
             _agreement_inputs(([3, 1, 2], [1, 2, 3]), ([4, 3, 2, 1], [4, 3, 1, 1]),
                               ([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]))),
    ],
    bugs=[
        KnownBug("a tie states no preference, so it cannot agree or disagree: skip every pair that "
                 "either labeler tied", _agreement_ties_agree),
        KnownBug("agreement is about pairs, not rank numbers: for each pair (i, j) ask whether both "
                 "labelers put the same response ahead ([1, 2, 2, 3] and [1, 2, 2, 4] order every "
                 "pair the same way)", _agreement_equal_ranks),
        KnownBug("pairs that either labeler tied are left out of the count altogether: divide by "
                 "the number of pairs both labelers ordered, not by all pairs", _agreement_all_pairs_in_total),
        KnownBug("every two responses form a pair, not only neighbours in the first labeler's "
                 "ranking: K = 4 gives C(4, 2) = 6 pairs", _agreement_adjacent_only),
        KnownBug("pool the pairs of all prompts, then divide once: averaging per prompt gives a "
                 "prompt with few countable pairs as much weight as a full one", _agreement_mean_per_prompt),
    ],
    hints=[
        "For every prompt, loop over the pairs i < j (itertools.combinations(range(K), 2)); compare "
        "the sign of a.ranks[i] - a.ranks[j] with the sign of b.ranks[i] - b.ranks[j].",
        "A difference of 0 is a tie: skip the pair. Count the pairs you kept and those where the "
        "signs match, over all prompts, and return agree / kept.",
    ],
))


# --- reward-model accuracy (notebook 04) ------------------------------------------------------


def _accuracy_inputs(chosen: list[float], rejected: list[float]) -> Callable[[], dict]:
    return lambda: {"rewards_chosen": torch.tensor(chosen), "rewards_rejected": torch.tensor(rejected)}


def _accuracy_at_least(rewards_chosen, rewards_rejected):
    return (rewards_chosen >= rewards_rejected).float().mean().item()


def _accuracy_reversed(rewards_chosen, rewards_rejected):
    return (rewards_chosen < rewards_rejected).float().mean().item()


def _accuracy_ties_half(rewards_chosen, rewards_rejected):
    wins = (rewards_chosen > rewards_rejected).float() + 0.5 * (rewards_chosen == rewards_rejected).float()
    return wins.mean().item()


def _accuracy_count(rewards_chosen, rewards_rejected):
    return float((rewards_chosen > rewards_rejected).sum().item())


def _accuracy_against_zero(rewards_chosen, rewards_rejected):
    return (rewards_chosen > 0).float().mean().item()


register(Exercise(
    name="rm_accuracy",
    reference="helpers.reward:rm_accuracy",
    difficulty=1, importance=2, minutes=5,
    cases=[
        Case("four pairs, no ties", _accuracy_inputs([1.0, 0.2, -0.5, 2.0], [0.5, 0.4, -1.0, -2.0])),
        Case("six pairs, two of them tied", _accuracy_inputs([0.3, 1.0, -0.2, 0.7, 0.0, 1.5],
                                                              [0.3, 0.1, 0.4, 0.7, -0.6, 2.0])),
        Case("a reward model that scores everything 0", _accuracy_inputs([0.0] * 4, [0.0] * 4)),
        Case("rewards all negative, one tie", _accuracy_inputs([-0.1, -2.0, -0.4, -0.2], [-0.3, -1.0, -0.4, -0.9])),
    ],
    bugs=[
        KnownBug("a tie is not a correct answer: use >, not >= (an RM that scores everything the "
                 "same would otherwise be 100% accurate)", _accuracy_at_least),
        KnownBug("the RM is right when the labeler's choice scores HIGHER: rewards_chosen > "
                 "rewards_rejected", _accuracy_reversed),
        KnownBug("count a tie as wrong, not as half right: the RM failed to say which response is "
                 "better", _accuracy_ties_half),
        KnownBug("return the share of pairs (a number between 0 and 1), not the count: take the mean",
                 _accuracy_count),
        KnownBug("compare the two rewards of each pair with each other, not each reward with 0: "
                 "rewards have no fixed zero", _accuracy_against_zero),
    ],
    hints=[
        "(rewards_chosen > rewards_rejected) is a boolean tensor, one value per pair.",
        "Turn it into floats and take the mean; .item() makes it a Python number.",
    ],
))
