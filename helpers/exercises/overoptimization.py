"""Exercises of notebook 07: best-of-n picked by a proxy, its KL, and Gao et al.'s RL form fitted
by least squares."""

from __future__ import annotations

import math
import random
from typing import Callable

import numpy as np

from helpers.exercises.checking import Case, Exercise, KnownBug, register

# --- best_of_n ----------------------------------------------------------------------------------


def _bon_inputs(proxy: list[list[float]], gold: list[list[float]], n: int) -> Callable[[], dict]:
    def make() -> dict:
        return {"proxy_scores": [list(row) for row in proxy], "gold_scores": [list(row) for row in gold], "n": n}
    return make


def _as_floats(output, inputs: dict) -> list[float]:
    return [float(x) for x in output]


def _bon_peeks_at_gold(proxy_scores, gold_scores, n):
    return [max(gold[:n]) for gold in gold_scores]


def _bon_all_answers(proxy_scores, gold_scores, n):
    return [gold[max(range(len(proxy)), key=lambda j: proxy[j])] for proxy, gold in zip(proxy_scores, gold_scores)]


def _bon_returns_proxy(proxy_scores, gold_scores, n):
    return [max(proxy[:n]) for proxy in proxy_scores]


def _bon_lowest(proxy_scores, gold_scores, n):
    return [gold[min(range(n), key=lambda j: proxy[j])] for proxy, gold in zip(proxy_scores, gold_scores)]


def _bon_last_of_ties(proxy_scores, gold_scores, n):
    picked = []
    for proxy, gold in zip(proxy_scores, gold_scores):
        best = max(proxy[:n])
        picked.append(gold[max(j for j in range(n) if proxy[j] == best)])
    return picked


def _bon_mean_of_n(proxy_scores, gold_scores, n):
    return [sum(gold[:n]) / n for gold in gold_scores]


# Three prompts, four answers each: the proxy's favourite is never the gold labeler's, answer 4 is
# the proxy's best of all (so "first n" matters for n < 4), and prompt 3 has a tie in the proxy.
_PROXY = [[0.1, 0.9, 0.3, 1.5], [2.0, -1.0, 0.5, 0.0], [0.4, 0.4, -0.2, 0.1]]
_GOLD = [[0.8, 0.2, 0.6, 0.0], [0.1, 0.9, 0.5, 0.3], [0.3, 0.7, 1.0, 0.2]]


def _random_bon(prompts: int, answers: int, seed: int) -> tuple[list[list[float]], list[list[float]]]:
    rng = random.Random(seed)
    gold = [[round(rng.random(), 3) for _ in range(answers)] for _ in range(prompts)]
    proxy = [[round(g + rng.gauss(0, 0.4), 2) for g in row] for row in gold]
    return proxy, gold


_RANDOM_PROXY, _RANDOM_GOLD = _random_bon(12, 8, seed=3)

register(Exercise(
    name="best_of_n_by_proxy",
    reference="helpers.evaluation:best_of_n",
    difficulty=1, importance=3, minutes=5,
    cases=[
        Case("3 prompts, n = 2", _bon_inputs(_PROXY, _GOLD, 2), _as_floats),
        Case("3 prompts, n = 3 (prompt 3: two answers tie on the proxy)", _bon_inputs(_PROXY, _GOLD, 3), _as_floats),
        Case("3 prompts, n = 1: the first answer, whatever the scores", _bon_inputs(_PROXY, _GOLD, 1), _as_floats),
        Case("12 prompts of 8 answers, n = 4", _bon_inputs(_RANDOM_PROXY, _RANDOM_GOLD, 4), _as_floats),
    ],
    bugs=[
        KnownBug("pick by the PROXY's scores: the gold labeler is what we measure with, never what chooses "
                 "(a deployed system has no gold labeler to ask)", _bon_peeks_at_gold),
        KnownBug("best-of-n looks at the first n answers only: proxy_scores[i][:n], not all of them",
                 _bon_all_answers),
        KnownBug("return the GOLD score of the answer the proxy picked, not the proxy's own score of it",
                 _bon_returns_proxy),
        KnownBug("keep the answer the proxy scores HIGHEST (max, not min)", _bon_lowest),
        KnownBug("of answers the proxy scores equally, keep the first (max(range(n), key=...) does)",
                 _bon_last_of_ties),
        KnownBug("best-of-n keeps ONE answer per prompt, the proxy's favourite, not the mean of the n",
                 _bon_mean_of_n),
    ],
    hints=[
        "For each prompt i: among j in range(n), find the j with the largest proxy_scores[i][j].",
        "max(range(n), key=lambda j: proxy[j]) gives that j (the first one on ties).",
        "Append gold_scores[i][j] for that j; return the list, one number per prompt.",
    ],
))


# --- best_of_n_kl -------------------------------------------------------------------------------


def _n_input(n: int) -> Callable[[], dict]:
    def make() -> dict:
        return {"n": n}
    return make


def _kl_log_n(n):
    return math.log(n)


def _kl_no_division(n):
    return math.log(n) - (n - 1)


def _kl_reversed(n):
    return (n - 1) / n - math.log(n)


def _kl_log2(n):
    return math.log2(n) - (n - 1) / n


def _kl_n_over_n_minus_1(n):
    return math.log(n) - n / (n + 1)


