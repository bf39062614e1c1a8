"""The setup every notebook starts with, and what it takes to run the course in Colab.

Every notebook's first cell calls ``setup(PROFILE, keep_on_drive=KEEP_ON_DRIVE, prepared=PREPARED)``.
It decides three things and prints each one with where it came from:

* the profile: ``PROFILE`` in the cell when it is set, else the ``COURSE_PROFILE`` environment
  variable, else ``tiny``. The choice is written back to ``COURSE_PROFILE``, so the cell, the
  environment and ``config.settings()`` always agree;
* where trained models and your rankings are kept (``COURSE_ARTIFACTS``). Colab runs every notebook
  opened from its badge in a runtime of its own, and a runtime's disk is wiped when it ends: models
  kept in ``/content/artifacts`` are seen by that notebook only. ``keep_on_drive=True`` mounts
  Google Drive and keeps them (rankings too) in ``MyDrive/instructgpt-step-by-step/artifacts``, so
  a notebook opened later, in another runtime, finds what an earlier one made;
* prepared artifacts (``COURSE_PREPARED_ARTIFACTS``, see ``helpers.prepared_artifacts``): a hub
  repository or folder holding an instructor's trained stages, downloaded instead of trained.

In Colab it first installs what the course needs and Colab lacks (``install_missing``). Colab's
torch is built for its GPU and its transformers and ipywidgets are what its frontend and other
libraries were tested with, so none of the three is ever replaced: the notebook installs the course
with ``pip install --no-deps`` and then only the missing dependencies, with pip constrained to the
installed versions of those three.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from helpers import config

#: The name the course is installed under (pyproject.toml's ``name``).
COURSE_DISTRIBUTION = "instructgpt-step-by-step"
#: Packages Colab ships that the course must never replace, even to satisfy its own ranges.
KEEP_INSTALLED = ("torch", "transformers", "ipywidgets")

#: Where models live in a Colab runtime without Drive: on its disk, wiped when the runtime ends.
RUNTIME_ARTIFACTS = Path("/content/artifacts")
DRIVE_MOUNTPOINT = Path("/content/drive")
#: Under the Drive mount point: one folder for the course, visible in drive.google.com.
DRIVE_ARTIFACTS = Path("MyDrive") / "instructgpt-step-by-step" / "artifacts"


# --------------------------------------------------------------------------------------------
# Installing in Colab: only what is missing, never another torch
# --------------------------------------------------------------------------------------------


def course_requirements(distribution: str = COURSE_DISTRIBUTION) -> list:
    """The course's runtime requirements (``packaging`` Requirements), from its installed metadata.

    Read from the metadata (not pyproject.toml) because in Colab the course is an installed
    package with no source tree. Extras (``dev``) are left out."""
    from packaging.requirements import Requirement

    requirements = [Requirement(line) for line in importlib.metadata.requires(distribution) or []]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class InstallPlan:
    """What ``install_missing`` asks pip for, and what it leaves alone.

    install: requirement strings for pip (missing packages, or too old ones that may be upgraded);
    keep: the installed version of each package of KEEP_INSTALLED, pinned as a pip constraint so
        that nothing installed now can replace it;
    problems: kept packages whose version the course does not support, with what to do."""

    install: list[str] = field(default_factory=list)
    keep: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def constraints(self) -> str:
        """The text of pip's constraints file: every kept package at exactly its installed version."""
        return "".join(f"{name}=={version}\n" for name, version in sorted(self.keep.items()))


