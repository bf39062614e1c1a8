"""Faults of the artifact cache and of the settings, and what the course does about them.

1. Same seed, same model: a stage is seeded right before it trains, so whatever the process did
   before (its random state) does not change the weights.
2. A read-only artifact folder (an instructor's shared one) is only read: a complete stage loads
   and nothing is written there; a missing or stale stage is trained into a writable folder, and
   the message names it.
3. A process killed while it replaced an artifact leaves the old one aside: it is swept up, or
   put back when no artifact is left.
4. Damage that keeps a file's size (flipped bytes, NaN weights) is caught by the checksums in
   stage.json; a garbled history.json gives None and a warning; a stage.json with wrong types is
   corrupt. Artifacts made before the checksums still load.
5. Settings no run can use are refused with a message naming them, before anything trains; a
   model whose weights went NaN is never stored.

Training here uses one thread: on a busy 2-core machine torch with two threads is many times
slower than with one.
"""

import json
import math
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import config, pipeline, profiles, stages
from helpers.config import settings
from helpers.pipeline import load_or_train, register_stage
from helpers.pretrain import PretrainConfig, pretrain
from helpers.stages import read_info

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread", "course_env")


def copy_stages(prebuilt: Path, *names: str) -> Path:
    """The prebuilt stages ``names`` copied into this test's artifact folder; returns the
    folder of the stages (``.../tiny-fast``)."""
    folder = settings().stage_dir("tokenizer").parent
    for name in names:
        shutil.copytree(prebuilt / folder.name / name, folder / name)
    return folder


def leftovers(folder: Path, stage: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(f".{stage}.") and not p.name.endswith(".lock"))


@pytest.fixture
def toy_stage():
    """A stage "toy" (needs the tokenizer) whose model is a number in a file: instant to train."""
    def train(config, inputs, out_dir):
        (out_dir / "answer.txt").write_text(str(config["answer"]))
        return {"answer": config["answer"]}

    def load(path, info):
        return int((path / "answer.txt").read_text()), None

    register_stage("toy", lambda run: {"answer": 42, "learning_rate": 0.1}, train, load,
                   requires=["tokenizer"])
    yield pipeline.STAGES["toy"]
    pipeline.STAGES.pop("toy", None)


# =============================================================================================
# 1. Same seed, same model
# =============================================================================================


def test_same_seed_same_base_whatever_the_random_state_before(prebuilt, tmp_path, monkeypatch):
    """Regression: the base model was built (its weights drawn) before the stage seeded, so two
    processes with the same seed trained different models."""
    runs = []
    for n in (1, 2):
        monkeypatch.setenv("COURSE_ARTIFACTS", str(tmp_path / f"run{n}"))
        copy_stages(prebuilt, "tokenizer")
        torch.manual_seed(n)  # what a notebook did before: sampled, trained, seeded otherwise
        random.seed(n)
        np.random.seed(n)
        runs.append(load_or_train("base"))
    a, b = (load_file(str(art.path / "model.safetensors")) for art in runs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].metrics["heldout_loss"] == runs[1].metrics["heldout_loss"]


def test_the_seed_setting_is_the_one_used(prebuilt, course_env):
    folder = copy_stages(prebuilt, "tokenizer", "base")
    default = load_file(str(folder / "base" / "model.safetensors"))
    reseeded = load_file(str(load_or_train("base", seed=1).path / "model.safetensors"))
    assert not all(torch.equal(default[k], reseeded[k]) for k in default)


# =============================================================================================
# 2. A read-only artifact folder
# =============================================================================================


def snapshot(folder: Path) -> dict:
    """Every file and folder under ``folder`` with its size and modification time."""
    found = {}
    for path in [folder, *folder.rglob("*")]:
        info = path.lstat()
        found[path.relative_to(folder).as_posix()] = (info.st_size if path.is_file() else None,
                                                      info.st_mtime_ns)
    return found


def _chmod_tree(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~bits)


