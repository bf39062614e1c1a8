"""The setup cell (helpers.colab): what it installs in Colab, which profile it picks, where models go.

Colab itself is stood in for: the installed versions are a dict (Colab's today), pip is a function
that records what it is asked, and Google Drive is a temporary folder that a fake mount function
creates. Real Colab is needed only for what these cannot show (see the end of the module).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from helpers import colab, labelers, pipeline
from helpers.config import ROOT

#: Colab's runtime as the issue describes it: these three preinstalled, no trl.
COLAB_TODAY = {
    "torch": "2.11.0+cu126", "transformers": "5.15.0", "ipywidgets": "7.7.1",
    "tokenizers": "0.22.1", "accelerate": "1.10.1", "datasets": "4.0.0", "numpy": "2.0.2",
    "matplotlib": "3.10.0", "tqdm": "4.67.1", "jinja2": "3.1.6", "pandas": "2.2.2", "huggingface-hub": "1.1.5",
}


def requirements(*lines: str) -> list[Requirement]:
    return [Requirement(line) for line in lines]


class FakePip:
    """Records each pip call, with the constraints file's text as it was during the call."""

    def __init__(self, fail: bool = False):
        self.calls: list[list[str]] = []
        self.constraints: list[str] = []
        self.fail = fail

    def __call__(self, args: list[str]) -> None:
        self.calls.append(args)
        if "--constraint" in args:
            self.constraints.append(Path(args[args.index("--constraint") + 1]).read_text())
        if self.fail:
            raise subprocess.CalledProcessError(1, ["pip", *args], stderr="ERROR: ResolutionImpossible: trl")


# --------------------------------------------------------------------------------------------
# Installing: only what is missing, never another torch
# --------------------------------------------------------------------------------------------


def test_colab_today_gets_trl_only_and_keeps_its_torch_transformers_ipywidgets(capsys):
    pip = FakePip()
    plan = colab.install_missing(installed=COLAB_TODAY.get, pip=pip)

    assert [Requirement(line).name for line in plan.install] == ["trl"]
    assert plan.problems == [], "Colab's versions must satisfy the course's ranges"
    assert len(pip.calls) == 1
    args = pip.calls[0]
    assert args[:2] == ["install", "--quiet"]
    assert args[-1].startswith("trl")  # the requirement with its range, e.g. "trl<2,>=1.16"
    assert pip.constraints == ["ipywidgets==7.7.1\ntorch==2.11.0+cu126\ntransformers==5.15.0\n"]
    out = capsys.readouterr().out
    assert "installed trl" in out and "kept ipywidgets 7.7.1, torch 2.11.0+cu126, transformers 5.15.0" in out


def test_nothing_missing_means_no_pip_call(capsys):
    pip = FakePip()
    plan = colab.install_missing(installed={**COLAB_TODAY, "trl": "1.16.0"}.get, pip=pip)
    assert plan.install == [] and pip.calls == []
    assert "nothing to install" in capsys.readouterr().out


def test_a_kept_package_outside_the_range_is_left_alone_and_reported():
    reqs = requirements("torch>=2.4", "transformers>=5.0,<6", "trl>=1.13")
    plan = colab.plan_install(reqs, {"torch": "2.11.0+cu126", "transformers": "4.57.1"}.get)
    assert [Requirement(line).name for line in plan.install] == ["trl"]  # not transformers
    assert plan.keep == {"torch": "2.11.0+cu126", "transformers": "4.57.1"}  # pinned as it is
    assert len(plan.problems) == 1 and "transformers 4.57.1" in plan.problems[0]
    assert "Restart session" in plan.problems[0]


def test_other_packages_are_installed_when_missing_or_too_old_and_kept_ones_when_missing():
    reqs = requirements("ipywidgets>=7.7,<9", "datasets>=3.0", "numpy", "trl>=1.13,<2")
    plan = colab.plan_install(reqs, {"datasets": "2.14.0", "numpy": "2.0.2", "trl": "1.16.0"}.get)
    # ipywidgets missing: installed (there is nothing to keep); datasets too old: upgraded
    assert sorted(Requirement(line).name for line in plan.install) == ["datasets", "ipywidgets"]
    assert plan.keep == {} and plan.problems == []