def plan_install(requirements: Iterable, installed: Callable[[str], str | None]) -> InstallPlan:
    """Decide what to install. ``installed(name)`` is the installed version of a package, or None."""
    plan = InstallPlan()
    for requirement in requirements:
        version = installed(requirement.name)
        kept = requirement.name.lower() in KEEP_INSTALLED
        if version is None:
            plan.install.append(str(requirement))
        elif kept:
            plan.keep[requirement.name.lower()] = version
            if not requirement.specifier.contains(version, prereleases=True):
                plan.problems.append(
                    f"{requirement.name} {version} is installed and the course needs "
                    f"{requirement.name}{requirement.specifier}; it is left as it is, so that "
                    "nothing else in this runtime breaks. If a later cell fails, install "
                    f"'{requirement}' yourself and restart the session (Runtime > Restart session)."
                )
        elif not requirement.specifier.contains(version, prereleases=True):
            plan.install.append(str(requirement))  # too old (or too new): pip picks a fitting one
    return plan


def run_pip(args: list[str]) -> None:
    # Output captured: a notebook may not show a subprocess's own output, and on failure pip's
    # message goes into the error the cell shows.
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True, text=True)


def install_missing(installed: Callable[[str], str | None] = installed_version,
                    pip: Callable[[list[str]], None] = run_pip,
                    requirements: Iterable | None = None) -> InstallPlan:
    """Install the course's dependencies that are missing, without replacing KEEP_INSTALLED.

    The course itself is installed with ``pip install --no-deps`` first (in the setup cell);
    this installs the rest, e.g. TRL, which Colab lacks. Prints what it did."""
    plan = plan_install(course_requirements() if requirements is None else requirements, installed)
    for problem in plan.problems:
        print("warning:", problem)
    kept = ", ".join(f"{name} {version}" for name, version in sorted(plan.keep.items()))
    if not plan.install:
        print(f"nothing to install: the course's dependencies are here (kept {kept or 'everything'})")
        return plan
    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "keep-installed.txt"
        constraints.write_text(plan.constraints())
        try:
            pip(["install", "--quiet", "--constraint", str(constraints), *plan.install])
        except subprocess.CalledProcessError as err:
            said = "\n".join(str(err.stderr or err.output or "").strip().splitlines()[-15:])
            raise RuntimeError(
                f"pip could not install {', '.join(plan.install)} next to the installed {kept}. "
                "Start a fresh runtime (Runtime > Disconnect and delete runtime) and run the setup "
                "cell again; if it fails again, please report it with pip's message"
                + (f":\n{said}" if said else ".")
            ) from err
    importlib.invalidate_caches()  # so that the packages just installed can be imported now
    done = ", ".join(f"{_name(line)} {installed(_name(line)) or '?'}" for line in plan.install)
    print(f"installed {done}" + (f"; kept {kept}" if kept else ""))
    # A package upgraded after this kernel imported it stays the old one until a restart.
    loaded = [_name(line) for line in plan.install if _name(line).replace("-", "_") in sys.modules]
    if loaded:
        print(f"{', '.join(loaded)} had been imported before this install: restart the session "
              "(Runtime > Restart session), then run this cell again.")
    return plan


