import math
"""Recording key figures: returned unchanged, kept in process, merged atomically into a JSON file."""

import json
import threading

import pytest
import torch

from helpers import results


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr(results, "_recorded", {})
    monkeypatch.setattr(results, "_formats", {})
    monkeypatch.delenv(results.RESULTS_FILE_ENV, raising=False)


def test_record_returns_the_value_and_remembers_it_without_a_file(tmp_path):
    loss = torch.tensor(1.25)
    assert results.record("sft/final_loss", loss) is loss
    assert results.record("sft/win_rate", 0.7, fmt="{:.0%}") == 0.7
    assert results.recorded() == {"sft/final_loss": 1.25, "sft/win_rate": 0.7}
    assert list(tmp_path.iterdir()) == []


def test_record_merges_into_the_results_file(tmp_path, monkeypatch):
    path = tmp_path / "run" / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"base/loss": 3.0}))
    monkeypatch.setenv(results.RESULTS_FILE_ENV, str(path))
    results.record("sft/win_rate", 0.71, fmt="{:.0%}")
    results.record("rm/accuracy", torch.tensor(0.66))
    results.record("ppo/kl", float("nan"))
    results.record("sft/win_rate", 0.73, fmt="{:.0%}")  # a later value replaces the earlier one
    data = json.loads(path.read_text())
    assert data["base/loss"] == 3.0  # kept: merged, not overwritten
    assert data["sft/win_rate"] == 0.73
    assert data["rm/accuracy"] == pytest.approx(0.66)
    assert data["ppo/kl"] == "nan"
    assert data["_formats"] == {"sft/win_rate": "{:.0%}"}
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]  # no temporary files left


def test_file_is_created_with_its_folder(tmp_path, monkeypatch):
    path = tmp_path / "new" / "dir" / "results.json"
    monkeypatch.setenv(results.RESULTS_FILE_ENV, str(path))
    results.record("n_params", 1_234_567)
    assert results.load(path) == {"n_params": 1234567}


def test_concurrent_writers_lose_nothing(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    monkeypatch.setenv(results.RESULTS_FILE_ENV, str(path))
    threads = [threading.Thread(target=lambda i=i: [results.record(f"k{i}_{j}", j) for j in range(10)])
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results.load(path)) == 40


def test_summary_lines_format_and_align(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    monkeypatch.setenv(results.RESULTS_FILE_ENV, str(path))
    results.record("sft/win_rate_vs_base", 0.714, fmt="{:.0%}")
    results.record("rm/acc", 0.6612345)
    lines = results.summary_lines(path)
    assert lines == ["rm/acc" + " " * 16 + "0.6612", "sft/win_rate_vs_base  71%"]
    assert results.summary_lines() == lines  # the same from this process's record


def test_reserved_name_and_bad_format():
    with pytest.raises(ValueError):
        results.record("_formats", 1)
    with pytest.raises(ValueError):
        results.record("x", "text", fmt="{:.2f}")


def test_a_nan_with_a_number_format_is_recorded_and_shown_as_nan(tmp_path, monkeypatch):
    # e.g. "share of the tax removed" when a fast-mode run has no tax to remove
    monkeypatch.setenv(results.RESULTS_FILE_ENV, str(tmp_path / "results.json"))
    assert math.isnan(results.record("tax/removed", float("nan"), ".0%"))
    assert results.recorded()["tax/removed"] == "nan"
    assert results.format_value("nan", "{:.0%}") == "nan"
    with pytest.raises(ValueError):  # a real mistake in the format is still caught at once
        results.record("tax/removed", 0.5, ".0q")
