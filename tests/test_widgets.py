"""The ranking widget, driven without a browser: through its methods, its buttons' click() and
its selectors' values, as a student's clicks would."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import agreement, labelers, widgets
from helpers.labelers import Ranking

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def path(tmp_path):
    return tmp_path / "rankings" / "student.jsonl"


def lines_of(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_ranking_sentence_and_words():
    assert widgets.ranking_sentence([3, 3, 2, 1]) == "D > C > A = B"
    assert widgets.ranking_sentence([1, 2, 3, 4]) == "A > B > C > D"
    assert widgets.ranking_sentence([2, 2, 2, 2]) == "A = B = C = D"
    assert widgets.join_words(["B"]) == "B"
    assert widgets.join_words(["B", "D"]) == "B and D"
    assert widgets.join_words(["A", "B", "D"]) == "A, B and D"


def test_widget_shows_prompt_responses_and_controls(items, path):
    example, responses = items[0]
    responses = list(responses)
    responses[1] = "<b>bold</b> & <script>x</script>"
    w = widgets.RankingWidget([(example, responses)] + items[1:], path)
    assert w.current_index == 0 and not w.done
    assert w.progress.value == f"0 / {len(items)} ranked"
    assert "<pre" in w.prompt_html.value
    assert w.rows[0].text.value.count("<pre") == 1 and "<b>A</b>" in w.rows[0].text.value
    # Responses are shown as text, never interpreted as HTML.
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;" in w.rows[1].text.value
    assert "<script>" not in w.rows[1].text.value
    assert [label for label, _ in w.rows[0].rank.options] == ["-", "1", "2", "3", "4"]
    assert [box.description for box in w.rows[0].flags.values()] == [
        "ignores the instruction", "makes up facts", "is harmful"]
    classes = {c for widget in _all_widgets(w.widget) for c in widget._dom_classes}
    for needed in ["ranking-widget", "rank-select-0", "rank-select-3", "flag-harmful-2",
                   "submit-ranking", "undo-ranking", "skip-ranking", "ranking-message",
                   "ranking-progress", "ranking-prompt"]:
        assert needed in classes


def _all_widgets(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _all_widgets(child)


def test_clicks_write_a_ranking(items, path):
    w = widgets.RankingWidget(items, path, labeler="ada")
    for row, rank in zip(w.rows, [2, 1, 4, 3]):
        row.rank.value = rank  # what choosing in the dropdown does
    w.rows[2].flags["makes_up_facts"].value = True
    w.submit_button.click()
    rows = lines_of(path)
    assert len(rows) == 1
    row = rows[0]
    example, responses = items[0]
    assert row["prompt_id"] == example.id and row["prompt"] == example.prompt
    assert row["family"] == example.family and row["responses"] == responses
    assert row["ranks"] == [2, 1, 4, 3] and row["labeler"] == "ada"
    assert row["flags"] == {"makes_up_facts": [2]} and row["time"]
    assert w.message.startswith("Saved: B > A > D > C.")
    assert "C makes up facts" in w.message
    assert w.current_index == 1 and w.progress.value == f"1 / {len(items)} ranked"
    # The next prompt starts blank.
    assert w.current_ranks() == [None] * 4 and w.current_flags() == {}
    loaded, problems = labelers.read_rankings(path)
    assert problems == [] and loaded[0].ranks == [2, 1, 4, 3]


def test_submit_refused_until_every_response_has_a_rank(items, path):
    w = widgets.RankingWidget(items, path)
    assert w.submit() is None
    assert "Give every response a rank (A, B, C and D have none yet)" in w.message
    w.set_ranks([1, None, 2, 0])
    assert w.submit() is None
    assert w.message == ("Give every response a rank (B and D have none yet). "
                         "Equal ranks mean a tie.")
    w.set_ranks([1, 3, 2, None])
    w.submit_button.click()
    assert "D has none yet" in w.message
    assert not path.exists() and w.current_index == 0
    assert "no rank yet: D" in w.preview.value


def test_ties_and_flags(items, path):
    w = widgets.RankingWidget(items, path)
    w.set_ranks([3, 3, 2, 1])
    w.set_flags({"harmful": [0], "ignores_instruction": [0, 3]})
    ranking = w.submit()
    assert isinstance(ranking, Ranking)
    assert ranking.ranks == [3, 3, 2, 1]
    assert ranking.flags == {"ignores_instruction": [0, 3], "harmful": [0]}
    assert "D > C > A = B" in w.message
    assert len(ranking.pairs()) == 5  # the tie between A and B states no preference
    assert lines_of(path)[0]["flags"] == {"ignores_instruction": [0, 3], "harmful": [0]}
    # An all-equal ranking is accepted, with a word about what it is worth.
    w.set_ranks([1, 1, 1, 1])
    assert w.submit().ranks == [1, 1, 1, 1]
    assert "no comparison" in w.message
    with pytest.raises(ValueError):
        w.set_flags({"rude": [0]})
    with pytest.raises(ValueError):
        w.set_ranks([1, 2, 3, 5])
    with pytest.raises(ValueError):
        w.set_ranks([1, 2, 3])


def test_resume_starts_at_the_first_unranked_prompt(items, path):
    w = widgets.RankingWidget(items, path)
    for ranks in ([1, 2, 3, 4], [4, 3, 2, 1]):
        w.set_ranks(ranks)
        w.submit()
    # Another labeler's rankings in the same file do not count for this one.
    other = labelers.SimulatedLabeler("labeler-9").rank(*items[2])
    labelers.append_ranking(path, other)

    again = widgets.RankingWidget(items, path)
    assert again.current_index == 2 and again.n_ranked == 2
    assert again.progress.value == f"2 / {len(items)} ranked"
    assert again.message.startswith("Welcome back: 2 of 6 prompts were already ranked")
    assert [r.ranks for r in again.rankings] == [[1, 2, 3, 4], [4, 3, 2, 1]]
    assert widgets.RankingWidget(items, path, labeler="labeler-9").current_index == 0

    # Same prompt, other responses: a different item, not yet ranked.
    example, responses = items[0]
    changed = [(example, list(reversed(responses)))] + items[1:]
    assert widgets.RankingWidget(changed, path).current_index == 0


def test_undo_removes_the_last_line_and_goes_back(items, path):
    w = widgets.RankingWidget(items, path)
    w.set_ranks([1, 2, 3, 4])
    w.submit()
    w.set_ranks([2, 2, 1, 3])
    w.set_flags({"harmful": [1]})
    w.submit()
    labelers.append_ranking(path, labelers.SimulatedLabeler("labeler-1").rank(*items[5]))
    before = lines_of(path)
    w.undo_button.click()
    after = lines_of(path)
    assert len(after) == 2 and after == [before[0], before[2]]
    assert w.current_index == 1 and w.n_ranked == 0 + 1
    # The undone ranking is back in the selectors, ready to change.
    assert w.current_ranks() == [2, 2, 1, 3] and w.current_flags() == {"harmful": [1]}
    assert "Removed the ranking C > A = B > D of prompt 2" in w.message
    w.set_ranks([1, 2, 3, 4])
    w.submit()
    assert [row["ranks"] for row in lines_of(path)] == [[1, 2, 3, 4], before[2]["ranks"], [1, 2, 3, 4]]
    # Undo twice, then once more than there is to undo.
    assert w.undo() and w.undo()
    assert w.current_index == 0 and len(lines_of(path)) == 1
    assert w.undo() is None and "Nothing to undo" in w.message
    assert not list(path.parent.glob("*.tmp"))  # no temporary file left behind


def test_undo_keeps_corrupt_lines_byte_for_byte(items, path):
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"broken": \n')
    w = widgets.RankingWidget(items, path)
    w.set_ranks([1, 2, 3, 4])
    w.submit()
    w.undo()
    assert path.read_bytes() == b'{"broken": \n'


def test_corrupt_line_is_reported_and_the_rest_count(items, path):
    first = labelers.SimulatedLabeler("x").rank(*items[0])
    second = labelers.SimulatedLabeler("x").rank(*items[1])
    first.labeler = second.labeler = "student"
    labelers.append_ranking(path, first)
    with open(path, "a") as f:
        f.write('{"prompt_id": "abc", "ranks": [1, 2\n')  # a line cut short by a crash
    labelers.append_ranking(path, second)

    w = widgets.RankingWidget(items, path)
    assert f"{path} line 2" in w.message
    assert "could not be read" in w.message
    assert "2 of 6 prompts were already ranked" in w.message
    assert w.n_ranked == 2 and w.current_index == 2
    assert "line 2" in w.message_html.value


def test_skip_comes_back_later(items, path):
    w = widgets.RankingWidget(items[:3], path)
    w.skip()
    assert w.current_index == 1 and "comes back after the others" in w.message
    for _ in range(2):
        w.set_ranks([1, 2, 3, 4])
        w.submit()
    assert w.current_index == 0  # the skipped prompt
    w.skip()
    assert w.current_index == 0 and "only prompt left" in w.message


def test_completion_state(items, path):
    w = widgets.RankingWidget(items[:2], path)
    for _ in range(2):
        w.set_ranks([1, 2, 2, 4])
        w.submit()
    assert w.done and w.current_index is None
    assert w.progress.value == "2 / 2 ranked"
    assert "All 2 prompts are ranked" in w.message and str(path) in w.message
    assert "2 rankings by student" in w.message
    assert w.submit_button.disabled and not w.undo_button.disabled
    assert all(row.box.layout.display == "none" for row in w.rows)
    assert w.submit() is None and "already ranked" in w.message
    # Undo from the finished state reopens the last prompt.
    w.undo()
    assert not w.done and w.current_index == 1 and not w.submit_button.disabled
    assert w.rows[0].box.layout.display != "none"
    # A widget on a finished file says so at once.
    w.submit()
    finished = widgets.RankingWidget(items[:2], path)
    assert finished.done and "All 2 prompts are ranked" in finished.message


def test_duplicate_items_need_one_ranking_each(items, path):
    twice = [items[0], items[0], items[1]]
    w = widgets.RankingWidget(twice, path)
    w.set_ranks([1, 2, 3, 4])
    w.submit()
    assert widgets.RankingWidget(twice, path).current_index == 1


def test_killed_kernel_loses_no_submitted_ranking(items, path):
    """A process that submits rankings through the widget and is then killed with SIGKILL
    (no chance to flush or close anything) leaves every submitted ranking in the file."""
    script = textwrap.dedent(f"""
        import sys, time
        from helpers import labelers, widgets
        examples, responses = labelers.calibration_set(n_prompts=6, k=4, seed=3)
        w = widgets.RankingWidget(list(zip(examples, responses)), {str(path)!r})
        for ranks in ([1, 2, 3, 4], [2, 2, 1, 3], [4, 3, 2, 1]):
            w.set_ranks(ranks)
            assert w.submit() is not None
            print("submitted", flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):
            assert child.stdout.readline().strip() == "submitted"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    loaded, problems = labelers.read_rankings(path, strict=True)
    assert problems == [] and [r.ranks for r in loaded] == [[1, 2, 3, 4], [2, 2, 1, 3], [4, 3, 2, 1]]
    resumed = widgets.RankingWidget(items, path)
    assert resumed.current_index == 3


