"""The gpu profile's data (helpers.hub_data) and the profile switch (helpers.course_data).

The hub cannot be reached in tests, so each test writes a few dozen rows in the real datasets'
layouts (no_robots' conversations, wikitext's lines) into a temporary folder and points the
profile's overrides (``profiles.HUB``) at it: the same path a user with a local copy takes.
"""

import collections

import huggingface_hub.constants
import pandas as pd
import pytest

from helpers import course_data, hub_data, profiles, world
from helpers.hub import HubUnavailableError

DEMONSTRATIONS_VAR = profiles.HUB["demonstrations"][0]
TEXT_VAR = profiles.HUB["heldout_text"][0]
CATEGORIES = ("Generation", "Open QA", "Brainstorm", "Rewrite", "Classify")


def _turns(*pairs):
    return [{"content": content, "role": role} for role, content in pairs]


def _row(prompt_id, messages, category="Generation"):
    """A row as no_robots has it: ``prompt`` repeats the first user message."""
    first_user = next(m["content"] for m in messages if m["role"] == "user")
    return {"prompt": first_user, "prompt_id": prompt_id, "messages": messages, "category": category}


def _single(i, split):
    text = f"{split} request number {i}: write something."
    return _row(f"{split}-{i:04d}", _turns(("user", text), ("assistant", f"Answer to {split} {i}.")),
                CATEGORIES[i % len(CATEGORIES)])


def _write(folder, name, rows):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(folder / f"{name}-00000-of-00001.parquet")


@pytest.fixture
def no_robots(tmp_path, monkeypatch):
    """A no_robots-shaped folder: 40 single-turn train rows, one with a system message, one
    multi-turn chat and one with an empty answer; 8 test rows. Returns the folder."""
    folder = tmp_path / "no_robots"
    train = [_single(i, "train") for i in range(40)]
    train.append(_row("train-system", _turns(("system", "You are a pirate."),
                                             ("user", "Greet me."), ("assistant", "Ahoy!")), "Chat"))
    train.append(_row("train-multi", _turns(("user", "Hi."), ("assistant", "Hello."),
                                            ("user", "Bye."), ("assistant", "Goodbye.")), "Chat"))
    train.append(_row("train-empty", _turns(("user", "Say nothing."), ("assistant", "  ")), "Chat"))
    _write(folder / "data", "train", train)
    _write(folder / "data", "test", [_single(i, "test") for i in range(8)])
    monkeypatch.setenv(DEMONSTRATIONS_VAR, str(folder))
    return folder


WIKI_TRAIN = [
    "",
    " = First Article = \n",
    "",
    " The first   paragraph , with a well @-@ known word and 1 @,@ 000 people . \n",
    "",
    " = = A section = = \n",
    " Text of the section . \n",
    " = = = A subsection = = = \n",
    " Deeper text . \n",
    " = Empty Article = \n",
    "",
    " = = Only a heading = = \n",
    "",
    " = Second Article = \n",
    " Second text . \n",
]
WIKI_TEST = [" = Test Article = \n", " Held-out text . \n", " = Other Test = \n", " More held-out text . \n"]


@pytest.fixture
def wikitext(tmp_path, monkeypatch):
    folder = tmp_path / "wikitext"
    _write(folder / "wikitext-2-raw-v1", "train", [{"text": line} for line in WIKI_TRAIN])
    _write(folder / "wikitext-2-raw-v1", "test", [{"text": line} for line in WIKI_TEST])
    monkeypatch.setenv(TEXT_VAR, str(folder))
    return folder


def _all_splits(seed=0):
    return {split: hub_data.prompts(split, seed=seed) for split in hub_data.SPLITS}


def test_single_turn_kept_system_dropped_multi_turn_and_empty_skipped(no_robots):
    parts = _all_splits()
    by_id = {e.meta["prompt_id"]: e for examples in parts.values() for e in examples}
    assert len(by_id) == 40 + 1 + 8
    assert "train-multi" not in by_id and "train-empty" not in by_id
    pirate = by_id["train-system"]
    assert (pirate.prompt, pirate.response, pirate.family) == ("Greet me.", "Ahoy!", "Chat")
    example = by_id["train-0003"]
    assert example.prompt == "train request number 3: write something."
    assert example.response == "Answer to train 3."
    assert example.family == CATEGORIES[3]


def test_every_example_carries_the_hub_marker(no_robots):
    for examples in _all_splits().values():
        for e in examples:
            assert e.meta == {"source": "hub", "dataset": str(no_robots), "prompt_id": e.meta["prompt_id"]}


