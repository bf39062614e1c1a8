"""Exercises of notebook 06: a win rate with its bootstrap interval, and the PPO-ptx loss.

A bootstrap is random, and a student's resampling never draws the same numbers as the
reference's. So the win-rate check compares the point estimate exactly and the interval's ends
within a tolerance that a correct bootstrap meets whatever its random numbers (a few times the
Monte Carlo error, plus one step of the grid of possible means on small sets); the known
mistakes miss it by far more.
"""

from __future__ import annotations

import math
import random
from typing import Callable

import torch
import torch.nn.functional as F

from helpers.exercises.checking import Case, Exercise, KnownBug, register

# --- win_rate_with_ci -------------------------------------------------------------------------


def _scores_inputs(a: list[float], b: list[float], n_boot: int = 1000, seed: int = 0) -> Callable[[], dict]:
    def make() -> dict:
        return {"scores_a": list(a), "scores_b": list(b), "n_boot": n_boot, "seed": seed}
    return make


def _random_scores(n: int, seed: int) -> tuple[list[float], list[float]]:
    """Scores of two models on n prompts: A better on about 55%, with ties (both 0 or both 1)."""
    rng = random.Random(seed)
    a, b = [], []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.25:  # both get it right or both wrong: a tie
            value = float(rng.random() < 0.5)
            a.append(value), b.append(value)
        else:
            a.append(round(rng.random(), 3)), b.append(round(rng.random() * 0.9, 3))
    return a, b


def _as_triple(output, inputs: dict) -> tuple[float, float, float]:
    mean, lo, hi = (float(x) for x in output)
    return mean, lo, hi


def _triple_close(tolerance: float) -> Callable:
    """The mean must match exactly; each end of the interval within ``tolerance``."""
    def compare(got, expected) -> str | None:
        (mean, lo, hi), (e_mean, e_lo, e_hi) = got, expected
        if not math.isclose(mean, e_mean, abs_tol=1e-9):
            return f"the win rate should be {e_mean:.4f}, got {mean:.4f}"
        if not lo <= mean <= hi:
            return f"the interval ({lo:.4f}, {hi:.4f}) does not contain the win rate {mean:.4f}"
        if abs(lo - e_lo) > tolerance or abs(hi - e_hi) > tolerance:
            return (f"the 95% interval should be about ({e_lo:.3f}, {e_hi:.3f}) (within {tolerance:g}, "
                    f"since a bootstrap is random), got ({lo:.3f}, {hi:.3f})")
        return None
    return compare


def _judge(a: float, b: float) -> float:
    return 0.5 if a == b else float(a > b)


def _percentile_interval(values: list[float], n_boot: int, seed: int) -> tuple[float, float, float]:
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return sum(values) / n, means[int(0.025 * n_boot)], means[min(n_boot - 1, int(0.975 * n_boot))]


def _wr_ties_lose(scores_a, scores_b, n_boot=2000, seed=0):
    return _percentile_interval([float(a > b) for a, b in zip(scores_a, scores_b)], n_boot, seed)


def _wr_ties_win(scores_a, scores_b, n_boot=2000, seed=0):
    return _percentile_interval([float(a >= b) for a, b in zip(scores_a, scores_b)], n_boot, seed)


def _wr_reversed(scores_a, scores_b, n_boot=2000, seed=0):
    return _percentile_interval([_judge(b, a) for a, b in zip(scores_a, scores_b)], n_boot, seed)


def _wr_score_difference(scores_a, scores_b, n_boot=2000, seed=0):
    return _percentile_interval([a - b for a, b in zip(scores_a, scores_b)], n_boot, seed)


def _wr_without_replacement(scores_a, scores_b, n_boot=2000, seed=0):
    values = [_judge(a, b) for a, b in zip(scores_a, scores_b)]
    rng = random.Random(seed)
    means = sorted(sum(rng.sample(values, len(values))) / len(values) for _ in range(n_boot))
    return sum(values) / len(values), means[int(0.025 * n_boot)], means[int(0.975 * n_boot)]


def _wr_percentiles_of_judgments(scores_a, scores_b, n_boot=2000, seed=0):
    values = sorted(_judge(a, b) for a, b in zip(scores_a, scores_b))
    n = len(values)
    return sum(values) / n, values[int(0.025 * n)], values[min(n - 1, int(0.975 * n))]


def _wr_spread_of_judgments(scores_a, scores_b, n_boot=2000, seed=0):
    values = [_judge(a, b) for a, b in zip(scores_a, scores_b)]
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return mean, mean - 1.96 * std, mean + 1.96 * std


