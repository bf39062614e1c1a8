"""Reward overoptimization: how the gold score of a policy depends on its distance from SFT.

Gao et al. (2022) measured the distance as d = sqrt(KL(policy || initial policy)) and found that
the gold reward gained over the initial policy follows, for best-of-n and for RL,

    best-of-n:  gain(d) = d (a - b d)
    RL:         gain(d) = d (a - b log d)

Both rise, peak and fall (for b > 0), while the proxy reward the policy was picked or trained
for keeps rising. Both are linear in (a, b): the gain is a times one column of numbers plus b
times another, so ordinary least squares fits them. This module fits the two forms, finds their
peaks, reads the proxy's rise past the peak, and gathers what notebook 07 shows of the answers
a reward model overrates. Figures are the notebook's.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from helpers import evaluation, labelers
from helpers.world import Example

#: The two functional forms, by name: what multiplies b in gain = d (a - b * f(d)).
FORMS = ("best_of_n", "rl")


# --------------------------------------------------------------------------------------------
# Distance and the two forms
# --------------------------------------------------------------------------------------------


def distance(kl) -> np.ndarray:
    """d = sqrt(KL), KL in nats. A sampled KL estimate can dip a little below 0 near the start
    of a run (the k1 estimator of one batch); it counts as 0."""
    return np.sqrt(np.clip(np.asarray(kl, dtype=float), 0.0, None))


def _d_log_d(d: np.ndarray) -> np.ndarray:
    """d log d, with its limit 0 at d = 0 (where the log alone is -inf)."""
    return np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)


def design_matrix(kl, form: str) -> np.ndarray:
    """The (points, 2) matrix X with gain = X @ (a, b): columns d and -d^2 (best-of-n) or d and
    -d log d (RL), with d = sqrt(KL)."""
    d = distance(kl)
    if form == "best_of_n":
        return np.stack([d, -d * d], axis=1)
    if form == "rl":
        return np.stack([d, -_d_log_d(d)], axis=1)
    raise ValueError(f"unknown form {form!r}; use one of {FORMS}")


def predicted_gain(d, a: float, b: float, form: str) -> np.ndarray:
    """The form's gain at distances ``d`` (sqrt KL, not KL)."""
    return design_matrix(np.asarray(d, dtype=float) ** 2, form) @ np.array([a, b])


def _least_squares(kl, gain, form: str) -> tuple[float, float]:
    x = design_matrix(kl, form)
    y = np.asarray(gain, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} KL values but {len(y)} gains")
    (a, b), *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(a), float(b)


def fit_best_of_n(kl, gain) -> tuple[float, float]:
    """Least-squares (a, b) of gain = d (a - b d), d = sqrt(kl): gain is the gold score minus the
    initial policy's (n = 1), kl the best-of-n KL of each point."""
    return _least_squares(kl, gain, "best_of_n")


def fit_rl(kl, gain) -> tuple[float, float]:
    """Least-squares (a, b) of gain = d (a - b log d), d = sqrt(kl), for points along an RL run.
    At d = 0 the term d log d is 0 (its limit), so the run's first point (KL 0) fits exactly."""
    return _least_squares(kl, gain, "rl")


