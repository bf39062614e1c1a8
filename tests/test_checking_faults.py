"""Exercise checks facing a function that never returns, or one that changes its arguments.

Before the fix, `check` waited forever on an infinite loop, and noticed an argument changed in
place only when it was a tensor (a list, a dict or a ranking inside a list went unnoticed).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import signal
import threading
import time

import pytest
import torch

from helpers import exercises as ex
from helpers.exercises import checking
from helpers.labelers import pairwise_agreement, preference_pairs

# How long the "infinite" loops below really run: long enough to outlast every time limit used
# here, short enough that a check without a limit (before the fix) fails in seconds, not never.
LOOP_SECONDS = 3.0


def looping(calls):
    """A student's function with a loop whose condition never changes (bounded, see above)."""
    def next_token_loss(logits, input_ids, attention_mask):
        calls.append(1)
        total, i, start = 0.0, 0, time.monotonic()
        while i < 10:  # forgot `i += 1`
            total += 1.0
            if time.monotonic() - start > LOOP_SECONDS:
                return torch.tensor(total)
        return torch.tensor(total)
    return next_token_loss


# --- a function that never returns ---------------------------------------------------------------


def test_a_function_that_never_returns_is_stopped_and_named(capsys):
    calls = []
    started = time.monotonic()
    returned = ex.check("next_token_loss", looping(calls), time_limit=0.5)
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    assert returned is ex.get_exercise("next_token_loss").reference_fn()  # the notebook goes on
    assert "✘ next_token_loss" in out
    assert "your function did not return within 0.5 s (an infinite loop?)" in out
    assert "(it was at line " in out  # where the loop was when it was stopped
    assert "a loop that never ends" in out and "Traceback" not in out
    # Stopped after the first case: the limit is not waited out again on every other case.
    assert calls == [1] and elapsed < LOOP_SECONDS


def test_the_default_limit_is_ten_seconds_and_configurable(monkeypatch):
    assert checking.TIME_LIMIT == 10.0
    monkeypatch.setattr(checking, "TIME_LIMIT", 1.0)
    result = ex.run_checks("next_token_loss", looping([]))
    assert "did not return within 1 s (an infinite loop?)" in result.failure


def test_catching_exceptions_in_the_loop_does_not_hide_it():
    def stubborn(logits, input_ids, attention_mask):
        start = time.monotonic()
        while time.monotonic() - start < LOOP_SECONDS:
            try:
                time.sleep(0.01)
            except Exception:  # noqa: BLE001 - what a student might write
                pass
        return torch.tensor(0.0)

    result = ex.run_checks("next_token_loss", stubborn, time_limit=0.3)
    assert result.status == "failed" and "did not return within 0.3 s" in result.failure


def test_a_slow_function_within_the_limit_passes_and_no_alarm_is_left_behind():
    reference = ex.get_exercise("next_token_loss").reference_fn()

    def slow_but_right(*args):
        time.sleep(0.05)
        return reference(*args)

    handler_before = signal.getsignal(signal.SIGALRM)
    assert ex.run_checks("next_token_loss", slow_but_right, time_limit=1.0).ok
    time.sleep(1.2)  # a timer left armed would fire now and fail or kill this test
    assert signal.getsignal(signal.SIGALRM) is handler_before


def test_another_alarm_is_served_on_time_and_restored():
    """pytest-timeout (and other code) may have an alarm of its own running: it still fires on
    time during a check, and is running again with its handler afterwards."""
    saved_handler = signal.getsignal(signal.SIGALRM)
    saved_timer = signal.getitimer(signal.ITIMER_REAL)
    fired = []

    def outer(signum, frame):
        fired.append(time.monotonic())

    signal.signal(signal.SIGALRM, outer)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)  # due during the check
        start = time.monotonic()
        result = ex.run_checks("next_token_loss", looping([]), time_limit=0.8)
        assert len(fired) == 1 and fired[0] - start < 0.7
        assert "did not return within 0.8 s" in result.failure
        assert signal.getsignal(signal.SIGALRM) is outer

        signal.setitimer(signal.ITIMER_REAL, 30.0)  # due long after the check
        ex.run_checks("next_token_loss", looping([]), time_limit=0.3)
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 25.0 < remaining <= 30.0 and signal.getsignal(signal.SIGALRM) is outer
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, saved_handler)
        if saved_timer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *saved_timer)


