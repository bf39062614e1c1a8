"""Colab's environment on this machine: a virtual environment the way Colab's setup cell makes it.

Colab preinstalls torch, transformers and ipywidgets (and no trl). The setup cell of a notebook
installs the course from git, a regular (non-editable) wheel, and then only what is missing, with
the preinstalled versions kept. This module rebuilds that in ``.venvs/colab-<key>/`` (git-ignored):

1. a fresh venv with Colab's transformers and ipywidgets, and this machine's torch (the CPU
   build of 2.13.0; Colab's is 2.11 with CUDA, which we cannot install here);
2. the course built into a wheel and installed with ``pip install <wheel>[dev]`` under a
   constraints file holding the preinstalled versions, so pip adds what is missing (trl,
   accelerate, datasets, the test tools, ...) without replacing them. trl is pinned to the version
   that install picks today (the newest that allows those pins), so the environment repeats.

The key is a hash of ``pyproject.toml`` and the pins: a changed dependency rebuilds the venv, a
rerun reuses it and only reinstalls the freshly built wheel (``install_course``). tests/test_colab.py
runs the tests and notebooks in it; ``python tests/colab_env.py`` builds it ahead (.ci/run does).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What Colab preinstalls (and trl, which its setup cell installs next to them). Update these
#: when Colab's runtime moves; the lower bounds in pyproject.toml follow them.
COLAB_PINS = {
    "transformers": "5.15.1",  # Colab: 5.15
    "ipywidgets": "7.7.1",
    # Not preinstalled: `pip install` of the course next to transformers 5.15 takes the newest trl
    # (trl 1.16.0 asks for transformers>=4.56.2, so nothing older is needed). Pinned so the
    # environment does not change under us when trl moves on.
    "trl": "1.16.0",
}
#: This machine's CPU build (Colab ships 2.11 with CUDA; pip must keep whatever is there).
TORCH = "2.13.0"

CACHE = ROOT / ".venvs"


def _key() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(json.dumps([COLAB_PINS, TORCH, sys.version_info[:2]], sort_keys=True).encode())
    return digest.hexdigest()[:12]


def venv_dir() -> Path:
    return CACHE / f"colab-{_key()}"


def venv_python(venv: Path | None = None) -> Path:
    return (venv or venv_dir()) / "bin" / "python"


def _run(args, log, **kwargs) -> None:
    log("   $ " + " ".join(str(a) for a in args))
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({done.returncode}):\n"
                           f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def _pip(python: Path, *args, log) -> None:
    _run([python, "-m", "pip", "--disable-pip-version-check", "--no-input", "--quiet", *args], log)


def build_wheel(python: Path, out_dir: Path, log=print) -> Path:
    """The course's wheel, built from this checkout with the venv's build backend."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _pip(python, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", out_dir, ROOT, log=log)
    (wheel,) = out_dir.glob("instructgpt_step_by_step-*.whl")
    return wheel


def _build_backend() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]


def prepare(log=print) -> Path:
    """The venv of the current key, built if missing (a few minutes), reused otherwise."""
    venv = venv_dir()
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions at once build it once
        if (venv / "ready.json").exists():
            return venv
        started = time.perf_counter()
        log(f"== building Colab's environment in {venv}")
        for stale in CACHE.glob("colab-*"):  # older keys: pyproject.toml or the pins changed
            shutil.rmtree(stale, ignore_errors=True)
        _run([sys.executable, "-m", "venv", venv], log)
        python = venv_python(venv)
        _pip(python, "install", f"torch=={TORCH}", log=log)
        preinstalled = [f"{name}=={COLAB_PINS[name]}" for name in ("transformers", "ipywidgets")]
        _pip(python, "install", *preinstalled, *_build_backend(), log=log)
        constraints = venv / "colab-constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in
                                       [("torch", TORCH), *COLAB_PINS.items()]))
        with tempfile.TemporaryDirectory() as tmp:
            wheel = build_wheel(python, Path(tmp), log)
            # what the setup cell does: the course, then only what is missing, pins kept
            _pip(python, "install", "--constraint", constraints, f"{wheel}[dev]", log=log)
        versions = _versions(python)
        for name, version in [("torch", TORCH), *COLAB_PINS.items()]:
            if versions.get(name, "").split("+")[0] != version:
                raise RuntimeError(f"Colab's environment has {name} {versions.get(name)}, not {version}")
        seconds = round(time.perf_counter() - started)
        (venv / "ready.json").write_text(json.dumps({"seconds": seconds, "versions": versions}, indent=1))
        log(f"   built in {seconds} s")
        return venv


def _versions(python: Path) -> dict[str, str]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True,
                         text=True, check=True).stdout
    return {p["name"].lower(): p["version"] for p in json.loads(out)}


def install_course(venv: Path, out_dir: Path, log=print) -> Path:
    """Build this checkout's wheel into ``out_dir`` and install it into ``venv`` (not editable),
    in place of the one installed before: the code changes between runs, the venv does not."""
    python = venv_python(venv)
    wheel = build_wheel(python, out_dir, log)
    _pip(python, "install", "--no-deps", "--force-reinstall", wheel, log=log)
    return wheel


if __name__ == "__main__":
    started = time.perf_counter()
    venv = prepare()
    print(f"Colab's environment: {venv} ({time.perf_counter() - started:.0f} s)")
    print(json.dumps({k: v for k, v in json.loads((venv / "ready.json").read_text())["versions"].items()
                      if k in {"torch", *COLAB_PINS}}, sort_keys=True))
    sys.exit(0)
