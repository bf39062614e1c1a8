"""load_or_train: cache reuse only with equal settings, atomic writes, corrupt artifacts rebuilt."""

import json
import shutil

import pytest

from helpers import pipeline, profiles, stages
from helpers.config import settings
from helpers.hub import HubUnavailableError
from helpers.pipeline import load_or_train, register_stage


pytestmark = pytest.mark.usefixtures("course_env")


@pytest.fixture
def built(prebuilt, course_env):
    """The prebuilt tokenizer and base, copied into this test's artifact folder."""
    shutil.copytree(prebuilt, course_env)
    return course_env


def test_trains_once_then_loads(capsys):
    base = load_or_train("base")
    out = capsys.readouterr().out
    assert "training tokenizer" in out and "training base" in out
    assert base.path == settings().stage_dir("base") and base.path.name == "base"
    assert base.model is not None and base.tokenizer is not None
    s = base.info["settings"]
    assert (s["profile"], s["fast"], s["code_version"]) == ("tiny", True, pipeline.STAGES["base"].version)
    tokenizer = load_or_train("tokenizer")
    assert tokenizer.model is None
    assert s["requires"] == {"tokenizer": tokenizer.build_id}
    assert base.metrics["heldout_loss"] > 0 and base.history["train_loss"]
    capsys.readouterr()

    again = load_or_train("base")
    out = capsys.readouterr().out
    assert "loading base from" in out and "training" not in out
    assert again.build_id == base.build_id
    # a complete save_pretrained folder: the libraries load it from its path
    from transformers import AutoModelForCausalLM, AutoTokenizer
    AutoModelForCausalLM.from_pretrained(again.path)
    assert AutoTokenizer.from_pretrained(again.path).pad_token == "<|pad|>"


