"""Profiles, fast mode, paths, device choice and seeding.

Two environment variables steer every notebook and script:

* ``COURSE_PROFILE``: ``tiny`` (default; any CPU, offline, a Llama-style model of about 1.2M
  parameters trained on the Instruction World) or ``gpu`` (a small pretrained hub model and hub datasets).
* ``COURSE_FAST``: ``1`` shrinks every loop to a smoke run of a few seconds (used by the tests).

``settings()`` returns a frozen snapshot of them, read when it is called, so a notebook that sets
``os.environ["COURSE_FAST"] = "1"`` before calling it gets fast mode.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

PROFILES = ("tiny", "gpu")

#: The repository root (the folder that holds ``helpers/``, ``notebooks/`` and ``data/``) in a
#: clone; in an installed wheel (Colab), the site-packages folder that holds ``helpers/``.
ROOT = Path(__file__).resolve().parent.parent
#: True in a clone of the repository (``pip install -e``), False in an installed wheel.
IN_CHECKOUT = (ROOT / "pyproject.toml").is_file() and (ROOT / "data").is_dir()
#: The materialized data: ``data/`` at the root of a clone; a wheel carries it as ``helpers/data/``.
DATA_DIR = ROOT / "data" if IN_CHECKOUT else Path(__file__).resolve().parent / "data"


def _default_artifacts() -> Path:
    """``artifacts/`` at the root of a clone; installed, ``artifacts/`` in the working directory
    (never inside site-packages)."""
    return ROOT / "artifacts" if IN_CHECKOUT else Path.cwd() / "artifacts"


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """The run's profile, fast mode and where things live."""

    profile: str
    fast: bool
    artifacts_dir: Path
    data_dir: Path
    seed: int = 0

    @property
    def profile_data_dir(self) -> Path:
        return self.data_dir / self.profile

    def stage_dir(self, stage: str) -> Path:
        """Directory of one stage's cached artifact, e.g. ``artifacts/tiny/base``.

        Fast-mode artifacts live apart (``artifacts/tiny-fast/...``) so a smoke run never
        replaces a fully trained model.
        """
        name = self.profile + ("-fast" if self.fast else "")
        return self.artifacts_dir / name / stage


def settings() -> Settings:
    """Read ``COURSE_PROFILE``, ``COURSE_FAST`` and ``COURSE_ARTIFACTS`` now."""
    profile = os.environ.get("COURSE_PROFILE", "tiny").strip().lower() or "tiny"
    if profile not in PROFILES:
        raise ValueError(
            f"COURSE_PROFILE={profile!r} is not a course profile. Use one of {PROFILES}: "
            "'tiny' runs anywhere offline, 'gpu' needs a CUDA GPU and internet access."
        )
    artifacts = Path(os.environ.get("COURSE_ARTIFACTS") or _default_artifacts()).expanduser()
    return Settings(
        profile=profile,
        fast=_truthy(os.environ.get("COURSE_FAST")),
        artifacts_dir=artifacts,
        data_dir=DATA_DIR,
        seed=int(os.environ.get("COURSE_SEED", "0")),
    )


def device(prefer: str | None = None) -> "torch.device":  # noqa: F821 - torch imported lazily
    """The best available device: CUDA, then Apple's MPS, then CPU.

    ``COURSE_DEVICE`` (or ``prefer``) forces one, e.g. ``cpu`` to compare speeds.
    """
    import torch

    choice = prefer or os.environ.get("COURSE_DEVICE")
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch so that a run on the CPU repeats exactly."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy ships with torch
        pass
    try:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    except ImportError:  # pragma: no cover
        pass


def in_colab() -> bool:
    import sys

    return "google.colab" in sys.modules


def describe() -> str:
    """One line a notebook prints after setup: profile, fast mode, device, CPU threads.

    On the CPU it first chooses torch's thread count (``helpers.speed``), so that every notebook
    trains at this machine's best speed from its first cell on."""
    from helpers import speed

    s = settings()
    threads = speed.apply()
    return (
        f"profile={s.profile}  fast={'yes' if s.fast else 'no'}  device={device()}  "
        f"{threads.describe()}  artifacts={s.artifacts_dir}"
    )
