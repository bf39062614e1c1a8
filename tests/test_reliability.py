"""Faults a student's session meets, and what the course does about them.

* Rankings (notebook 03): a line cut short by a crash, every kind of corrupt line, two widgets
  on one file, two processes appending at once, a kernel killed in the middle of submit/undo.
* Artifacts: a training process killed mid-run never leaves a half-written artifact and the next
  ``load_or_train`` rebuilds; a damaged artifact folder (a file deleted, cut short or replaced)
  is detected and rebuilt with a message naming the folder.
* Determinism: the same seed gives the same metrics and weights for the base, SFT, RM and PPO
  stages on CPU.
* Exercises: every registered exercise, fed a function that returns None, the wrong shape, NaN,
  the wrong dtype, a string, or raises, answers with a readable verdict, never a traceback.
* A notebook run with earlier artifacts missing trains what it needs and says so.

Subprocesses and this module's own training use one thread: on a busy 2-core machine torch
with two threads is many times slower than with one.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from helpers import exercises as ex
from helpers import comparisons, labelers, stages, widgets
from helpers.config import settings
from helpers.labelers import Ranking
from helpers.pipeline import load_or_train
from helpers.stages import read_info

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "COURSE_FAST": "1", "COURSE_PROFILE": "tiny", "HF_HUB_OFFLINE": "1",
             "TOKENIZERS_PARALLELISM": "false"}


pytestmark = pytest.mark.usefixtures("one_thread")


def child_env(**extra) -> dict:
    env = {**os.environ, **CHILD_ENV, **extra}
    env.pop("COURSE_SEED", None)
    return env


# =============================================================================================
# Rankings
# =============================================================================================


@pytest.fixture
def path(tmp_path):
    return tmp_path / "rankings" / "my_rankings.jsonl"


def ranking(prompt_id="abc", ranks=(1, 2), labeler="student") -> Ranking:
    return Ranking(prompt_id, "p", "chat", ["x", "y", "z", "w"][:len(ranks)], list(ranks), labeler)


def test_a_line_cut_short_never_swallows_the_next_ranking(items, path):
    """Regression: a crash (or an editor) can leave the last line without its newline. Every
    way of appending closes that line first; before the fix the next ranking was glued onto it
    and lost with it."""
    labelers.append_ranking(path, ranking("first"))
    with open(path, "a") as f:
        f.write('{"prompt_id": "cut", "prompt": "p", "ra')  # no newline: the write was cut short
    labelers.append_ranking(path, ranking("second"))
    with open(path, "a") as f:
        f.write('{"prompt_id": "cut again"')
    widgets.append_rankings(path, [ranking("third"), ranking("fourth")])  # rank_remaining's way
    with open(path, "a") as f:
        f.write("{")
    w = widgets.RankingWidget(items, path)  # a submit through the widget
    w.set_ranks([1, 2, 3, 4])
    assert w.submit() is not None

    loaded, problems = labelers.read_rankings(path)
    assert [r.prompt_id for r in loaded] == ["first", "second", "third", "fourth", items[0][0].id]
    assert [p.split(": ")[0] for p in problems] == [f"{path} line {n}" for n in (2, 4, 7)]


CORRUPT_LINES = {
    "cut short": '{"prompt_id": "x", "ranks": [1,',
    "not JSON": "ranking of prompt 4: B > A",
    "null": "null",
    "a list": "[1, 2]",
    "a number": "42",
    "empty object": "{}",
    "NUL bytes": "\x00\x00\x00",
    "ranks as text": json.dumps({**ranking().to_json(), "ranks": "12"}),
    "rank out of range": json.dumps({**ranking().to_json(), "ranks": [1, 7]}),
    "rank NaN": json.dumps({**ranking().to_json(), "ranks": [float("nan"), 1]}),
    "ranks missing": json.dumps({k: v for k, v in ranking().to_json().items() if k != "ranks"}),
    "flags as a list": json.dumps({**ranking().to_json(), "flags": [1, 2]}),
    "flag index as text": json.dumps({**ranking().to_json(), "flags": {"harmful": "0"}}),
    "flag indices null": json.dumps({**ranking().to_json(), "flags": {"harmful": None}}),
    "unknown flag": json.dumps({**ranking().to_json(), "flags": {"rude": [0]}}),
    "a 5000-digit rank": '{"prompt_id": "a", "ranks": [1, ' + "9" * 5000 + "]}",
    "nested 100000 deep": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("kind", list(CORRUPT_LINES))
def test_a_corrupt_line_is_named_and_every_other_ranking_loads(kind, items, path):
    first, second = (labelers.SimulatedLabeler("x").rank(*items[i]) for i in (0, 1))
    first.labeler = second.labeler = "student"
    labelers.append_ranking(path, first)
    with open(path, "ab") as f:
        f.write(CORRUPT_LINES[kind].encode() + b"\n")
    labelers.append_ranking(path, second)
    with open(path, "ab") as f:
        f.write(b"\xff\xfe not UTF-8\n")

    loaded, problems = labelers.read_rankings(path)  # before the fix, some kinds raised here
    assert [r.ranks for r in loaded] == [first.ranks, second.ranks]
    assert len(problems) == 2
    assert problems[0].startswith(f"{path} line 2: ") and problems[1].startswith(f"{path} line 4: ")
    assert all(p.endswith("(this line is skipped)") for p in problems)
    with pytest.raises(labelers.RankingError, match="line 2"):
        labelers.read_rankings(path, strict=True)
    # The widget opens, says which lines it skipped, and carries on after the two good ones.
    w = widgets.RankingWidget(items, path)
    assert w.n_ranked == 2 and w.current_index == 2
    assert f"{path} line 2" in w.message and f"{path} line 4" in w.message


def test_two_widgets_on_one_file(items, path):
    """Two widgets (two notebooks, or the cell run twice) on one file, their submits and undos
    interleaved: every line stays whole and each widget's rankings are exactly what it kept."""
    mine = widgets.RankingWidget(items, path, labeler="student")
    partner = widgets.RankingWidget(items, path, labeler="partner")
    again = widgets.RankingWidget(items, path, labeler="student")  # the same cell, run again
    mine.set_ranks([1, 2, 3, 4]); mine.submit()
    partner.set_ranks([4, 3, 2, 1]); partner.submit()
    mine.set_ranks([2, 1, 1, 4]); mine.submit()
    partner.set_ranks([1, 1, 1, 2]); partner.submit()
    assert mine.undo().ranks == [2, 1, 1, 4]  # removes its own line, not the partner's later one
    partner.set_ranks([3, 1, 2, 4]); partner.submit()
    assert partner.undo().ranks == [3, 1, 2, 4]
    mine.set_ranks([1, 1, 2, 2]); mine.submit()
    # The second student widget still shows prompt 1: ranking it again adds a second ranking
    # of that prompt (a duplicate, not a corruption: matching uses one ranking per item).
    again.set_ranks([4, 4, 1, 1]); again.submit()

    loaded, problems = labelers.read_rankings(path, strict=True)
    assert problems == []
    by_labeler = {name: [(r.prompt_id, r.ranks) for r in loaded if r.labeler == name]
                  for name in ("student", "partner")}
    ids = [e.id for e, _ in items]
    assert by_labeler["student"] == [(ids[0], [1, 2, 3, 4]), (ids[1], [1, 1, 2, 2]), (ids[0], [4, 4, 1, 1])]
    assert by_labeler["partner"] == [(ids[0], [4, 3, 2, 1]), (ids[1], [1, 1, 1, 2])]
    assert widgets.RankingWidget(items, path, labeler="student").current_index == 2
    assert widgets.RankingWidget(items, path, labeler="partner").current_index == 2
    assert not list(path.parent.glob("*.tmp"))


