"""The ranking widget of the course: rank model outputs the way InstructGPT's labelers did.

``RankingWidget`` shows one prompt at a time with its K responses (A, B, C, D), a rank selector
and flag boxes under each response, and Submit / Skip / Undo buttons. Every submitted ranking is
appended to a JSON-lines file at once (``rankings.append_ranking``: one write under the file's
lock, flushed to disk), so a crashed or restarted kernel loses nothing, and a new widget on the
same file carries on where the student stopped. A write that fails (a full disk) leaves the file
as it was and says so. Undo removes the one line this widget wrote (each line has its own id),
whoever else appends to the file meanwhile.

``rank_remaining`` lets the simulated labelers rank whatever the student left. How the
student's rankings agree with the simulated labelers and the gold labeler is in
``helpers.agreement``.

Only widgets and attributes that exist in both ipywidgets 7.7 (Colab) and 8.x are used.

In a notebook::

    team = labelers.labeler_team()
    ranker = widgets.RankingWidget(items[:10], "rankings/student.jsonl")  # items: (example, [K responses])
    ranker                                  # rank in the cell output; rerun later to carry on
    print(agreement.agreement_report(ranker.rankings, items, team))
    rankings = widgets.rank_remaining(items, "rankings/student.jsonl", team)  # the rest
"""

from __future__ import annotations

import html
import warnings
from pathlib import Path

import ipywidgets as W

from helpers.files import describe_os_error
from helpers.labelers import SimulatedLabeler
# The ranking record and its one storage (append, read, undo), shared with the simulated labelers.
from helpers.rankings import (
    FLAGS, Ranking, RankingError, append_ranking, append_rankings, read_rankings, remove_ranking,
)
from helpers.world import Example