def test_agreement_report(items):
    team = labelers.labeler_team(3)
    gold = [labelers.gold_labeler_ranking(e, r) for e, r in items]
    for ranking in gold:
        ranking.labeler = "student"
    report = agreement.agreement_report(gold, items, team)
    assert report["gold"] == 1.0  # ranking exactly like the gold labeler
    assert report["n_rankings"] == len(items) and report["n_pairs"] > 0
    assert set(report["labelers"]) == {"labeler-1", "labeler-2", "labeler-3"}
    assert all(0 <= v <= 1 for v in report["labelers"].values())
    assert report["paper"] == pytest.approx(0.726)
    assert math.isclose(report["labelers_mean"], sum(report["labelers"].values()) / 3)
    table = str(report)
    assert "you vs the gold labeler" in table and "100.0%" in table and "72.6%" in table
    # The team's random state is left alone, and the report is reproducible.
    assert agreement.agreement_report(gold, items, team) == report
    # The reverse of the gold ranking disagrees on every pair the gold labeler orders.
    reversed_gold = [Ranking(**{**g.to_json(), "ranks": [len(g.ranks) + 1 - r for r in g.ranks]})
                     for g in gold]
    assert agreement.agreement_report(reversed_gold, [e for e, _ in items], team)["gold"] == 0.0
    with pytest.raises(ValueError, match="no example"):
        agreement.agreement_report(gold, items[:1], team)


