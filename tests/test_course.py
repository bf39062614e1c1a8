"""The course runner: notebook order and selection, the summary table, failures reported per cell.

Runs only tiny notebooks written to tmp_path, never the course's own (tests run those via nbval).
"""

import json
import os
import time
from pathlib import Path

import nbformat
import pytest

from helpers import course
from helpers.course import NotebookRun


def write_notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A tiny notebook")]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in sources]
    nbformat.write(nb, path)
    return path


def touch_notebooks(folder: Path, names: list[str]) -> None:
    for name in names:
        write_notebook(folder / name, "1 + 1")


# --- order and selection ----------------------------------------------------------------------


def test_notebooks_run_in_numeric_order_and_only_numbered_ones(tmp_path):
    touch_notebooks(
        tmp_path,
        ["10_extra.ipynb", "02_sft.ipynb", "00_welcome.ipynb", "1_base.ipynb", "scratch.ipynb"],
    )
    (tmp_path / ".ipynb_checkpoints").mkdir()
    touch_notebooks(tmp_path / ".ipynb_checkpoints", ["00_welcome-checkpoint.ipynb"])
    names = [p.name for p in course.course_notebooks(tmp_path)]
    # 10 after 2 (numbers, not strings); unnumbered and checkpoint copies are not course notebooks
    assert names == ["00_welcome.ipynb", "1_base.ipynb", "02_sft.ipynb", "10_extra.ipynb"]


def test_select_by_number_name_prefix_and_comma_list(tmp_path):
    touch_notebooks(tmp_path, ["00_welcome.ipynb", "01_base.ipynb", "02_sft.ipynb", "03_rank.ipynb"])
    notebooks = course.course_notebooks(tmp_path)

    def pick(*only):
        return [p.name[:2] for p in course.select_notebooks(notebooks, list(only) or None)]

    assert pick() == ["00", "01", "02", "03"]
    assert pick("1") == ["01"]
    assert pick("03", "01") == ["01", "03"]  # course order, whatever order they were asked in
    assert pick("00,02") == ["00", "02"]
    assert pick("02_sft") == ["02"]
    with pytest.raises(ValueError, match="No course notebook matches '7'"):
        pick("7")


# --- formatting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, text",
    [(0.04, "0.0 s"), (4.25, "4.2 s"), (59.94, "59.9 s"), (60, "1 min 00 s"),
     (125.4, "2 min 05 s"), (3599, "59 min 59 s"), (3725, "1 h 02 min")],
)
def test_format_duration(seconds, text):
    assert course.format_duration(seconds) == text


def test_format_value():
    assert course.format_value(0.123456) == "0.123"
    assert course.format_value(1234.5) == "1.23e+03"
    assert course.format_value(42) == "42"
    assert course.format_value(True) == "yes"
    assert course.format_value("gpt2-tiny") == "gpt2-tiny"
    assert course.format_value(0.714, "{:.0%}") == "71%"
    assert course.format_value("n/a", "{:.0%}") == "n/a"  # a format that does not fit is ignored
    assert course.format_value([0.5, 0.25]) == "[0.5, 0.25]"
    long = course.format_value({"a": list(range(50))})
    assert len(long) == 40 and long.endswith("...")


def test_format_figures_wraps_between_items():
    figures = {"sft_win_rate": 0.61234, "rm_accuracy": 0.7, "kl": 3.25, "steps": 200}
    assert course.format_figures({}) == ["-"]
    assert course.format_figures(figures, width=200) == [
        "sft_win_rate=0.612, rm_accuracy=0.7, kl=3.25, steps=200"
    ]
    lines = course.format_figures(figures, width=36)
    assert lines == ["sft_win_rate=0.612, rm_accuracy=0.7,", "kl=3.25, steps=200"]


