"""Fixtures shared by the unit tests.

The session's environment (tiny profile, fast mode, offline, a temporary COURSE_ARTIFACTS shared
by all tests and notebooks) is set by the conftest.py at the repository root, so that it also
applies when pytest is pointed at a single notebook.
"""

import os
from pathlib import Path

import pytest


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
