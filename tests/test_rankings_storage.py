"""The one storage of rankings (helpers.rankings): undo beside other writers, fields of the wrong
type, a full disk, and the lock every writer takes."""

import errno
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from helpers import files, labelers, rankings, widgets
from helpers.rankings import Ranking, RankingError, read_rankings

APPENDS = 200  # rankings the other process appends while this one submits and undoes


@pytest.fixture
def path(tmp_path):
    return tmp_path / "rankings" / "my_rankings.jsonl"


def ranking(prompt_id="abc", ranks=(1, 2), labeler="student") -> Ranking:
    return Ranking(prompt_id, "p", "chat", ["x", "y", "z", "w"][:len(ranks)], list(ranks), labeler)


def rows_of(path):
    return [json.loads(line) for line in Path(path).read_bytes().splitlines() if line.strip()]


# --- 1. undo in one process while another appends ---------------------------------------------


def _submit_and_undo(path: str, start, appender_done, report) -> None:
    """A student's kernel: two rankings kept, then Submit and Undo over and over."""
    os.environ["OMP_NUM_THREADS"] = "1"
    from helpers import labelers, widgets

    examples, responses = labelers.calibration_set(n_prompts=6, k=4, seed=3)
    w = widgets.RankingWidget(list(zip(examples, responses)), path)
    for ranks in ([1, 2, 3, 4], [2, 2, 1, 3]):
        w.set_ranks(ranks)
        assert w.submit() is not None
    start.wait()
    undos = 0
    while not appender_done.is_set() or undos < 20:
        w.set_ranks([4, 3, 2, 1])
        assert w.submit() is not None
        assert w.undo() is not None
        undos += 1
    report.put(undos)


def _append(path: str, start, appender_done) -> None:
    """Another kernel (a partner's notebook, rank_remaining) appending to the same file."""
    from helpers.labelers import Ranking, append_ranking

    start.wait()
    for i in range(APPENDS):
        append_ranking(path, Ranking(f"other-{i}", "p", "chat", ["a", "b"], [1, 2], "partner"))
    appender_done.set()


def test_undo_beside_another_process_appending_loses_none_of_its_lines(path):
    """Regression: undo rewrote the file from a copy read a moment before, so rankings another
    process appended in that moment were deleted. Undo removes the one line it wrote, under the
    lock appenders take."""
    path.parent.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, as another kernel is
    start, done, report = context.Barrier(2), context.Event(), context.Queue()
    undoer = context.Process(target=_submit_and_undo, args=(str(path), start, done, report))
    appender = context.Process(target=_append, args=(str(path), start, done))
    undoer.start()
    appender.start()
    appender.join(timeout=300)
    undoer.join(timeout=300)
    assert appender.exitcode == 0 and undoer.exitcode == 0
    assert report.get(timeout=10) >= 20  # the undos really ran beside the appends

    loaded, problems = read_rankings(path, strict=True)
    assert problems == []
    partner = [r.prompt_id for r in loaded if r.labeler == "partner"]
    assert partner == [f"other-{i}" for i in range(APPENDS)]  # every appended line, in order
    assert [r.ranks for r in loaded if r.labeler == "student"] == [[1, 2, 3, 4], [2, 2, 1, 3]]
    assert len(rows_of(path)) == APPENDS + 2
    assert not list(path.parent.glob("*.tmp"))


def test_undo_removes_its_own_line_not_an_identical_one(items, path):
    """Two widgets of one student on one file rank the same prompt the same way within the same
    second: two identical rankings. Undo in the first removes the first's line (by its id), not
    the identical line the second wrote later."""
    first = widgets.RankingWidget(items, path)
    second = widgets.RankingWidget(items, path)
    first.set_ranks([1, 2, 3, 4])
    mine = first.submit()
    second.set_ranks([1, 2, 3, 4])
    theirs = second.submit()
    assert mine.id and theirs.id and mine.id != theirs.id
    assert first.undo() is not None
    assert [row["id"] for row in rows_of(path)] == [theirs.id]
    assert second.undo() is not None and rows_of(path) == []
    assert first.undo() is None  # nothing of its own left to undo


def test_remove_ranking_touches_nothing_else(path):
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"broken": \n')
    stored = [ranking("a"), ranking("b"), ranking("c")]
    rankings.append_rankings(path, stored)
    with open(path, "ab") as f:
        f.write(b"not json\n")
    before = path.read_bytes()
    assert rankings.remove_ranking(path, stored[1].id)
    lines = before.splitlines(keepends=True)
    assert path.read_bytes() == b"".join(lines[:2] + lines[3:])  # the rest byte for byte
    assert not rankings.remove_ranking(path, stored[1].id)  # gone already
    assert not rankings.remove_ranking(path, "")  # a ranking never stored has no line
    assert not rankings.remove_ranking(path.parent / "missing.jsonl", stored[0].id)
    assert not (path.parent / "missing.jsonl").exists()


