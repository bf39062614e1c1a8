"""Run the whole course: every notebook, in order, on the current profile.

    python -m helpers.course                  # tiny profile (any CPU, offline), full size
    python -m helpers.course --fast           # smoke run: seconds per notebook
    python -m helpers.course --only 02 04     # just some notebooks
    python -m helpers.course --profile gpu    # a CUDA GPU with internet access

Each notebook runs top to bottom in a fresh kernel of this Python, exactly as if you pressed
"Run all". The executed copy, outputs and figures included, is written to ``runs/<profile>/``
(``runs/<profile>-fast/`` in fast mode), so the notebooks in ``notebooks/`` stay clean. A
notebook can record its key numbers with ``helpers.results.record(name, value)``; they land in
``runs/<profile>/<notebook>.results.json`` (the runner points ``COURSE_RESULTS_FILE`` there) and
appear in the summary table printed at the end.

A failing notebook does not stop the run: the runner reports which cell failed and why, goes on
with the next notebook, and exits with a non-zero status at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers import progress as status_line, speed
from helpers.config import PROFILES, ROOT, settings
from helpers.results import FORMATS_KEY, RESULTS_FILE_ENV

NOTEBOOKS_DIR = ROOT / "notebooks"
RUNS_DIR = ROOT / "runs"

# A course notebook's name starts with its number: 00_welcome.ipynb, 01_base_model.ipynb, ...
_NOTEBOOK_NAME = re.compile(r"^(\d+)_.*\.ipynb$")


# ---------------------------------------------------------------------------------------------
# Which notebooks, in which order
# ---------------------------------------------------------------------------------------------


def course_notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks of ``folder`` in course order (by number, so 10 comes after 9)."""
    found = [p for p in Path(folder).glob("*.ipynb") if _NOTEBOOK_NAME.match(p.name)]
    return sorted(found, key=lambda p: (int(_NOTEBOOK_NAME.match(p.name).group(1)), p.name))


