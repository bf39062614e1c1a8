"""The gpu profile's data: human-written demonstrations and prompts, and held-out web text, from
hub datasets, converted to the course's own records.

The tiny profile generates its data (``helpers.world``); the gpu profile's pretrained models need
real language, so this module reads two public datasets and offers the same functions with the
same signatures as the world's, returning the same records (``world.Example``, plain strings):

* ``profiles.hub_id("demonstrations")`` (default ``HuggingFaceH4/no_robots``): prompts written by
  people in InstructGPT's categories, each with a human answer. Its train split is cut into three
  disjoint parts (demonstrations for SFT, prompts to rank, prompts for PPO) and its test split is
  the evaluation, as InstructGPT kept separate prompts for each stage.
* ``profiles.hub_id("heldout_text")`` (default ``Salesforce/wikitext``, ``wikitext-2-raw-v1``):
  Wikipedia articles, for the language-modeling loss (test split) and PPO-ptx's pretraining
  batches (train split).

Either id may be replaced (``profiles.HUB`` names the environment variables) by another hub id or
by a local folder with the same files. The tables are read once per process.
"""

from __future__ import annotations

import functools
import random
import re
from pathlib import Path

import pandas as pd
from huggingface_hub import snapshot_download

from helpers import hub, profiles, world
from helpers.hub import HubUnavailableError
from helpers.world import Example

# --------------------------------------------------------------------------------------------
# Where the files are
# --------------------------------------------------------------------------------------------

#: The parquet files of each split, relative to the dataset's folder (no_robots' layout).
DEMONSTRATION_FILES = {"train": "data/train-*.parquet", "test": "data/test-*.parquet"}
#: wikitext's layout. Only the splits used here: the validation split is never downloaded.
TEXT_FILES = {"train": "wikitext-2-raw-v1/train-*.parquet", "test": "wikitext-2-raw-v1/test-*.parquet"}


def _looks_like_path(name: str) -> bool:
    """A hub id is ``owner/name``; anything else with a slash (or starting like a path) is meant
    as a folder, and a missing folder should say so instead of asking the hub for it."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


@functools.lru_cache(maxsize=None)
def _dataset_folder(repo_id: str, patterns: tuple[str, ...]) -> Path:
    """The folder holding a dataset's files: ``repo_id`` itself when it is a local folder, else
    the hub snapshot of the files matching ``patterns`` (downloaded once, then read from the
    cache; offline, the cached copy)."""
    local = Path(repo_id).expanduser()
    if local.is_dir():
        return local
    if _looks_like_path(repo_id):
        raise FileNotFoundError(f"{repo_id!r} is not a folder: a local replacement for a hub dataset "
                                "(see helpers.profiles.HUB) must be an existing folder.")
    return Path(hub.from_hub(snapshot_download, repo_id, repo_type="dataset", allow_patterns=list(patterns)))


def _read_split(repo_id: str, files: dict[str, str], split: str) -> pd.DataFrame:
    """One split of a dataset as a table (its parquet files in name order, one after another)."""
    folder = _dataset_folder(repo_id, tuple(files.values()))
    paths = sorted(folder.glob(files[split]))
    if not paths:
        if Path(repo_id).expanduser().is_dir():
            raise FileNotFoundError(f"{folder} has no {files[split]}: a local replacement for a hub "
                                    "dataset must hold its parquet files in the hub dataset's layout.")
        # Offline with only part of the dataset cached, or a replacement id in another layout.
        raise HubUnavailableError(
            f"The gpu profile reads {files[split]} of the hub dataset {repo_id!r}, and its copy in "
            f"the hub cache ({folder}) has no such file. Connect to the internet to download it, or "
            "use the tiny profile, which runs offline on any CPU: set COURSE_PROFILE=tiny (in a "
            "notebook, os.environ['COURSE_PROFILE'] = 'tiny' before the setup cell).")
    return pd.concat([pd.read_parquet(path) for path in paths], ignore_index=True)


# --------------------------------------------------------------------------------------------
# Demonstrations and prompts
# --------------------------------------------------------------------------------------------

#: The train split's disjoint parts, by share, cut by a hash of the prompt id: the same prompt is
#: in the same part on every machine and for every seed. The rankings need the most prompts after
#: SFT (the comparisons stage asks for 1,500 + 300); 25% of no_robots' ~8,500 single-turn
#: conversations gives them about 2,100, where 20% would fall short. "eval" is the test split.
PART_SHARES = (("sft", 0.55), ("rm", 0.25), ("ppo", 0.20))
SPLITS = ("sft", "rm", "ppo", "eval")


def part_of(prompt_id: str) -> str:
    """The part ("sft", "rm" or "ppo") of the train split a prompt id belongs to."""
    return world.hashed_share(prompt_id, PART_SHARES)


def to_example(row, dataset: str) -> Example | None:
    """A conversation as the course's record, or None when it is not one request and one answer.

    The course's chat format (``helpers.tokenizer``) has a user turn and an assistant turn and no
    system turn, like InstructGPT's API prompts. A leading system message (no_robots has a few,
    mostly setting a persona for a chat) is dropped: the request and the human answer to it remain
    a fair demonstration. Multi-turn chats are skipped: their later answers depend on earlier turns
    that a single prompt cannot carry.
    """
    messages = [(m["role"], (m["content"] or "").strip()) for m in row["messages"]]
    if messages and messages[0][0] == "system":
        messages = messages[1:]
    if [role for role, _ in messages] != ["user", "assistant"]:
        return None
    (_, prompt), (_, response) = messages
    if not prompt or not response:
        return None
    # meta["source"] == "hub" is what the gold labeler dispatches on: a hub example has no facts
    # to grade by, so it goes to the gold reward model.
    return Example(prompt=prompt, response=response, family=str(row["category"]),
                   meta={"source": "hub", "dataset": dataset, "prompt_id": str(row["prompt_id"])})


@functools.lru_cache(maxsize=None)
def _parts(repo_id: str) -> dict[str, tuple[Example, ...]]:
    """Every usable conversation of the dataset, by split ("sft", "rm", "ppo", "eval"), in the
    dataset's order."""
    parts = {split: [] for split in SPLITS}
    for table_split in DEMONSTRATION_FILES:
        for row in _read_split(repo_id, DEMONSTRATION_FILES, table_split).to_dict("records"):
            example = to_example(row, repo_id)
            if example is not None:
                split = "eval" if table_split == "test" else part_of(example.meta["prompt_id"])
                parts[split].append(example)
    return {split: tuple(examples) for split, examples in parts.items()}