def test_two_processes_appending_at_once(path):
    """Two kernels appending to one file at the same moment: no line is torn or lost."""
    script = textwrap.dedent("""
        import sys
        from helpers.labelers import Ranking, append_ranking
        who, path = sys.argv[1], sys.argv[2]
        long_answer = who * 3000  # long lines: a torn write would show
        for i in range(150):
            append_ranking(path, Ranking(f"{who}-{i}", "p", "chat", [long_answer, "b"], [1, 2], who))
    """)
    children = [subprocess.Popen([sys.executable, "-c", script, who, str(path)], cwd=REPO, env=child_env())
                for who in ("a", "b")]
    assert [child.wait(timeout=120) for child in children] == [0, 0]
    loaded, problems = labelers.read_rankings(path, strict=True)
    assert problems == [] and len(loaded) == 300
    for who in ("a", "b"):
        assert [r.prompt_id for r in loaded if r.labeler == who] == [f"{who}-{i}" for i in range(150)]


def test_kernel_killed_during_submits_and_undos(items, path):
    """SIGKILL at a random moment while a kernel submits and undoes as fast as it can: the file
    always parses, holds every ranking reported as saved, and no undo leaves half a file."""
    script = textwrap.dedent(f"""
        from helpers import labelers, widgets
        examples, responses = labelers.calibration_set(n_prompts=6, k=4, seed=3)
        w = widgets.RankingWidget(list(zip(examples, responses)), {str(path)!r})
        for ranks in ([1, 2, 3, 4], [2, 2, 1, 3]):
            w.set_ranks(ranks)
            assert w.submit() is not None
        print("saved", flush=True)
        while True:  # the last ranking goes and comes back until the kill
            w.set_ranks([4, 3, 2, 1])
            assert w.submit() is not None
            assert w.undo() is not None
    """)
    for delay in (0.3, 0.7, 1.1):
        path.unlink(missing_ok=True)
        child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=child_env(),
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "saved"
            time.sleep(delay + random.random() * 0.2)
            assert child.poll() is None, "the child stopped before the kill"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        loaded, problems = labelers.read_rankings(path, strict=True)
        assert problems == []
        assert [r.ranks for r in loaded][:2] == [[1, 2, 3, 4], [2, 2, 1, 3]]
        assert [r.ranks for r in loaded][2:] in ([], [[4, 3, 2, 1]])  # the third: submitted or undone
        resumed = widgets.RankingWidget(items, path)
        assert resumed.n_ranked == len(loaded)


