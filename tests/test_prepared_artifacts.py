"""Prepared artifacts: an instructor publishes a run's stages, load_or_train downloads them.

The Hugging Face Hub is not reachable from the tests, so a local stand-in takes its place:
``FakeHub`` replaces the four huggingface_hub calls the module makes (``HfApi.create_repo``,
``HfApi.upload_folder``, ``HfApi.repo_info``, ``snapshot_download``) with copies to and from a
temporary folder, keeping the hub's rules that matter here: a repository that does not exist
raises RepositoryNotFoundError, every upload makes a new revision, ``allow_patterns`` select files.
"""

from __future__ import annotations

import json
import shutil
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub import errors

from helpers import pipeline, prepared_artifacts
from helpers.config import settings
from helpers.pipeline import load_or_train, register_stage

FAST_TINY = {"COURSE_PROFILE": "tiny", "COURSE_FAST": "1"}
REPO = "teacher/instructgpt-class"


class FakeHub:
    """The hub as a folder: ``root/<user>/<name>/<path in repo>``."""

    def __init__(self, root: Path):
        self.root = root
        self.revision = 0
        self.repo_info_calls: list[tuple[str, float | None]] = []
        self.downloads: list[list[str]] = []
        self.unreachable = False

    def install(self, monkeypatch) -> "FakeHub":
        hub = self

        def create_repo(api, repo_id, **kwargs):
            (hub.root / repo_id).mkdir(parents=True, exist_ok=True)

        def upload_folder(api, *, repo_id, folder_path, path_in_repo, delete_patterns=None, **kwargs):
            assert (hub.root / repo_id).is_dir(), "upload to a repository that was not created"
            dest = hub.root / repo_id / path_in_repo
            if delete_patterns == "*":
                shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(folder_path, dest, dirs_exist_ok=True)
            hub.revision += 1

        def repo_info(api, repo_id, *, timeout=None, **kwargs):
            hub.repo_info_calls.append((repo_id, timeout))
            if hub.unreachable:
                raise ConnectionError("[Errno 101] Network is unreachable")
            repo = hub.root / repo_id
            if not repo.is_dir():
                raise errors.RepositoryNotFoundError(f"404: {repo_id}", response=SimpleNamespace(
                    headers={}, request=None))
            files = [p.relative_to(repo).as_posix() for p in sorted(repo.rglob("*")) if p.is_file()]
            return SimpleNamespace(sha=f"rev{hub.revision}",
                                   siblings=[SimpleNamespace(rfilename=f) for f in files])

        def snapshot_download(repo_id, *, revision=None, local_dir=None, allow_patterns=None, **kwargs):
            assert revision == f"rev{hub.revision}", "downloads must name the revision repo_info gave"
            hub.downloads.append(list(allow_patterns))
            repo = hub.root / repo_id
            for file in sorted(repo.rglob("*")):
                rel = file.relative_to(repo).as_posix()
                if file.is_file() and any(fnmatch(rel, pattern) for pattern in allow_patterns):
                    (Path(local_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, Path(local_dir) / rel)
            return str(local_dir)

        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
        monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", repo_info)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
        # the session runs offline (HF_HUB_OFFLINE=1); the fake hub is "online"
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        return self


@pytest.fixture(autouse=True)
def course_env(tmp_path, monkeypatch):
    """Fast tiny profile, the instructor's artifacts in one folder; no prepared source yet."""
    for key, value in {**FAST_TINY, "COURSE_ARTIFACTS": str(tmp_path / "teacher")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("COURSE_SEED", raising=False)
    monkeypatch.delenv(prepared_artifacts.VARIABLE, raising=False)
    monkeypatch.setattr(prepared_artifacts, "_hub_answers", {})


@pytest.fixture
def hub(tmp_path, monkeypatch) -> FakeHub:
    return FakeHub(tmp_path / "hub").install(monkeypatch)


def as_student(monkeypatch, tmp_path, source: str, name: str = "student") -> Path:
    """Switch to a student's fresh artifact folder, with the prepared artifacts in ``source``."""
    folder = tmp_path / name
    monkeypatch.setenv("COURSE_ARTIFACTS", str(folder))
    monkeypatch.setenv(prepared_artifacts.VARIABLE, source)
    return folder


# --------------------------------------------------------------------------------------------
# Toy stages: a chain toy_a -> toy_b that counts its trainings
# --------------------------------------------------------------------------------------------


@pytest.fixture
def toys():
    trained: list[str] = []

    def trainer(name):
        def train(config, inputs, out_dir):
            trained.append(name)
            (out_dir / "weights.bin").write_bytes(b"w" * 100)
            return {"n": config["n"]}
        return train

    def load(path, info):
        return (path / "weights.bin").read_bytes(), None

    register_stage("toy_a", lambda run: {"n": 1}, trainer("toy_a"), load)
    register_stage("toy_b", lambda run: {"n": 2}, trainer("toy_b"), load, requires=["toy_a"])
    yield trained
    for name in ("toy_a", "toy_b"):
        pipeline.STAGES.pop(name, None)


def test_a_published_chain_is_downloaded_not_trained(hub, toys, tmp_path, monkeypatch, capsys):
    published = load_or_train("toy_b")
    teacher_a = load_or_train("toy_a")
    assert prepared_artifacts.publish(REPO) == ["toy_a", "toy_b"]  # prerequisites first
    assert (hub.root / REPO / "tiny-fast" / "toy_b" / "stage.json").is_file()  # the artifacts' layout
    toys.clear()

    as_student(monkeypatch, tmp_path, REPO)
    capsys.readouterr()
    got = load_or_train("toy_b")
    out = capsys.readouterr().out
    assert toys == [], f"nothing is trained when the prepared chain fits:\n{out}"
    assert "downloading toy_a" in out and "downloading toy_b" in out
    assert got.build_id == published.build_id and got.model == b"w" * 100
    assert load_or_train("toy_a").build_id == teacher_a.build_id  # the chain of the same run
    assert got.path == settings().stage_dir("toy_b") and str(tmp_path / "student") in str(got.path)
    # stage.json first (to check), then the files, each from the revision repo_info named
    assert hub.downloads[:2] == [["tiny-fast/toy_a/stage.json"], ["tiny-fast/toy_a/*"]]
    assert all(timeout is not None for _, timeout in hub.repo_info_calls), "a hub call without timeout can hang"
    assert len(hub.repo_info_calls) == 1  # asked once per process, not once per stage
    assert not list(got.path.parent.glob(".*prepared-*")), "staging folders must not be left behind"


def test_other_settings_are_trained_here_and_the_message_says_which(hub, toys, tmp_path, monkeypatch, capsys):
    load_or_train("toy_a")
    prepared_artifacts.publish(REPO)
    toys.clear()
    as_student(monkeypatch, tmp_path, REPO)
    capsys.readouterr()
    got = load_or_train("toy_a", n=5)
    out = capsys.readouterr().out
    assert toys == ["toy_a"] and got.info["settings"]["n"] == 5
    assert "does not fit" in out and "n 1 -> 5" in out


def test_a_stage_is_not_taken_from_another_chain_than_the_students(hub, toys, tmp_path, monkeypatch, capsys):
    load_or_train("toy_b")
    prepared_artifacts.publish(REPO)
    toys.clear()
    # the student trained their own toy_a before using the prepared artifacts
    student = as_student(monkeypatch, tmp_path, "")
    monkeypatch.delenv(prepared_artifacts.VARIABLE)
    own_a = load_or_train("toy_a")
    monkeypatch.setenv(prepared_artifacts.VARIABLE, REPO)
    capsys.readouterr()
    got = load_or_train("toy_b")
    out = capsys.readouterr().out
    assert toys == ["toy_a", "toy_b"]  # their toy_a (before), then toy_b on top of it
    assert got.info["settings"]["requires"] == {"toy_a": own_a.build_id}
    assert "toy_a was rebuilt" in out and f"delete your own ({student / 'tiny-fast' / 'toy_a'})" in out


def test_a_stale_local_stage_is_replaced_by_a_fitting_prepared_one(hub, toys, tmp_path, monkeypatch, capsys):
    as_student(monkeypatch, tmp_path, "")
    monkeypatch.delenv(prepared_artifacts.VARIABLE)
    load_or_train("toy_a")  # the student's, made by code version 1
    pipeline.STAGES["toy_a"].version = "2"  # the course's code changed since
    monkeypatch.setenv("COURSE_ARTIFACTS", str(tmp_path / "teacher"))
    teacher = load_or_train("toy_a")  # the instructor's run is of version 2
    prepared_artifacts.publish(REPO)
    toys.clear()
    as_student(monkeypatch, tmp_path, REPO)
    capsys.readouterr()
    got = load_or_train("toy_a")
    out = capsys.readouterr().out
    assert toys == [] and got.build_id == teacher.build_id
    assert "code_version 1 -> 2; downloading toy_a" in out


def test_a_damaged_download_is_trained_here(hub, toys, tmp_path, monkeypatch, capsys):
    load_or_train("toy_a")
    prepared_artifacts.publish(REPO)
    (hub.root / REPO / "tiny-fast" / "toy_a" / "weights.bin").write_bytes(b"w" * 40)  # cut short
    toys.clear()
    as_student(monkeypatch, tmp_path, REPO)
    capsys.readouterr()
    got = load_or_train("toy_a")
    out = capsys.readouterr().out
    assert toys == ["toy_a"] and got.model == b"w" * 100
    assert "is not usable: damaged (weights.bin has 40 bytes instead of 100)" in out
    assert not list(got.path.parent.glob(".*prepared-*"))


def test_a_stage_that_was_not_published_is_trained(hub, toys, tmp_path, monkeypatch, capsys):
    load_or_train("toy_b")
    prepared_artifacts.publish(REPO, ["toy_a"])
    toys.clear()
    as_student(monkeypatch, tmp_path, REPO)
    capsys.readouterr()
    load_or_train("toy_b")
    assert toys == ["toy_b"]  # toy_a downloaded, toy_b trained on it
    assert "toy_b is not among the prepared artifacts" in capsys.readouterr().out


def test_a_local_folder_works_as_the_source(toys, tmp_path, monkeypatch, capsys):
    published = load_or_train("toy_b")
    as_student(monkeypatch, tmp_path, str(tmp_path / "teacher"))  # another run's artifacts/ folder
    toys.clear()
    got = load_or_train("toy_b")
    assert toys == [] and got.build_id == published.build_id


def test_offline_says_what_to_do_and_never_asks_the_hub(hub, toys, tmp_path, monkeypatch, capsys):
    as_student(monkeypatch, tmp_path, REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load_or_train("toy_b")
    out = capsys.readouterr().out
    assert toys == ["toy_a", "toy_b"] and hub.repo_info_calls == []
    assert "HF_HUB_OFFLINE is set" in out and "to a folder" in out


@pytest.mark.parametrize("problem, said", [("missing", "does not exist"), ("unreachable", "could not be reached")])
def test_a_missing_or_unreachable_repository_is_asked_once_then_trains(hub, toys, tmp_path, monkeypatch, capsys,
                                                                        problem, said):
    hub.unreachable = problem == "unreachable"
    as_student(monkeypatch, tmp_path, "teacher/no-such-repo")
    load_or_train("toy_b")
    out = capsys.readouterr().out
    assert toys == ["toy_a", "toy_b"]
    assert len(hub.repo_info_calls) == 1  # one wait for the whole notebook, not one per stage
    assert out.count(said) == 2 and "PREPARED" in out  # one message per stage, saying what to do


def test_a_name_that_is_neither_folder_nor_repository_is_reported(toys, tmp_path, monkeypatch, capsys):
    as_student(monkeypatch, tmp_path, str(tmp_path / "no-such-folder"))
    load_or_train("toy_a")
    assert toys == ["toy_a"] and "neither a folder here nor a hub repository" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------


def test_publish_leaves_out_a_stage_built_from_an_earlier_prerequisite(hub, toys, capsys):
    load_or_train("toy_b")
    load_or_train("toy_a", n=3)  # toy_a retrained after toy_b was built on the earlier one
    assert prepared_artifacts.publish(REPO) == ["toy_a"]
    assert "toy_b: it was built from an earlier toy_a" in capsys.readouterr().out
    assert not (hub.root / REPO / "tiny-fast" / "toy_b").exists()


def test_publish_cli(hub, toys, capsys):
    assert prepared_artifacts.main(["publish", "--repo", REPO]) == 1  # nothing trained yet
    assert "nothing to publish" in capsys.readouterr().out
    load_or_train("toy_b")
    assert prepared_artifacts.main(["publish", "--repo", REPO, "--stages", "toy_b"]) == 0
    out = capsys.readouterr().out
    assert "published 2 stage(s): toy_a, toy_b" in out and f'PREPARED = "{REPO}"' in out
    info = json.loads((hub.root / REPO / "tiny-fast" / "toy_b" / "stage.json").read_text())
    assert info["build_id"] == load_or_train("toy_b").build_id


# --------------------------------------------------------------------------------------------
# The real pipeline: tokenizer and base model, downloaded and loaded
# --------------------------------------------------------------------------------------------


def test_the_real_base_model_round_trips_through_the_hub(hub, tmp_path, monkeypatch, capsys):
    teacher = load_or_train("base")
    assert prepared_artifacts.publish(REPO) == ["tokenizer", "base"]
    as_student(monkeypatch, tmp_path, REPO)
    capsys.readouterr()
    student = load_or_train("base")
    out = capsys.readouterr().out
    assert "training" not in out, out
    assert student.build_id == teacher.build_id and student.model is not None
    # the downloaded model computes what the published one does
    import torch

    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(student.model(ids).logits, teacher.model(ids).logits)
