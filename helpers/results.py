"""Key figures of a notebook run (a win rate, a final loss, ...), for the summary a course run prints.

A notebook calls `record("sft/win_rate_vs_base", 0.71, fmt="{:.0%}")` beside the number it
shows; the call returns the value unchanged, so it can wrap an expression. When the environment
variable COURSE_RESULTS_FILE names a JSON file, every recorded value is merged into it, so a
script that runs all the notebooks can print one table at the end (`summary_lines`).

The file maps names to values, plus one reserved key, "_formats", mapping names to their
format strings (only for values recorded with one).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS_FILE_ENV = "COURSE_RESULTS_FILE"
FORMATS_KEY = "_formats"

_recorded: dict[str, Any] = {}
_formats: dict[str, str] = {}


#: How a non-finite number is stored (JSON has no NaN or inf).
_NON_FINITE = ("nan", "inf", "-inf")


def _plain(value: Any) -> Any:
    """A JSON-friendly copy: tensors and numpy numbers become Python numbers or lists."""
    if hasattr(value, "tolist") and callable(value.tolist):  # torch tensors, numpy arrays and scalars
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or inf
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


@contextmanager
def _locked(path: Path):
    """Hold an exclusive lock beside the file while reading and rewriting it (where fcntl exists)."""
    try:
        import fcntl
    except ImportError:  # Windows: notebooks run one at a time anyway
        yield
        return
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load(path: str | Path) -> dict[str, Any]:
    """The results recorded in a file so far ({} if it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if text.strip() else {}


def _merge_into_file(path: Path, name: str, value: Any, fmt: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        results = load(path)
        results[name] = value
        if fmt is not None:
            results.setdefault(FORMATS_KEY, {})[name] = fmt
        # Write a temporary file and rename it over the old one: a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=2, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def record(name: str, value: Any, fmt: str | None = None) -> Any:
    """Remember a key figure of this run; return `value` unchanged.

    fmt: how to show it in the summary, a str.format pattern such as "{:.3f}" or "{:.0%}", or
    just the format spec (".3f").
    """
    if fmt is not None and "{" not in fmt:
        fmt = "{:" + fmt + "}"
    if name == FORMATS_KEY:
        raise ValueError(f"{FORMATS_KEY!r} is reserved")
    plain = _plain(value)
    _recorded[name] = plain
    if fmt is not None:
        if plain is not None and plain not in _NON_FINITE:  # NaN has no number to format
            fmt.format(plain)  # fail here, in the notebook, rather than in the summary
        _formats[name] = fmt
    path = os.environ.get(RESULTS_FILE_ENV)
    if path:
        _merge_into_file(Path(path), name, plain, fmt)
    return value


def recorded() -> dict[str, Any]:
    """Everything recorded in this process, name -> JSON-friendly value."""
    return dict(_recorded)


def format_value(value: Any, fmt: str | None = None) -> str:
    """``value`` shown with ``fmt``: a ``str.format`` pattern ("{:.0%}") or a bare spec (".0%")."""
    if fmt and "{" not in fmt:
        fmt = "{:" + fmt + "}"
    if fmt:
        try:
            return fmt.format(value)
        except (ValueError, TypeError):
            pass
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_lines(results: dict[str, Any] | str | Path | None = None) -> list[str]:
    """'name  value' lines, aligned, from a results dict or file (default: this process)."""
    if results is None:
        results, formats = recorded(), dict(_formats)
    else:
        if not isinstance(results, dict):
            results = load(results)
        formats = results.get(FORMATS_KEY, {})
    names = sorted(k for k in results if k != FORMATS_KEY)
    width = max((len(n) for n in names), default=0)
    return [f"{n:<{width}}  {format_value(results[n], formats.get(n))}" for n in names]