# =============================================================================================
# Exercises: bad output of every kind, for every registered exercise
# =============================================================================================


def _map(output, leaf):
    """Apply ``leaf`` to every tensor/number inside an output (tuples, lists, dicts kept)."""
    if isinstance(output, tuple):
        return tuple(_map(x, leaf) for x in output)
    if isinstance(output, list):
        return [_map(x, leaf) for x in output]
    if isinstance(output, dict):
        return {k: _map(v, leaf) for k, v in output.items()}
    return leaf(output)


def _wrong_shape(output):
    if isinstance(output, torch.Tensor):
        return output.unsqueeze(-1)  # e.g. keepdim=True, or a forgotten .squeeze(-1)
    if isinstance(output, tuple):
        return tuple(_wrong_shape(x) for x in output)
    if isinstance(output, list):
        return output[:-1]  # one item short
    if isinstance(output, dict):
        return {k: _wrong_shape(v) for k, v in output.items()}
    return [output, output]  # a list where one number belongs


def _nan(x):
    if isinstance(x, torch.Tensor):
        return x.float() * float("nan")
    return float("nan")


def _wrong_dtype(x):
    if isinstance(x, torch.Tensor):
        return x.long() if x.is_floating_point() else x.float()
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return "ABCDEFGH"[x % 8]  # a letter where an index belongs
    return str(x)  # a formatted string where a number belongs


BAD_OUTPUTS = {
    "returns None": (lambda out: None, ["None"]),
    "wrong shape": (_wrong_shape, ["shape", "items", "outputs", "expected a number", "got"]),
    "NaN": (lambda out: _map(out, _nan), ["nan", "expected an integer"]),  # ints cannot be NaN
    "wrong dtype": (lambda out: _map(out, _wrong_dtype), ["tensor", "number", "got", "could not"]),
    "a string": (lambda out: "I am not sure", ["str"]),
}


def _bad_version(reference, spoil):
    def student_function(*args, **kwargs):
        return spoil(reference(*args, **kwargs))
    return student_function


def _raises(*args, **kwargs):
    raise ZeroDivisionError("division by zero")


CASES = [(name, kind) for name in sorted(ex.EXERCISES) for kind in [*BAD_OUTPUTS, "raises"]]


@pytest.mark.parametrize("name,kind", CASES, ids=[f"{n}-{k.replace(' ', '-')}" for n, k in CASES])
def test_every_exercise_explains_bad_output(name, kind, capsys):
    reference = ex.get_exercise(name).reference_fn()
    if kind == "raises":
        fn, words = _raises, ["raised ZeroDivisionError: division by zero", "line"]
    else:
        spoil, words = BAD_OUTPUTS[kind]
        fn = _bad_version(reference, spoil)
    result = ex.run_checks(name, fn)  # must not raise
    assert result.status == "failed", f"{name} accepted an output that {kind}"
    assert result.failure and "Traceback" not in result.text()
    assert any(w.lower() in result.failure.lower() for w in words), result.failure
    # What the notebook does: print the verdict and carry on with the reference.
    assert ex.check(name, fn) is reference
    out = capsys.readouterr().out
    assert f"✘ {name}" in out and "Traceback" not in out


