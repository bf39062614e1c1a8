"""Progress bars for the course's long loops, and a status line for the course runner.

In a notebook a loop shows a tqdm bar, as usual. When the course runner
(``python -m helpers.course``) executes a notebook, nobody sees the notebook's bars: the runner
sets ``COURSE_PROGRESS_FILE``, and then every bar made here also writes a one-line status to that
file (what is being trained, how far it is, the time left), at most once a second. The runner
shows that line in the terminal while the cell runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from tqdm.auto import tqdm as _notebook_tqdm

from helpers.files import replace_file

PROGRESS_FILE_ENV = "COURSE_PROGRESS_FILE"
REPORT_EVERY = 1.0  # seconds between two writes of the status file

_stage: list[str] = []  # the stages being built, outermost first (a stage may build another)


def _file() -> Path | None:
    path = os.environ.get(PROGRESS_FILE_ENV)
    return Path(path) if path else None


def _write(status: dict) -> None:
    path = _file()
    if path is None:
        return
    status = {"stage": _stage[-1] if _stage else None, "time": time.time(), **status}
    with contextlib.suppress(OSError):  # a status line is never worth failing a training run for
        replace_file(path, json.dumps(status).encode())  # the runner never reads half a line


class tqdm(_notebook_tqdm):  # noqa: N801 - a drop-in for tqdm.auto.tqdm
    """tqdm.auto's bar, which also reports to the course runner when it is watching."""

    def __init__(self, *args, **kwargs):
        self._last_report = 0.0
        super().__init__(*args, **kwargs)

    # tqdm calls update() every few tenths of a second while iterating (and on every manual
    # update), and close() at the end: both report, at most once a second but always the end.
    def update(self, n=1):
        shown = super().update(n)
        self._report()
        return shown

    def close(self):
        if not getattr(self, "disable", True):
            self._report(final=True)
        super().close()

    def _report(self, final: bool = False) -> None:
        now = time.monotonic()
        # A disabled bar (progress=False) shows nothing, and tqdm gives it no description either.
        if getattr(self, "disable", True) or _file() is None or (not final and now - self._last_report < REPORT_EVERY):
            return
        self._last_report = now
        info = self.format_dict
        rate = info.get("rate") or (self.n / info["elapsed"] if info.get("elapsed") else None)
        left = (self.total - self.n) / rate if rate and self.total else None
        _write({"desc": self.desc or "", "n": self.n, "total": self.total, "seconds_left": left})


@contextlib.contextmanager
def stage(name: str):
    """Marks the stage being trained, so the runner's status line can name it."""
    _stage.append(name)
    _write({"desc": f"training {name}", "n": None, "total": None, "seconds_left": None})
    try:
        yield
    finally:
        _stage.pop()


def read_status(path: Path) -> dict | None:
    """The last status written to ``path``, or None."""
    try:
        status = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def format_status(status: dict | None) -> str:
    """``training base: pretraining 340/2400, 4 min left``."""
    if not status:
        return ""
    parts = []
    if status.get("stage"):
        parts.append(f"training {status['stage']}")
    desc = status.get("desc") or ""
    if desc and desc != f"training {status.get('stage')}":
        n, total = status.get("n"), status.get("total")
        count = f" {n}/{total}" if n is not None and total else ""
        parts.append(f"{desc}{count}")
    left = status.get("seconds_left")
    if isinstance(left, (int, float)) and left >= 0:
        parts.append(f"{left / 60:.0f} min left" if left >= 90 else f"{left:.0f} s left")
    return ": ".join(parts[:2]) + (", " + ", ".join(parts[2:]) if len(parts) > 2 else "")