_HAND_A = [1.0, 0.5, 0.2, 0.7, 0.9, 0.3, 0.3, 0.8]
_HAND_B = [0.0, 0.5, 0.9, 0.1, 0.4, 0.3, 0.6, 0.2]  # judgments 1, .5, 0, 1, 1, .5, 0, 1: 0.625
_MANY_A, _MANY_B = _random_scores(200, seed=6)

register(Exercise(
    name="win_rate_with_ci",
    reference="helpers.evaluation:win_rate",
    difficulty=2, importance=3, minutes=15,
    cases=[
        Case("8 prompts, two of them ties", _scores_inputs(_HAND_A, _HAND_B), _as_triple, _triple_close(0.13)),
        Case("200 prompts, a quarter of them ties", _scores_inputs(_MANY_A, _MANY_B), _as_triple,
             _triple_close(0.02)),
        Case("10 prompts, every one a tie (the win rate is exactly 0.5)",
             _scores_inputs([0.5] * 5 + [1.0] * 5, [0.5] * 5 + [1.0] * 5), _as_triple, _triple_close(1e-9)),
        Case("6 prompts where A is better on every one", _scores_inputs([1.0] * 6, [0.2] * 6), _as_triple,
             _triple_close(1e-9)),
        Case("200 prompts with seed 7 instead of 0", _scores_inputs(_MANY_B, _MANY_A, seed=7), _as_triple,
             _triple_close(0.02)),
    ],
    bugs=[
        KnownBug("a tie is half a win: judge 0.5 when the two scores are equal, not 0 (a > b alone)",
                 _wr_ties_lose),
        KnownBug("a tie is half a win, not a whole one: judge 1 only when A's score is strictly higher",
                 _wr_ties_win),
        KnownBug("you computed B's win rate over A: judge 1 when scores_a[i] > scores_b[i]", _wr_reversed),
        KnownBug("a win rate counts WHO is preferred, not by how much: turn each pair of scores into a "
                 "judgment (1, 0.5 or 0) before averaging", _wr_score_difference),
        KnownBug("resample WITH replacement (the same prompt may be drawn twice): a shuffle of all the "
                 "judgments always has the same mean, so your interval has no width", _wr_without_replacement),
        KnownBug("the interval is about the MEAN: take the 2.5th and 97.5th percentiles of the n_boot "
                 "bootstrap means, not of the individual judgments", _wr_percentiles_of_judgments),
        KnownBug("mean +/- 1.96 standard deviations of single judgments is far too wide: the mean of n "
                 "judgments varies sqrt(n) times less. Bootstrap the mean instead", _wr_spread_of_judgments),
    ],
    hints=[
        "First the judgments: per prompt 1 if scores_a[i] > scores_b[i], 0 if lower, 0.5 if equal. "
        "The win rate is their mean.",
        "Bootstrap: n_boot times, draw len(judgments) judgments WITH replacement (rng = random.Random(seed); "
        "rng.randrange(n) or rng.choices) and keep the mean of each draw.",
        "Sort the n_boot means; the interval is the values at the 2.5% and 97.5% positions. "
        "Return (win_rate, low, high).",
    ],
))


# --- ptx_loss ---------------------------------------------------------------------------------


def _ptx_inputs(lengths: list[int], width: int, vf_coef: float, ptx_coef: float, seed: int,
                vocab: int = 11) -> Callable[[], dict]:
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
        ids = torch.randint(0, vocab, (len(lengths), width), generator=g)
        logits = 2 * torch.randn(len(lengths), width, vocab, generator=g)
        # padding holds junk, as a model's outputs there do
        logits = torch.where(mask[..., None].bool(), logits, 30 * torch.rand(logits.shape, generator=g))
        policy_loss = (0.5 * torch.randn((), generator=g)).requires_grad_(True)
        value_loss = (1.0 + torch.rand((), generator=g)).requires_grad_(True)
        return {"policy_loss": policy_loss, "value_loss": value_loss, "ptx_logits": logits.requires_grad_(True),
                "ptx_ids": ids, "ptx_mask": mask, "vf_coef": vf_coef, "ptx_coef": ptx_coef}
    return make