def test_a_number_exercise_given_text_or_a_dict_says_so():
    """Regression: an exercise whose answer is a number crashed the check with a TypeError when
    the student returned a string, a dict or a generator."""
    reference = ex.get_exercise("rm_accuracy").reference_fn()
    for spoil, got in [(lambda out: f"{out:.0%}", "str"), (lambda out: {"accuracy": out}, "dict"),
                       (lambda out: (x for x in [out]), "generator")]:
        result = ex.run_checks("rm_accuracy", _bad_version(reference, spoil))
        assert result.status == "failed"
        assert "expected a number (like 0.75), got " + got in result.failure


# =============================================================================================
# Artifacts
# =============================================================================================


@pytest.fixture(scope="module")
def prebuilt():
    """The session's fast artifacts up to PPO (built here if no test or notebook did yet)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for stage in ("tokenizer", "base", "sft", "comparisons", "rm", "ppo"):
            load_or_train(stage)
    finally:
        torch.set_num_threads(threads)
    return settings().stage_dir("tokenizer").parent


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """A fresh artifact root for this test; ``copy(*stages)`` fills it from the prebuilt ones."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("COURSE_ARTIFACTS", str(root))
    monkeypatch.delenv("COURSE_SEED", raising=False)
    return root


def copy_stages(prebuilt: Path, *names: str) -> Path:
    target = settings().stage_dir("tokenizer").parent
    for name in names:
        shutil.copytree(prebuilt / name, target / name)
    return target


def test_killed_training_leaves_no_half_artifact(prebuilt, artifacts, capsys):
    """SIGKILL a process in the middle of training the base model (nothing runs on the way
    out), then load_or_train in this process: it cleans up and trains a complete artifact. Then
    kill a retraining with changed settings: the previous artifact is untouched and loads."""
    folder = copy_stages(prebuilt, "tokenizer")
    target = folder / "base"
    script = "from helpers.pipeline import load_or_train; load_or_train('base', steps=2000)"

    def train_and_kill() -> Path:
        child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, env=child_env(COURSE_ARTIFACTS=str(artifacts)))
        try:
            deadline = time.monotonic() + 120
            while not list(folder.glob(".base.partial-*")):
                assert child.poll() is None and time.monotonic() < deadline, child.stderr.read().decode()[-2000:]
                time.sleep(0.05)
            # Mid-training: the progress bar has moved (about 0.2 s per step on one thread).
            buffer = b""
            while b"/2000" not in buffer or b" 0/2000" in buffer.rsplit(b"\r", 1)[-1]:
                assert child.poll() is None and time.monotonic() < deadline
                buffer += os.read(child.stderr.fileno(), 4096)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        (partial,) = folder.glob(".base.partial-*")
        return partial

    partial = train_and_kill()
    assert not target.exists()  # nothing that looks like a model
    assert not (partial / "stage.json").exists()

    first = load_or_train("base")  # the lock the killed process held is free
    out = capsys.readouterr().out
    assert "training base" in out and "saved base" in out and "loading base" not in out
    assert not partial.exists()
    assert first.model is not None and read_info(target)["build_id"] == first.build_id

    partial = train_and_kill()  # "settings changed: steps 12 -> 2000; retraining base", killed
    capsys.readouterr()
    again = load_or_train("base")
    assert "loading base" in capsys.readouterr().out
    assert again.build_id == first.build_id
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["base", "tokenizer"]