def test_changed_settings_rebuild_and_say_why(capsys, built):
    first = load_or_train("base")
    default_steps = first.info["settings"]["steps"]
    capsys.readouterr()
    changed = load_or_train("base", steps=default_steps // 2)
    assert f"settings changed: steps {default_steps} -> {default_steps // 2}; retraining base" in capsys.readouterr().out
    assert changed.build_id != first.build_id
    assert changed.info["settings"]["steps"] == default_steps // 2
    assert len(changed.history["train_loss"]) == default_steps // 2
    load_or_train("base", steps=default_steps // 2)
    assert "loading base" in capsys.readouterr().out


def test_new_code_version_rebuilds(capsys, monkeypatch, built):
    load_or_train("base")
    monkeypatch.setattr(pipeline.STAGES["base"], "version", "test-next")
    capsys.readouterr()
    load_or_train("base")
    assert "code_version" in capsys.readouterr().out


def test_rebuilt_prerequisite_rebuilds_dependents(capsys, built):
    base = load_or_train("base")
    load_or_train("tokenizer", vocab_size=300)  # the tokenizer is replaced ...
    capsys.readouterr()
    rebuilt = load_or_train("base")  # ... so base retrains the default tokenizer and itself
    out = capsys.readouterr().out
    assert "retraining tokenizer" in out
    assert "tokenizer was rebuilt; retraining base" in out
    assert rebuilt.info["settings"]["requires"]["tokenizer"] != base.info["settings"]["requires"]["tokenizer"]


def test_failed_training_leaves_nothing_behind(monkeypatch, course_env):
    target = settings().stage_dir("base")
    real_train = pipeline.STAGES["base"].train_fn

    def crashes_halfway(config, inputs, out_dir):
        (out_dir / "model.safetensors").write_bytes(b"half a model")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(pipeline.STAGES["base"], "train_fn", crashes_halfway)
    with pytest.raises(RuntimeError, match="interrupted"):
        load_or_train("base")
    assert not target.exists()
    assert not list(target.parent.glob(".base.partial-*"))

    monkeypatch.setattr(pipeline.STAGES["base"], "train_fn", real_train)
    good = load_or_train("base")
    assert good.model is not None

    # a failed rebuild keeps the previous, complete artifact
    monkeypatch.setattr(pipeline.STAGES["base"], "train_fn", crashes_halfway)
    with pytest.raises(RuntimeError):
        load_or_train("base", steps=3)
    assert json.loads((target / "stage.json").read_text())["build_id"] == good.build_id


def test_corrupt_artifacts_are_rebuilt(capsys, built):
    base = load_or_train("base")
    (base.path / "stage.json").unlink()
    capsys.readouterr()
    rebuilt = load_or_train("base")
    assert "incomplete or corrupt" in capsys.readouterr().out
    assert rebuilt.model is not None

    (rebuilt.path / "model.safetensors").write_bytes(b"not a model")
    again = load_or_train("base")
    out = capsys.readouterr().out
    assert "is corrupt" in out and "retraining base" in out
    assert again.build_id != rebuilt.build_id

    (again.path / "stage.json").write_text("{not json")
    load_or_train("base")
    assert "incomplete or corrupt" in capsys.readouterr().out


def test_leftovers_of_a_killed_run_are_cleaned(course_env):
    parent = settings().stage_dir("tokenizer").parent
    leftover = parent / ".tokenizer.partial-deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "tokenizer.json").write_text("{")
    load_or_train("tokenizer")
    assert not leftover.exists()


def test_unknown_names_are_explained():
    with pytest.raises(TypeError, match="no setting"):
        load_or_train("base", stepz=3)
    with pytest.raises(KeyError, match="Unknown stage"):
        load_or_train("no-such-stage")


def test_registered_stage_gets_its_prerequisites(capsys, built):
    seen = {}

    def train(config, inputs, out_dir):
        seen["vocab"] = len(inputs["tokenizer"].tokenizer)
        (out_dir / "answer.txt").write_text(str(config["answer"]))
        return {"answer": config["answer"]}

    def load(path, info):
        return int((path / "answer.txt").read_text()), None

    register_stage("toy", lambda run: {"answer": 42}, train, load, requires=["tokenizer"],
                   estimate_fn=lambda config, run: "an instant")
    try:
        art = load_or_train("toy")
        assert "training toy (an instant)" in capsys.readouterr().out
        assert art.model == 42 and art.metrics == {"answer": 42} and seen["vocab"] > 256
        assert load_or_train("toy", answer=7).model == 7
    finally:
        pipeline.STAGES.pop("toy", None)


def test_gpu_profile_offline_says_to_use_tiny(monkeypatch, course_env):
    monkeypatch.setenv("COURSE_PROFILE", "gpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # a name no cache holds, so the test never depends on what was downloaded before
    for stage in ("tokenizer", "base"):  # the tokenizer is the base model's
        monkeypatch.setitem(profiles.GPU.stages, stage, {"hub_model": "course-tests/not-a-cached-model"})
    with pytest.raises(HubUnavailableError, match="COURSE_PROFILE=tiny") as err:
        load_or_train("base")
    assert "course-tests/not-a-cached-model" in str(err.value)
    assert not settings().stage_dir("tokenizer").exists()


def test_keep_trained_stores_a_model_trained_elsewhere(capsys, built):
    trained = {"n": 0}

    def train(config, inputs, out_dir):
        trained["n"] += 1
        (out_dir / "answer.txt").write_text(str(config["answer"]))
        return {"answer": config["answer"]}

    def load(path, info):
        return int((path / "answer.txt").read_text()), None

    def save(folder):  # what a notebook does with a model it trained itself
        (folder / "answer.txt").write_text("41")
        return {"answer": 41}

    register_stage("toy", lambda run: {"answer": 42}, train, load, requires=["tokenizer"])
    try:
        # other settings than the stage's: nothing is written
        assert pipeline.keep_trained("toy", save, {"answer": 7}) is False
        assert "answer 42 -> 7" in capsys.readouterr().out
        assert not stages.current_settings().stage_dir("toy").exists()
        # the stage's settings: kept, and load_or_train loads it without training
        assert pipeline.keep_trained("toy", save, {"answer": 42}) is True
        art = load_or_train("toy")
        assert (art.model, art.metrics, trained["n"]) == (41, {"answer": 41}, 0)
        # an up-to-date artifact is left alone
        assert pipeline.keep_trained("toy", lambda folder: 1 / 0, {"answer": 42}) is False
        assert load_or_train("toy").model == 41
        # other settings asked of load_or_train still train
        assert load_or_train("toy", answer=5).model == 5 and trained["n"] == 1
    finally:
        pipeline.STAGES.pop("toy", None)


def test_is_trained_says_whether_load_or_train_would_only_load(capsys, built):
    assert pipeline.is_trained("base")  # the prebuilt copy, up to date
    assert not pipeline.is_trained("sft")
    load_or_train("sft")
    assert pipeline.is_trained("sft")
    capsys.readouterr()
    assert pipeline.is_trained("sft")
    assert "training" not in capsys.readouterr().out  # asking trains nothing
    # A prerequisite rebuilt with other settings makes the stage out of date too.
    load_or_train("base", steps=3)
    assert not pipeline.is_trained("base") and not pipeline.is_trained("sft")