def _name(requirement: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(requirement).name


# --------------------------------------------------------------------------------------------
# Google Drive
# --------------------------------------------------------------------------------------------


def _mount_google_drive(mountpoint: str) -> None:
    from google.colab import drive  # only importable in Colab

    drive.mount(mountpoint)


def drive_artifacts(mount: Callable[[str], None] = _mount_google_drive,
                    mountpoint: Path = DRIVE_MOUNTPOINT) -> Path:
    """Mount Google Drive (unless it is mounted already) and return the course's folder on it."""
    if not (mountpoint / "MyDrive").is_dir():
        try:
            mount(str(mountpoint))
        except Exception as err:  # noqa: BLE001 - declined access, no account, timeout: all the same here
            raise RuntimeError(
                f"Google Drive could not be mounted ({type(err).__name__}: {err}). Run the setup "
                "cell again and allow access to your Drive, or set KEEP_ON_DRIVE = False to keep "
                "models in this runtime only."
            ) from err
    folder = mountpoint / DRIVE_ARTIFACTS
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------------------------
# The setup cell
# --------------------------------------------------------------------------------------------


#: The environment variables as they were before the setup cell first set them, so that a cell
#: run again with ``PROFILE = None`` goes back to the variable, not to the cell's earlier value.
_before_cell: dict[str, str | None] = {}


def _choose(value: str | None, variable: str, cell_name: str, default: str | None) -> tuple[str | None, str]:
    """The cell's value when set, else the environment variable's, else the default; the choice
    is written back to the variable, so later code (and kernels started from here) agree."""
    if value is not None:
        _before_cell.setdefault(variable, os.environ.get(variable))
        os.environ[variable] = str(value)
        return str(value), f"set by {cell_name} in the setup cell"
    if variable in _before_cell:  # set by an earlier run of the cell: undo it
        original = _before_cell.pop(variable)
        if original is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = original
    if os.environ.get(variable, "").strip():
        return os.environ[variable].strip(), f"set by the {variable} environment variable ({cell_name} is None)"
    return default, f"the default ({cell_name} is None and {variable} is not set)"


def _choose_artifacts(colab: bool, keep_on_drive: bool, mount, mountpoint: Path) -> str:
    """Set COURSE_ARTIFACTS; return a note on how long what is kept there lasts."""
    if not colab:
        return ("KEEP_ON_DRIVE applies in Colab only; on this computer, models and rankings stay "
                "in the folder above") if keep_on_drive else ""
    drive = mountpoint / DRIVE_ARTIFACTS
    if keep_on_drive:
        os.environ["COURSE_ARTIFACTS"] = str(drive_artifacts(mount, mountpoint))
        return ("on Google Drive: models and rankings made here stay there for the notebooks "
                "you open later, in any runtime")
    current = os.environ.get("COURSE_ARTIFACTS")
    if current is None or Path(current) == drive:  # the Drive folder only if this cell chose it
        os.environ["COURSE_ARTIFACTS"] = str(RUNTIME_ARTIFACTS)
    return ("in this runtime only: models and rankings made here are lost when the runtime "
            "ends, and other notebooks, each in a runtime of its own, do not see them. "
            "KEEP_ON_DRIVE = True in the setup cell keeps them on Google Drive")


def setup(profile: str | None = None, keep_on_drive: bool = False, prepared: str | None = None, *,
          colab: bool | None = None, install: Callable[[], object] = install_missing,
          mount: Callable[[str], None] = _mount_google_drive, mountpoint: Path = DRIVE_MOUNTPOINT):
    """Everything a notebook's first cell does; returns ``(SETTINGS, DEVICE)``.

    profile: "tiny", "gpu", or None for ``COURSE_PROFILE`` (default "tiny").
    keep_on_drive: in Colab, keep artifacts and rankings on Google Drive (mounted now).
    prepared: a hub repository ("user/name") or folder of prepared artifacts, or None for
        ``COURSE_PREPARED_ARTIFACTS`` (default: none).
    colab, install, mount, mountpoint: what the tests replace (Colab itself, pip, Drive)."""
    colab = config.in_colab() if colab is None else colab
    if profile is not None and profile not in config.PROFILES:
        raise ValueError(f"PROFILE = {profile!r} is not a course profile: use one of "
                         f"{config.PROFILES} ('tiny' runs anywhere offline, 'gpu' needs a CUDA "
                         "GPU and internet access), or None for COURSE_PROFILE.")
    if colab:
        install()
    profile, profile_source = _choose(profile, "COURSE_PROFILE", "PROFILE", "tiny")
    artifacts_note = _choose_artifacts(colab, keep_on_drive, mount, mountpoint)
    source, source_from = _choose(prepared, "COURSE_PREPARED_ARTIFACTS", "PREPARED", None)

    settings = config.settings()
    config.seed_everything(settings.seed)
    device = config.device()
    print(config.describe())  # profile, fast mode, device, artifacts folder
    print(f"profile: {settings.profile}, {profile_source}")
    if artifacts_note:
        print(f"artifacts: {artifacts_note}")
    if source:
        print(f"prepared models: {source}, {source_from}; a model not made here yet is downloaded "
              "from there if it was made with the same settings, else trained here")
    return settings, device
