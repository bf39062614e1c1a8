"""Notebook 07's measures: best-of-n KL, Gao et al.'s two forms fitted by least squares, their
peaks, and the exercises' known bugs."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from helpers import evaluation, overoptimization as oo, profiles
from helpers import exercises as ex
from helpers.world import Example


# --- best-of-n KL, by hand ----------------------------------------------------------------------


def test_best_of_n_kl_by_hand():
    assert evaluation.best_of_n_kl(1) == 0.0
    assert evaluation.best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert evaluation.best_of_n_kl(4) == pytest.approx(math.log(4) - 0.75)
    kls = [evaluation.best_of_n_kl(n) for n in (1, 2, 4, 8, 16, 32, 64)]
    assert all(b > a for a, b in zip(kls, kls[1:]))  # more candidates, further from sampling


def test_best_of_n_curve_picks_by_proxy_and_places_points_at_the_bound():
    proxy = [[0.0, 1.0, 2.0, 3.0], [3.0, 0.0, 1.0, 2.0]]
    gold = [[1.0, 0.5, 0.2, 0.0], [0.0, 1.0, 1.0, 1.0]]
    curve = oo.best_of_n_curve(proxy, gold, [1, 2, 4])
    assert curve.proxy.tolist() == [1.5, 2.0, 3.0]  # the proxy only ever rises with n
    assert curve.gold.tolist() == [0.5, 0.25, 0.0]  # while gold falls here
    assert curve.d[0] == 0.0 and curve.d[1] == pytest.approx(math.sqrt(math.log(2) - 0.5))


# --- the two forms: fits and peaks --------------------------------------------------------------


@pytest.mark.parametrize("form,a,b", [("best_of_n", 0.4, 0.15), ("best_of_n", 1.2, 0.5),
                                      ("rl", 0.3, 0.2), ("rl", 0.05, 0.1)])
def test_fits_recover_a_and_b_from_noisy_points(form, a, b):
    rng = np.random.default_rng(0)
    kl = np.linspace(0.0, 9.0, 40)
    gain = oo.predicted_gain(np.sqrt(kl), a, b, form) + rng.normal(0, 0.005, kl.size)
    fit = oo.fit_best_of_n if form == "best_of_n" else oo.fit_rl
    got_a, got_b = fit(kl, gain)
    assert got_a == pytest.approx(a, abs=0.02) and got_b == pytest.approx(b, abs=0.02)


def test_fit_is_exact_without_noise_and_handles_kl_zero():
    kl = [0.0, 0.3, 1.0, 2.0, 5.0]
    gain = oo.predicted_gain(np.sqrt(kl), 0.2, 0.3, "rl")
    assert gain[0] == 0.0 and np.isfinite(gain).all()  # d log d -> 0 at d = 0
    assert oo.fit_rl(kl, gain) == pytest.approx((0.2, 0.3), abs=1e-9)


def test_the_forms_differ():
    # the same points fitted with the wrong form give another (a, b)
    kl = np.linspace(0.1, 6.0, 12)
    gain = oo.predicted_gain(np.sqrt(kl), 0.3, 0.2, "rl")
    assert oo.fit_best_of_n(kl, gain) != pytest.approx((0.3, 0.2), abs=0.02)


@pytest.mark.parametrize("form,a,b", [("best_of_n", 0.4, 0.15), ("best_of_n", 0.1, 0.3),
                                      ("rl", 0.3, 0.2), ("rl", -0.1, 0.4), ("rl", 0.5, 0.6)])
def test_peak_matches_a_dense_grid(form, a, b):
    d = np.linspace(1e-6, 8.0, 400_001)
    expected = d[np.argmax(oo.predicted_gain(d, a, b, form))]
    assert oo.peak_distance(a, b, form) == pytest.approx(expected, abs=1e-4)


def test_no_peak_when_b_is_not_positive():
    assert oo.peak_distance(0.3, 0.0, "rl") == math.inf
    assert oo.peak_distance(0.3, -0.1, "best_of_n") == math.inf
    with pytest.raises(ValueError):
        oo.peak_distance(0.3, 0.1, "linear")


def test_gold_fit_and_past_the_peak():
    kl = np.linspace(0.0, 16.0, 30)
    baseline = 0.5
    gold = baseline + oo.predicted_gain(np.sqrt(kl), 0.4, 0.1, "best_of_n")  # peak at d = 2
    proxy = np.sqrt(kl)  # keeps rising
    fit = oo.fit_gold(kl, gold, "best_of_n")
    assert fit.baseline == baseline and fit.peak_d == pytest.approx(2.0)
    assert fit.peak_gold == pytest.approx(baseline + 0.4)
    curve = oo.Curve(kl=kl, proxy=proxy, gold=gold, label=[str(k) for k in kl])
    past = oo.past_the_peak(curve, fit)
    assert past["beyond"] and past["proxy_at_peak"] == pytest.approx(2.0, abs=0.01)
    assert past["proxy_rise"] == pytest.approx(2.0, abs=0.01)  # from d = 2 to d = 4
    assert past["gold_fall"] == pytest.approx(0.4, abs=0.01)  # back to the start at d = 4
    short = oo.Curve(kl=kl[:5], proxy=proxy[:5], gold=gold[:5], label=curve.label[:5])
    assert not oo.past_the_peak(short, fit)["beyond"]  # never got there: nothing to read


def test_rl_curve_and_smoothing():
    history = {"kl": [0.0, -0.01, 0.4], "score": [0.1, 0.2, 0.5], "gold": [0.5, 0.6, 0.4], "episodes": [64, 128, 192]}
    curve = oo.rl_curve(history)
    assert curve.d.tolist() == [0.0, 0.0, pytest.approx(math.sqrt(0.4))]  # a negative estimate counts as 0
    assert oo.smoothed([0.0, 3.0, 0.0, 3.0], 3).tolist() == [1.5, 1.0, 2.0, 1.5]


# --- what the reward model overrates ------------------------------------------------------------


def test_overrated_ranks_the_gap_between_judges():
    proxy = [10.0, 0.0, 5.0, 7.0]  # any scale
    gold = [0.0, 1.0, 0.9, 0.5]
    assert oo.overrated(proxy, gold, k=2) == [0, 3]


def test_quiz_has_the_favourite_and_reveals_only_after_a_guess():
    example = Example(prompt="What is 2 plus 2?", response="4", family="arithmetic", meta={})
    answers = [["4", "5", "Sure! 4", "6", "4."], ["a", "a", "a", "a", "a"]]
    proxy = [[0.0, 2.0, -1.0, 0.5, 0.1], [1.0] * 5]
    gold = [[1.0, 0.0, 0.6, 0.0, 0.9], [0.5] * 5]
    quiz = oo.overrated_quiz([example, example], answers, proxy, gold, size=4, seed=1)
    assert quiz is not None and len(quiz.answers) == 4 and len(set(quiz.answers)) == 4
    assert quiz.answers[quiz.favourite - 1] == "5" and "4" in quiz.answers
    assert "stay hidden" in quiz.reveal(None) and "+2.00" not in quiz.reveal(None)
    assert quiz.reveal(quiz.favourite).startswith("Right")
    assert "Not quite" in quiz.reveal(1 if quiz.favourite != 1 else 2)
    assert "from 1 to 4" in quiz.reveal(7)


# --- the stages behind notebook 07 --------------------------------------------------------------


def test_scaled_variants_scale_their_parent_in_both_modes():
    for profile in ("tiny", "gpu"):
        for fast in (False, True):
            ppo = profiles.stage_settings(profile, fast, "ppo")
            long = profiles.stage_settings(profile, fast, "ppo_low_beta_long")
            assert long["total_episodes"] == 2 * ppo["total_episodes"] and long["kl_coef"] == profiles.LOW_BETA
            assert profiles.stage_settings(profile, fast, "ppo_no_kl")["kl_coef"] == 0.0
            assert profiles.stage_settings(profile, fast, "rm_scaled") == profiles.stage_settings(profile, fast, "rm")
            base = profiles.stage_settings(profile, fast, "comparisons")["n_prompts"]
            scaled = profiles.stage_settings(profile, fast, "comparisons_scaled")["n_prompts"]
            assert scaled == (2 * base if profile == "tiny" else base // 2)


def test_the_scaled_reward_model_trains_on_the_scaled_comparisons():
    from helpers import pipeline

    assert pipeline.get_stage("rm_scaled").requires == ("sft", "comparisons_scaled")
    for name in ("ppo_no_kl", "ppo_low_beta_long"):
        assert pipeline.get_stage(name).requires == ("sft", "rm")


# --- the exercises' known bugs ------------------------------------------------------------------

EXERCISES = ("best_of_n_by_proxy", "best_of_n_kl", "fit_rl_form")


@pytest.mark.parametrize("name", EXERCISES)
def test_reference_passes(name):
    assert ex.run_checks(name, ex.get_exercise(name).reference_fn()).ok


@pytest.mark.parametrize("name,bug", [(n, b) for n in EXERCISES for b in ex.get_exercise(n).bugs],
                         ids=lambda v: getattr(getattr(v, "variant", None), "__name__", v))
def test_known_bugs_get_their_hint(name, bug):
    result = ex.run_checks(name, bug.variant)
    assert result.status == "failed" and result.bug is bug, result.hint


@pytest.mark.parametrize("variant,fragment", [
    ("kl", "SQUARE ROOT"),
    ("log_kl", "log is of d"),
    ("sign", "wrong sign"),
])
def test_fit_hints_name_the_three_classic_mistakes(variant, fragment):
    def fit_with_kl(kl, gain):  # written as a student would: KL where d belongs
        x = np.array(kl, dtype=float)
        cols = np.stack([x, -np.where(x > 0, x * np.log(np.maximum(x, 1e-300)), 0.0)], axis=1)
        return tuple(np.linalg.lstsq(cols, np.array(gain), rcond=None)[0])

    def fit_log_kl(kl, gain):
        kl = np.array(kl, dtype=float)
        d = np.sqrt(kl)
        cols = np.stack([d, -d * np.log(np.maximum(kl, 1e-300))], axis=1)
        return tuple(np.linalg.lstsq(cols, np.array(gain), rcond=None)[0])

    def fit_plus(kl, gain):
        d = np.sqrt(np.array(kl, dtype=float))
        cols = np.stack([d, d * np.log(np.maximum(d, 1e-300))], axis=1)
        return tuple(np.linalg.lstsq(cols, np.array(gain), rcond=None)[0])

    student = {"kl": fit_with_kl, "log_kl": fit_log_kl, "sign": fit_plus}[variant]
    result = ex.run_checks("fit_rl_form", student)
    assert not result.ok and fragment in result.hint


def test_a_students_own_correct_fit_passes():
    def normal_equations(kl, gain):
        d = np.sqrt(np.array(kl, dtype=float))
        x = np.stack([d, -d * np.log(np.where(d > 0, d, 1.0))], axis=1)
        a, b = np.linalg.solve(x.T @ x, x.T @ np.array(gain))
        return a, b

    assert ex.run_checks("fit_rl_form", normal_equations).ok