def test_summary_table_lists_every_notebook_and_details_failures():
    runs = [
        NotebookRun("00_welcome.ipynb", ok=True, seconds=3.2),
        NotebookRun(
            "01_base_model.ipynb", ok=True, seconds=125.0,
            figures={"base_loss": 2.3456, "answers_correct": 0.02},
        ),
        NotebookRun(
            "02_sft.ipynb", ok=False, seconds=10.0, figures={"demos": 300},
            error="ValueError: shapes do not match", failed_cell=7,
            failed_source="loss = sft_loss(batch)", output=Path("runs/tiny/02_sft.ipynb"),
        ),
    ]
    text = course.format_summary(runs)
    lines = text.splitlines()
    assert lines[0].split() == ["notebook", "status", "time", "key", "figures"]
    row = {line.split()[0]: line for line in lines if line.startswith("0")}
    assert row["00_welcome.ipynb"].split()[1:] == ["ok", "3.2", "s", "-"]
    assert "ok" in row["01_base_model.ipynb"] and "2 min 05 s" in row["01_base_model.ipynb"]
    assert row["01_base_model.ipynb"].endswith("base_loss=2.35, answers_correct=0.02")
    assert row["02_sft.ipynb"].split()[1] == "FAILED"
    # the columns line up: every status starts at the same position
    assert len({line.index(line.split()[1]) for line in row.values()}) == 1
    total = next(line for line in lines if line.startswith("total"))
    assert "2 min 18 s" in total and total.endswith("2 ok, 1 failed")
    failures = text.split("Failures:")[1]
    assert "02_sft.ipynb, cell 7: ValueError: shapes do not match" in failures
    assert "> loss = sft_loss(batch)" in failures
    assert "Failures:" not in course.format_summary(runs[:2])


# --- running notebooks ------------------------------------------------------------------------


def test_run_notebook_records_figures_and_reports_the_failing_cell(tmp_path):
    nbs, runs_dir = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    record = (
        "from helpers.results import record\n"
        "record('answer', 42)\n"
        "record('sft/win_rate', 0.714, fmt='{:.0%}')"
    )
    good = write_notebook(nbs / "00_good.ipynb", record, "print('hello')")
    bad = write_notebook(nbs / "01_bad.ipynb", "x = 1", "# the bug\nraise ValueError('boom')", "y = 2")

    ok = course.run_notebook(good, runs_dir, timeout=60, progress=False)
    assert ok.ok and ok.error is None and ok.failed_cell is None
    assert ok.figures == {"answer": 42, "sft/win_rate": 0.714}
    assert ok.formats == {"sft/win_rate": "{:.0%}"}
    assert course.format_figures(ok.figures, formats=ok.formats) == ["answer=42, sft/win_rate=71%"]
    assert sorted(p.name for p in runs_dir.iterdir()) == ["00_good.ipynb", "00_good.results.json"]
    executed = nbformat.read(runs_dir / "00_good.ipynb", as_version=4)
    assert executed.cells[2].outputs[0]["text"] == "hello\n"  # outputs kept in the copy
    assert nbformat.read(good, as_version=4).cells[2].outputs == []  # the original stays clean

    failed = course.run_notebook(bad, runs_dir, timeout=60, progress=False)
    assert not failed.ok
    assert failed.error == "ValueError: boom"
    assert failed.failed_cell == 3  # markdown title, "x = 1", then the failing cell
    assert failed.failed_source == "# the bug"
    assert (runs_dir / "01_bad.ipynb").exists()


