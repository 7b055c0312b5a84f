"""The quickstart in a real browser: JupyterLab 4 on loopback, driven by headless Chromium.

What a user does, click for click: open ``quickstart.ipynb`` in JupyterLab, run all cells,
press the rendered "Launch" button, and watch the run view reach SUCCEEDED. The notebook
is saved afterwards and read back from disk, so a cell that raised fails the test with its
traceback. A screenshot of the final page goes to ``tests/artifacts/``.

Playwright drives Debian's ``chromium`` (``executable_path``): Playwright's own browser
download needs the network, which CI does not have. Without chromium the tests are skipped.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, have_chromium

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not have_chromium(), reason="Debian's chromium is not installed (python3 .ci/dev.py test installs it)"),
]

NOTEBOOKS = ROOT / "notebooks"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SERVER_START_TIMEOUT_S = 120
NOTEBOOK_RUN_TIMEOUT_MS = 300_000
RUN_FINISH_TIMEOUT_MS = 180_000
# The status bar reads "Python 3 (ipykernel) | Idle" once the notebook's kernel is connected and
# not busy. (The toolbar's execution indicator says "idle" too early: before any kernel exists.)
# Running cells before that makes JupyterLab drop and re-make its first kernel connection, and
# widgets created meanwhile are lost ("Error displaying widget: model not found").
KERNEL_IDLE = """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
    .some(item => /^(?!No Kernel).+ \\| Idle$/.test(item.textContent.trim()))"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterLab:
    """A JupyterLab server in a subprocess, serving a throwaway copy of the notebooks."""

    def __init__(self, root: Path, home: Path, env: dict[str, str]):
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.log = home / "jupyterlab.log"
        jupyter_env = dict(
            env,
            # Everything Jupyter writes (runtime files, settings, workspaces) stays in the test's tmp dir.
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            JUPYTER_CONFIG_DIR=str(home / "config"),
            IPYTHONDIR=str(home / "ipython"),
        )
        cmd = [
            sys.executable, "-m", "jupyterlab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={home / 'settings'}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
            # No network here: no update checks, no news feed.
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None",
            "--LabApp.extension_manager=readonly",
        ]
        if os.geteuid() == 0:  # CI containers run as root; Jupyter refuses that unless told.
            cmd.append("--allow-root")
        # Questions JupyterLab would otherwise ask in a toast or a dialog over the page: no news feed
        # here, and a notebook starts the kernel its metadata names without asking which.
        write_setting(home, "apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False})
        write_setting(home, "notebook-extension/tracker", {"autoStartDefaultKernel": True})
        self._log_file = open(self.log, "wb")
        self.process = subprocess.Popen(
            cmd, cwd=root, env=jupyter_env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}?token={self.token}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"jupyter lab did not answer within {SERVER_START_TIMEOUT_S}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            # The whole session: the server and the kernels it started.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log_file.close()


def write_setting(home: Path, plugin: str, values: dict) -> None:
    path = home / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))


def write_widget_smoke_notebook(path: Path) -> None:
    """A notebook whose only job is to show that ipywidgets render and react in this JupyterLab."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import ipywidgets as w\n"
            "status = w.HTML('<b>waiting</b>')\n"
            "button = w.Button(description='Launch')\n"
            "def on_click(_):\n"
            "    status.value = '<b>' + 'SUCC' + 'EEDED</b>'\n"
            "button.on_click(on_click)\n"
            "w.VBox([button, status])"
        )
    ]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, sandbox):
    """JupyterLab on loopback over a copy of notebooks/, its kernels pointed at the test sandbox."""
    home = tmp_path_factory.mktemp("jupyterlab")
    root = home / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    write_widget_smoke_notebook(root / "widget_smoke.ipynb")
    env = dict(os.environ, FLYTECTL_CONFIG=str(sandbox.config_file))
    server = JupyterLab(root, home, env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, request, artifacts_dir):
    """A fresh browser tab; its last state and console are saved as ``<test>-last.png``/``-console.txt``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    try:
        yield page
    finally:
        page.screenshot(path=str(artifacts_dir / f"{request.node.name}-last.png"))
        (artifacts_dir / f"{request.node.name}-console.txt").write_text("\n".join(console))
        context.close()


def open_notebook(page, lab: JupyterLab, name: str) -> None:
    # `reset`: a clean workspace, so tabs of notebooks opened by earlier tests are not restored.
    page.goto(lab.url(f"lab/tree/{name}") + "&reset")
    page.locator(".jp-Notebook").first.wait_for(timeout=60_000)
    # On a slow machine JupyterLab may still ask which kernel to start; the notebook's own is preselected.
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if select.is_visible():
            select.click()
        if page.evaluate(KERNEL_IDLE):
            return
        time.sleep(0.25)
    raise AssertionError(f"the kernel of {name} did not become idle within 120s")


def wait_kernel_idle(page, timeout_ms: int = 60_000) -> None:
    page.wait_for_function(KERNEL_IDLE, timeout=timeout_ms)


