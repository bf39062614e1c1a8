"""The current profile's data: the Instruction World (tiny) or hub datasets (gpu), one interface.

Notebooks and stages ask here for demonstrations, prompts and text, e.g.
``course_data.prompts("eval")``, and get the records of whichever profile is running
(``COURSE_PROFILE``): ``helpers.world`` and ``helpers.hub_data`` offer the same functions with the
same signatures, and ``profiles.PROFILES[name].data`` says which one a profile uses. A ``seed`` of
None means the run's seed (``COURSE_SEED``), so a notebook gets the run's data without passing it.
"""

from __future__ import annotations

from types import ModuleType

from helpers import config, hub_data, profiles, world
from helpers.world import Example

#: Where each kind of profile data comes from (``Profile.data``): a table, so a new source is one
#: new line here.
SOURCES: dict[str, ModuleType] = {"world": world, "hub": hub_data}


def source(profile: str | None = None) -> ModuleType:
    """The module that makes ``profile``'s data (default: the current profile's)."""
    name = profile or config.settings().profile
    if name not in profiles.PROFILES:
        raise ValueError(f"{name!r} is not a course profile; use one of {tuple(profiles.PROFILES)}")
    return SOURCES[profiles.PROFILES[name].data]


def _seed(seed: int | None) -> int:
    return config.settings().seed if seed is None else seed


def demonstrations(seed: int | None = None, n: int | None = None) -> list[Example]:
    """The SFT demonstrations (a prompt and the answer a person wrote for it)."""
    return source().demonstrations(seed=_seed(seed), n=n)


def prompts(split: str, seed: int | None = None, n: int | None = None) -> list[Example]:
    """The prompts of one split ("rm", "ppo", "eval"; also "sft") with reference answers. The
    splits are disjoint in both profiles: no stage trains on another's prompts, and the
    evaluation's prompts are seen by none."""
    return source().prompts(split, seed=_seed(seed), n=n)


def pretraining_corpus(seed: int | None = None, n_docs: int | None = None) -> list[str]:
    """Pretraining text (the tiny base model's corpus; PPO-ptx's pretraining batches)."""
    return source().pretraining_corpus(seed=_seed(seed), n_docs=n_docs)


def heldout_corpus(seed: int | None = None, n_docs: int = 500) -> list[str]:
    """Text no model trained on, to measure language-modeling loss."""
    return source().heldout_corpus(seed=_seed(seed), n_docs=n_docs)


def has_rubric(profile: str | None = None) -> bool:
    """Whether the profile's prompts come with the Instruction World's rubric (``labelers.gold_grade``:
    correct, follows the instruction, concise, refused...) and its task families. The gpu profile's
    hub prompts have only the gold reward model's score (``labelers.gold_score``); analyses that
    need the rubric say so there and show the nearest equivalent."""
    return source(profile) is world
