"""The CPU thread choice and the run-time estimates built on it (helpers.speed), and the runner's
status line (helpers.progress)."""

import io
import json

import pytest
import torch

from helpers import progress, speed


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No thread setting from the environment, an empty cache, nothing applied yet."""
    for name in speed.OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(speed, "_applied", None)
    before = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(before)


def test_candidates_double_up_to_the_usable_cores():
    assert speed.candidates(1) == [1]
    assert speed.candidates(2) == [1, 2]
    assert speed.candidates(6) == [1, 2, 4, 6]
    assert speed.candidates(8) == [1, 2, 4, 8]


def test_fastest_prefers_fewer_threads_unless_more_are_clearly_faster():
    assert speed.fastest({1: 7_500, 2: 12_200}) == 2  # a quiet 2-core machine
    assert speed.fastest({1: 7_800, 2: 4_500}) == 1  # the other core busy
    assert speed.fastest({1: 10_000, 2: 10_400, 4: 10_300}) == 1  # 4% more is not worth a thread
    assert speed.fastest({1: 5_000, 2: 9_000, 4: 9_200}) == 2


def test_a_user_setting_wins_and_bad_values_say_what_to_do(fresh, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert speed.choose() == speed.ThreadChoice(1, "OMP_NUM_THREADS")
    monkeypatch.setenv("COURSE_THREADS", "2")  # the course's own setting comes first
    choice = speed.apply()
    assert choice.threads == 2 and choice.source == "COURSE_THREADS"
    assert torch.get_num_threads() == 2
    assert "set by COURSE_THREADS" in choice.describe()
    for bad in ("abc", "0", "-1"):
        monkeypatch.setenv("COURSE_THREADS", bad)
        with pytest.raises(ValueError, match="COURSE_THREADS"):
            speed.choose()
    assert not (fresh / "cache").exists()  # nothing measured, nothing written


def test_the_measured_choice_is_cached_per_machine(fresh, monkeypatch):
    calls = []

    def fake_measure(counts=None, rounds=speed.ROUNDS):
        calls.append(counts)
        return {1: 7_000.0, 2: 11_000.0}

    monkeypatch.setattr(speed, "measure", fake_measure)
    monkeypatch.setattr(speed, "usable_cores", lambda: 2)
    first = speed.choose(quiet=True)
    assert (first.threads, first.source, first.speed) == (2, "measured", 11_000.0)
    again = speed.choose(quiet=True)
    assert (again.threads, again.source, again.tokens_per_second) == (2, "cached", {1: 7_000.0, 2: 11_000.0})
    assert len(calls) == 1
    assert speed.choose(measure_now=True, quiet=True).source == "measured" and len(calls) == 2
    stored = json.loads(speed.cache_file().read_text())
    assert list(stored) == [speed.machine_key()]

    monkeypatch.setattr(speed, "machine_key", lambda: "another machine")  # e.g. after a reboot
    assert speed.choose(quiet=True).source == "measured" and len(calls) == 3


def test_a_damaged_cache_is_measured_again(fresh, monkeypatch):
    monkeypatch.setattr(speed, "measure", lambda counts=None, rounds=2: {1: 5.0, 2: 4.0})
    monkeypatch.setattr(speed, "usable_cores", lambda: 2)
    speed.cache_file().parent.mkdir(parents=True)
    speed.cache_file().write_text('{"' + speed.machine_key() + '": {"threads": "many"}}')
    assert speed.choose(quiet=True) == speed.ThreadChoice(1, "measured", {1: 5.0, 2: 4.0})
    speed.cache_file().write_text("not json")
    assert speed.choose(quiet=True).source == "measured"


def test_training_speed_times_real_steps_and_restores_the_thread_count(fresh):
    torch.set_num_threads(2)
    tokens_per_second = speed.training_speed(1, steps=1, batch=2, seq=16)
    assert tokens_per_second > 0
    assert torch.get_num_threads() == 2


def test_estimates_scale_with_the_measured_speed(fresh, monkeypatch):
    monkeypatch.setattr(speed, "_applied", speed.ThreadChoice(2, "measured", {1: 6_000.0, 2: 12_000.0}))
    assert speed.training_minutes(12_000 * 60 * 3) == pytest.approx(3.0)
    assert speed.seconds_here(60.0) == pytest.approx(60.0 * speed.REFERENCE_SPEED / 12_000)
    assert speed.describe_minutes(3.2) == "about 3 min on this machine"
    assert speed.describe_minutes(0.4) == "under a minute on this machine"
    assert speed.describe_minutes(None) == ""
    # a stage's estimate: its reference time scaled to this machine; none for the gpu profile
    reference = speed.REFERENCE_SECONDS["tiny"]["rm_epoch"]
    assert speed.estimate("rm_epoch", 4) == speed.describe_minutes(4 * reference * speed.REFERENCE_SPEED / 12_000 / 60)
    assert speed.estimate("rm_epoch", 4, profile="gpu") == ""
    # another size is measured once at the chosen thread count, then read from the cache
    timed = []
    monkeypatch.setattr(speed, "training_speed", lambda threads, model=None, **kw: timed.append(threads) or 3_000.0)
    assert speed.training_minutes(3_000 * 60, "big") == pytest.approx(1.0)
    assert speed.training_minutes(3_000 * 60, "big") == pytest.approx(1.0)
    assert timed == [2]


# --- the runner's status line -----------------------------------------------------------------


def test_bars_report_the_stage_and_its_progress_to_the_runner(tmp_path, monkeypatch):
    status_file = tmp_path / "status.json"
    monkeypatch.setenv(progress.PROGRESS_FILE_ENV, str(status_file))
    with progress.stage("sft"):
        assert progress.read_status(status_file)["desc"] == "training sft"
        for _ in progress.tqdm(range(3), desc="epochs", file=io.StringIO(), mininterval=0):
            pass
        status = progress.read_status(status_file)
    assert (status["stage"], status["desc"], status["n"], status["total"]) == ("sft", "epochs", 3, 3)
    assert progress.format_status(status).startswith("training sft: epochs 3/3")
    assert progress.format_status({"stage": "base", "desc": "pretraining", "n": 10, "total": 100,
                                   "seconds_left": 300}) == "training base: pretraining 10/100, 5 min left"
    assert progress.format_status(None) == ""


def test_bars_write_nothing_when_no_runner_watches(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.PROGRESS_FILE_ENV, raising=False)
    for _ in progress.tqdm(range(3), file=io.StringIO(), mininterval=0):
        pass
    assert list(tmp_path.iterdir()) == []
