"""Evaluation: mismatch rate, per-family means and win rates on hand-built judgments."""

import math

import pytest

from helpers import evaluation as ev
from helpers.world import Example

ADD = Example("What is 34 plus 12?", "46", "arithmetic", {"a": 34, "b": 12, "op": "plus", "answer": 46})
NEG = Example('Is this review positive or negative? "The tea was cold."', "Negative.", "sentiment",
              {"label": "negative"})


def test_objective_mismatch_counts_responses_that_ask_instead_of_answer():
    examples = [ADD, ADD, NEG, NEG]
    responses = ["What is 8 plus 2?", "46", "Is this review positive or negative? x", "Negative. Why?"]
    # the first and third open with a new question; the fourth answers first
    assert ev.objective_mismatch_rate(examples, responses) == pytest.approx(0.5)


def test_by_family_means():
    stats = ev.by_family([ADD, ADD, NEG], ["46", "What is 1 plus 1?", "Negative."])
    assert stats["arithmetic"].n == 2
    assert stats["arithmetic"].score == pytest.approx(0.5)
    assert stats["sentiment"].score == pytest.approx(1.0)


def test_judgments_and_win_rate_by_hand():
    a = [1.0, 0.5, 0.2, 0.7]
    b = [0.0, 0.5, 0.9, 0.1]
    assert ev.judgments(a, b) == [1.0, 0.5, 0.0, 1.0]
    mean, lo, hi = ev.win_rate(a, b, n_boot=500)
    assert mean == pytest.approx(2.5 / 4)
    assert 0.0 <= lo <= mean <= hi <= 1.0


def test_bootstrap_interval_shrinks_with_more_prompts_and_is_reproducible():
    few = [1.0, 0.0] * 10
    many = [1.0, 0.0] * 500
    _, lo_f, hi_f = ev.bootstrap_ci(few, seed=1)
    _, lo_m, hi_m = ev.bootstrap_ci(many, seed=1)
    assert (hi_m - lo_m) < (hi_f - lo_f) / 4
    # the 95% interval of a fair coin over 1000 prompts is about +/- 3.1 points
    assert hi_m - lo_m == pytest.approx(2 * 1.96 * (0.25 / 1000) ** 0.5, abs=0.01)
    assert ev.bootstrap_ci(few, seed=1) == ev.bootstrap_ci(few, seed=1)


def test_few_shot_prompt_and_answer_cut():
    text = ev.few_shot_prompt("What is 2 plus 2?", [ADD])
    assert text == "Question: What is 34 plus 12?\nAnswer: 46\n\nQuestion: What is 2 plus 2?\nAnswer:"
    assert ev.few_shot_answer(" 4\n\nQuestion: What is 3 plus 3?") == "4"


# --------------------------------------------------------------------------------------------
# The alignment tax
# --------------------------------------------------------------------------------------------


def test_alignment_tax_is_loss_above_the_base_model():
    losses = {"base": 1.0, "SFT": 3.5, "PPO": 3.25, "PPO-ptx": 1.25}
    tax = ev.alignment_tax(losses)
    assert tax == pytest.approx({"SFT": 2.5, "PPO": 2.25, "PPO-ptx": 0.25})
    assert "base" not in tax


def test_alignment_tax_names_a_missing_reference():
    with pytest.raises(KeyError, match="base"):
        ev.alignment_tax({"SFT": 2.0, "PPO": 2.5})


def test_tax_removed_share_by_hand():
    assert ev.tax_removed(2.0, 0.5) == pytest.approx(0.75)  # 1 - 0.5 / 2
    assert ev.tax_removed(2.0, 2.0) == pytest.approx(0.0)
    assert ev.tax_removed(2.0, 3.0) == pytest.approx(-0.5)  # the "fix" made it worse
    assert math.isnan(ev.tax_removed(0.0, 0.1))  # no tax to remove


def test_high_beta_stage_is_the_ppo_stage_with_a_larger_beta():
    from helpers import pipeline, profiles
    from helpers.config import settings as current_settings

    run = current_settings()
    plain, high = pipeline.settings("ppo", run), pipeline.settings("ppo_high_beta", run)
    assert high["kl_coef"] == profiles.HIGH_BETA > plain["kl_coef"]
    assert {k: v for k, v in high.items() if k != "kl_coef"} == {k: v for k, v in plain.items() if k != "kl_coef"}