def prompts(split: str, seed: int = 0, n: int | None = None) -> list[Example]:
    """The prompts of one split ("sft", "rm", "ppo" or "eval") with the human-written answers as
    references, in an order shuffled by ``seed``; ``n`` takes the first n of that order (all of
    them when the split has fewer)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    examples = list(_parts(profiles.hub_id("demonstrations"))[split])
    random.Random(f"{seed}-{split}").shuffle(examples)
    # Copies: a caller that edits an example's meta must not change the cached ones.
    return [Example(e.prompt, e.response, e.family, dict(e.meta)) for e in examples[:n]]


def demonstrations(seed: int = 0, n: int | None = None) -> list[Example]:
    """The SFT data: the "sft" part's conversations, the human answer as the demonstration."""
    return prompts("sft", seed=seed, n=n)


# --------------------------------------------------------------------------------------------
# Text: Wikipedia articles
# --------------------------------------------------------------------------------------------

#: wikitext splits numbers and hyphenated words with "@" marks ("1 @,@ 000", "well @-@ known");
#: put them back together, so the text reads as the pretrained models' web text did.
_AT_MARKS = re.compile(r" @([-,.])@ ")


def _heading_level(line: str) -> int:
    """1 for an article's title (" = Title = "), 2 and up for its sections (" = = Sub = = "), 0 for
    any other line."""
    text = line.strip()
    if len(text) < 3 or not (text.startswith("= ") and text.endswith(" =")):
        return 0
    level = 0
    while text.startswith("= "):
        level, text = level + 1, text[2:]
    return level


def articles(lines) -> list[str]:
    """wikitext's lines as documents, one per article: an article starts at a title line, its
    paragraphs (section headings and blank lines dropped, whitespace made single spaces) are
    joined by newlines, and an article without text is skipped. (Text before the first title,
    which wikitext does not have, would make one more document.)"""
    documents, paragraphs = [], []
    for line in lines:
        level = _heading_level(line)
        if level == 1:
            documents.append("\n".join(paragraphs))
            paragraphs = []
        elif level == 0:
            text = " ".join(_AT_MARKS.sub(r"\1", line).split())
            if text:
                paragraphs.append(text)
    documents.append("\n".join(paragraphs))
    return [document for document in documents if document]


@functools.lru_cache(maxsize=None)
def _articles(repo_id: str, split: str) -> tuple[str, ...]:
    return tuple(articles(_read_split(repo_id, TEXT_FILES, split)["text"].tolist()))


def _shuffled(documents: tuple[str, ...], seed, stream: str, n: int | None) -> list[str]:
    documents = list(documents)
    random.Random(f"{seed}-{stream}").shuffle(documents)
    return documents[:n]


def pretraining_corpus(seed: int = 0, n_docs: int | None = None) -> list[str]:
    """Text like the base model's pretraining text, for PPO-ptx: wikitext's train articles in an
    order shuffled by ``seed`` (``n_docs`` of them, or all). Articles are long (thousands of
    tokens): callers pack and truncate them."""
    return _shuffled(_articles(profiles.hub_id("heldout_text"), "train"), seed, "web", n_docs)


def heldout_corpus(seed: int = 0, n_docs: int = 500) -> list[str]:
    """Held-out text to measure language-modeling loss: wikitext's test articles, shuffled by
    ``seed``. wikitext-2's test split holds about 60 articles, so ``n_docs`` beyond that gives
    them all."""
    return _shuffled(_articles(profiles.hub_id("heldout_text"), "test"), seed, "heldout", n_docs)


