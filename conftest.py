"""The environment of every test session, unit tests and notebooks alike.

This file sits at the repository root so that it applies however pytest is started:
`python -m pytest`, `pytest tests/test_world.py`, or `pytest notebooks/00_welcome.ipynb`.

Notebooks run by nbval execute in a kernel subprocess that copies os.environ when it starts, so
the variables are set here, in pytest_configure, before any kernel exists:

* tiny profile, fast mode (every loop shrunk to a smoke run) and offline mode: nothing downloads;
* MPLBACKEND=Agg: figures render without a display;
* COURSE_ARTIFACTS: one temporary folder shared by the whole session, so a model trained in fast
  mode by one notebook or test is reused by the next instead of being trained again. Set
  COURSE_TEST_ARTIFACTS=/some/folder to keep those artifacts between sessions (faster reruns);
* COURSE_CACHE: beside the artifacts, where the CPU thread count chosen for this session is kept.
"""

import os
import shutil
import tempfile

_session_artifacts: str | None = None

TEST_ENVIRONMENT = {
    "COURSE_PROFILE": "tiny",
    "COURSE_FAST": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MPLBACKEND": "Agg",
    "TOKENIZERS_PARALLELISM": "false",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # silences a debugger warning in every kernel
}


def pytest_configure(config):
    global _session_artifacts
    os.environ.update(TEST_ENVIRONMENT)
    os.environ.pop("COURSE_RESULTS_FILE", None)  # only the course runner collects key figures
    keep = os.environ.get("COURSE_TEST_ARTIFACTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        os.environ["COURSE_ARTIFACTS"] = os.path.abspath(keep)
    else:
        _session_artifacts = tempfile.mkdtemp(prefix="course-test-artifacts-")
        os.environ["COURSE_ARTIFACTS"] = _session_artifacts
    # The thread count is measured once per test session, into the session's own cache (the
    # kernels nbval starts inherit COURSE_CACHE and read it), so a test run neither reads nor
    # writes the user's choice.
    os.environ["COURSE_CACHE"] = os.path.join(os.environ["COURSE_ARTIFACTS"], ".cache")
    from helpers import speed

    speed.apply(quiet=True)


def pytest_report_header(config):
    from helpers import speed

    return f"course: CPU {speed.apply(quiet=True).describe()}"


def pytest_unconfigure(config):
    if _session_artifacts:
        shutil.rmtree(_session_artifacts, ignore_errors=True)
