"""Fixtures shared by the unit tests.

The session's environment (tiny profile, fast mode, offline, a temporary COURSE_ARTIFACTS shared
by all tests and notebooks) is set by the conftest.py at the repository root, so that it also
applies when pytest is pointed at a single notebook.
"""

import os
from pathlib import Path

import pytest
import torch

#: The environment of a test that builds stages: tiny profile, fast mode, the default seed.
FAST_TINY = {"COURSE_PROFILE": "tiny", "COURSE_FAST": "1"}


def use_fast_tiny(monkeypatch, artifacts: Path) -> Path:
    """Fast tiny profile with artifacts in ``artifacts`` (never the real ones); returns it."""
    for key, value in {**FAST_TINY, "COURSE_ARTIFACTS": str(artifacts)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("COURSE_SEED", raising=False)
    return artifacts


@pytest.fixture(scope="session")
def course_artifacts() -> Path:
    """The artifact folder of this test session (shared with the notebooks nbval runs)."""
    return Path(os.environ["COURSE_ARTIFACTS"])


@pytest.fixture(scope="module")
def items():
    """Six prompts with K = 4 plausible responses each: what the ranking widget tests rank."""
    from helpers import labelers

    examples, responses = labelers.calibration_set(n_prompts=6, k=4, seed=3)
    return list(zip(examples, responses))


@pytest.fixture(scope="session")
def small_tokenizer():
    """A 300-token byte-BPE tokenizer trained on 300 web documents: enough for micro models."""
    from helpers import world
    from helpers.tokenizer import train_tokenizer

    return train_tokenizer(world.pretraining_corpus(seed=0, n_docs=300), vocab_size=300)


@pytest.fixture
def one_thread():
    """The unit tests' models are tiny: one thread runs them fastest (no start-up cost per
    operation), and keeps their timings out of each other's way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def course_env(tmp_path, monkeypatch) -> Path:
    """Fast tiny profile with artifacts in a fresh folder of this test."""
    return use_fast_tiny(monkeypatch, tmp_path / "artifacts")


@pytest.fixture(scope="session")
def prebuilt(tmp_path_factory) -> Path:
    """Fast tokenizer and base built once per session; tests start from copies (training is
    the slow part). Returns the artifact folder that holds them."""
    from helpers.pipeline import load_or_train

    root = tmp_path_factory.mktemp("prebuilt") / "artifacts"
    with pytest.MonkeyPatch.context() as mp:
        use_fast_tiny(mp, root)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            load_or_train("base")
        finally:
            torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="session")
def fake_hub(tmp_path_factory) -> dict[str, str]:
    """A fake Hugging Face hub cache (tiny models and small datasets under the gpu profile's real
    repo ids, tests/fake_hub.py), built once per session; returns the environment variables that
    make a process use it offline (HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, ...)."""
    from fake_hub import build

    return build(tmp_path_factory.mktemp("fake_hub"))