def test_an_appender_waits_for_the_lock_and_then_writes_to_the_current_file(path):
    """While undo holds the lock (and replaces the file), an append waits; it then writes into
    the new file, not the replaced one."""
    rankings.append_ranking(path, ranking("first"))
    appended = threading.Event()

    def append_second():
        rankings.append_ranking(path, ranking("second"))
        appended.set()

    with files.locked(path):
        worker = threading.Thread(target=append_second)
        worker.start()
        time.sleep(0.3)
        assert not appended.is_set()  # waiting for the lock
        files.replace_file(path, path.read_bytes())  # what undo does while it holds the lock
    worker.join(timeout=30)
    assert appended.is_set()
    assert [r.prompt_id for r in read_rankings(path, strict=True)[0]] == ["first", "second"]


@pytest.mark.skipif(files.fcntl is None, reason="no advisory locks on this platform")
def test_an_open_file_is_locked_and_a_file_system_without_locks_is_used_unlocked(tmp_path, monkeypatch):
    lock_path = tmp_path / "stage.lock"
    with open(lock_path, "a") as holder, open(lock_path, "rb") as other:
        assert files.lock_open_file(holder, exclusive=True)
        with pytest.raises(BlockingIOError):  # held: nobody else gets it
            files.fcntl.flock(other, files.fcntl.LOCK_SH | files.fcntl.LOCK_NB)

    def refuse(handle, operation, error=errno.ENOLCK):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(files.fcntl, "flock", refuse)
    with open(lock_path, "rb") as handle:
        assert not files.lock_open_file(handle, exclusive=False)  # read without the lock
        monkeypatch.setattr(files.fcntl, "flock", lambda h, op: refuse(h, op, errno.EBADF))
        with pytest.raises(OSError):  # any other failure is a real error
            files.lock_open_file(handle, exclusive=False)


# --- 2. fields of the wrong type -------------------------------------------------------------


WRONG_TYPES = {  # field: (value, words of the problem)
    "prompt_id": (["a", "b"], "prompt_id must be text, got a list"),
    "responses": ("xy", "responses must be a list of texts, got text"),
    "flags": ({"harmful": [1.0]}, "flag 'harmful' must list responses by their number, 0 to 1; got [1.0]"),
    "time": (None, "time must be text, got null"),
    "ranks": ([1, True], "ranks must be whole numbers"),
    "labeler": (7, "labeler must be text, got a number"),
    "id": (12, "id must be text, got a number"),
}


@pytest.mark.parametrize("field", list(WRONG_TYPES))
def test_a_field_of_the_wrong_type_is_named_with_file_and_line(field, path):
    """Regression: valid JSON with a field of the wrong type loaded as if valid (a string of
    responses became one response per letter) or crashed later with a bare TypeError."""
    value, words = WRONG_TYPES[field]
    rankings.append_ranking(path, ranking("good-1"))
    bad = {**ranking("bad").to_json(), field: value}
    with open(path, "a") as f:
        f.write(json.dumps(bad) + "\n")
    rankings.append_ranking(path, ranking("good-2"))

    loaded, problems = read_rankings(path)
    assert [r.prompt_id for r in loaded] == ["good-1", "good-2"]
    assert len(problems) == 1
    assert problems[0].startswith(f"{path} line 2: ") and words in problems[0], problems[0]
    assert problems[0].endswith("(this line is skipped)")
    with pytest.raises(RankingError, match="line 2"):
        read_rankings(path, strict=True)


def test_writing_a_ranking_of_the_wrong_type_is_refused(path):
    for bad in [ranking(["a"]), Ranking("a", "p", "chat", "xy", [1, 2], "s"),
                Ranking("a", "p", "chat", ["x", "y"], [1, 2], "s", {"harmful": [0.0]})]:
        with pytest.raises(RankingError):
            rankings.append_ranking(path, bad)
    assert not path.exists()


def test_lines_are_split_only_at_newlines(path):
    """A response may contain U+2028 (a line separator to str.splitlines): written as is by
    ensure_ascii=False, it must not split the line in two."""
    r = Ranking("a", "p", "chat", ["one\u2028two", "three\x85"], [1, 2], "student")
    rankings.append_ranking(path, r)
    loaded, problems = read_rankings(path)
    assert problems == [] and loaded[0].responses == ["one\u2028two", "three\x85"]