def test_main_runs_all_continues_after_a_failure_and_exits_nonzero(tmp_path, capsys, monkeypatch):
    nbs, runs = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    write_notebook(nbs / "00_first.ipynb", "raise RuntimeError('first fails')")
    write_notebook(
        nbs / "01_second.ipynb",
        "import json, os\n"
        "json.dump({'fast': os.environ['COURSE_FAST'], 'offline': os.environ['HF_HUB_OFFLINE']},"
        " open(os.environ['COURSE_RESULTS_FILE'], 'w'))",
    )
    for var in ("COURSE_FAST", "COURSE_PROFILE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "environ", os.environ.copy())  # main() sets variables: keep them local

    code = course.main(["--fast", "--notebooks", str(nbs), "--runs", str(runs), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert (runs / "tiny-fast" / "01_second.ipynb").exists()  # ran after the failure
    results = json.loads((runs / "tiny-fast" / "01_second.results.json").read_text())
    assert results == {"fast": "1", "offline": "1"}  # fast mode and offline reach the kernel
    assert "00_first.ipynb, cell 2: RuntimeError: first fails" in out
    assert "fast=1, offline=1" in out

    code = course.main(["--only", "01", "--notebooks", str(nbs), "--runs", str(runs), "--no-progress"])
    assert code == 0
    assert course.main(["--only", "9", "--notebooks", str(nbs), "--runs", str(runs)]) == 2


def test_run_notebook_shuts_its_kernel_down(tmp_path):
    """A finished notebook's kernel (and the models it holds) must not outlive it."""
    nbs, runs_dir = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    pid_file = tmp_path / "kernel.pid"
    nb = write_notebook(nbs / "00_pid.ipynb", f"import os; open({str(pid_file)!r}, 'w').write(str(os.getpid()))")

    assert course.run_notebook(nb, runs_dir, timeout=60, progress=False).ok
    pid = int(pid_file.read_text())
    for _ in range(50):  # shutdown is asynchronous: allow it a few seconds
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the kernel (pid {pid}) is still running after its notebook ended")


def test_run_notebook_shows_what_a_cell_trains(tmp_path, monkeypatch):
    """While a cell trains, the runner's bar shows the stage and its progress, read from the
    status file that the kernel's bars write."""
    nbs, runs_dir = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    nb = write_notebook(
        nbs / "00_train.ipynb",
        "import time\n"
        "from helpers import progress\n"
        "with progress.stage('base'):\n"
        "    for _ in progress.tqdm(range(4), desc='pretraining'):\n"
        "        time.sleep(0.6)\n"
        "    time.sleep(2.5)",
    )
    shown = []

    class Bar:
        def __init__(self, *args, **kwargs):
            pass

        def set_postfix_str(self, text, refresh=True):
            shown.append(text)

        def update(self, n=1):
            pass

        def close(self):
            pass

    monkeypatch.setattr("tqdm.auto.tqdm", Bar)
    assert course.run_notebook(nb, runs_dir, timeout=60, progress=True).ok
    assert any(text.startswith("training base: pretraining 4/4") for text in shown), shown
    assert not list(runs_dir.glob(".*progress*"))  # the status file is gone with the run


def test_only_names_notebooks_by_number_and_refuses_unknown_ones(tmp_path):
    nbs = [tmp_path / n for n in ("00_welcome.ipynb", "01_base.ipynb", "02_sft.ipynb", "10_extra.ipynb")]
    assert course.select_notebooks(nbs, ["0"]) == nbs[:1]  # not every notebook whose name starts with 0
    assert course.select_notebooks(nbs, ["1,02_"]) == nbs[1:3]
    with pytest.raises(ValueError, match="'99'"):
        course.select_notebooks(nbs, ["00,99"])


@pytest.mark.parametrize("value, expected", [("2.5", 2), ("0", 0), ("0.2", 1), ("900", 900)])
def test_timeout_takes_whole_seconds(value, expected):
    assert course.parse_args(["--timeout", value]).timeout == expected


@pytest.mark.parametrize("value", ["-1", "abc", "nan"])
def test_a_bad_timeout_is_refused_with_a_message(value, capsys):
    with pytest.raises(SystemExit):
        course.parse_args(["--timeout", value])
    assert "--timeout" in capsys.readouterr().err


def test_a_cell_that_times_out_is_named(tmp_path):
    nbs, runs_dir = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    nb = write_notebook(nbs / "00_slow.ipynb", "x = 1", "import time; time.sleep(30)")
    run = course.run_notebook(nb, runs_dir, timeout=2, progress=False)
    assert not run.ok and run.failed_cell == 3 and run.failed_source == "import time; time.sleep(30)"
    assert run.error == "CellTimeoutError: the cell ran longer than the 2 s limit (--timeout)"


def test_a_hidden_bar_reports_nothing_and_does_not_fail(tmp_path, monkeypatch):
    """progress=False bars (tqdm(disable=True)) have no description; with the runner watching,
    updating one must neither fail nor overwrite the status of the bar that is shown."""
    from helpers import progress

    status = tmp_path / "status.json"
    monkeypatch.setenv("COURSE_PROGRESS_FILE", str(status))
    bar = progress.tqdm(total=3, disable=True)
    bar.update(1)
    bar.close()
    assert not status.exists()
    shown = progress.tqdm(total=3, desc="shown", disable=False)
    shown.update(3)
    shown.close()
    assert json.loads(status.read_text())["desc"] == "shown"