def _cut_in_half(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


DAMAGE = {  # stage, file, what happens to it
    "rm weights cut short": ("rm", "model.safetensors", _cut_in_half),
    "rm weights deleted": ("rm", "model.safetensors", Path.unlink),
    "rm config garbage": ("rm", "config.json", lambda f: f.write_text("{garbage")),
    "rm chat template deleted": ("rm", "chat_template.jinja", Path.unlink),
    "rm chat template cut short": ("rm", "chat_template.jinja", _cut_in_half),
    "rm tokenizer config deleted": ("rm", "tokenizer_config.json", Path.unlink),
    "rm history cut short": ("rm", "history.json", _cut_in_half),
    "rm stage.json cut short": ("rm", "stage.json", _cut_in_half),
    "rm stage.json not a dict": ("rm", "stage.json", lambda f: f.write_text("[1, 2]")),
    "rm folder emptied": ("rm", None, None),
    "comparisons train file deleted": ("comparisons", "rankings_train.jsonl", Path.unlink),
    "comparisons held-out file cut short": ("comparisons", "rankings_heldout.jsonl", _cut_in_half),
    "ppo weights replaced": ("ppo", "model.safetensors", lambda f: f.write_bytes(b"\0" * 100)),
    "tokenizer file deleted": ("tokenizer", "tokenizer.json", Path.unlink),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_artifact_is_detected_and_rebuilt(kind, prebuilt, artifacts, capsys):
    stage, name, damage = DAMAGE[kind]
    wanted = ["tokenizer", "base", "sft", "comparisons", "rm", "ppo"]
    folder = copy_stages(prebuilt, *wanted[: wanted.index(stage) + 1])
    before = read_info(folder / stage)["build_id"]
    if name is None:
        shutil.rmtree(folder / stage)
        (folder / stage).mkdir()
    else:
        damage(folder / stage / name)

    rebuilt = load_or_train(stage)
    out = capsys.readouterr().out
    assert f"{folder / stage} is " in out and ("corrupt" in out or "incomplete" in out), out
    assert f"retraining {stage}" in out and f"saved {stage}" in out
    assert rebuilt.build_id != before
    assert stages._damage(rebuilt.path, rebuilt.info) is None
    if rebuilt.tokenizer is not None:
        rebuilt.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    if stage == "comparisons":
        assert all(comparisons.load_comparisons(rebuilt))
    capsys.readouterr()
    load_or_train(stage)  # the rebuilt artifact is used from now on
    assert f"loading {stage} from" in capsys.readouterr().out


# =============================================================================================
# Determinism
# =============================================================================================


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def timing(key: str) -> bool:
    """Wall-clock measurements (seconds, tokens per second, time_update, ...) may differ."""
    return "second" in key or "time" in key


@pytest.mark.parametrize("stage,needs", [("base", ["tokenizer"]), ("sft", ["tokenizer", "base"]),
                                         ("rm", ["tokenizer", "base", "sft", "comparisons"]),
                                         ("ppo", ["tokenizer", "base", "sft", "comparisons", "rm"])])
def test_same_seed_same_metrics_and_weights(stage, needs, prebuilt, tmp_path, monkeypatch):
    """Each stage trained twice from the same inputs, in two folders: equal metrics, equal
    training curves, equal weights (fast mode, CPU, one thread)."""
    monkeypatch.delenv("COURSE_SEED", raising=False)
    runs = []
    for run in ("a", "b"):
        monkeypatch.setenv("COURSE_ARTIFACTS", str(tmp_path / run))
        copy_stages(prebuilt, *needs)
        art = load_or_train(stage)
        runs.append(art)
    a, b = runs
    metrics = [{k: v for k, v in art.metrics.items() if not timing(k)} for art in runs]
    assert metrics[0] == metrics[1]
    history = [{k: v for k, v in (art.history or {}).items() if not timing(k)} for art in runs]
    assert history[0] == history[1] and history[0]
    wa, wb = _weights(a.path), _weights(b.path)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# =============================================================================================
# A notebook run with earlier artifacts missing
# =============================================================================================


def test_notebook_with_missing_artifacts_trains_what_it_needs(prebuilt, artifacts):
    """Notebook 04 up to its reward model, in a folder that has the SFT model but neither the
    comparison data nor a reward model: the cells train both, say so, and run without error."""
    import nbformat
    from nbclient import NotebookClient

    copy_stages(prebuilt, "tokenizer", "base", "sft")
    notebook = nbformat.read(REPO / "notebooks" / "04_reward_model.ipynb", as_version=4)
    last = next(i for i, cell in enumerate(notebook.cells)
                if cell.cell_type == "code" and 'load_or_train("rm")' in cell.source)
    notebook.cells = notebook.cells[: last + 1]
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "notebooks")}})
    saved = {k: os.environ.get(k) for k in CHILD_ENV}
    os.environ.update({k: v for k, v in CHILD_ENV.items() if k != "PYTHONPATH"})  # the kernel's env
    try:
        client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def text_of(cell):
        return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")

    outputs = "\n".join(text_of(c) for c in notebook.cells if c.cell_type == "code")
    assert "loading sft from" in outputs
    for stage in ("comparisons", "rm"):
        assert f"training {stage} (a few seconds, fast mode) ..." in outputs
        assert f"saved {stage} to {artifacts}" in outputs
    assert not any(o.output_type == "error" for c in notebook.cells for o in c.get("outputs", []))
    assert (settings().stage_dir("rm") / "stage.json").exists()