def test_off_the_main_thread_the_limit_still_holds():
    """Where no timer signal can be used (a thread, Windows), the case runs in a helper thread
    that is given up on after the limit."""
    stop = threading.Event()

    def until_stopped(logits, input_ids, attention_mask):
        while not stop.is_set():
            time.sleep(0.01)
        return torch.tensor(0.0)

    results = []
    worker = threading.Thread(target=lambda: results.append(
        ex.run_checks("next_token_loss", until_stopped, time_limit=0.3)))
    worker.start()
    worker.join(timeout=LOOP_SECONDS * 3)
    stop.set()
    assert not worker.is_alive() and len(results) == 1
    assert "did not return within 0.3 s (an infinite loop?)" in results[0].failure
    assert "still running in the background" in results[0].failure


# --- a function that changes its arguments ----------------------------------------------------


def test_a_list_changed_in_place_is_named(capsys):
    def consuming_pairs(ranks):  # right pairs, but the caller's list is emptied on the way
        out = []
        while ranks:
            j, r_j = len(ranks) - 1, ranks.pop()
            for i, r_i in enumerate(ranks):
                if r_i < r_j:
                    out.append((i, j))
                elif r_j < r_i:
                    out.append((j, i))
        return out

    returned = ex.check("preference_pairs", consuming_pairs)
    out = capsys.readouterr().out
    assert returned is preference_pairs
    assert "your function changed its input `ranks` in place" in out
    result = ex.run_checks("preference_pairs", consuming_pairs)
    assert "changed its input `ranks` in place" in result.hint and "ranks.sort()" in result.hint


def test_a_ranking_changed_inside_a_list_is_named():
    def agreement_that_sorts(rankings_a, rankings_b):
        value = pairwise_agreement(rankings_a, rankings_b)
        for ranking in rankings_b:
            ranking.ranks.sort()  # meant to look at the order; sorts the caller's ranking
        return value

    result = ex.run_checks("pairwise_agreement", agreement_that_sorts)
    assert result.status == "failed"
    assert "changed its input `rankings_b` in place" in result.failure
    assert "changed its input `rankings_b` in place" in result.hint


def _reference_total(counts):
    return float(sum(counts.values()))


def test_a_dict_changed_in_place_is_named():
    ex.register(ex.Exercise(
        name="_test_total", reference=f"{__name__}:_reference_total",
        cases=[ex.Case("three counts", lambda: {"counts": {"a": 1, "b": 2, "c": 4}})],
        hints=["add the values"], difficulty=1, importance=1, minutes=2))
    try:
        def popping_total(counts):
            total = 0.0
            while counts:
                total += counts.popitem()[1]
            return total

        assert ex.run_checks("_test_total", _reference_total).ok
        result = ex.run_checks("_test_total", popping_total)
        assert "changed its input `counts` in place" in result.failure
        assert "dict(counts)" in result.hint
    finally:
        del ex.EXERCISES["_test_total"]


def test_a_tensor_changed_in_place_is_still_named():
    reference = ex.get_exercise("next_token_loss").reference_fn()

    def clearing(logits, input_ids, attention_mask):
        loss = reference(logits, input_ids, attention_mask)
        attention_mask.zero_()  # "done with it"
        return loss

    result = ex.run_checks("next_token_loss", clearing)
    assert "changed its input `attention_mask` in place" in result.failure
    assert "attention_mask.clone()" in result.hint


@pytest.mark.parametrize("name", ["sample_with_temperature", "preference_pairs", "pairwise_agreement"])
def test_references_change_nothing_and_generators_may_advance(name):
    """The references pass: a torch.Generator argument is meant to advance, and is not counted."""
    assert ex.run_checks(name, ex.get_exercise(name).reference_fn()).ok