def select_notebooks(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """Keep the notebooks named by ``only``: numbers ("1", "01") or name prefixes ("02_sft").

    Several selectors may be given, also comma-separated ("01,03"). No selector keeps them all.
    """
    if not only:
        return list(notebooks)
    selectors = [s.strip() for item in only for s in item.split(",") if s.strip()]

    def matches(selector: str, path: Path) -> bool:
        if selector.isdigit():  # a number names one notebook: "0" is 00, not every 0x
            return int(selector) == int(_NOTEBOOK_NAME.match(path.name).group(1))
        return path.name.startswith(selector)

    unmatched = [s for s in selectors if not any(matches(s, p) for p in notebooks)]
    if unmatched:
        names = ", ".join(p.name for p in notebooks)
        raise ValueError(f"No course notebook matches {', '.join(map(repr, unmatched))}; "
                         f"the notebooks are {names}.")
    return [p for p in notebooks if any(matches(s, p) for s in selectors)]


# ---------------------------------------------------------------------------------------------
# One notebook
# ---------------------------------------------------------------------------------------------


@dataclass
class NotebookRun:
    """What happened when one notebook ran."""

    name: str
    ok: bool
    seconds: float
    figures: dict = field(default_factory=dict)  # what the notebook recorded with results.record
    formats: dict = field(default_factory=dict)  # name -> str.format pattern chosen by the notebook
    error: str | None = None  # "ValueError: ..." for a failed notebook
    failed_cell: int | None = None  # 1-based position of the failing cell in the notebook
    failed_source: str | None = None  # first line of that cell's code
    output: Path | None = None  # the executed copy


def results_file(runs_dir: Path, notebook: Path) -> Path:
    return Path(runs_dir) / f"{notebook.stem}.results.json"


def read_results(path: Path) -> tuple[dict, dict]:
    """The key figures a notebook recorded and their display formats ({} and {} when none).

    The file is written by ``helpers.results.record``: names to values, plus the reserved key
    ``_formats`` mapping some names to a ``str.format`` pattern such as ``"{:.0%}"``.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}, {}
    if not isinstance(data, dict):
        return {}, {}
    formats = data.pop(FORMATS_KEY, None)
    return data, formats if isinstance(formats, dict) else {}


def _current_env_kernel_manager():
    """A kernel manager that starts an IPython kernel of *this* Python (sys.executable).

    The notebooks' metadata name a kernel ("python3"), but which Python that resolves to depends
    on the machine's Jupyter set-up; the course must run in the environment it was installed in.
    """
    import ipykernel.kernelspec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    name = "course-current-env"

    class CurrentEnvSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            if kernel_name == name:
                return self.kernel_spec_class(
                    resource_dir=ipykernel.kernelspec.RESOURCES,
                    **ipykernel.kernelspec.get_kernel_dict(),
                )
            return super().get_kernel_spec(kernel_name)

    return AsyncKernelManager(kernel_name=name, kernel_spec_manager=CurrentEnvSpecs())


def _first_code_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line.strip()
    return ""


def run_notebook(
    path: Path,
    runs_dir: Path,
    timeout: float | None = None,
    env: dict | None = None,
    progress: bool = True,
) -> NotebookRun:
    """Execute ``path`` top to bottom in a fresh kernel; write the executed copy to ``runs_dir``.

    ``env`` is the kernel's environment (default: this process's); the runner adds
    ``COURSE_RESULTS_FILE`` so the notebook's recorded figures land next to its executed copy.
    """
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as exc:  # pragma: no cover - the dev extra installs both
        raise SystemExit(
            f"{exc}. The course runner needs nbclient: pip install -e '.[dev]'"
        ) from exc
    from tqdm.auto import tqdm

    path = Path(path).resolve()
    runs_dir = Path(runs_dir).resolve()  # the kernel runs in the notebook's folder
    runs_dir.mkdir(parents=True, exist_ok=True)
    out_path = runs_dir / path.name
    results = results_file(runs_dir, path)
    results.unlink(missing_ok=True)  # figures from an earlier run must not pass for this one's

    nb = nbformat.read(path, as_version=4)
    n_code = sum(cell.cell_type == "code" for cell in nb.cells)
    failure: dict = {}
    progress_shown = progress
    bar = tqdm(total=n_code, desc=path.stem, unit="cell", leave=False, disable=not progress)

    current = {"line": ""}

    def on_cell_start(cell, cell_index, **_):
        current["index"] = cell_index  # a timed-out cell reports no error of its own
        current["line"] = _first_code_line(cell.source)[:40]
        status_file.unlink(missing_ok=True)  # a status belongs to the cell that wrote it
        bar.set_postfix_str(current["line"], refresh=True)

    def show_status():
        """While a cell runs, show what it trains (the notebook's own bars are not visible)."""
        while not stop_watching.wait(1.0):
            status = status_line.format_status(status_line.read_status(status_file))
            bar.set_postfix_str(status or current["line"], refresh=True)

    def on_cell_executed(cell, cell_index, **_):
        bar.update(1)

    def on_cell_error(cell, cell_index, **_):
        failure.setdefault("cell", cell_index)

    client = NotebookClient(
        nb,
        km=_current_env_kernel_manager(),
        timeout=timeout,
        resources={"metadata": {"path": str(path.parent)}},  # the kernel starts in notebooks/
        on_cell_start=on_cell_start,
        on_cell_executed=on_cell_executed,
        on_cell_error=on_cell_error,
    )
    kernel_env = dict(os.environ if env is None else env)
    kernel_env[RESULTS_FILE_ENV] = str(results)
    status_file = runs_dir / f".{path.stem}.progress.json"
    kernel_env[status_line.PROGRESS_FILE_ENV] = str(status_file)
    stop_watching = threading.Event()
    watcher = threading.Thread(target=show_status, daemon=True)
    if progress_shown:
        watcher.start()

    start = time.perf_counter()
    error = None
    try:
        # The kernel's own log lines (not the notebook's output) would clutter the terminal.
        # cleanup_kc: shut the kernel down at the end (nbclient keeps alive a kernel whose
        # manager it was given), so a finished notebook's models do not hold memory.
        with open(os.devnull, "w") as devnull:
            client.execute(env=kernel_env, stderr=devnull, cleanup_kc=True)
    except Exception as exc:  # a failing cell, a timeout, a dead kernel: report and go on
        ename = getattr(exc, "ename", None)
        evalue = getattr(exc, "evalue", None)
        if ename:
            error = f"{ename}: {evalue}" if evalue else ename
        elif type(exc).__name__ == "CellTimeoutError":
            error = f"CellTimeoutError: the cell ran longer than the {timeout} s limit (--timeout)"
        else:
            lines = str(exc).strip().splitlines()
            error = f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")
    finally:
        stop_watching.set()
        if watcher.is_alive():
            watcher.join()
        bar.close()
        status_file.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    nbformat.write(nb, out_path)  # also when it failed: the copy shows the traceback
    figures, formats = read_results(results)

    run = NotebookRun(
        name=path.name,
        ok=error is None,
        seconds=seconds,
        figures=figures,
        formats=formats,
        error=error,
        output=out_path,
    )
    if error is not None and "cell" not in failure and "index" in current:
        failure["cell"] = current["index"]
    if error is not None and "cell" in failure:
        run.failed_cell = failure["cell"] + 1
        run.failed_source = _first_code_line(nb.cells[failure["cell"]].source)
    return run


# ---------------------------------------------------------------------------------------------
# The summary table
# ---------------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """4.2 s, 2 min 05 s, 1 h 03 min: precise where it matters, short where it doesn't."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def format_value(value, fmt: str | None = None) -> str:
    """A key figure as a short string: the notebook's own format if it gave one, else 3
    significant digits for floats."""
    if fmt:
        try:
            return fmt.format(value)
        except (ValueError, TypeError, IndexError, KeyError):
            pass
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def format_figures(figures: dict, width: int = 60, formats: dict | None = None) -> list[str]:
    """``name=value`` items, wrapped to lines of at most ``width`` characters."""
    if not figures:
        return ["-"]
    formats = formats or {}
    items = [f"{name}={format_value(value, formats.get(name))}" for name, value in figures.items()]
    lines, line = [], ""
    for item in items:
        candidate = f"{line}, {item}" if line else item
        if line and len(candidate) > width:
            lines.append(line + ",")
            line = item
        else:
            line = candidate
    lines.append(line)
    return lines


def format_summary(runs: list[NotebookRun], figures_width: int = 60) -> str:
    """The table printed at the end of a course run, then the details of each failure."""
    name_w = max([len("notebook")] + [len(r.name) for r in runs])
    status_w = len("FAILED")
    time_w = max([len("time")] + [len(format_duration(r.seconds)) for r in runs])
    pad = " " * (name_w + status_w + time_w + 6)

    def row(name, status, duration, figures):
        return f"{name:<{name_w}}  {status:<{status_w}}  {duration:>{time_w}}  {figures}".rstrip()

    lines = [
        row("notebook", "status", "time", "key figures"),
        row("-" * name_w, "-" * status_w, "-" * time_w, "-" * min(figures_width, 40)),
    ]
    for r in runs:
        fig_lines = format_figures(r.figures, figures_width, r.formats)
        status = "ok" if r.ok else "FAILED"
        lines.append(row(r.name, status, format_duration(r.seconds), fig_lines[0]))
        lines.extend((pad + extra).rstrip() for extra in fig_lines[1:])

    n_failed = sum(not r.ok for r in runs)
    total = sum(r.seconds for r in runs)
    verdict = f"{len(runs) - n_failed} ok, {n_failed} failed"
    lines.append(row("-" * name_w, "-" * status_w, "-" * time_w, ""))
    lines.append(row("total", "", format_duration(total), verdict))

    failed = [r for r in runs if not r.ok]
    if failed:
        lines.append("")
        lines.append("Failures:")
        for r in failed:
            where = f"cell {r.failed_cell}" if r.failed_cell is not None else "before any cell ran"
            lines.append(f"  {r.name}, {where}: {r.error}")
            if r.failed_source:
                lines.append(f"      > {r.failed_source}")
            if r.output is not None:
                lines.append(f"      executed copy with the traceback: {r.output}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def _timeout(text: str) -> int:
    """Whole seconds, 0 for no limit (the kernel client counts whole seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"{text} is not a time limit: give seconds, or 0 for no limit")
    return max(1, round(value)) if value > 0 else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.course",
        description="Run every course notebook in order and print a summary of the results.",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="tiny (any CPU, offline) or gpu (CUDA GPU, internet); default: $COURSE_PROFILE or tiny",
    )
    parser.add_argument(
        "--fast", action="store_true", help="smoke run: every loop shrunk (sets COURSE_FAST=1)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NB",
        help="run only these notebooks, by number or name prefix (e.g. --only 01 03)",
    )
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=None,
        help="seconds a single cell may run before it counts as failed "
        "(default: no limit, 900 in fast mode; 0 = no limit)",
    )
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=Path, default=RUNS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    # The kernels inherit this process's environment: set the course's switches here.
    if args.profile:
        os.environ["COURSE_PROFILE"] = args.profile
    if args.fast:
        os.environ["COURSE_FAST"] = "1"
    s = settings()
    if s.profile == "tiny":
        os.environ["HF_HUB_OFFLINE"] = "1"  # the tiny profile never downloads anything

    timeout = args.timeout
    if timeout is None and s.fast:
        timeout = 900
    if timeout == 0:
        timeout = None

    if not Path(args.notebooks).is_dir():
        print(f"No notebooks folder at {args.notebooks}: run this from a clone of the course.")
        return 2
    try:
        notebooks = select_notebooks(course_notebooks(args.notebooks), args.only)
    except ValueError as err:
        print(err)
        return 2
    if not notebooks:
        print(f"No course notebook in {args.notebooks}.")
        return 2

    # Measured afresh for each run, on the machine as it is now; the notebooks' kernels then find
    # the choice in the cache instead of measuring again.
    threads = speed.choose(measure_now=not s.fast, quiet=False)
    print(f"CPU {threads.describe()}" + (
        "  [" + ", ".join(f"{n} thread{'s' * (n > 1)}: {v:,.0f} tokens/s" for n, v in sorted(threads.tokens_per_second.items())) + "]"
        if threads.tokens_per_second else ""))

    runs_dir = Path(args.runs) / (s.profile + ("-fast" if s.fast else ""))
    print(
        f"Running {len(notebooks)} notebook(s) on the {s.profile} profile"
        f"{' in fast mode' if s.fast else ''}; executed copies go to {runs_dir}"
    )

    from tqdm.auto import tqdm

    runs: list[NotebookRun] = []
    try:
        for path in notebooks:
            run = run_notebook(path, runs_dir, timeout=timeout, progress=not args.no_progress)
            runs.append(run)
            where = f"in cell {run.failed_cell}" if run.failed_cell is not None else "before any cell ran"
            status = "ok" if run.ok else f"FAILED {where}: {run.error}"[:100]
            tqdm.write(f"  {run.name:<32} {format_duration(run.seconds):>12}  {status}")
    except KeyboardInterrupt:
        print("\nInterrupted: the summary covers the notebooks that finished.")
        if runs:
            print(format_summary(runs))
        return 130

    print()
    print(format_summary(runs))
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
