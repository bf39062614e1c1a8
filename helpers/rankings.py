"""Rankings: the record of one labeler's ranking of K responses, and its JSON-lines storage.

A rankings file holds one ranking per line. The simulated labelers, the ranking widget and
``widgets.rank_remaining`` all store rankings through this module, so every writer follows the
same rules:

* Appending (``append_ranking``, ``append_rankings``) takes the file's lock, writes whole lines
  in one write() and forces them to disk: a killed kernel loses nothing it reported as saved. A
  write that fails part way (a full disk) is cut off again, so the file is exactly as it was.
* Every stored ranking gets a unique ``id``. Undo (``remove_ranking``) removes the one line with
  the id it is given, holding the same lock, and replaces the file atomically: rankings another
  process appends meanwhile are never lost, and a crash leaves the old file or the new one.
* Reading (``read_rankings``) checks the type and value of every field. A line that is not a
  usable ranking is skipped and reported as "<file> line <n>: what is wrong (this line is
  skipped)"; the other lines load.

The file primitives (the lock, the durable append and the atomic replace) are in
``helpers.files``.
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from helpers.files import append_lines, locked, read_all, rewrite_file

# --------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------

#: Flags a labeler may tick on a response (InstructGPT's labelers flagged similar things).
FLAGS = ("ignores_instruction", "makes_up_facts", "harmful")


class RankingError(ValueError):
    """A ranking record that cannot be used, with a message saying what to fix."""


@dataclass
class Ranking:
    """One labeler's ranking of K responses to one prompt.

    ``ranks[i]`` is the place of ``responses[i]``: 1 is best, equal numbers are ties
    ("D > C > A = B" is ranks [3, 3, 2, 1]). ``id`` is given when the ranking is stored (each
    stored line has its own), so that undo can remove exactly the line it wrote.
    """

    prompt_id: str
    prompt: str
    family: str
    responses: list[str]
    ranks: list[int]
    labeler: str
    flags: dict[str, list[int]] = field(default_factory=dict)
    time: str = ""
    id: str = ""

    def validate(self) -> "Ranking":
        """Check every field's type and value; raise RankingError saying what is wrong."""
        for name in ("prompt_id", "prompt", "family", "labeler", "time", "id"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise RankingError(f"{name} must be text, got {_describe(value)}")
        if not isinstance(self.responses, (list, tuple)) or not all(isinstance(r, str) for r in self.responses):
            raise RankingError(f"responses must be a list of texts, got {_describe(self.responses)}")
        k = len(self.responses)
        if k < 2:
            raise RankingError(f"a ranking needs at least 2 responses, got {k}")
        if not isinstance(self.ranks, (list, tuple)):
            raise RankingError(f"ranks must be a list of whole numbers, got {_describe(self.ranks)}")
        if len(self.ranks) != k:
            raise RankingError(f"{k} responses but {len(self.ranks)} ranks: give every response a rank")
        if not all(_is_index(r, 1, k) for r in self.ranks):
            raise RankingError(f"ranks must be whole numbers from 1 (best) to {k}, got {_short(self.ranks)}")
        if not isinstance(self.flags, dict):
            raise RankingError(f'flags must be an object such as {{"harmful": [0]}}, got {_describe(self.flags)}')
        for name, indices in self.flags.items():
            if name not in FLAGS:
                raise RankingError(f"unknown flag {name!r}; flags are {FLAGS}")
            if not isinstance(indices, (list, tuple)):
                raise RankingError(f"flag {name!r} must be a list of response numbers, got {_describe(indices)}")
            if not all(_is_index(i, 0, k - 1) for i in indices):
                raise RankingError(f"flag {name!r} must list responses by their number, 0 to {k - 1}; "
                                   f"got {_short(indices)}")
        return self

    def to_json(self) -> dict:
        row = asdict(self)
        if not row["id"]:  # never stored (e.g. a simulated labeler's ranking): no id to write
            del row["id"]
        return row

    @classmethod
    def from_json(cls, row) -> "Ranking":
        """A ranking from one parsed JSON line; RankingError says what is wrong with it."""
        if not isinstance(row, dict):
            raise RankingError(f"a ranking is a JSON object ({{...}}), got {_describe(row)}")
        missing = [key for key in _REQUIRED if key not in row]
        if missing:
            raise RankingError(f"missing field(s): {', '.join(missing)}")
        # Values are taken as they are and checked by validate(): converting first would let a
        # string pass as a list of responses (one per letter).
        flags = row.get("flags")
        return cls(prompt_id=row["prompt_id"], prompt=row["prompt"], family=row["family"],
                   responses=row["responses"], ranks=row["ranks"], labeler=row["labeler"],
                   flags={} if flags is None else flags, time=row.get("time", ""),
                   id=row.get("id", "")).validate()

    def pairs(self) -> list[tuple[int, int]]:
        return preference_pairs(self.ranks)


_REQUIRED = ("prompt_id", "prompt", "family", "responses", "ranks", "labeler")


def _is_index(value, low: int, high: int) -> bool:
    """A whole number (not a float such as 1.0, not True/False) from low to high."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value) -> str:
    """What a JSON value is, in words: 'a list ([1, 2])', 'null', 'a number (1.5)'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"true/false ({str(value).lower()})"
    kind = ("a number" if isinstance(value, (int, float)) else "text" if isinstance(value, str)
            else "a list" if isinstance(value, (list, tuple)) else "an object" if isinstance(value, dict)
            else type(value).__name__)
    return f"{kind} ({_short(value)})"


def preference_pairs(ranks: list[int]) -> list[tuple[int, int]]:
    """All (winner, loser) index pairs implied by one ranking; tied pairs carry no preference.

    K responses give up to C(K, 2) = K (K - 1) / 2 pairs; ranks [1, 2, 2, 3] give 5 (the tie
    between the two 2s is dropped).
    """
    out = []
    for i, j in itertools.combinations(range(len(ranks)), 2):
        if ranks[i] < ranks[j]:
            out.append((i, j))
        elif ranks[j] < ranks[i]:
            out.append((j, i))
    return out


# --------------------------------------------------------------------------------------------
# Rankings files: append, read, undo
# --------------------------------------------------------------------------------------------


def _stamp(ranking: Ranking, now: str) -> bytes:
    """Validate a ranking about to be stored, give it its time and a new id; its JSON line."""
    ranking.validate()
    ranking.time = ranking.time or now
    ranking.id = uuid.uuid4().hex  # every stored line its own id, even for a ranking stored twice
    return (json.dumps(ranking.to_json(), ensure_ascii=False) + "\n").encode("utf-8")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def append_ranking(path: Path | str, ranking: Ranking) -> None:
    """Append one ranking as a JSON line and force it to disk (a killed kernel loses nothing).

    Sets ``ranking.time`` (if empty) and ``ranking.id`` (the id of the stored line, what
    ``remove_ranking`` needs). On an OSError (a full disk) the file is left as it was.
    """
    append_lines(path, _stamp(ranking, _now()))


def append_rankings(path: Path | str, rankings: list[Ranking]) -> None:
    """Append many rankings with one write and one flush to disk (``append_ranking`` per line
    would force the disk once per ranking). All or nothing: one invalid ranking stores none."""
    if not rankings:
        return
    now = _now()
    append_lines(path, b"".join(_stamp(ranking, now) for ranking in rankings))


def read_rankings(path: Path | str, strict: bool = False) -> tuple[list[Ranking], list[str]]:
    """All rankings of a JSONL file and a list of problems ("file.jsonl line 7: ...").

    A line that is not a usable ranking (cut short, not JSON, a field of the wrong type or value)
    never hides the others: it is reported and skipped (``strict=True`` raises on the first
    problem instead).
    """
    path = Path(path)
    try:
        with locked(path, exclusive=False, create=False) as fd:  # no half-written append is seen
            data = read_all(fd)
    except FileNotFoundError:
        return [], []
    rankings, problems = [], []
    # Lines end at "\n" only: JSON written with ensure_ascii=False may hold U+2028 and the like,
    # which str.splitlines() would take for line ends.
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise RankingError("not UTF-8 text") from None
            rankings.append(Ranking.from_json(json.loads(line)))
        except (ValueError, RecursionError) as error:  # RankingError and JSONDecodeError are ValueErrors
            problem = f"{path} line {number}: {error} (this line is skipped)"
            if strict:
                raise RankingError(problem) from None
            problems.append(problem)
    return rankings, problems


def _line_id(line: bytes) -> str | None:
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return row.get("id") if isinstance(row, dict) else None


def remove_ranking(path: Path | str, ranking_id: str) -> bool:
    """Remove the line whose id is ``ranking_id`` (undo); False if no line has it.

    Holding the lock appenders take, the file is read, the line dropped and the rest (corrupt
    lines too, byte for byte) written back atomically (``files.rewrite_file``). Only that one line
    goes: undo never removes a ranking it did not write, whoever else appends to the file
    meanwhile.
    """
    path = Path(path)
    if not ranking_id or not path.exists():  # a ranking never stored has no line to remove
        return False
    return rewrite_file(path, lambda data: _without_line(data, ranking_id))


def _without_line(data: bytes, ranking_id: str) -> bytes | None:
    """``data`` without its last line whose id is ``ranking_id`` (None if no line has it)."""
    needle = ranking_id.encode("utf-8")
    lines = data.splitlines(keepends=True)
    for number in range(len(lines) - 1, -1, -1):
        if needle in lines[number] and _line_id(lines[number]) == ranking_id:  # cheap test first
            return b"".join(lines[:number] + lines[number + 1:])
    return None