def test_rank_remaining(items, path):
    team = labelers.labeler_team(2)
    w = widgets.RankingWidget(items, path)
    for _ in range(2):
        w.set_ranks([1, 2, 3, 4])
        w.submit()
    result = widgets.rank_remaining(items, path, team)
    assert [r.labeler for r in result] == ["student", "student", "labeler-1", "labeler-2",
                                           "labeler-1", "labeler-2"]
    assert [r.prompt_id for r in result] == [e.id for e, _ in items]
    assert all(r.responses == resp for r, (_, resp) in zip(result, items))
    assert len(lines_of(path)) == 6
    # Running it again adds nothing; the student's widget still sees only the student's work.
    assert [r.to_json() for r in widgets.rank_remaining(items, path, team)] == \
        [r.to_json() for r in result]
    assert len(lines_of(path)) == 6
    assert widgets.RankingWidget(items, path).current_index == 2
    # Or into another file.
    other = path.parent / "simulated.jsonl"
    result = widgets.rank_remaining(items, path, team, out_path=other)
    assert len(lines_of(other)) == 4 and len(lines_of(path)) == 6


def test_display_hooks(items, path):
    w = widgets.RankingWidget(items, path)
    assert w.widget.__class__.__name__ == "VBox"
    assert callable(w.show) and callable(w._ipython_display_)
    assert widgets.RankingWidget([], path).message == "There is nothing to rank."