@pytest.fixture(params=["os.access says no", "the lock file cannot be created"])
def shared(request, prebuilt, tmp_path, monkeypatch):
    """A complete artifact folder (tokenizer and base) that this process may only read, and
    ``mine``, the writable folder the cache falls back to.

    The folder is chmod'ed read-only, which is what stops a student's writes. Tests run as root,
    which chmod does not stop, so the refusal a student meets is simulated too: either os.access
    says the folder is not writable (what it answers a student), or creating the lock file
    raises PermissionError (a folder whose mode bits allow writes that are refused all the same,
    e.g. by an ACL). Since root *could* write, the tests check that nothing was written."""
    root = tmp_path / "shared"
    shutil.copytree(prebuilt, root)
    mine = tmp_path / "mine"
    monkeypatch.setenv("COURSE_ARTIFACTS", str(root))
    monkeypatch.setattr(stages, "_fallback_roots", lambda: [mine], raising=False)
    inside = str(root)

    if request.param == "os.access says no":
        real_access = os.access

        def access(path, mode, *args, **kwargs):
            if str(path).startswith(inside) and mode & os.W_OK:
                return False
            return real_access(path, mode, *args, **kwargs)

        monkeypatch.setattr(stages.os, "access", access)
    else:
        import builtins

        def refusing_open(file, mode="r", *args, **kwargs):
            if str(file).startswith(inside) and any(c in mode for c in "wax+"):
                raise PermissionError(13, "Permission denied", str(file))
            return builtins.open(file, mode, *args, **kwargs)

        monkeypatch.setattr(stages, "open", refusing_open, raising=False)
    _chmod_tree(root, writable=False)
    yield root, mine
    _chmod_tree(root, writable=True)  # so that pytest can delete it


def test_a_read_only_folder_loads_and_writes_nothing(shared, capsys):
    """Regression: a read-only artifact folder raised PermissionError on the stage lock file."""
    root, mine = shared
    before = snapshot(root)
    base = load_or_train("base")
    out = capsys.readouterr().out
    assert f"loading base from {root}" in out and "training" not in out and "read-only" not in out
    assert base.model is not None and base.path.is_relative_to(root)
    assert snapshot(root) == before
    assert not mine.exists()


def test_a_read_only_folder_trains_what_it_lacks_elsewhere_and_says_where(shared, toy_stage, capsys):
    root, mine = shared
    before = snapshot(root)

    stale = load_or_train("base", steps=3)  # the shared base has other settings
    out = capsys.readouterr().out
    assert "is read-only and its base cannot be used (settings changed: steps 12 -> 3)" in out
    assert f"base is kept in {mine / 'tiny-fast'} instead" in out and "training base" in out
    assert stale.path == mine / "tiny-fast" / "base" and stale.info["settings"]["steps"] == 3

    toy = load_or_train("toy")  # a stage the shared folder does not have at all
    out = capsys.readouterr().out
    assert f"is read-only and it has no toy: toy is kept in {mine / 'tiny-fast'} instead" in out
    assert toy.model == 42 and toy.path.is_relative_to(mine)
    assert toy.info["settings"]["requires"]["tokenizer"] == read_info(root / "tiny-fast" / "tokenizer")["build_id"]

    again = load_or_train("toy")  # from now on, loaded from the writable folder
    assert f"loading toy from {mine}" in capsys.readouterr().out and again.build_id == toy.build_id
    assert pipeline.keep_trained("toy", lambda folder: 1 / 0, {"answer": 42}) is False  # up to date there
    assert snapshot(root) == before


def test_no_writable_folder_at_all_is_a_clear_message(shared, monkeypatch):
    monkeypatch.setattr(stages, "_fallback_roots", lambda: [Path(os.devnull) / "artifacts"], raising=False)
    with pytest.raises(PermissionError, match="is read-only and its base cannot be used .* "
                                              "set COURSE_ARTIFACTS to a folder you can write to"):
        load_or_train("base", steps=3)


# =============================================================================================
# 3. A process killed while it replaced an artifact
# =============================================================================================


def test_leftovers_of_a_killed_swap_are_swept_when_the_stage_loads(prebuilt, course_env, capsys):
    folder = copy_stages(prebuilt, "tokenizer", "base")
    shutil.copytree(folder / "base", folder / ".base.old-deadbeef")  # not yet deleted
    (folder / ".base.partial-cafebabe").mkdir()  # a build killed mid-training
    (folder / ".base.partial-cafebabe" / "model.safetensors").write_bytes(b"half a model")
    (folder / ".base.1234.tmp").write_text("{")
    shutil.copytree(folder / "base", folder / ".sft.old-0badf00d")  # another stage's: swept on its turn
    capsys.readouterr()

    base = load_or_train("base")
    out = capsys.readouterr().out
    assert "loading base from" in out and "training" not in out
    assert leftovers(folder, "base") == []
    assert base.build_id == read_info(prebuilt / folder.name / "base")["build_id"]
    assert leftovers(folder, "sft") == [".sft.old-0badf00d"]