register(Exercise(
    name="best_of_n_kl",
    reference="helpers.evaluation:best_of_n_kl",
    difficulty=1, importance=2, minutes=3,
    cases=[Case(f"n = {n}", _n_input(n)) for n in (1, 2, 4, 16, 64)],
    bugs=[
        KnownBug("log n is only the first term: the best-of-n KL is log n - (n - 1) / n", _kl_log_n),
        KnownBug("the second term is (n - 1) / n, which tends to 1, not n - 1", _kl_no_division),
        KnownBug("a KL is never negative: log n minus (n - 1) / n, not the other way round", _kl_reversed),
        KnownBug("KL in nats: the natural log (math.log), not log base 2", _kl_log2),
        KnownBug("the second term is (n - 1) / n: 0 for n = 1, so that best-of-1 (plain sampling) is at KL 0",
                 _kl_n_over_n_minus_1),
    ],
    hints=[
        "The formula: KL(best-of-n || sampling) = log n - (n - 1) / n, in nats.",
        "Check it by hand: n = 1 gives 0 (best-of-1 is sampling itself), n = 2 gives log 2 - 1/2, about 0.19.",
    ],
))


# --- fit_rl_form --------------------------------------------------------------------------------


def _fit_inputs(kl: list[float], gain: list[float]) -> Callable[[], dict]:
    def make() -> dict:
        return {"kl": list(kl), "gain": list(gain)}
    return make


def _as_pair(output, inputs: dict) -> tuple[float, float]:
    a, b = (float(x) for x in output)
    return a, b


def _lstsq(columns: list[np.ndarray], gain) -> tuple[float, float]:
    (a, b), *_ = np.linalg.lstsq(np.stack(columns, axis=1), np.asarray(gain, dtype=float), rcond=None)
    return float(a), float(b)


def _d_log(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """d * log(x), 0 where x is 0."""
    return np.where(x > 0, d * np.log(np.where(x > 0, x, 1.0)), 0.0)


def _fit_kl_not_sqrt(kl, gain):
    d = np.asarray(kl, dtype=float)
    return _lstsq([d, -_d_log(d, d)], gain)


def _fit_log_of_kl(kl, gain):
    kl = np.asarray(kl, dtype=float)
    d = np.sqrt(kl)
    return _lstsq([d, -_d_log(kl, d)], gain)


def _fit_plus_b(kl, gain):
    d = np.sqrt(np.asarray(kl, dtype=float))
    return _lstsq([d, _d_log(d, d)], gain)


def _fit_without_d(kl, gain):
    d = np.sqrt(np.asarray(kl, dtype=float))
    return _lstsq([d, -_d_log(d, np.ones_like(d))], gain)


def _fit_best_of_n_form(kl, gain):
    d = np.sqrt(np.asarray(kl, dtype=float))
    return _lstsq([d, -d * d], gain)


def _fit_intercept_for_a(kl, gain):
    d = np.sqrt(np.asarray(kl, dtype=float))
    return _lstsq([np.ones_like(d), -_d_log(d, d)], gain)


def _synthetic_rl(a: float, b: float, kls: list[float], noise: float, seed: int) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    gains = []
    for kl in kls:
        d = math.sqrt(kl)
        gains.append(d * (a - b * math.log(d)) + rng.gauss(0, noise) if d > 0 else 0.0)
    return list(kls), gains


_KL_RUN = [0.0, 0.05, 0.2, 0.5, 1.0, 1.6, 2.5, 4.0, 6.0, 9.0]

register(Exercise(
    name="fit_rl_form",
    reference="helpers.overoptimization:fit_rl",
    difficulty=2, importance=3, minutes=15,
    cases=[
        Case("points on gain = d (0.3 - 0.2 log d), no noise, the first at KL 0",
             _fit_inputs(*_synthetic_rl(0.3, 0.2, _KL_RUN, 0.0, seed=0)), _as_pair),
        Case("a run with noise: gain = d (0.25 - 0.15 log d) + noise",
             _fit_inputs(*_synthetic_rl(0.25, 0.15, _KL_RUN[1:], 0.01, seed=1)), _as_pair),
        Case("gold that keeps rising: gain = d (0.1 + 0.05 log d) (b < 0)",
             _fit_inputs(*_synthetic_rl(0.1, -0.05, [0.3, 0.8, 1.5, 3.0, 5.0], 0.0, seed=2)), _as_pair),
    ],
    bugs=[
        KnownBug("Gao et al.'s d is the SQUARE ROOT of the KL: d = sqrt(kl), then fit d (a - b log d)",
                 _fit_kl_not_sqrt),
        KnownBug("the log is of d, not of the KL: log(kl) = 2 log d, which halves b and moves a",
                 _fit_log_of_kl),
        KnownBug("gain = a d - b d log d: the column that multiplies b is -d log d (with +d log d your b has the "
                 "wrong sign, and a positive b would mean no peak)", _fit_plus_b),
        KnownBug("the form multiplies out to a d - b d log d: the b column is -d log d, not -log d", _fit_without_d),
        KnownBug("that is the best-of-n form, d (a - b d); the RL form is d (a - b log d)", _fit_best_of_n_form),
        KnownBug("a multiplies d: the first column is d, not a column of ones (the gain is 0 at d = 0)",
                 _fit_intercept_for_a),
    ],
    hints=[
        "d = np.sqrt(kl). Multiply the form out: gain = a * d + b * (-d * log d), linear in a and b.",
        "Stack the two columns into X (shape (points, 2)); at d = 0 the second column is 0 (the limit of "
        "d log d), so compute the log only where d > 0, e.g. np.where(d > 0, d * np.log(np.where(d > 0, d, 1)), 0).",
        "(a, b), *_ = np.linalg.lstsq(X, np.asarray(gain), rcond=None); return float(a), float(b).",
    ],
))