ALL_CELLS_RAN = """() => {
    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""


def run_all_cells(page) -> None:
    """Run > Run All Cells, as a user would; then wait until every code cell shows its "[n]:" prompt."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(ALL_CELLS_RAN, timeout=NOTEBOOK_RUN_TIMEOUT_MS)
    wait_kernel_idle(page, NOTEBOOK_RUN_TIMEOUT_MS)


def save_and_read_back(page, lab: JupyterLab, name: str) -> nbformat.NotebookNode:
    page.keyboard.press("Control+s")
    path = lab.root / name
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        nb = nbformat.read(path, as_version=4)
        if any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"):
            return nb
        time.sleep(0.3)
    raise AssertionError(f"JupyterLab did not save {name} with its outputs")


def cell_errors(nb: nbformat.NotebookNode) -> list[str]:
    return [
        f"cell {index}: {output.get('ename')}: {output.get('evalue')}"
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]


def test_widgets_render_and_react_in_jupyterlab(lab, page):
    """The harness itself: JupyterLab's widget manager is installed and talks to the kernel."""
    open_notebook(page, lab, "widget_smoke.ipynb")
    run_all_cells(page)
    page.locator(".jp-Notebook").get_by_role("button", name="Launch", exact=True).click()
    page.get_by_text("SUCCEEDED").wait_for(timeout=30_000)


def fill_input(scope, name: str, value: str) -> None:
    """Type into the launch form's field whose description (label) is the input's name."""
    field = scope.locator(".widget-inline-hbox", has=scope.page.locator("label", has_text=name)).locator("input").first
    field.fill(value)
    field.press("Tab")  # ipywidgets sends a text field's value on change / blur


def test_quickstart_launch_button_runs_to_succeeded(lab, page, artifacts_dir):
    if not (lab.root / "quickstart.ipynb").exists():
        pytest.fail("notebooks/quickstart.ipynb is missing")
    open_notebook(page, lab, "quickstart.ipynb")
    run_all_cells(page)

    # The first registration widget: the one the quickstart's first %%flyte_fast cell displayed.
    registration = page.locator(".fastreg-registration").first
    registration.scroll_into_view_if_needed()
    runs_before = registration.locator(".fastreg-run").count()
    fill_input(registration, "who", "Browser")
    registration.get_by_role("button", name="Launch", exact=True).first.click()

    new_run = registration.locator(".fastreg-run").nth(runs_before)
    new_run.wait_for(timeout=60_000)
    # A run view's first phase badge is the run's own (the node table's come after it).
    new_run.locator(".fastreg-phase").first.and_(page.locator("[data-phase='SUCCEEDED']")).wait_for(
        timeout=RUN_FINISH_TIMEOUT_MS
    )
    new_run.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "quickstart_browser.png"), full_page=True)
    new_run.screenshot(path=str(artifacts_dir / "quickstart_browser_run.png"))
    assert "HELLO, BROWSER" in new_run.inner_text()  # the output of the run the click started

    saved = save_and_read_back(page, lab, "quickstart.ipynb")
    assert cell_errors(saved) == [], json.dumps(cell_errors(saved), indent=2)


NARROW_CELL = '''%%flyte_fast -m narrow_form
from dataclasses import dataclass, field
from flytekit import task, workflow

@dataclass
class Params:
    rate: float = 0.5
    tags: list[str] = field(default_factory=list)

@task
def a_task_whose_name_is_long_enough_to_push_every_other_column_out_of_sight(n: int, xs: list[int], d: dict[str, float], p: Params) -> int:
    return n + len(xs) + len(d) + len(p.tags)

@workflow
def narrow(n: int, xs: list[int], d: dict[str, float], p: Params) -> int:
    return a_task_whose_name_is_long_enough_to_push_every_other_column_out_of_sight(n=n, xs=xs, d=d, p=p)
'''

# Every element of the launch form (and of a run view) whose right edge lies past the form's own.
OUTSIDE = """([container, selector]) => {
    const box = container.getBoundingClientRect();
    return [...container.querySelectorAll(selector)]
        .filter(el => el.getClientRects().length > 0)
        .filter(el => el.getBoundingClientRect().right > box.right + 1)
        .map(el => `${el.className || el.tagName}: ${el.textContent.trim().slice(0, 60)} ` +
                   `(right ${Math.round(el.getBoundingClientRect().right)} > ${Math.round(box.right)})`);
}"""
# Text cut short by its box (a type label shown as "list[").
CUT = """(container) => [...container.querySelectorAll('.fastreg-type, .fastreg-problem, .fastreg-summary')]
    .filter(el => el.scrollWidth > el.clientWidth + 1 || el.parentElement.scrollWidth > el.parentElement.clientWidth + 1)
    .map(el => el.textContent)"""


def fill_field(scope, name: str, value: str) -> None:
    """Type into the launch form's field (a text line, or a JSON text area) labelled with the input's name."""
    row = scope.locator(".fastreg-input-row", has=scope.page.locator("label", has_text=name))
    field = row.locator("input, textarea").first
    field.fill(value)
    field.press("Tab")


