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
from pathlib import Path
from typing import Any

from helpers.files import rewrite_file

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


def load(path: str | Path) -> dict[str, Any]:
    """The results recorded in a file so far ({} if it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return {}
    return _parse(path.read_bytes())


def _parse(data: bytes) -> dict[str, Any]:
    text = data.decode("utf-8")
    return json.loads(text) if text.strip() else {}


def _merge_into_file(path: Path, name: str, value: Any, fmt: str | None) -> None:
    """Add one figure to the file. Several notebooks may record into it at once: the file is
    read and rewritten under its lock, and replaced atomically, so a reader never sees half a
    file and no writer's figure is lost."""

    def merged(data: bytes) -> bytes:
        results = _parse(data)
        results[name] = value
        if fmt is not None:
            results.setdefault(FORMATS_KEY, {})[name] = fmt
        return json.dumps(results, indent=2, sort_keys=True).encode("utf-8")

    path.parent.mkdir(parents=True, exist_ok=True)
    rewrite_file(path, merged)


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