def _nll_per_token(logits, ids):
    """Cross-entropy of predicting ids[:, t + 1] from logits[:, t]: (batch, seq - 1)."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1),
                           reduction="none").view(ids.size(0), -1)


def _nll(logits, ids, mask):
    real = mask[:, 1:].float()
    return (_nll_per_token(logits, ids) * real).sum() / real.sum()


def _ptx_minus(policy_loss, value_loss, ptx_logits, ptx_ids, ptx_mask, vf_coef, ptx_coef):
    return policy_loss + vf_coef * value_loss - ptx_coef * _nll(ptx_logits, ptx_ids, ptx_mask)


def _ptx_no_shift(policy_loss, value_loss, ptx_logits, ptx_ids, ptx_mask, vf_coef, ptx_coef):
    per_token = F.cross_entropy(ptx_logits.reshape(-1, ptx_logits.size(-1)), ptx_ids.reshape(-1),
                                reduction="none").view_as(ptx_ids)
    real = ptx_mask.float()
    return policy_loss + vf_coef * value_loss + ptx_coef * (per_token * real).sum() / real.sum()


def _ptx_padding_in_mean(policy_loss, value_loss, ptx_logits, ptx_ids, ptx_mask, vf_coef, ptx_coef):
    return policy_loss + vf_coef * value_loss + ptx_coef * _nll_per_token(ptx_logits, ptx_ids).mean()


def _ptx_sum(policy_loss, value_loss, ptx_logits, ptx_ids, ptx_mask, vf_coef, ptx_coef):
    nll = (_nll_per_token(ptx_logits, ptx_ids) * ptx_mask[:, 1:].float()).sum()
    return policy_loss + vf_coef * value_loss + ptx_coef * nll


def _ptx_no_vf_coef(policy_loss, value_loss, ptx_logits, ptx_ids, ptx_mask, vf_coef, ptx_coef):
    return policy_loss + value_loss + ptx_coef * _nll(ptx_logits, ptx_ids, ptx_mask)


def _ptx_coef_on_everything(policy_loss, value_loss, ptx_logits, ptx_ids, ptx_mask, vf_coef, ptx_coef):
    return ptx_coef * (policy_loss + vf_coef * value_loss + _nll(ptx_logits, ptx_ids, ptx_mask))


def _ptx_unweighted(policy_loss, value_loss, ptx_logits, ptx_ids, ptx_mask, vf_coef, ptx_coef):
    return policy_loss + vf_coef * value_loss + _nll(ptx_logits, ptx_ids, ptx_mask)


def _ptx_only(policy_loss, value_loss, ptx_logits, ptx_ids, ptx_mask, vf_coef, ptx_coef):
    return ptx_coef * _nll(ptx_logits, ptx_ids, ptx_mask)


register(Exercise(
    name="ptx_loss",
    reference="helpers.ppo:ppo_ptx_loss",
    difficulty=1, importance=2, minutes=10,
    cases=[
        Case("2 blocks of 6 tokens, vf_coef 0.1, ptx_coef 1", _ptx_inputs([6, 6], 6, 0.1, 1.0, seed=1)),
        Case("3 rows of lengths 6, 3, 4 (right padding), vf_coef 0.1, ptx_coef 2",
             _ptx_inputs([6, 3, 4], 6, 0.1, 2.0, seed=2)),
        Case("ptx_coef 0: plain PPO", _ptx_inputs([5, 5], 5, 0.1, 0.0, seed=3)),
        Case("vf_coef 0.5, ptx_coef 0.25, rows of lengths 4 and 7", _ptx_inputs([4, 7], 7, 0.5, 0.25, seed=4)),
    ],
    bugs=[
        KnownBug("the paper ADDS gamma * log p(pretraining text) to the objective it maximises; as a loss to "
                 "minimise that is + ptx_coef * the pretraining NLL. Subtracting it would teach the model "
                 "to forget its pretraining", _ptx_minus),
        KnownBug("shift by one: logits[:, t] predict ptx_ids[:, t + 1] (compare logits[:, :-1] with ptx_ids[:, 1:])",
                 _ptx_no_shift),
        KnownBug("padding positions change your pretraining loss: average over real target tokens only "
                 "(ptx_mask[:, 1:])", _ptx_padding_in_mean),
        KnownBug("the pretraining loss is the MEAN negative log-likelihood per real token, not the sum "
                 "(a sum grows with the batch and swamps the PPO losses)", _ptx_sum),
        KnownBug("the value loss is weighted by vf_coef: policy_loss + vf_coef * value_loss + ...",
                 _ptx_no_vf_coef),
        KnownBug("ptx_coef weighs the pretraining term only, not the PPO losses", _ptx_coef_on_everything),
        KnownBug("weigh the pretraining loss by ptx_coef (gamma): with ptx_coef 0 the loss must be plain PPO's",
                 _ptx_unweighted),
        KnownBug("keep the PPO losses: PPO-ptx ADDS the pretraining term to policy_loss + vf_coef * value_loss",
                 _ptx_only),
    ],
    hints=[
        "Start from plain PPO's loss: policy_loss + vf_coef * value_loss.",
        "The pretraining term is the next-token loss of notebook 01 on the ptx batch: cross-entropy of "
        "ptx_logits[:, :-1] against ptx_ids[:, 1:], averaged over the positions where ptx_mask[:, 1:] is 1.",
        "Add ptx_coef times that loss (a plus sign: it is a negative log-likelihood to minimise).",
    ],
))
