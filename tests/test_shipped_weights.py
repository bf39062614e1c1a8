"""The bigger base model's shipped weights: used only when they fit, checked by checksum, and the
ones in the repository fit the course as a student runs it."""

import json
import shutil

import pytest
import torch

from helpers import config, pipeline, shipped_weights, stages
from tests.conftest import use_fast_tiny


@pytest.fixture
def shipped_folder(tmp_path, monkeypatch):
    """Shipped weights looked for in a folder of this test, never the repository's."""
    root = tmp_path / "shipped"
    monkeypatch.setattr(shipped_weights, "folder", lambda stage, profile=None: root / stage)
    return root


def _first_logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("The capital of Norvale is", return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits[0, -1].float()


def test_base_big_loads_the_shipped_weights_only_when_they_fit(course_env, shipped_folder, one_thread, capsys):
    trained = pipeline.load_or_train("base_big")
    manifest = shipped_weights.export("base_big", trained.path, shipped_folder / "base_big", "test")
    assert manifest["settings"]["steps"] == trained.info["settings"]["steps"]
    with (shipped_folder / "base_big" / "config.json").open() as handle:
        assert json.load(handle)["dtype"] == "float16"  # half precision: half the bytes in git

    # The cache forgets base_big: the stage now loads the shipped copy instead of pretraining.
    shutil.rmtree(trained.path)
    capsys.readouterr()
    shipped = pipeline.load_or_train("base_big")
    assert "loading the pretrained weights the course ships" in capsys.readouterr().out
    assert shipped.metrics["shipped"] is True
    # Only half-precision rounding apart from the model it was exported from.
    assert shipped.metrics["heldout_loss"] == pytest.approx(trained.metrics["heldout_loss"], abs=0.02)
    assert torch.allclose(_first_logits(shipped.model, shipped.tokenizer),
                          _first_logits(trained.model, trained.tokenizer), atol=0.05)
    assert shipped.model.dtype == torch.float32  # later stages fine-tune it

    settings = shipped.info["settings"]
    found, why = shipped_weights.find("base_big", settings, shipped.tokenizer)
    assert found == shipped_folder / "base_big" and why == ""
    found, why = shipped_weights.find("base_big", {**settings, "steps": settings["steps"] + 1}, shipped.tokenizer)
    assert found is None and "other settings (steps)" in why


def test_shipped_weights_for_another_tokenizer_or_damaged_are_not_used(course_env, shipped_folder, one_thread,
                                                                       small_tokenizer, capsys):
    trained = pipeline.load_or_train("base_big")
    where = shipped_folder / "base_big"
    shipped_weights.export("base_big", trained.path, where, "test")
    settings = trained.info["settings"]
    found, why = shipped_weights.find("base_big", settings, small_tokenizer)
    assert found is None and "another tokenizer" in why

    weights = where / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last weight
    weights.write_bytes(bytes(data))
    found, why = shipped_weights.find("base_big", settings, trained.tokenizer)
    assert found is None and "SHA-256 differs" in why
    assert any("SHA-256 differs" in problem for problem in shipped_weights.verify_folder(where))

    # The stage trains instead, and says why.
    shutil.rmtree(trained.path)
    capsys.readouterr()
    again = pipeline.load_or_train("base_big")
    out = capsys.readouterr().out
    assert "not using the shipped weights" in out and "SHA-256 differs" in out
    assert "shipped" not in again.metrics


def test_the_repositorys_shipped_big_base_fits_the_course(tmp_path, monkeypatch, one_thread):
    """What a student gets: the shipped weights pass their checksums, load, and were made with the
    full-mode settings of base_big and the tokenizer the course trains, so no student pretrains the
    big model by accident (a change to the world's text or to the stage's settings fails here, and
    ``python -m helpers.shipped_weights rebuild base_big`` makes new ones)."""
    where = config.DATA_DIR / "tiny" / "shipped" / "base_big"
    manifest = json.loads((where / shipped_weights.MANIFEST).read_text())
    assert shipped_weights.verify_folder(where) == []

    use_fast_tiny(monkeypatch, tmp_path / "artifacts")
    monkeypatch.setenv("COURSE_FAST", "")  # full mode: the settings a student's run asks for
    run = config.settings()
    tokenizer = pipeline.load_or_train("tokenizer")  # seconds, also in full mode
    wanted = stages.wanted_settings(pipeline.get_stage("base_big"), run, {"tokenizer": tokenizer}, {})
    found, why = shipped_weights.find("base_big", wanted, tokenizer.tokenizer)
    assert found == where, why
    assert manifest["metrics"]["heldout_loss"] < 2.0