def test_lines_of_the_wrong_type_are_named_and_skipped(items, path):
    """Regression: valid JSON with fields of the wrong type (a list as prompt_id, a string as
    responses, a float flag index, a null time) crashed the widget with a TypeError naming
    neither file nor line, or loaded as if valid."""
    first, second = (labelers.SimulatedLabeler("x").rank(*items[i]) for i in (0, 1))
    first.labeler = second.labeler = "student"
    labelers.append_ranking(path, first)
    good = labelers.SimulatedLabeler("x").rank(*items[2]).to_json()
    good["labeler"] = "student"
    wrong = [{**good, "prompt_id": [good["prompt_id"]]}, {**good, "responses": "ABCD"},
             {**good, "flags": {"harmful": [1.0]}}, {**good, "time": None}]
    with open(path, "a") as f:
        f.writelines(json.dumps(row) + "\n" for row in wrong)
    labelers.append_ranking(path, second)

    w = widgets.RankingWidget(items, path)  # before the fix: TypeError: unhashable type: 'list'
    assert w.n_ranked == 2 and w.current_index == 2  # prompt 3's lines were all unusable
    assert "4 line(s)" in w.message
    for number, words in [(2, "prompt_id must be text, got a list"),
                          (3, "responses must be a list of texts, got text ('ABCD')"),
                          (4, "flag 'harmful' must list responses by their number"),
                          (5, "time must be text, got null")]:
        assert f"{path} line {number}: {words}" in w.message, w.message
    with pytest.warns(UserWarning, match=r"line 3: responses must be a list of texts"):
        result = widgets.rank_remaining(items, path, labelers.labeler_team(2))
    assert len(result) == len(items)