def peak_distance(a: float, b: float, form: str) -> float:
    """Where the form's gain is largest: d* = a / (2b) (best-of-n) or exp(a/b - 1) (RL), from
    setting the derivative to 0. With b <= 0 the gain never turns down: d* is infinite."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; use one of {FORMS}")
    if b <= 0:
        return math.inf
    if form == "best_of_n":
        return max(0.0, a / (2 * b))
    exponent = a / b - 1
    return math.exp(exponent) if exponent < 700 else math.inf  # beyond float range: no peak in sight


@dataclass(frozen=True)
class GoldFit:
    """One fitted form: the gold gain over the initial policy, ``gain(d)``, with ``d = sqrt(KL)``."""

    form: str
    a: float
    b: float
    baseline: float  # the initial policy's gold score: gold(d) = baseline + gain(d)

    @property
    def peak_d(self) -> float:
        return peak_distance(self.a, self.b, self.form)

    @property
    def peak_kl(self) -> float:
        return self.peak_d ** 2

    def gold(self, d) -> np.ndarray:
        """Predicted gold score (not gain) at distances ``d``."""
        return self.baseline + predicted_gain(d, self.a, self.b, self.form)

    @property
    def peak_gold(self) -> float:
        return float(self.gold([self.peak_d])[0]) if math.isfinite(self.peak_d) else math.nan


def fit_gold(kl, gold, form: str, baseline: float | None = None) -> GoldFit:
    """Fit ``form`` to gold scores at KL distances. ``baseline``: the initial policy's gold score
    (default: the gold score of the first point, which should be at KL 0)."""
    gold = np.asarray(gold, dtype=float)
    start = float(gold[0]) if baseline is None else float(baseline)
    a, b = _least_squares(kl, gold - start, form)
    return GoldFit(form=form, a=a, b=b, baseline=start)


# --------------------------------------------------------------------------------------------
# Best-of-n and RL as (d, proxy, gold) points
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """Points of one way of moving away from SFT: KL (nats per answer), d = sqrt(KL), and the mean
    proxy and gold scores there; ``label`` names each point (n = 4, episode 1,280, ...)."""

    kl: np.ndarray
    proxy: np.ndarray
    gold: np.ndarray
    label: list[str]

    @property
    def d(self) -> np.ndarray:
        return distance(self.kl)


def best_of_n_curve(proxy_scores: list[list[float]], gold_scores: list[list[float]], ns) -> Curve:
    """Best-of-n picked by the proxy for each n: the mean proxy and gold scores of the picked
    answers (``proxy_scores[i][j]``, ``gold_scores[i][j]``: answer j to prompt i), at the
    best-of-n KL ``log n - (n - 1) / n``."""
    proxy, gold = [], []
    for n in ns:
        proxy.append(np.mean(evaluation.best_of_n(proxy_scores, proxy_scores, n)))
        gold.append(np.mean(evaluation.best_of_n(proxy_scores, gold_scores, n)))
    return Curve(kl=np.array([evaluation.best_of_n_kl(n) for n in ns]), proxy=np.array(proxy),
                 gold=np.array(gold), label=[f"n = {n}" for n in ns])


def rl_curve(history: dict) -> Curve:
    """A PPO run's training curve (its ``history``: per iteration the mean KL of the sampled
    answers, their reward-model score and their gold score)."""
    return Curve(kl=np.array(history["kl"], dtype=float), proxy=np.array(history["score"], dtype=float),
                 gold=np.array(history["gold"], dtype=float),
                 label=[f"episode {e:,}" for e in history["episodes"]])


def past_the_peak(curve: Curve, fit: GoldFit) -> dict:
    """How the proxy moved after the fitted gold peak: the proxy at d* (interpolated along the
    curve) and at the curve's farthest point, and the gold score measured there. ``beyond``
    is False when the curve never reaches d* (the peak is a forecast, or there is none)."""
    d = curve.d
    order = np.argsort(d, kind="stable")
    far = int(order[-1])
    peak = fit.peak_d
    beyond = bool(math.isfinite(peak) and d[far] > peak)
    proxy_at_peak = float(np.interp(peak, d[order], curve.proxy[order])) if beyond else math.nan
    gold_at_peak = float(np.interp(peak, d[order], curve.gold[order])) if beyond else math.nan
    return {"peak_d": peak, "peak_kl": fit.peak_kl, "peak_gold_fitted": fit.peak_gold, "beyond": beyond,
            "proxy_at_peak": proxy_at_peak, "gold_at_peak": gold_at_peak,
            "far_d": float(d[far]), "proxy_far": float(curve.proxy[far]), "gold_far": float(curve.gold[far]),
            "proxy_rise": float(curve.proxy[far]) - proxy_at_peak if beyond else math.nan,
            "gold_fall": gold_at_peak - float(curve.gold[far]) if beyond else math.nan}


def smoothed(values, window: int) -> np.ndarray:
    """Centered moving average over ``window`` points (shorter at the ends): a PPO run's gold score
    per iteration comes from one batch of prompts and is noisy."""
    values = np.asarray(values, dtype=float)
    half = max(0, window // 2)
    return np.array([values[max(0, i - half):i + half + 1].mean() for i in range(len(values))])


# --------------------------------------------------------------------------------------------
# What the reward model overrates
# --------------------------------------------------------------------------------------------


def _ranks(values) -> np.ndarray:
    """Each value's rank as a share of the others it beats (ties: the average), in [0, 1]."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return np.zeros(len(values))
    below = (values[:, None] > values[None, :]).sum(1) + 0.5 * ((values[:, None] == values[None, :]).sum(1) - 1)
    return below / (len(values) - 1)