@pytest.fixture
def narrow_page(browser, request, artifacts_dir):
    """A browser tab 620 px wide: a notebook beside a side panel, or on a small laptop screen."""
    context = browser.new_context(viewport={"width": 620, "height": 1100})
    page = context.new_page()
    try:
        yield page
    finally:
        page.screenshot(path=str(artifacts_dir / f"{request.node.name}-last.png"), full_page=True)
        context.close()


def test_the_launch_form_and_run_view_fit_a_600px_notebook(lab, narrow_page, artifacts_dir):
    page = narrow_page
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("%load_ext fastreg_magic"), nbformat.v4.new_code_cell(NARROW_CELL)]
    nbformat.write(nb, lab.root / "narrow.ipynb")
    open_notebook(page, lab, "narrow.ipynb")
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()  # the file browser gives way
    run_all_cells(page)
    registration = page.locator(".fastreg-registration").first
    form = registration.locator(".fastreg-launch-form").first
    form.scroll_into_view_if_needed()

    fill_field(form, "n", "99999999999999999999999")
    fill_field(form, "xs", "[1, 2.5]")
    fill_field(form, "d", '{"a": "lots"}')
    fill_field(form, "p", '{"rate": "fast", "colour": "a very long value that cannot fit on one line at all"}')
    form.get_by_role("button", name="Launch", exact=True).click()
    form.locator(".fastreg-summary").wait_for(timeout=30_000)
    form.screenshot(path=str(artifacts_dir / "narrow_form_problems.png"))

    summary = form.locator(".fastreg-summary").inner_text()
    assert "4 inputs to fix (n, xs, d, p)" in summary
    assert "out of range" in form.locator(".fastreg-input-row", has=page.locator("label", has_text="n")).first.inner_text()
    assert "launch(" not in form.inner_text()
    assert registration.locator(".fastreg-run").count() == 0  # nothing started
    handle = form.element_handle()
    assert page.evaluate(OUTSIDE, [handle, "*"]) == []
    assert page.evaluate(CUT, handle) == []
    types = form.locator(".fastreg-type").all_inner_texts()
    assert {"list[int]", "dict[str, float]", "Params"} <= set(types)

    fill_field(form, "n", "3")
    fill_field(form, "xs", "[1, 2]")
    fill_field(form, "d", '{"a": 1.5}')
    fill_field(form, "p", '{"tags": ["x"]}')
    form.get_by_role("button", name="Launch", exact=True).click()
    run = registration.locator(".fastreg-run").first
    run.locator(".fastreg-phase").first.and_(page.locator("[data-phase='SUCCEEDED']")).wait_for(timeout=RUN_FINISH_TIMEOUT_MS)
    run.locator(".fastreg-nodes").wait_for(timeout=30_000)
    run.scroll_into_view_if_needed()
    run.screenshot(path=str(artifacts_dir / "narrow_run.png"))
    assert page.evaluate(OUTSIDE, [run.element_handle(), ".fastreg-phase, .fastreg-elapsed, .fastreg-nodes td"]) == []
    name_cell = run.locator(".fastreg-nodes td[title*='a_task_whose_name']").first
    assert name_cell.get_attribute("title").endswith("push_every_other_column_out_of_sight")
    assert form.locator(".fastreg-summary").count() == 0 or "to fix" not in form.inner_text()


NAPS_CELL = '''%%flyte_fast -m naps
import time
from flytekit import task, workflow

@task
def nap(n: int) -> int:
    time.sleep(n)
    return n{change}

@workflow
def slow(n: int) -> int:
    return nap(n=n)
'''


def test_a_changed_cell_still_shows_and_stops_the_run_of_the_version_it_replaced(lab, page, artifacts_dir):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext fastreg_magic"),
        nbformat.v4.new_code_cell(NAPS_CELL.format(change="")),
        nbformat.v4.new_code_cell("first = _\nfirst.launch(n=60).name"),
    ]
    nbformat.write(nb, lab.root / "edited.ipynb")
    open_notebook(page, lab, "edited.ipynb")
    run_all_cells(page)
    wait_kernel_idle(page)

    # The user edits the cell (a line added at its end) and runs it again: the same cell, a new version.
    page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".cm-content").click()
    page.keyboard.press("Control+End")
    page.keyboard.press("Enter")
    page.keyboard.type("# edited")
    page.keyboard.press("Shift+Enter")
    edited = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".fastreg-registration")
    edited.locator(".fastreg-title", has_text="(previous version)").first.wait_for(timeout=60_000)
    run = edited.locator(".fastreg-run").first
    run.wait_for(timeout=60_000)
    assert "(previous version)" in run.locator(".fastreg-title").inner_text()
    run.locator("[data-phase='RUNNING']").first.wait_for(timeout=RUN_FINISH_TIMEOUT_MS)
    run.scroll_into_view_if_needed()
    run.screenshot(path=str(artifacts_dir / "edited_cell_previous_run.png"))
    run.get_by_role("button", name="Terminate", exact=True).click()
    run.locator(".fastreg-phase").first.and_(page.locator("[data-phase='ABORTED']")).wait_for(timeout=RUN_FINISH_TIMEOUT_MS)
    assert run.get_by_role("button", name="Relaunch on this version").is_enabled()
