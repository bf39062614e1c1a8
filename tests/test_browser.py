"""The course as a student uses it: JupyterLab in a real browser (Debian's chromium, driven by
playwright), notebooks run from the Run menu, widgets used by clicking.

* Notebook 03: rank the answers by choosing ranks in the selectors and clicking Submit; an
  incomplete ranking is refused with a message; Undo removes the last ranking from the file; the
  rankings survive a kernel restart (the widget says "Welcome back").
* Notebook 05: the live PPO dashboard renders its figure and is updated in place.

The test starts its own JupyterLab server on 127.0.0.1 (a free port, a token, settings and
workspaces in a temporary folder) on copies of the notebooks, so nothing in the repository
changes, with fast-mode artifacts built beforehand in this process. Deselect with
``-m "not browser"``. Never run ``playwright install``: the tests use /usr/bin/chromium; where it
is missing they are skipped, except in CI (CI=true), where that is a failure. On failure, a
screenshot goes to tests/screenshots/.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = REPO / "tests" / "screenshots"
BUSY_PORTS = {8888, 8899}  # the default port, and one another process uses on this machine
STAGES_NEEDED = ("tokenizer", "base", "sft", "comparisons", "rm")  # what notebooks 03 and 05 load

pytestmark = pytest.mark.browser


def _missing_browser(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}: CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(f"{reason}; install Debian's chromium (apt-get install chromium) to run the browser tests")


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in BUSY_PORTS:
            return port


def _api(lab: dict, path: str, method: str = "GET"):
    request = urllib.request.Request(f"{lab['url']}{path}?token={lab['token']}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on copies of the notebooks, with its own artifact folder."""
    if not os.path.exists(CHROMIUM):
        _missing_browser(f"{CHROMIUM} is missing")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing_browser("the playwright package is missing (pip install -e '.[dev]')")

    # The models the notebooks load, built here (one thread: much faster on a busy machine) and
    # copied, so the browser part only runs the notebooks. Reused if another test built them.
    import torch

    from helpers.config import settings
    from helpers.pipeline import load_or_train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for stage in STAGES_NEEDED:
            load_or_train(stage)
    finally:
        torch.set_num_threads(threads)
    built = settings().stage_dir("tokenizer").parent

    root = tmp_path_factory.mktemp("lab")
    artifacts = root / "artifacts"
    for stage in STAGES_NEEDED:
        shutil.copytree(built / stage, artifacts / built.name / stage)
    notebooks = root / "notebooks"
    notebooks.mkdir()
    for name in ("03_rankings.ipynb", "05_ppo.ipynb"):
        shutil.copy(REPO / "notebooks" / name, notebooks / name)
    user_settings = root / "lab-settings"
    for plugin, values in {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},  # every cell in the page
    }.items():
        file = user_settings / f"{plugin}.jupyterlab-settings"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(values))

    token, port = uuid.uuid4().hex, _free_port()
    env = {**os.environ, "COURSE_ARTIFACTS": str(artifacts), "COURSE_FAST": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "JUPYTERLAB_SETTINGS_DIR": str(user_settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"), "JUPYTER_CONFIG_DIR": str(root / "config"),
           "JUPYTER_RUNTIME_DIR": str(root / "runtime"), "JUPYTER_PLATFORM_DIRS": "1"}
    env.pop("COURSE_SEED", None)
    log = open(root / "jupyter.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={notebooks}", "--ServerApp.port_retries=0",
         "--LabApp.extension_manager=readonly", "--allow-root"],
        cwd=notebooks, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    info = {"url": f"http://127.0.0.1:{port}", "token": token, "artifacts": artifacts, "root": root}
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _api(info, "/api/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (root / "jupyter.log").read_text()[-3000:])
                time.sleep(0.3)
        yield info
    finally:
        with contextlib.suppress(OSError):
            for kernel in _api(info, "/api/kernels"):
                _api(info, f"/api/kernels/{kernel['id']}", "DELETE")
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, lab, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()
    with contextlib.suppress(OSError):  # free the CPU for the next test
        for kernel in _api(lab, "/api/kernels"):
            _api(lab, f"/api/kernels/{kernel['id']}", "DELETE")


@contextlib.contextmanager
def screenshot_on_failure(page, name: str):
    try:
        yield
    except BaseException:
        SCREENSHOTS.mkdir(exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        raise


# --- driving JupyterLab --------------------------------------------------------------------------


def open_notebook(page, lab, name: str) -> None:
    """Open a notebook in a fresh workspace and wait for its kernel."""
    page.goto(f"{lab['url']}/lab/tree/{name}?reset&token={lab['token']}")
    page.get_by_text(re.compile(r"\| Idle$")).wait_for(timeout=90_000)


def run_all_cells(page, timeout: float = 240) -> None:
    """Run > Run All Cells, then wait until every code cell has run and the kernel is idle."""
    page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
    notebook = page.locator(".jp-NotebookPanel:visible .jp-Notebook")
    prompts_of = notebook.locator(".jp-CodeCell .jp-InputArea-prompt")
    # The cells are queued at once ("[*]"); until then the prompts of an earlier run still show.
    wait_until(lambda: any("*" in p for p in prompts_of.all_inner_texts()), "the cells to be queued", 15)
    deadline = time.monotonic() + timeout
    while True:
        prompts = prompts_of.all_inner_texts()
        finished = prompts and all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in prompts)
        if finished and page.get_by_text(re.compile(r"\| Idle$")).count():
            break
        assert time.monotonic() < deadline, f"the notebook did not finish in {timeout} s: {prompts}"
        time.sleep(0.3)
    text = notebook.inner_text()
    assert "Traceback (most recent call last)" not in text, text[text.find("Traceback") - 2000:][:4000]


def wait_until(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def lines_of(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the tests -------------------------------------------------------------------------------------


def test_rank_submit_refuse_undo_and_resume_in_notebook_03(page, lab):
    rankings = lab["artifacts"] / "rankings" / "my_rankings.jsonl"  # MY_RANKINGS in notebook 03
    with screenshot_on_failure(page, "notebook_03_ranking"):
        open_notebook(page, lab, "03_rankings.ipynb")
        run_all_cells(page)
        widget = page.locator(".ranking-widget")
        widget.scroll_into_view_if_needed()
        message, progress = widget.locator(".ranking-message"), widget.locator(".ranking-progress")
        assert progress.inner_text() == "0 / 6 ranked"
        assert "Your rankings are saved to" in message.inner_text()

        def choose(ranks):
            for i, rank in enumerate(ranks):
                widget.locator(f".rank-select-{i} select").select_option("-" if rank is None else str(rank))

        # An incomplete ranking is refused, and nothing is written.
        choose([1, 2, None, None])
        widget.locator(".submit-ranking").click()
        wait_until(lambda: "Give every response a rank" in message.inner_text(), "the refusal")
        assert message.inner_text() == ("Give every response a rank (C and D have none yet). "
                                        "Equal ranks mean a tie.")
        assert "no rank yet: C and D" in widget.locator(".ranking-preview").inner_text()
        assert lines_of(rankings) == []

        # Complete it, flag C, submit: the ranking is in the file at once.
        first_prompt = widget.locator(".ranking-prompt pre").inner_text()
        choose([1, 2, 4, 3])
        widget.locator(".flag-makes_up_facts-2 input").check()
        widget.locator(".submit-ranking").click()
        wait_until(lambda: progress.inner_text() == "1 / 6 ranked", "the first submit")
        # The widget's parts update one by one: wait for each rather than reading it at once.
        wait_until(lambda: message.inner_text().startswith("Saved: A > B > D > C. Flagged: C makes up facts."),
                   "the first confirmation")
        wait_until(lambda: len(lines_of(rankings)) == 1, "the first line in the file")
        (saved,) = lines_of(rankings)
        assert saved["prompt"] == first_prompt and saved["ranks"] == [1, 2, 4, 3]
        assert saved["labeler"] == "student" and saved["flags"] == {"makes_up_facts": [2]}
        assert len(saved["responses"]) == 4

        # The next prompt starts blank; a ranking with a tie.
        second_prompt = widget.locator(".ranking-prompt pre").inner_text()
        assert second_prompt != first_prompt
        assert widget.locator(".rank-select-0 select").input_value() == "-"
        choose([2, 2, 1, 3])
        widget.locator(".submit-ranking").click()
        wait_until(lambda: progress.inner_text() == "2 / 6 ranked", "the second submit")
        wait_until(lambda: message.inner_text().startswith("Saved: C > A = B > D."), "the second confirmation")
        wait_until(lambda: len(lines_of(rankings)) == 2, "the second line")
        assert lines_of(rankings)[1]["ranks"] == [2, 2, 1, 3]

        # Undo: the line leaves the file, the prompt comes back with its ranks.
        widget.locator(".undo-ranking").click()
        wait_until(lambda: progress.inner_text() == "1 / 6 ranked", "the undo")
        wait_until(lambda: message.inner_text().startswith("Removed the ranking C > A = B > D of prompt 2."),
                   "the undo message")
        wait_until(lambda: widget.locator(".ranking-prompt pre").inner_text() == second_prompt, "the prompt back")
        wait_until(lambda: [widget.locator(f".rank-select-{i} select").input_value() for i in range(4)]
                   == ["2", "2", "1", "3"], "the ranks back")
        assert lines_of(rankings) == [saved]

        # Restart the kernel and run everything again: nothing is lost, the widget carries on.
        (kernel,) = _api(lab, "/api/kernels")
        _api(lab, f"/api/kernels/{kernel['id']}/restart", "POST")
        page.get_by_text(re.compile(r"\| Idle$")).wait_for()
        run_all_cells(page)
        widget.scroll_into_view_if_needed()
        wait_until(lambda: progress.inner_text() == "1 / 6 ranked", "the resumed progress")
        wait_until(lambda: message.inner_text().startswith("Welcome back: 1 of 6 prompts were already ranked by student"),
                   "the welcome back")
        wait_until(lambda: widget.locator(".ranking-prompt pre").inner_text() == second_prompt, "the resumed prompt")
        assert lines_of(rankings) == [saved]
        # The agreement cell used the saved ranking.
        assert "you vs the gold labeler" in page.locator(".jp-NotebookPanel:visible .jp-Notebook").inner_text()


def test_live_dashboard_renders_in_notebook_05(page, lab):
    with screenshot_on_failure(page, "notebook_05_dashboard"):
        open_notebook(page, lab, "05_ppo.ipynb")
        # Record every dashboard the page shows while PPO trains: the output is replaced in place.
        page.evaluate("""() => {
            window.dashboardIterations = [];
            new MutationObserver(records => {
                for (const record of records) for (const node of record.addedNodes) {
                    if (!(node instanceof Element)) continue;
                    const found = node.matches('.ppo-dashboard') ? [node] : [...node.querySelectorAll('.ppo-dashboard')];
                    for (const d of found) window.dashboardIterations.push(Number(d.dataset.iteration));
                }
            }).observe(document.body, {childList: true, subtree: true});
        }""")
        run_all_cells(page)
        dashboards = page.locator(".jp-NotebookPanel:visible .ppo-dashboard")
        assert dashboards.count() == 1, "each update replaces the dashboard instead of adding one"
        dashboard = dashboards.first
        dashboard.scroll_into_view_if_needed()
        image = dashboard.locator("img.ppo-dashboard-figure")
        status = image.get_attribute("alt")
        done, total = map(int, re.search(r"iteration (\d+) / (\d+)", status).groups())
        assert done == total >= 2 and int(dashboard.get_attribute("data-iteration")) == total
        seen = page.evaluate("window.dashboardIterations")
        assert seen and seen == sorted(seen) and seen[-1] == total and seen[0] <= total
        loaded = image.evaluate("img => img.complete && img.naturalWidth > 0 ? [img.naturalWidth, img.naturalHeight] : null")
        assert loaded and loaded[0] > 800 and loaded[1] > 400, loaded
        box = image.bounding_box()
        assert box["width"] > 500 and box["height"] > 250  # drawn on the page, not a broken icon
        table = dashboard.locator("table.ppo-dashboard-samples")
        assert table.count() == 1 and f"Answers sampled in iteration {total}" in table.inner_text()