def test_parts_are_disjoint_and_the_same_for_every_seed(no_robots):
    ids = {seed: {split: {e.meta["prompt_id"] for e in examples}
                  for split, examples in _all_splits(seed).items()}
           for seed in (0, 1)}
    assert ids[0] == ids[1]
    parts = ids[0]
    for a in hub_data.SPLITS:
        for b in hub_data.SPLITS:
            if a < b:
                assert not parts[a] & parts[b], (a, b)
    assert parts["eval"] == {f"test-{i:04d}" for i in range(8)}
    assert all(parts[split] for split in ("sft", "rm", "ppo"))
    assert [e.meta["prompt_id"] for e in hub_data.demonstrations()] == \
        [e.meta["prompt_id"] for e in hub_data.prompts("sft")]


def test_part_shares_follow_the_table():
    counts = collections.Counter(hub_data.part_of(f"id-{i}") for i in range(20_000))
    for name, share in hub_data.PART_SHARES:
        assert abs(counts[name] / 20_000 - share) < 0.02, (name, counts)


def test_a_seed_fixes_the_order_and_n_takes_its_first(no_robots):
    def ids(examples):
        return [e.meta["prompt_id"] for e in examples]

    assert ids(hub_data.prompts("sft", seed=3)) == ids(hub_data.prompts("sft", seed=3))
    assert ids(hub_data.prompts("sft", seed=3)) != ids(hub_data.prompts("sft", seed=4))
    assert ids(hub_data.prompts("rm", seed=3, n=3)) == ids(hub_data.prompts("rm", seed=3))[:3]
    assert len(hub_data.demonstrations(n=5)) == 5
    assert len(hub_data.prompts("eval", n=100)) == 8  # a split smaller than n: all of it
    with pytest.raises(ValueError, match="unknown split"):
        hub_data.prompts("web")


def test_callers_cannot_change_the_cached_examples(no_robots):
    hub_data.prompts("eval")[0].meta["source"] = "edited"
    assert all(e.meta["source"] == "hub" for e in hub_data.prompts("eval"))


def test_wikitext_lines_become_one_document_per_article(wikitext):
    first = ("The first paragraph , with a well-known word and 1,000 people .\n"
             "Text of the section .\nDeeper text .")
    assert sorted(hub_data.pretraining_corpus()) == sorted([first, "Second text ."])
    assert sorted(hub_data.heldout_corpus()) == ["Held-out text .", "More held-out text ."]
    assert len(hub_data.heldout_corpus(n_docs=1)) == 1
    for seed in (0, 1, 2):
        assert hub_data.pretraining_corpus(seed=seed) == hub_data.pretraining_corpus(seed=seed)


def test_course_data_follows_the_profile(no_robots, wikitext, monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "tiny")
    monkeypatch.setenv("COURSE_SEED", "2")
    assert course_data.source() is world
    tiny = course_data.prompts("rm", n=4)
    assert [e.to_json() for e in tiny] == [e.to_json() for e in world.prompts("rm", seed=2, n=4)]
    assert all(e.meta.get("source") != "hub" for e in tiny)
    assert course_data.heldout_corpus(n_docs=2) == world.heldout_corpus(seed=2, n_docs=2)

    monkeypatch.setenv("COURSE_PROFILE", "gpu")
    assert course_data.source() is hub_data
    gpu = course_data.prompts("eval")
    assert [e.prompt for e in gpu] == [e.prompt for e in hub_data.prompts("eval", seed=2)]
    assert {e.meta["source"] for e in gpu} == {"hub"}
    assert len(course_data.demonstrations(n=3)) == 3
    assert sorted(course_data.heldout_corpus()) == ["Held-out text .", "More held-out text ."]
    assert course_data.source("tiny") is world  # a named profile, whatever the current one is


def test_offline_and_not_cached_says_to_use_the_tiny_profile(monkeypatch, tmp_path):
    made_up = "course-tests-nobody/no-such-dataset"
    monkeypatch.setenv(DEMONSTRATIONS_VAR, made_up)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these when it is imported: set its own copies too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(HubUnavailableError, match="COURSE_PROFILE=tiny") as error:
        hub_data.prompts("eval")
    assert made_up in str(error.value) and "HF_HUB_OFFLINE" in str(error.value)


def test_a_local_override_that_is_no_folder_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv(TEXT_VAR, str(tmp_path / "missing" / "wikitext"))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        hub_data.heldout_corpus()