def test_killed_between_the_two_renames_the_old_artifact_is_put_back(prebuilt, course_env, capsys):
    """The swap renames the old artifact aside, then the new one into place: killed in between,
    there is no artifact, only the old one under its temporary name (and a complete new one)."""
    folder = copy_stages(prebuilt, "tokenizer", "base")
    built = read_info(folder / "base")["build_id"]
    (folder / "base").rename(folder / ".base.old-deadbeef")
    shutil.copytree(folder / ".base.old-deadbeef", folder / ".base.partial-cafebabe")
    capsys.readouterr()

    base = load_or_train("base")
    out = capsys.readouterr().out
    assert "restored base" in out and "loading base from" in out and "training" not in out
    assert base.build_id == built and leftovers(folder, "base") == []


@pytest.mark.parametrize("damage", ["no stage.json", "weights cut short"])
def test_an_incomplete_old_artifact_is_not_put_back(damage, prebuilt, course_env, capsys):
    folder = copy_stages(prebuilt, "tokenizer", "base")
    old = folder / ".base.old-deadbeef"
    (folder / "base").rename(old)
    if damage == "no stage.json":
        (old / "stage.json").unlink()
    else:
        (old / "model.safetensors").write_bytes((old / "model.safetensors").read_bytes()[:1000])
    capsys.readouterr()

    load_or_train("base")
    out = capsys.readouterr().out
    assert "restored" not in out and "training base" in out
    assert leftovers(folder, "base") == []


KILL_AT = {
    # After the old artifact was renamed aside, before the new one is renamed into place.
    "between the renames": ("pathlib.Path.rename", "'.old-' in str(args[1])", "after"),
    # While the old artifact is being deleted, after the new one is in place.
    "deleting the old one": ("shutil.rmtree", "'.old-' in str(args[0])", "before"),
}


