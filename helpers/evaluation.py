"""Measuring models the way the paper does: gold scores, win rates with confidence intervals,
and the helpful / honest / harmless breakdown.

Everything here takes prompts (``world.Example``) and the responses a model gave, so the same
functions judge a base model, a few-shot prompted base model, SFT, PPO and PPO-ptx.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from helpers import labelers
from helpers.world import Example

# --------------------------------------------------------------------------------------------
# Prompting a base model (the paper's GPT-3 baselines)
# --------------------------------------------------------------------------------------------


def base_prompt(prompt: str) -> str:
    """How a base model sees a request: the bare text, then a new line, as on the web."""
    return prompt + "\n"


def few_shot_prompt(prompt: str, shots: list[Example]) -> str:
    """The "prompted GPT-3" baseline: a few solved examples in the web's Q&A page format."""
    solved = "".join(f"Question: {s.prompt}\nAnswer: {s.response}\n\n" for s in shots)
    return f"{solved}Question: {prompt}\nAnswer:"


def few_shot_answer(continuation: str) -> str:
    """A few-shot continuation's answer: the rest of its first line (the model would go on
    with "Question: ..." next, as Q&A pages do)."""
    return continuation.strip().split("\n")[0].strip()


# --------------------------------------------------------------------------------------------
# Scores per response and per family
# --------------------------------------------------------------------------------------------


def grade_all(examples: list[Example], responses: list[str]) -> list[labelers.Grade]:
    if len(examples) != len(responses):
        raise ValueError(f"{len(examples)} prompts but {len(responses)} responses")
    return [labelers.gold_grade(e, r) for e, r in zip(examples, responses)]


def objective_mismatch_rate(examples: list[Example], responses: list[str]) -> float:
    """Share of responses that open with another question or instruction instead of an answer:
    what a model trained only to continue web text does with a request."""
    hits = [labelers.instruction_likeness(r, e.family) == 1.0 for e, r in zip(examples, responses)]
    return sum(hits) / max(1, len(hits))


def instruction_following_rate(examples: list[Example], responses: list[str],
                               ended_with_eos: list[bool]) -> float:
    """Share of responses in answer form that also stop by themselves (end with EOS).

    Answer form: non-empty, not opening with or drifting into new questions or instructions.
    Whether the answer is right does not matter here: this measures the *format* SFT teaches.
    """
    ok = [bool(stopped) and r.strip() != "" and labelers.instruction_likeness(r, e.family) == 0.0
          for e, r, stopped in zip(examples, responses, ended_with_eos)]
    return sum(ok) / max(1, len(ok))


@dataclass
class FamilyStats:
    family: str
    n: int
    score: float  # mean gold score
    correct: float  # mean correctness aspect
    follows: float  # mean instruction-following aspect
    concise: float


def by_family(examples: list[Example], responses: list[str]) -> dict[str, FamilyStats]:
    """Mean gold score and aspects per task family."""
    groups: dict[str, list[labelers.Grade]] = defaultdict(list)
    for example, grade in zip(examples, grade_all(examples, responses)):
        groups[example.family].append(grade)
    out = {}
    for family, grades in groups.items():
        n = len(grades)
        out[family] = FamilyStats(family, n, sum(g.score for g in grades) / n,
                                  sum(g.correct for g in grades) / n,
                                  sum(g.follows for g in grades) / n,
                                  sum(g.concise for g in grades) / n)
    return out


def mean_gold_score(examples: list[Example], responses: list[str]) -> float:
    grades = grade_all(examples, responses)
    return sum(g.score for g in grades) / max(1, len(grades))


# --------------------------------------------------------------------------------------------
# Win rates
# --------------------------------------------------------------------------------------------


def judgments(scores_a: list[float], scores_b: list[float], tie_margin: float = 1e-9) -> list[float]:
    """Per prompt: 1 if A's response is preferred, 0 if B's is, 0.5 for a tie."""
    if len(scores_a) != len(scores_b):
        raise ValueError(f"{len(scores_a)} scores for A but {len(scores_b)} for B")
    return [0.5 if abs(a - b) <= tie_margin else float(a > b) for a, b in zip(scores_a, scores_b)]


def bootstrap_ci(values: list[float], n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` and a percentile bootstrap confidence interval (resampling prompts)."""
    if not values:
        raise ValueError("no values to bootstrap")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    lo = means[int((1 - level) / 2 * n_boot)]
    hi = means[min(n_boot - 1, int((1 + level) / 2 * n_boot))]
    return sum(values) / n, lo, hi


def win_rate(scores_a: list[float], scores_b: list[float], n_boot: int = 2000,
             seed: int = 0) -> tuple[float, float, float]:
    """How often A is preferred over B (ties count half), with a 95% bootstrap interval."""
    return bootstrap_ci(judgments(scores_a, scores_b), n_boot=n_boot, seed=seed)