# --- 3. a full disk ---------------------------------------------------------------------------


def full_disk_after_half(monkeypatch, path):
    """os.write as on a disk that fills up: a write to the rankings file gets half of its data
    onto the disk, then the next write fails with ENOSPC (and so on for the next append)."""
    real_write = os.write
    state = {"half_written": False, "failures": 0}

    def write(fd, data):
        if not os.path.samestat(os.fstat(fd), os.stat(path)):
            return real_write(fd, data)
        if not state["half_written"] and len(data) > 1:
            state["half_written"] = True
            return real_write(fd, bytes(data)[: len(data) // 2])
        state["half_written"] = False
        state["failures"] += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write)
    return state


@pytest.mark.parametrize("ending", ["whole lines", "a line cut short"])
def test_a_failed_append_leaves_the_file_as_it_was(ending, path, monkeypatch):
    rankings.append_ranking(path, ranking("kept"))
    if ending == "a line cut short":
        with open(path, "ab") as f:
            f.write(b'{"prompt_id": "cut')  # the append would close this line first
    before = path.read_bytes()
    state = full_disk_after_half(monkeypatch, path)
    with pytest.raises(OSError) as raised:
        rankings.append_ranking(path, ranking("lost"))
    assert raised.value.errno == errno.ENOSPC and state["failures"] == 1
    with pytest.raises(OSError):
        rankings.append_rankings(path, [ranking("lost-1"), ranking("lost-2")])
    assert path.read_bytes() == before
    monkeypatch.undo()
    rankings.append_ranking(path, ranking("later"))
    loaded, problems = read_rankings(path)
    assert [r.prompt_id for r in loaded] == ["kept", "later"]
    assert len(problems) == (1 if ending == "a line cut short" else 0)


def test_a_full_disk_during_submit_is_reported_in_plain_words(items, path, monkeypatch):
    """Regression: a full disk during Submit left half a line, reported as a corrupt line every
    time the file was opened again."""
    w = widgets.RankingWidget(items, path)
    w.set_ranks([1, 2, 3, 4])
    assert w.submit() is not None
    before = path.read_bytes()

    full_disk_after_half(monkeypatch, path)
    w.set_ranks([2, 1, 1, 3])
    w.set_flags({"harmful": [3]})
    w.submit_button.click()
    assert path.read_bytes() == before
    assert w.message.startswith("Could not save this ranking: the disk is full")
    assert "Nothing was written" in w.message and "press Submit again" in w.message
    assert "Errno" not in w.message and "Traceback" not in w.message
    # Nothing moved on: the same prompt, the same choices, ready to submit again.
    assert w.current_index == 1 and w.n_ranked == 1 and len(w.submitted) == 1
    assert w.current_ranks() == [2, 1, 1, 3] and w.current_flags() == {"harmful": [3]}

    monkeypatch.undo()  # space was freed
    assert w.submit() is not None
    loaded, problems = read_rankings(path, strict=True)
    assert problems == [] and [r.ranks for r in loaded] == [[1, 2, 3, 4], [2, 1, 1, 3]]
    assert widgets.RankingWidget(items, path).n_ranked == 2


# --- 4. one storage ---------------------------------------------------------------------------


def test_one_storage_for_the_widget_and_the_labelers():
    for name in ("Ranking", "RankingError", "FLAGS", "append_ranking", "read_rankings",
                 "remove_ranking", "append_rankings", "preference_pairs"):
        assert getattr(labelers, name) is getattr(rankings, name)
    for name in ("Ranking", "append_rankings", "read_rankings", "append_ranking", "remove_ranking"):
        assert getattr(widgets, name) is getattr(rankings, name)


def test_stored_rankings_have_ids_and_unstored_ones_keep_the_old_format(path):
    r = ranking("a")
    assert "id" not in r.to_json()  # e.g. the comparisons artifact, written without ids
    rankings.append_ranking(path, r)
    rankings.append_ranking(path, r)  # stored twice: two lines, two ids
    ids = [row["id"] for row in rows_of(path)]
    assert len(set(ids)) == 2 and r.id == ids[1]
    with open(path, "a") as f:
        f.write(json.dumps(ranking("old").to_json()) + "\n")  # a line written before ids existed
    loaded, problems = read_rankings(path)
    assert problems == [] and [x.id for x in loaded] == [*ids, ""]