def overrated(proxy, gold, k: int = 5) -> list[int]:
    """Indices of the ``k`` answers the proxy ranks furthest above where the gold labeler ranks
    them (ranks, not scores: the two judges score on different scales)."""
    gap = _ranks(proxy) - _ranks(gold)
    return [int(i) for i in np.argsort(-gap, kind="stable")[:k]]


def answer_traits(examples: list[Example], responses: list[str]) -> dict[str, float]:
    """What a set of answers looks like: mean length in words, and on the Instruction World the
    rubric's reading (share with padding, refusals, "I don't know", correct). Hub prompts have
    no rubric: length only."""
    words = [len(r.split()) for r in responses]
    traits = {"words": float(np.mean(words)) if words else math.nan}
    world_pairs = [(e, r) for e, r in zip(examples, responses) if not labelers.is_hub(e)]
    if world_pairs:
        grades = [labelers.gold_grade(e, r) for e, r in world_pairs]
        traits.update({
            "padded": float(np.mean([labelers.count_filler(r) > 0 for _, r in world_pairs])),
            "refused": float(np.mean([g.refused for g in grades])),
            "says_dont_know": float(np.mean([g.said_dont_know for g in grades])),
            "correct": float(np.mean([g.correct for g in grades])),
        })
    return traits


@dataclass
class OverratedQuiz:
    """A few answers to one prompt with their gold scores; which does the reward model put first?"""

    example: Example
    answers: list[str]
    gold: list[float]
    proxy: list[float]

    @property
    def favourite(self) -> int:
        """1-based number of the answer the reward model scores highest."""
        return int(np.argmax(self.proxy)) + 1

    def show(self) -> str:
        lines = [f"Prompt: {self.example.prompt}", ""]
        for i, (answer, gold) in enumerate(zip(self.answers, self.gold), start=1):
            lines.append(f"  {i}. (gold {gold:.2f})  {answer!r}")
        return "\n".join(lines)

    def reveal(self, guess) -> str:
        """The answer to the quiz, once a guess (1 to len(answers)) is given."""
        if guess is None:
            return ("Put the number of your guess in MY_GUESS and run this cell again: the reward model's "
                    "scores stay hidden until you do.")
        if guess not in range(1, len(self.answers) + 1):
            return f"MY_GUESS should be a number from 1 to {len(self.answers)}, not {guess!r}."
        verdict = "Right" if guess == self.favourite else f"Not quite: it is answer {self.favourite}"
        lines = [f"{verdict}. The reward model's scores (gold in brackets):"]
        for i in np.argsort(-np.asarray(self.proxy), kind="stable"):
            lines.append(f"  {i + 1}. reward model {self.proxy[i]:+.2f} (gold {self.gold[i]:.2f})  {self.answers[i]!r}")
        return "\n".join(lines)


def overrated_quiz(examples: list[Example], answers: list[list[str]], proxy: list[list[float]],
                   gold: list[list[float]], size: int = 4, seed: int = 0) -> OverratedQuiz | None:
    """A quiz from best-of-n samples: the prompt whose reward-model favourite falls furthest below
    the best gold score among its answers, shown with the best answer and ``size - 2`` others
    (distinct texts, shuffled). None when no prompt has such a favourite."""
    best, best_gap = None, 0.0
    for i, (texts, p, g) in enumerate(zip(answers, proxy, gold)):
        distinct = {t for t in texts}
        if len(distinct) < size:
            continue
        fav = int(np.argmax(p))
        gap = max(g) - g[fav]
        if gap > best_gap:
            best, best_gap = i, gap
    if best is None:
        return None
    texts, p, g = answers[best], proxy[best], gold[best]
    fav = int(np.argmax(p))
    top_gold = max((j for j in range(len(texts)) if texts[j] != texts[fav]), key=lambda j: (g[j], -j))
    chosen, seen = [fav, top_gold], {texts[fav], texts[top_gold]}
    rng = random.Random(seed)
    for j in rng.sample(range(len(texts)), len(texts)):
        if len(chosen) == size:
            break
        if texts[j] not in seen and p[j] < p[fav]:
            chosen.append(j)
            seen.add(texts[j])
    rng.shuffle(chosen)
    return OverratedQuiz(example=examples[best], answers=[texts[j] for j in chosen],
                         gold=[float(g[j]) for j in chosen], proxy=[float(p[j]) for j in chosen])