#: What the student sees next to each flag box.
FLAG_LABELS = {
    "ignores_instruction": "ignores the instruction",
    "makes_up_facts": "makes up facts",
    "harmful": "is harmful",
}
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Value of a rank selector that has no rank yet (0 rather than None: with None, ipywidgets 7
#: shows an empty selector instead of the "-" option).
NO_RANK = 0

_COLORS = {"info": "#333333", "ok": "#1a7f37", "error": "#b42318", "warn": "#9a6700"}


def letter(i: int) -> str:
    return LETTERS[i]


def join_words(words: list[str]) -> str:
    """["B"] -> "B"; ["B", "D"] -> "B and D"; ["A", "B", "D"] -> "A, B and D"."""
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def ranking_sentence(ranks: list[int]) -> str:
    """A ranking as a sentence, best first: ranks [3, 3, 2, 1] -> "D > C > A = B"."""
    groups = {}
    for i, rank in enumerate(ranks):
        groups.setdefault(rank, []).append(letter(i))
    return " > ".join(" = ".join(groups[rank]) for rank in sorted(groups))


def ranking_key(prompt_id: str, responses: list[str]) -> tuple:
    """What makes two rankings rank "the same thing": the prompt and the exact responses."""
    return (prompt_id, tuple(responses))


def _items_list(items) -> list[tuple[Example, list[str]]]:
    out = []
    for number, item in enumerate(items):
        example, responses = item
        responses = [str(r) for r in responses]
        if not 2 <= len(responses) <= len(LETTERS):
            raise ValueError(f"item {number}: a ranking needs 2 to {len(LETTERS)} responses, "
                             f"got {len(responses)}")
        out.append((example, responses))
    return out


def match_rankings(items: list[tuple[Example, list[str]]], rankings: list[Ranking],
                   labeler_names) -> list[Ranking | None]:
    """For each item, a ranking of the same prompt and responses by one of ``labeler_names``
    (or None). Each stored ranking is used once, so an item listed twice needs two rankings."""
    names = {labeler_names} if isinstance(labeler_names, str) else set(labeler_names)
    available = {}
    for ranking in rankings:
        if ranking.labeler in names:
            available.setdefault(ranking_key(ranking.prompt_id, ranking.responses), []).append(ranking)
    out = []
    for example, responses in items:
        queue = available.get(ranking_key(example.id, responses))
        out.append(queue.pop(0) if queue else None)
    return out


# --------------------------------------------------------------------------------------------
# The ranking widget
# --------------------------------------------------------------------------------------------


class _ResponseRow:
    """The controls of one response: its text, a rank selector and one box per flag."""

    def __init__(self, index: int, on_change):
        self.index = index
        self.text = W.HTML(layout=W.Layout(width="100%"))
        self.text.add_class(f"ranking-response-{index}")
        self.rank = W.Dropdown(options=[("-", NO_RANK)], value=NO_RANK, description="rank",
                               style={"description_width": "initial"},
                               layout=W.Layout(width="110px"))
        self.rank.add_class(f"rank-select-{index}")
        self.rank.add_class("rank-select")
        self.rank.observe(on_change, names="value")
        self.flags = {}
        for name in FLAGS:
            box = W.Checkbox(value=False, description=FLAG_LABELS[name], indent=False,
                             layout=W.Layout(width="auto", margin="0 0 0 16px"))
            box.add_class(f"flag-{name}-{index}")
            self.flags[name] = box
        # The response, then one line of controls under it: compact enough for a laptop screen.
        controls = W.HBox([self.rank, *self.flags.values()],
                          layout=W.Layout(flex_flow="row wrap", align_items="center"))
        self.box = W.VBox([self.text, controls], layout=W.Layout(
            border="1px solid #d0d7de", padding="2px 8px", margin="3px 0", width="100%"))
        self.box.add_class(f"ranking-row-{index}")

    def show(self, response: str, k: int, ranks: list[int] | None = None,
             flags: dict | None = None) -> None:
        self.text.value = (
            "<div style='display: flex; align-items: flex-start; gap: 8px'>"
            f"<span style='font-size: 1.2em; padding-top: 2px'><b>{letter(self.index)}</b></span>"
            "<pre style='flex: 1; white-space: pre-wrap; word-break: break-word; margin: 0; "
            "max-height: 16em; overflow: auto; background: #f6f8fa; padding: 4px;'>"
            f"{html.escape(response) or '<i>(empty response)</i>'}</pre></div>")
        # Reset the value first so that the new options always contain it.
        self.rank.value = NO_RANK
        self.rank.options = [("-", NO_RANK)] + [(str(r), r) for r in range(1, k + 1)]
        self.rank.value = ranks[self.index] if ranks else NO_RANK
        for name, box in self.flags.items():
            box.value = bool(flags and self.index in flags.get(name, ()))
        self.box.layout.display = None

    def hide(self) -> None:
        self.box.layout.display = "none"

    def set_enabled(self, enabled: bool) -> None:
        self.rank.disabled = not enabled
        for box in self.flags.values():
            box.disabled = not enabled


class RankingWidget:
    """Rank the K responses of each prompt; every ranking is saved to ``path`` as it is made.

    ``items``: a list of (world.Example, [response, ...]). ``path``: a JSON-lines file, created if
    missing. Prompts that ``labeler`` already ranked in that file (same prompt, same responses)
    are skipped, so reopening the widget resumes the work.

    Display it with ``widget.show()`` (or make it the last expression of a cell). The methods
    below do what the buttons do, for scripts and tests: ``set_ranks``, ``set_flags``,
    ``submit``, ``skip``, ``undo``; ``message`` is the text last shown to the student.
    """

    def __init__(self, items, path: Path | str, labeler: str = "student", title: str | None = None):
        if not isinstance(labeler, str) or not labeler.strip():
            raise ValueError("labeler must be a non-empty name, e.g. 'student'")
        self.items = _items_list(items)
        self.path = Path(path)
        self.labeler = labeler
        self.submitted: list[Ranking] = []  # what this widget wrote, in order (for undo)
        self.message = ""
        self._undo_stack: list[int] = []  # item index of each ranking in ``submitted``

        stored, self.problems = read_rankings(self.path)
        self.saved: list[Ranking | None] = match_rankings(self.items, stored, labeler)
        self.current_index: int | None = self._next_pending(-1)

        self._build(title)
        self._render_item()
        self._announce_start()

    # ---- layout --------------------------------------------------------------------------

    def _build(self, title: str | None) -> None:
        k_max = max((len(r) for _, r in self.items), default=2)
        heading = title or "Rank the responses"
        self.header = W.HTML(
            f"<h3 style='margin: 4px 0'>{html.escape(heading)}</h3>"
            "<div>Put the best response first (rank 1). Judge as the labeler guidelines say: "
            "follows the instruction, correct, concise, honest, harmless. Two responses that "
            "are equally good may share a rank (a tie). Tick a flag when a response deserves "
            "it.</div>")
        self.progress = W.Label()
        self.progress.add_class("ranking-progress")
        self.prompt_html = W.HTML()
        self.prompt_html.add_class("ranking-prompt")
        self.rows = [_ResponseRow(i, self._on_rank_change) for i in range(k_max)]
        self.preview = W.HTML()
        self.preview.add_class("ranking-preview")
        self.submit_button = W.Button(description="Submit ranking", button_style="primary",
                                      tooltip="Save this ranking and go to the next prompt")
        self.skip_button = W.Button(description="Skip", tooltip="Rank this prompt later")
        self.undo_button = W.Button(description="Undo last", button_style="warning",
                                    tooltip="Remove the last ranking you submitted and go back to it")
        self.submit_button.add_class("submit-ranking")
        self.skip_button.add_class("skip-ranking")
        self.undo_button.add_class("undo-ranking")
        self.submit_button.on_click(lambda _: self._guarded(self.submit))
        self.skip_button.on_click(lambda _: self._guarded(self.skip))
        self.undo_button.on_click(lambda _: self._guarded(self.undo))
        self.message_html = W.HTML()
        self.message_html.add_class("ranking-message")
        buttons = W.HBox([self.submit_button, self.skip_button, self.undo_button])
        self.widget = W.VBox([self.header, self.progress, self.prompt_html,
                              *[row.box for row in self.rows], self.preview, buttons,
                              self.message_html], layout=W.Layout(width="100%", max_width="900px"))
        self.widget.add_class("ranking-widget")

    def show(self) -> None:
        from IPython.display import display
        display(self.widget)

    def _ipython_display_(self) -> None:
        self.show()

    # ---- state ---------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return all(r is not None for r in self.saved)

    @property
    def n_ranked(self) -> int:
        return sum(r is not None for r in self.saved)

    @property
    def rankings(self) -> list[Ranking]:
        """This labeler's rankings of the items (earlier sessions included), in item order."""
        return [r for r in self.saved if r is not None]

    @property
    def k(self) -> int:
        return len(self.items[self.current_index][1]) if self.current_index is not None else 0

    def _next_pending(self, after: int) -> int | None:
        """The first unranked item after ``after``, wrapping around to skipped ones."""
        n = len(self.items)
        for step in range(1, n + 1):
            i = (after + step) % n
            if self.saved[i] is None:
                return i
        return None

    def current_ranks(self) -> list[int | None]:
        """The ranks chosen so far for the current prompt (None: no rank yet)."""
        return [None if row.rank.value == NO_RANK else row.rank.value
                for row in self.rows[:self.k]]

    def current_flags(self) -> dict[str, list[int]]:
        """The ticked flags of the current prompt: {flag: [response index, ...]}, only flags
        that are ticked somewhere."""
        flags = {name: [row.index for row in self.rows[:self.k] if row.flags[name].value]
                 for name in FLAGS}
        return {name: indices for name, indices in flags.items() if indices}

    # ---- programmatic controls (what the buttons and selectors do) -------------------------

    def set_ranks(self, ranks: list[int | None]) -> None:
        """Choose the rank of every response of the current prompt (None or 0: no rank)."""
        if self.current_index is None:
            raise RuntimeError("every prompt is ranked; nothing to set")
        if len(ranks) != self.k:
            raise ValueError(f"this prompt has {self.k} responses, got {len(ranks)} ranks")
        for row, rank in zip(self.rows, ranks):
            rank = NO_RANK if rank is None else rank
            if rank not in range(0, self.k + 1):
                raise ValueError(f"ranks go from 1 (best) to {self.k}, got {rank}")
            row.rank.value = rank

    def set_flags(self, flags: dict[str, list[int]]) -> None:
        """Tick exactly these flags on the current prompt ({flag: [response index, ...]});
        every other box is cleared."""
        if self.current_index is None:
            raise RuntimeError("every prompt is ranked; nothing to flag")
        for name, indices in flags.items():
            if name not in FLAGS:
                raise ValueError(f"unknown flag {name!r}; flags are {FLAGS}")
            if any(not 0 <= i < self.k for i in indices):
                raise ValueError(f"flag {name!r} names a response that does not exist: {indices}")
        for row in self.rows[:self.k]:
            for name, box in row.flags.items():
                box.value = row.index in flags.get(name, ())

    def submit(self) -> Ranking | None:
        """Save the current ranking and move on; None (with ``message`` saying why) if refused."""
        if self.current_index is None:
            self._say("Every prompt is already ranked. Use Undo last to change the last one.", "warn")
            return None
        ranks = self.current_ranks()
        missing = [letter(i) for i, r in enumerate(ranks) if r is None]
        if missing:
            verb = "has" if len(missing) == 1 else "have"
            self._say(f"Give every response a rank ({join_words(missing)} {verb} none yet). "
                      "Equal ranks mean a tie.", "error")
            return None
        example, responses = self.items[self.current_index]
        ranking = Ranking(prompt_id=example.id, prompt=example.prompt, family=example.family,
                          responses=list(responses), ranks=list(ranks), labeler=self.labeler,
                          flags=self.current_flags())
        try:
            append_ranking(self.path, ranking)  # validates; on an OSError the file is as it was
        except RankingError as error:
            self._say(f"This ranking cannot be saved: {error}", "error")
            return None
        except OSError as error:
            # The selectors keep the ranking, so pressing Submit again is all it takes.
            self._say(f"Could not save this ranking: {describe_os_error(error)}. Nothing was written: "
                      f"{self.path} is as it was before. Fix that (e.g. free some disk space) and "
                      "press Submit again.", "error")
            return None
        index = self.current_index
        self.saved[index] = ranking
        self.submitted.append(ranking)
        self._undo_stack.append(index)
        self.current_index = self._next_pending(index)
        self._render_item()

        text = f"Saved: {ranking_sentence(ranking.ranks)}."
        if ranking.flags:
            text += " Flagged: " + "; ".join(
                f"{join_words([letter(i) for i in indices])} {FLAG_LABELS[name]}"
                for name, indices in ranking.flags.items()) + "."
        if not ranking.pairs():
            text += (" Every response shares one rank, so this ranking gives the reward model no "
                     "comparison to learn from.")
        if self.done:
            self._say(text + "\n" + self.summary(), "ok")
        else:
            self._say(text, "ok")
        return ranking

    def skip(self) -> None:
        """Leave the current prompt for later: it comes back after the others."""
        if self.current_index is None:
            self._say("Every prompt is ranked: nothing to skip.", "warn")
            return
        following = self._next_pending(self.current_index)
        if following == self.current_index:
            self._say("This is the only prompt left to rank.", "warn")
            return
        skipped = self.current_index
        self.current_index = following
        self._render_item()
        self._say(f"Skipped prompt {skipped + 1}; it comes back after the others.", "info")

    def undo(self) -> Ranking | None:
        """Remove the last ranking this widget submitted from the file and go back to it."""
        if not self.submitted:
            self._say("Nothing to undo: no ranking was submitted with this widget yet "
                      f"(rankings from earlier sessions stay in {self.path}).", "warn")
            return None
        ranking = self.submitted[-1]
        try:
            # By the id of the line this widget wrote: never another writer's line.
            found = remove_ranking(self.path, ranking.id)
        except OSError as error:
            self._say(f"Could not undo: {describe_os_error(error)}. {self.path} is unchanged and the "
                      "ranking is still saved.", "error")
            return None
        self.submitted.pop()
        index = self._undo_stack.pop()
        self.saved[index] = None
        self.current_index = index
        self._render_item(ranks=ranking.ranks, flags=ranking.flags)
        text = f"Removed the ranking {ranking_sentence(ranking.ranks)} of prompt {index + 1}. "
        if not found:
            text += f"(It was no longer in {self.path}.) "
        self._say(text + "Change it and submit again.", "info")
        return ranking

    # ---- display -------------------------------------------------------------------------

    def summary(self) -> str:
        n = len(self.items)
        head = (f"All {n} prompts are ranked." if self.done
                else f"{self.n_ranked} of {n} prompts are ranked.")
        return (f"{head} {self.n_ranked} rankings by {self.labeler} are saved in {self.path} "
                f"({len(self.submitted)} from this session).")

    def _render_item(self, ranks=None, flags=None) -> None:
        n = len(self.items)
        self.progress.value = f"{self.n_ranked} / {n} ranked"
        if self.current_index is None:
            self.prompt_html.value = ("<div style='padding: 8px; background: #dafbe1'><b>Done!</b> "
                                      f"Every prompt is ranked: {n} / {n}.</div>")
            for row in self.rows:
                row.set_enabled(False)
                row.hide()
            self.preview.value = ""
            self.submit_button.disabled = self.skip_button.disabled = True
            self.undo_button.disabled = not self.submitted
            return
        example, responses = self.items[self.current_index]
        self.prompt_html.value = (
            f"<div style='margin-top: 6px'>Prompt {self.current_index + 1} of {n}:</div>"
            "<pre style='white-space: pre-wrap; word-break: break-word; margin: 2px 0; "
            "font-weight: bold; background: #eef4ff; padding: 6px;'>"
            f"{html.escape(example.prompt)}</pre>")
        for row in self.rows:
            if row.index < len(responses):
                row.show(responses[row.index], len(responses), ranks, flags)
                row.set_enabled(True)
            else:
                row.hide()
        self.submit_button.disabled = False
        self.skip_button.disabled = self.n_ranked >= n - 1
        self.undo_button.disabled = not self.submitted
        self._on_rank_change()

    def _on_rank_change(self, change=None) -> None:
        if self.current_index is None or not hasattr(self, "preview"):
            return
        ranks = self.current_ranks()
        missing = [letter(i) for i, r in enumerate(ranks) if r is None]
        chosen = [r for r in ranks if r is not None]
        if not chosen:
            self.preview.value = "<i>Your ranking: choose a rank for each response.</i>"
            return
        known = {i: r for i, r in enumerate(ranks) if r is not None}
        groups = {}
        for i, r in known.items():
            groups.setdefault(r, []).append(letter(i))
        text = " > ".join(" = ".join(groups[r]) for r in sorted(groups))
        if missing:
            text += f" (no rank yet: {join_words(missing)})"
        self.preview.value = f"Your ranking: <b>{html.escape(text)}</b>"

    def _say(self, text: str, kind: str = "info") -> None:
        self.message = text
        body = html.escape(text).replace("\n", "<br>")
        self.message_html.value = f"<div style='color: {_COLORS[kind]}'>{body}</div>"

    def _announce_start(self) -> None:
        n = len(self.items)
        if not n:
            text, kind = "There is nothing to rank.", "warn"
        elif self.done:
            text, kind = self.summary(), "ok"
        elif self.n_ranked:
            text = (f"Welcome back: {self.n_ranked} of {n} prompts were already ranked by "
                    f"{self.labeler} in {self.path}. Carrying on with prompt {self.current_index + 1}.")
            kind = "info"
        else:
            text = f"Your rankings are saved to {self.path} as you submit them."
            kind = "info"
        if self.problems:
            text += (f"\n{len(self.problems)} line(s) of {self.path} could not be read and are "
                     "skipped (the other rankings are fine):\n" + "\n".join(self.problems))
            kind = "warn"
        self._say(text, kind)

    def _guarded(self, action) -> None:
        """Run a button's action; show an unexpected error in the message area (a button
        callback's exception would otherwise vanish into the kernel log)."""
        try:
            action()
        except Exception as error:  # noqa: BLE001 - shown to the student, not swallowed
            self._say(f"Something went wrong: {type(error).__name__}: {error}", "error")




# --------------------------------------------------------------------------------------------
# The simulated labelers for the rest
# --------------------------------------------------------------------------------------------


def _read_reporting(path: Path | str) -> list[Ranking]:
    """The rankings of a file; lines that cannot be used are skipped with a warning naming each
    ("<file> line 7: ranks must be ..."), so a student sees why a ranking of theirs is not counted."""
    rankings, problems = read_rankings(path)
    if problems:
        warnings.warn(f"{len(problems)} line(s) of {path} could not be read and are skipped:\n"
                      + "\n".join(problems), stacklevel=3)
    return rankings


def rank_remaining(items, path: Path | str, team: list[SimulatedLabeler],
                   labeler: str = "student", out_path: Path | str | None = None) -> list[Ranking]:
    """Let the simulated labelers rank every item ``labeler`` has not ranked in ``path``.

    Item i goes to ``team[i % len(team)]`` (one labeler per prompt, as in the paper). The new
    rankings are appended to ``out_path`` (default: ``path``); items a team member already
    ranked there are not ranked again, so running this twice adds nothing. Returns one ranking
    per item, in item order: the student's where there is one, else the simulated labeler's.
    """
    if not team:
        raise ValueError("the team needs at least one simulated labeler")
    items = _items_list(items)
    out_path = Path(out_path) if out_path is not None else Path(path)
    stored = _read_reporting(path)
    student = match_rankings(items, stored, labeler)
    earlier = match_rankings(items, stored if out_path == Path(path) else _read_reporting(out_path),
                             [lab.name for lab in team])
    result, new = [], []
    for i, ((example, responses), mine, theirs) in enumerate(zip(items, student, earlier)):
        if mine is None and theirs is None:
            theirs = team[i % len(team)].rank(example, responses)
            new.append(theirs)
        result.append(mine if mine is not None else theirs)
    append_rankings(out_path, new)
    return result

