"""Models from the Hugging Face hub (the gpu profile), with a message that says what to do when
the hub cannot be reached."""

from __future__ import annotations

import os
from collections.abc import Callable


class HubUnavailableError(RuntimeError):
    """A hub model of the gpu profile could not be loaded (usually: no internet access)."""


def from_hub(load: Callable, name: str, **kwargs):
    """``load(name, **kwargs)`` (a ``from_pretrained``), with a clear message when offline."""
    try:
        return load(name, **kwargs)
    except Exception as err:  # noqa: BLE001 - offline, no route, rate limit: all mean the same here
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
        why = "HF_HUB_OFFLINE is set" if offline else "no internet access, or the hub is unreachable"
        raise HubUnavailableError(
            f"The gpu profile loads {name!r} from the Hugging Face hub, and that failed "
            f"({why}: {type(err).__name__}). Without internet access use the tiny profile, which "
            "runs offline on any CPU: set COURSE_PROFILE=tiny (in a notebook, "
            "os.environ['COURSE_PROFILE'] = 'tiny' before the setup cell)."
        ) from err