def test_best_of_n_keeps_the_judges_favourite_and_reports_its_gold_score():
    gold = [[0.2, 0.9, 0.5, 0.1], [1.0, 0.0, 0.0, 0.3]]
    rm = [[0.0, -1.0, 2.0, 0.5], [0.1, 0.1, 0.7, 0.1]]  # the RM likes answer 2 of both prompts
    assert ev.best_of_n(rm, gold, 1) == [0.2, 1.0]  # n = 1: the first sample, whatever the judge
    assert ev.best_of_n(rm, gold, 2) == [0.2, 1.0]  # prompt 2: a tie between 0 and 1 keeps the first
    assert ev.best_of_n(rm, gold, 4) == [0.5, 0.0]  # the RM's pick, not the best answer
    assert ev.best_of_n(gold, gold, 4) == [0.9, 1.0]  # judged by gold: the best gold score
    # picked by gold, best-of-n never gets worse as n grows
    means = [sum(ev.best_of_n(gold, gold, n)) / 2 for n in (1, 2, 3, 4)]
    assert means == sorted(means)


def test_best_of_n_refuses_too_few_answers_and_mismatched_prompts():
    with pytest.raises(ValueError, match="best-of-3 needs 3"):
        ev.best_of_n([[0.0, 1.0]], [[0.0, 1.0]], 3)
    with pytest.raises(ValueError, match="2 prompts"):
        ev.best_of_n([[0.0], [1.0]], [[0.0]], 1)


def test_best_of_n_kl_by_hand():
    assert ev.best_of_n_kl(1) == 0.0
    assert ev.best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)  # 0.193
    assert ev.best_of_n_kl(16) == pytest.approx(2.7726 - 0.9375, abs=1e-4)
    with pytest.raises(ValueError):
        ev.best_of_n_kl(0)


def test_best_of_n_curve_rows_by_hand():
    gold = [[0.2, 0.9, 0.5, 0.1], [1.0, 0.0, 0.0, 0.3]]
    rm = [[0.0, -1.0, 2.0, 0.5], [0.1, 0.1, 0.7, 0.1]]
    baseline = [0.5, 0.5]
    rows = ev.best_of_n_curve(rm, gold, baseline, ns=(1, 2, 4, 8))  # 8 > 4 answers: left out
    assert [r["n"] for r in rows] == [1, 2, 4]
    assert [r["gold"] for r in rows] == [pytest.approx(0.6), pytest.approx(0.6), pytest.approx(0.25)]
    # n = 4: the RM picks 0.5 (tie with the baseline) and 0.0 (loss): 0.25
    assert rows[2]["win"] == pytest.approx(0.25) and rows[2]["kl"] == pytest.approx(ev.best_of_n_kl(4))
    assert rows[0]["low"] <= rows[0]["win"] <= rows[0]["high"]
    by_gold = ev.best_of_n_curve(gold, gold, baseline, ns=(4,))
    assert by_gold[0]["gold"] == pytest.approx(0.95) and by_gold[0]["win"] == 1.0


def _example(family: str, prompt: str, response: str) -> Example:
    return Example(prompt, response, family, {})


def test_few_shot_prefix_never_shows_the_questions_own_family_and_is_fixed():
    from helpers import course_data

    prefixes = ev.few_shot_prefixes(course_data.prompts("sft"), n_shots=3)
    first = {s.family for s in prefixes.first}
    second = {s.family for s in prefixes.second}
    assert len(first) == len(second) == 3 and not first & second  # two disjoint sets of families
    assert not (first | second) & set(ev.NOT_SHOTS)  # no refusal or "I don't know" shots
    prompts_seen = set()
    for example in course_data.prompts("eval"):
        shots = prefixes.shots_for(example.family)
        assert example.family not in {s.family for s in shots}
        text = prefixes.prompt(example)
        assert text.endswith(f"Question: {example.prompt}\nAnswer:")
        prompts_seen.add(text[: -len(f"Question: {example.prompt}\nAnswer:")])
    # one prefix for every prompt, except the other one for the prefix's own families
    assert len(prompts_seen) == 2


def test_few_shot_prefixes_take_each_familys_shortest_example_and_alternate():
    pool = [_example("a", "aaaa", "1"), _example("a", "a", "1"), _example("b", "bb", "2"),
            _example("c", "ccc", "3"), _example("d", "dddd", "4"), _example("harmful", "h", "Sorry")]
    prefixes = ev.few_shot_prefixes(pool, n_shots=2)
    # shortest per family: a (2 chars), b (3), c (4), d (5); the refusal family is left out
    assert [s.prompt for s in prefixes.first] == ["a", "ccc"]
    assert [s.prompt for s in prefixes.second] == ["bb", "dddd"]
    assert prefixes.shots_for("c") == prefixes.second and prefixes.shots_for("e") == prefixes.first
    with pytest.raises(ValueError, match="need 6 task families"):
        ev.few_shot_prefixes(pool, n_shots=3)