def test_the_course_metadata_lists_the_runtime_requirements_without_the_dev_extra():
    names = {r.name.lower() for r in colab.course_requirements()}
    assert {"torch", "transformers", "ipywidgets", "trl"} <= names
    assert "pytest" not in names and "nbval" not in names


def test_a_failing_pip_says_what_to_do():
    with pytest.raises(RuntimeError, match="Disconnect and delete runtime") as err:
        colab.install_missing(installed=COLAB_TODAY.get, pip=FakePip(fail=True))
    assert "ResolutionImpossible: trl" in str(err.value)  # pip's own words, shown in the cell


# --------------------------------------------------------------------------------------------
# The profile: PROFILE in the cell wins, else COURSE_PROFILE, else tiny
# --------------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """The variables the setup cell writes, restored after the test (it sets os.environ itself)."""
    saved = {name: os.environ.get(name) for name in
             ("COURSE_PROFILE", "COURSE_ARTIFACTS", "COURSE_PREPARED_ARTIFACTS")}
    monkeypatch.setattr(colab, "_before_cell", {})
    monkeypatch.setenv("COURSE_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.delenv("COURSE_PREPARED_ARTIFACTS", raising=False)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def not_colab_install():
    raise AssertionError("outside Colab the setup cell installs nothing")


@pytest.mark.parametrize("cell, variable, expected, said", [
    (None, None, "tiny", "the default"),
    (None, "gpu", "gpu", "set by the COURSE_PROFILE environment variable"),
    ("tiny", "gpu", "tiny", "set by PROFILE in the setup cell"),
    ("gpu", None, "gpu", "set by PROFILE in the setup cell"),
])
def test_profile_rule(clean_env, capsys, cell, variable, expected, said):
    if variable:
        os.environ["COURSE_PROFILE"] = variable
    settings, device = colab.setup(cell, colab=False, install=not_colab_install)
    assert settings.profile == expected
    assert os.environ.get("COURSE_PROFILE", "tiny") == expected  # cell and environment agree
    assert f"profile: {expected}, {said}" in capsys.readouterr().out


def test_profile_none_after_a_value_goes_back_to_the_variable(clean_env):
    os.environ["COURSE_PROFILE"] = "gpu"
    assert colab.setup("tiny", colab=False, install=not_colab_install)[0].profile == "tiny"
    # the student clears PROFILE and runs the cell again: the variable decides again
    assert colab.setup(None, colab=False, install=not_colab_install)[0].profile == "gpu"


def test_an_unknown_profile_is_refused_with_the_choices(clean_env):
    with pytest.raises(ValueError, match="'tiny'.*'gpu'"):
        colab.setup("small", colab=False, install=not_colab_install)


def test_in_colab_the_setup_installs_before_anything_else(clean_env, tmp_path):
    calls = []
    colab.setup(None, colab=True, install=lambda: calls.append("install"), mountpoint=tmp_path / "drive")
    assert calls == ["install"]


# --------------------------------------------------------------------------------------------
# Where models and rankings live: this runtime, or Google Drive
# --------------------------------------------------------------------------------------------


class FakeDrive:
    """google.colab.drive.mount's stand-in: mounting makes MyDrive appear under the mount point."""

    def __init__(self):
        self.mounts: list[str] = []

    def __call__(self, mountpoint: str) -> None:
        self.mounts.append(mountpoint)
        (Path(mountpoint) / "MyDrive").mkdir(parents=True)


def test_in_colab_without_drive_models_live_in_the_runtime_and_the_cell_says_so(clean_env, tmp_path, capsys):
    os.environ.pop("COURSE_ARTIFACTS")
    drive = FakeDrive()
    settings, _ = colab.setup(None, keep_on_drive=False, colab=True, install=lambda: None, mount=drive,
                              mountpoint=tmp_path / "drive")
    assert settings.artifacts_dir == Path("/content/artifacts") == colab.RUNTIME_ARTIFACTS
    assert drive.mounts == []  # Drive is mounted only when asked
    assert "in this runtime only" in capsys.readouterr().out


def test_keep_on_drive_keeps_models_and_rankings_for_a_later_runtime(clean_env, tmp_path, capsys):
    mountpoint = tmp_path / "drive"
    drive = FakeDrive()
    settings, _ = colab.setup(None, keep_on_drive=True, colab=True, install=lambda: None, mount=drive,
                              mountpoint=mountpoint)
    on_drive = mountpoint / "MyDrive" / "instructgpt-step-by-step" / "artifacts"
    assert drive.mounts == [str(mountpoint)]
    assert settings.artifacts_dir == on_drive and os.environ["COURSE_ARTIFACTS"] == str(on_drive)
    assert "on Google Drive" in capsys.readouterr().out

    # This runtime trains a stage and the student ranks an answer (where notebook 03 keeps it).
    trained = []

    def train(config, inputs, out_dir):
        trained.append(1)
        (out_dir / "weights.txt").write_text("7")

    pipeline.register_stage("drive_toy", lambda run: {"x": 1}, train, lambda path, info: (None, None))
    try:
        first = pipeline.load_or_train("drive_toy")
        my_rankings = settings.artifacts_dir / "rankings" / "my_rankings.jsonl"
        labelers.append_ranking(my_rankings, labelers.Ranking(
            prompt_id="p1", prompt="What is 3 plus 4?", family="arithmetic", responses=["7", "8"],
            ranks=[1, 2], labeler="student"))

        # A later notebook, in a fresh runtime: no COURSE_ARTIFACTS, Drive not mounted yet
        # in this process (the folder stands for the same Drive seen again).
        os.environ.pop("COURSE_ARTIFACTS")
        colab._before_cell.clear()
        again = FakeDrive()
        again_mounted = lambda mp: again.mounts.append(mp)  # MyDrive is already there  # noqa: E731
        settings2, _ = colab.setup(None, keep_on_drive=True, colab=True, install=lambda: None,
                                   mount=again_mounted, mountpoint=mountpoint)
        capsys.readouterr()
        later = pipeline.load_or_train("drive_toy")
        assert "loading drive_toy" in capsys.readouterr().out
        assert trained == [1] and later.build_id == first.build_id  # found, not trained again
        rankings, problems = labelers.read_rankings(settings2.artifacts_dir / "rankings" / "my_rankings.jsonl")
        assert problems == [] and [r.responses for r in rankings] == [["7", "8"]]
    finally:
        pipeline.STAGES.pop("drive_toy", None)


def test_drive_off_again_goes_back_to_the_runtime_folder(clean_env, tmp_path):
    os.environ.pop("COURSE_ARTIFACTS")
    kwargs = dict(colab=True, install=lambda: None, mount=FakeDrive(), mountpoint=tmp_path / "drive")
    assert "MyDrive" in str(colab.setup(None, keep_on_drive=True, **kwargs)[0].artifacts_dir)
    assert colab.setup(None, keep_on_drive=False, **kwargs)[0].artifacts_dir == colab.RUNTIME_ARTIFACTS


def test_a_refused_drive_mount_says_what_to_do(clean_env, tmp_path):
    def refuse(mountpoint):
        raise ValueError("mount failed: credential propagation was unsuccessful")

    with pytest.raises(RuntimeError, match="KEEP_ON_DRIVE = False"):
        colab.setup(None, keep_on_drive=True, colab=True, install=lambda: None, mount=refuse,
                    mountpoint=tmp_path / "drive")


def test_rankings_follow_the_artifacts_folder_in_every_notebook():
    """Every JSONL file a notebook writes rankings to sits under SETTINGS.artifacts_dir, so the
    Drive switch (which moves COURSE_ARTIFACTS) moves the rankings too."""
    found = 0
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            for line in "".join(cell["source"]).splitlines():
                if cell["cell_type"] == "code" and ".jsonl" in line:
                    found += 1
                    assert "SETTINGS.artifacts_dir" in line, f"{path.name}: {line.strip()}"
    assert found, "no ranking file found in the notebooks: this test no longer checks anything"


def test_every_notebook_starts_with_the_same_setup_cell():
    cells = {}
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        cells[path.name] = "".join(code[0]["source"])
    assert len(set(cells.values())) == 1, "the setup cells differ: make them identical"
    setup = next(iter(cells.values()))
    assert "--no-deps" in setup and "colab.setup(PROFILE, keep_on_drive=KEEP_ON_DRIVE" in setup


def test_upgrading_a_package_this_kernel_already_imported_asks_for_a_restart(capsys):
    # pytest is imported here: pretend the course needs a newer one than is installed
    colab.install_missing(installed={"pytest": "1.0"}.get, pip=FakePip(),
                          requirements=requirements("pytest>=2"))
    assert "pytest had been imported before this install: restart the session" in capsys.readouterr().out
