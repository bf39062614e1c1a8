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
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported only when a device is chosen: it is slow to load
    import torch

from helpers import profiles

#: The profiles' names (what each one does: ``helpers.profiles``).
PROFILES = tuple(profiles.PROFILES)

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


#: The words COURSE_FAST may be set to. Anything else is refused: "2" or "fast" silently meaning
#: "off" would give a student a full run of an hour where a smoke run was asked for.
_ON, _OFF = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


def _flag(name: str) -> bool:
    """An on/off environment variable: unset or empty is off."""
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value not in _ON | _OFF:
        raise ValueError(f"{name}={raw!r} is neither on nor off: use 1 (or true, yes, on) to turn it on, "
                         "0 (or false, no, off) or unset it to turn it off.")
    return value in _ON


def _seed() -> int:
    """``COURSE_SEED``: unset or empty is 0. NumPy takes seeds from 0 to 2**32 - 1, so only those."""
    raw = os.environ.get("COURSE_SEED", "")
    if not raw.strip():
        return 0
    try:
        seed = int(raw.strip())
    except ValueError:
        seed = -1
    if not 0 <= seed < 2**32:
        raise ValueError(f"COURSE_SEED={raw!r} is not a seed: use a whole number from 0 to {2**32 - 1} "
                         "(e.g. 1), or unset it for the default, 0.")
    return seed


def _artifacts_dir() -> Path:
    """``COURSE_ARTIFACTS``, or the default folder when it is unset or blank (a blank path would
    put every artifact into whatever folder the notebook runs in)."""
    raw = os.environ.get("COURSE_ARTIFACTS", "").strip()
    return Path(raw).expanduser() if raw else _default_artifacts()


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
    """Read ``COURSE_PROFILE``, ``COURSE_FAST``, ``COURSE_ARTIFACTS`` and ``COURSE_SEED`` now; a
    value none of them can mean raises a ValueError that says what to use."""
    profile = os.environ.get("COURSE_PROFILE", "tiny").strip().lower() or "tiny"
    if profile not in PROFILES:
        raise ValueError(
            f"COURSE_PROFILE={profile!r} is not a course profile. Use one of {PROFILES}: "
            "'tiny' runs anywhere offline, 'gpu' needs a CUDA GPU and internet access."
        )
    return Settings(
        profile=profile,
        fast=_flag("COURSE_FAST"),
        artifacts_dir=_artifacts_dir(),
        data_dir=DATA_DIR,
        seed=_seed(),
    )


def device(prefer: str | None = None) -> torch.device:
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
    from helpers import speed  # imported here: helpers.speed imports this module

    s = settings()
    threads = speed.apply()
    return (
        f"profile={s.profile}  fast={'yes' if s.fast else 'no'}  device={device()}  "
        f"{threads.describe()}  artifacts={s.artifacts_dir}"
    )
