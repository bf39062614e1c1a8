"""The course the way Colab gets it: a built wheel, installed (not editable), on Colab's versions.

The main test session runs on the newest libraries, against this checkout (``pip install -e``).
Colab is different twice over: the setup cell installs the course from git as a regular wheel,
which carries only what pyproject.toml packages, and it installs it next to Colab's own, older
transformers and ipywidgets. One virtual environment has both (tests/colab_env.py; built once
per pyproject.toml, then reused), and these tests run in it, each as a pytest subprocess:

* the wheel holds every subpackage and data file, and the installed course finds its data;
* every notebook, copied to a folder outside the checkout (as Colab opens it alone), runs top to
  bottom in fast mode against the installed wheel: one test per notebook;
* the unit tests (all but the browser ones: Colab has no JupyterLab) run on Colab's versions.

The nested sessions set ``COURSE_NESTED_PYTEST=1``, which skips this file there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

import colab_env

ROOT = colab_env.ROOT
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NESTED = "COURSE_NESTED_PYTEST"

pytestmark = pytest.mark.skipif(bool(os.environ.get(NESTED)), reason="runs only in the outer session")


def _log(message: str) -> None:
    print(message, flush=True)


@pytest.fixture(scope="session")
def colab(tmp_path_factory):
    """(venv, wheel): Colab's environment with this checkout's wheel freshly installed."""
    started = time.perf_counter()
    venv = colab_env.prepare(log=_log)
    wheel = colab_env.install_course(venv, tmp_path_factory.mktemp("wheel"), log=_log)
    _log(f"Colab's environment ready in {time.perf_counter() - started:.0f} s: {venv}")
    return venv, wheel


@pytest.fixture(scope="session")
def colab_artifacts(tmp_path_factory) -> Path:
    """Models the nested sessions train, shared by them (not by the main session: other versions)."""
    return tmp_path_factory.mktemp("colab-artifacts")


def _nested_env(artifacts: Path) -> dict:
    env = dict(os.environ)
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS", "COURSE_ARTIFACTS"):
        env.pop(name, None)  # a PYTHONPATH to the checkout would hide the installed wheel
    env.update({NESTED: "1", "COURSE_TEST_ARTIFACTS": str(artifacts)})
    return env


def _pytest(venv: Path, args: list, cwd: Path, artifacts: Path, timeout: float) -> tuple[int, str]:
    """Run pytest in ``venv``; its exit code and the end of its output."""
    command = [str(colab_env.venv_python(venv)), "-m", "pytest", "-p", "no:cacheprovider", *map(str, args)]
    try:
        done = subprocess.run(command, cwd=cwd, env=_nested_env(artifacts), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return -1, f"timed out after {timeout:.0f} s\n" + out[-6000:]
    output = done.stdout + done.stderr
    _log(f"{' '.join(map(str, args))}: {output.strip().splitlines()[-1] if output.strip() else 'no output'}")
    return done.returncode, output[-8000:]


# ---------------------------------------------------------------------------------------------
# The wheel
# ---------------------------------------------------------------------------------------------


def test_the_wheel_carries_every_subpackage_and_data_file(colab):
    _, wheel = colab
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = [p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "helpers").rglob("__init__.py")
                if "__pycache__" not in p.parts]
    assert "helpers/exercises" in packages
    missing = [f"{package}/__init__.py" for package in packages if f"{package}/__init__.py" not in names]
    data = [p.relative_to(ROOT / "data").as_posix() for p in (ROOT / "data").rglob("*") if p.is_file()]
    assert data, "no data files in the checkout"
    missing += [f"helpers/data/{name}" for name in data if f"helpers/data/{name}" not in names]
    assert not missing, f"{wheel.name} lacks {missing}"


INSTALLED_PROBE = """
import json, os
from helpers import config, world
s = config.settings()
print(json.dumps({
    "helpers": config.__file__, "in_checkout": config.IN_CHECKOUT, "data_dir": str(config.DATA_DIR),
    "artifacts": str(s.artifacts_dir), "cwd": os.getcwd(),
    "data_files": sorted(p.name for p in s.profile_data_dir.iterdir()),
    "corpus_matches": (s.profile_data_dir / "corpus.jsonl").read_text(encoding="utf-8")
                      == world.materialize()["corpus.jsonl"],
}))
"""


def test_the_installed_course_finds_its_data_outside_the_checkout(colab, tmp_path):
    venv, _ = colab
    env = _nested_env(tmp_path)
    env.pop("COURSE_TEST_ARTIFACTS")
    done = subprocess.run([str(colab_env.venv_python(venv)), "-c", INSTALLED_PROBE], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(seen["helpers"]).is_relative_to(venv), f"helpers imported from {seen['helpers']}, not the wheel"
    assert not seen["in_checkout"]
    assert Path(seen["data_dir"]) == Path(seen["helpers"]).parent / "data"
    from helpers import world

    assert set(world.DATA_FILES) | {"labeler_guidelines.md"} <= set(seen["data_files"]), seen["data_files"]
    assert seen["corpus_matches"], "the installed corpus.jsonl is not the generator's output"
    # no COURSE_ARTIFACTS: models go to artifacts/ in the working directory, not into site-packages
    assert Path(seen["artifacts"]) == Path(seen["cwd"]) / "artifacts"


# ---------------------------------------------------------------------------------------------
# The notebooks, one by one, against the installed wheel
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def outside_checkout(tmp_path_factory) -> Path:
    """A folder outside the checkout with the notebooks and the test environment (conftest.py)."""
    folder = tmp_path_factory.mktemp("colab-notebooks")
    for notebook in NOTEBOOKS:
        shutil.copy(notebook, folder)
    shutil.copy(ROOT / "conftest.py", folder)  # fast mode, tiny profile, offline, artifacts
    # its own ini file, so pytest takes this folder as the root and reads nothing of the checkout
    (folder / "pytest.ini").write_text(
        "[pytest]\naddopts = --nbval-lax --nbval-current-env -ra\ntimeout = 900\n"
        "filterwarnings =\n    ignore::DeprecationWarning:jupyter_client.*\n")
    return folder


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("notebook", [n.name for n in NOTEBOOKS])
def test_notebook_runs_on_colabs_versions_from_the_installed_wheel(notebook, colab, outside_checkout,
                                                                   colab_artifacts):
    venv, _ = colab
    code, output = _pytest(venv, [notebook], outside_checkout, colab_artifacts, timeout=1400)
    assert code == 0, f"{notebook} failed on Colab's versions, installed from the wheel:\n{output}"


# ---------------------------------------------------------------------------------------------
# The unit tests on Colab's versions
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(2700)
def test_unit_tests_pass_on_colabs_versions(colab, colab_artifacts):
    """tests/ in the checkout, in Colab's environment: the checkout's helpers (pytest puts the
    repository root first on sys.path), Colab's libraries."""
    venv, _ = colab
    args = ["tests", "-m", "not browser", "--ignore", "tests/test_colab.py", "-q"]
    code, output = _pytest(venv, args, ROOT, colab_artifacts, timeout=2600)
    assert code == 0, f"unit tests failed on Colab's versions:\n{output}"