@pytest.mark.parametrize("moment", list(KILL_AT))
def test_kill_9_during_the_swap(moment, prebuilt, course_env, capsys):
    """A real SIGKILL at the two dangerous moments of replacing an artifact (the child process
    kills itself there: no code runs on the way out), then load_or_train in this process."""
    folder = copy_stages(prebuilt, "tokenizer", "base")
    function, condition, when = KILL_AT[moment]
    module, name = function.rsplit(".", 1)
    script = textwrap.dedent(f"""
        import os, signal, pathlib, shutil
        from helpers.pipeline import load_or_train

        owner = {module}
        real = getattr(owner, {name!r})

        def dying(*args, **kwargs):
            if {when!r} == "after":
                result = real(*args, **kwargs)
            if {condition}:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs) if {when!r} == "before" else result

        setattr(owner, {name!r}, dying)
        load_or_train("base", steps=3)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    child = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert len(list(folder.glob(".base.old-*"))) == 1
    assert (folder / "base").exists() == (moment == "deleting the old one")
    capsys.readouterr()

    wanted_steps = 12 if moment == "between the renames" else 3  # what each state still holds
    base = load_or_train("base", steps=wanted_steps)
    out = capsys.readouterr().out
    assert "loading base from" in out and "training" not in out
    assert base.info["settings"]["steps"] == wanted_steps
    assert leftovers(folder, "base") == []


# =============================================================================================
# 4. Damage that keeps the size; garbled JSON
# =============================================================================================


def _flip_bytes(file: Path) -> None:
    data = bytearray(file.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    file.write_bytes(bytes(data))


def _nan_weights(file: Path) -> None:
    """Overwrite the first 16 values of the first tensor with NaN, in place (same size)."""
    data = bytearray(file.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")  # after the JSON header
    data[start:start + 64] = np.full(16, np.nan, dtype=np.float32).tobytes()
    file.write_bytes(bytes(data))
    assert any(torch.isnan(t).any() for t in load_file(str(file)).values())  # loads, silently NaN


SAME_SIZE_DAMAGE = {
    "weights with flipped bytes": ("model.safetensors", _flip_bytes),
    "NaN weights": ("model.safetensors", _nan_weights),
    "history garbled": ("history.json", lambda f: f.write_text("x" * f.stat().st_size)),
    "tokenizer garbled": ("tokenizer.json", _flip_bytes),
}


@pytest.mark.parametrize("kind", list(SAME_SIZE_DAMAGE))
def test_same_size_damage_is_caught_by_the_checksums(kind, prebuilt, course_env, capsys):
    """Regression: damage that kept a file's size loaded silently (NaN weights included)."""
    folder = copy_stages(prebuilt, "tokenizer", "base")
    name, damage = SAME_SIZE_DAMAGE[kind]
    size = (folder / "base" / name).stat().st_size
    damage(folder / "base" / name)
    assert (folder / "base" / name).stat().st_size == size
    capsys.readouterr()

    rebuilt = load_or_train("base")
    out = capsys.readouterr().out
    assert f"{folder / 'base'} is corrupt ({name} changed since it was saved" in out
    assert "retraining base" in out and "saved base" in out
    assert stages._damage(rebuilt.path, rebuilt.info) is None
    assert rebuilt.info["sha256"].keys() == rebuilt.info["files"].keys()


def test_a_garbled_history_gives_none_and_a_warning(prebuilt, course_env):
    """Regression: Artifact.history raised a raw JSONDecodeError in the notebook."""
    copy_stages(prebuilt, "tokenizer", "base")
    base = load_or_train("base")
    (base.path / "history.json").write_text("{garbled")
    with pytest.warns(UserWarning, match="history.json is damaged .* delete the folder"):
        assert base.history is None
    (base.path / "history.json").write_bytes(b"\xff\xfe")
    with pytest.warns(UserWarning, match="history.json is damaged"):
        assert base.history is None


WRONG_TYPES = {
    "settings a list": {"settings": [1, 2]},
    "build id a number": {"build_id": 5},
    "stage null": {"stage": None},
    "requires a list": {"settings": {"requires": ["tokenizer"]}},
    "file sizes as text": {"files": {"model.safetensors": "big"}},
    "checksums a list": {"sha256": ["abc"]},
    "metrics a string": {"metrics": "good"},
}


@pytest.mark.parametrize("kind", list(WRONG_TYPES))
def test_a_stage_json_with_wrong_types_is_corrupt(kind, prebuilt, course_env, capsys):
    """Regression: a stage.json with wrong types raised AttributeError in the settings check."""
    folder = copy_stages(prebuilt, "tokenizer", "base")
    info = json.loads((folder / "base" / "stage.json").read_text())
    (folder / "base" / "stage.json").write_text(json.dumps({**info, **WRONG_TYPES[kind]}))
    capsys.readouterr()

    rebuilt = load_or_train("base")
    out = capsys.readouterr().out
    assert "is incomplete or corrupt (no valid stage.json); retraining base" in out
    assert read_info(rebuilt.path) is not None


@pytest.mark.parametrize("dropped", [("sha256",), ("sha256", "files")])
def test_artifacts_made_before_checksums_still_load(dropped, prebuilt, course_env, capsys):
    folder = copy_stages(prebuilt, "tokenizer", "base")
    info = json.loads((folder / "base" / "stage.json").read_text())
    (folder / "base" / "stage.json").write_text(json.dumps({k: v for k, v in info.items() if k not in dropped}))
    capsys.readouterr()
    base = load_or_train("base")
    out = capsys.readouterr().out
    assert "loading base from" in out and "training" not in out
    assert base.build_id == info["build_id"]


# =============================================================================================
# 5. Settings no run can use
# =============================================================================================


BAD_OVERRIDES = [
    ("base", "steps", 0, "steps must be above 0"),  # was a ZeroDivisionError after training
    ("base", "batch_size", 0, "batch_size must be above 0"),  # was a reshape error
    ("base", "lr", math.inf, "lr is not a finite number"),  # was a NaN model stored as valid
    ("base", "lr", -1e-3, "lr must be above 0"),
    ("base", "steps", 2.5, "steps is not a whole number: use one such as 2"),
    ("base", "steps", "600", "steps is not a number"),
    ("base", "seed", -1, "seed must be from 0 to 4294967295"),
    ("base", "seed", 2**32, "seed must be from 0 to 4294967295"),
    ("sft", "learning_rate", math.inf, "learning_rate is not a finite number"),
    ("sft", "epochs", 0, "epochs must be above 0"),
    ("ppo", "total_episodes", -5, "total_episodes must be above 0"),
    ("rm", "learning_rate", math.nan, "learning_rate is not a finite number"),
]


@pytest.mark.parametrize("stage,name,value,message", BAD_OVERRIDES,
                         ids=[f"{s}-{n}={v}" for s, n, v, _ in BAD_OVERRIDES])
def test_bad_overrides_are_refused_before_anything_trains(stage, name, value, message, course_env):
    with pytest.raises(ValueError) as err:
        load_or_train(stage, **{name: value})
    text = str(err.value)
    assert f"load_or_train({stage!r}, {name}={value!r})" in text and message in text
    assert "(the default is " in text
    assert not course_env.exists() or not any(course_env.rglob("stage.json"))  # not even the tokenizer


def test_good_overrides_still_pass(course_env):
    spec = pipeline.get_stage("base")
    stages.check_overrides(spec, settings(), {"steps": 5, "lr": 1e-3, "n_docs": None, "seed": 3,
                                              "warmup": 0, "weight_decay": 0.0})


def test_pretraining_refuses_settings_that_cannot_train():
    for name, value in [("steps", 0), ("batch_size", 0), ("seq_len", 1), ("lr", math.inf),
                        ("lr", 0.0), ("eval_every", 0), ("warmup", -1)]:
        cfg = PretrainConfig(**{name: value})
        with pytest.raises(ValueError, match=f"pretraining setting {name}="):
            cfg.validate()
        with pytest.raises(ValueError, match=f"pretraining setting {name}="):
            pretrain(None, None, [], cfg)  # refused before the model or texts are touched
    PretrainConfig().validate()
    PretrainConfig(**{k: v for k, v in profiles.stage_settings("tiny", True, "base").items()
                      if k in PretrainConfig.__dataclass_fields__}).validate()


def test_a_model_with_nan_weights_is_never_stored(toy_stage, prebuilt, course_env, capsys):
    """The last guard: a model that trained into NaN is refused before it is renamed into place,
    and the message names the learning rate."""
    folder = copy_stages(prebuilt, "tokenizer")

    def diverges(config, inputs, out_dir):
        save_file({"w": torch.tensor([1.0, float("nan")])}, str(out_dir / "model.safetensors"))
        return {}

    toy_stage.train_fn = diverges
    with pytest.raises(stages.NonFiniteWeightsError,
                       match=r"Training toy gave a model with NaN or infinite weights \(model.safetensors: w\); "
                             r"it was not saved\. .*learning_rate=0\.1"):
        load_or_train("toy")
    assert not (folder / "toy").exists() and leftovers(folder, "toy") == []
    # keep_trained (a model a notebook trained) says so and keeps nothing
    assert pipeline.keep_trained("toy", lambda out: diverges({}, {}, out), {}) is False
    assert "not kept as toy: Training toy gave a model with NaN" in capsys.readouterr().out
    assert not (folder / "toy").exists()


def test_a_huge_learning_rate_gives_no_base_artifact(prebuilt, course_env):
    folder = copy_stages(prebuilt, "tokenizer")
    with pytest.raises(ValueError, match=r"NaN or infinite weights .*\(lr=1e\+30\): use a smaller one"):
        load_or_train("base", lr=1e30)
    assert not (folder / "base").exists() and leftovers(folder, "base") == []


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", str(2**32), "0x10"])
def test_course_seed_must_be_a_seed(value, monkeypatch):
    monkeypatch.setenv("COURSE_SEED", value)
    with pytest.raises(ValueError, match=f"COURSE_SEED={value!r} is not a seed: use a whole number"):
        settings()


@pytest.mark.parametrize("value,seed", [("", 0), ("  ", 0), ("7", 7), (" 42 ", 42)],
                         ids=["empty", "blank", "7", "42 with spaces"])
def test_course_seed_accepted(value, seed, monkeypatch):
    monkeypatch.setenv("COURSE_SEED", value)
    assert settings().seed == seed


@pytest.mark.parametrize("value", ["", "   "])
def test_a_blank_course_artifacts_is_the_default_folder(value, monkeypatch):
    """Regression: a blank COURSE_ARTIFACTS put every artifact into the current folder."""
    monkeypatch.setenv("COURSE_ARTIFACTS", value)
    assert settings().artifacts_dir == config._default_artifacts()


@pytest.mark.parametrize("value,fast", [("1", True), ("true", True), ("Yes", True), (" on ", True),
                                        ("0", False), ("false", False), ("NO", False), ("off", False),
                                        ("", False)])
def test_course_fast_words(value, fast, monkeypatch):
    monkeypatch.setenv("COURSE_FAST", value)
    assert settings().fast is fast


@pytest.mark.parametrize("value", ["2", "fast", "y", "-1"])
def test_course_fast_refuses_anything_else(value, monkeypatch):
    """Regression: COURSE_FAST=2 silently meant a full run."""
    monkeypatch.setenv("COURSE_FAST", value)
    with pytest.raises(ValueError, match=f"COURSE_FAST={value!r} is neither on nor off: use 1"):
        settings()
