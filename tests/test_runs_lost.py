"""A run the backend lost: a sandbox started afresh behind the same address answers, but has no such run.

The run's view stops polling and says so (LOST, what to do), Terminate is disabled, ``wait()`` raises one
RunError, and Relaunch says what a launch says: re-run the cell. An outage before that (nothing answers
the address) still shows "reconnecting…". A real InteractiveShell registers through ``--config``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from fastreg_magic import sandbox as sandbox_api
from fastreg_magic.errors import RunError

pytestmark = pytest.mark.slow

CELL = """%%flyte_fast -m {module} --config {config} --source-root {root}
import time
from flytekit import task, workflow

@task
def nap(s: float) -> float:
    time.sleep(s)
    return s

@workflow
def slow(s: float = 100.0) -> float:
    return nap(s=s)
"""
LIMIT_S = 120.0  # how long the view may take to notice, on a busy machine


def run_cell(shell, cell: str):
    """The cell's Registration, as `%%flyte_fast` returns it in a notebook."""
    line, body = cell.split("\n", 1)
    return shell.run_cell_magic("flyte_fast", line.removeprefix("%%flyte_fast "), body)


def until(condition, what: str) -> None:
    deadline = time.monotonic() + LIMIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "fastreg_magic")
    return ip


class CrashingSandbox:
    """`fastreg sandbox` in a process of its own, which ``stop()`` kills as a crash would: a stop would end
    its runs ABORTED first, and a view that saw that would rightly show ABORTED, not an outage."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.log = data_dir.parent / "first-sandbox.log"
        with open(self.log, "w") as log:  # a file, not a pipe nobody reads
            self.process = subprocess.Popen([sys.executable, "-m", "fastreg_magic.cli", "sandbox", "--port", "0",
                                             "--data-dir", str(data_dir)], stdout=subprocess.PIPE, stderr=log,
                                            text=True, start_new_session=True)
        line = self.process.stdout.readline()
        assert line.startswith("fastreg sandbox ready on"), line + self.log.read_text()
        self.config_file = data_dir / "config.yaml"
        self.endpoint = re.search(r"127\.0\.0\.1:\d+", self.config_file.read_text()).group(0)
        self.port = int(self.endpoint.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=60)


@pytest.fixture
def first_sandbox(tmp_path):
    """A sandbox whose config file the cell names; the test crashes it and starts a fresh one on its port."""
    box = CrashingSandbox(tmp_path / "first")
    config = tmp_path / "sandbox.yaml"
    config.write_text(box.config_file.read_text())
    try:
        yield box, config
    finally:
        box.stop()
        # The crash left its task processes running, as a real one does; starting it again ends them.
        sandbox_api.start(box.data_dir, port=0).stop()


def test_a_running_run_whose_backend_was_replaced_is_shown_lost_not_running(shell, first_sandbox, tmp_path):
    from fastreg_magic.widget_run import RunView

    box, config = first_sandbox
    cell = CELL.format(module=f"lostruns_{uuid.uuid4().hex[:8]}", config=config, root=tmp_path)
    reg = run_cell(shell, cell)
    run = reg.launch(s=300.0)
    view = RunView(run)
    try:
        until(lambda: view.phase == "RUNNING", "the run to start")
        box.stop()
        until(lambda: "reconnecting…" in view.connection.value, "the outage to show")
        assert view.phase == "RUNNING"  # an outage is not a loss

        with sandbox_api.start(tmp_path / "fresh", port=box.port):
            until(lambda: view.phase != "RUNNING", "the view to notice the run is gone")
            assert view.phase == "LOST"
            assert view.connection.value == ""  # the backend answers: no "reconnecting…"
            error = view.error.value
            assert f"Run {run.name} is not on {box.endpoint} any more" in error and "lost it" in error
            assert "Re-run the %%flyte_fast cell, then launch again." in error
            assert "-p/-d" not in error
            assert view.terminate_button.disabled
            until(lambda: not view._watch.active, "the view to stop polling")
            assert run.lost and run.elapsed == run.elapsed  # the clock stopped with the run
            assert "LOST (last seen RUNNING)" in repr(run)

            with pytest.raises(RunError) as waited:
                run.wait(timeout=60)
            assert waited.value.message.startswith(f"Run {run.name} is not on {box.endpoint} any more")
            assert waited.value.hint == "Re-run the %%flyte_fast cell, then launch again."

            # as the message says: the cell's next run registers again (the kernel forgot), and launches
            again = run_cell(shell, cell)
            assert again.registered and again.uploaded
            assert again.launch(s=0.0).wait(timeout=300).phase == "SUCCEEDED"
    finally:
        view.close()


def test_relaunching_a_run_the_backend_lost_says_to_re_run_the_cell(shell, first_sandbox, tmp_path):
    from fastreg_magic.widget_registration import RegistrationWidget

    box, config = first_sandbox
    cell = CELL.format(module=f"lostruns_{uuid.uuid4().hex[:8]}", config=config, root=tmp_path)
    reg = run_cell(shell, cell)
    widget = RegistrationWidget(reg)
    try:
        reg.launch(s=0.0).wait(timeout=300)
        view = widget.run_views[0]
        until(lambda: view.phase == "SUCCEEDED", "the view to show the run's end")
        box.stop()
        with sandbox_api.start(tmp_path / "fresh", port=box.port):
            view.relaunch_button.click()
            placeholder = widget.run_views[-1]
            until(lambda: placeholder.phase == "LAUNCH FAILED", "the relaunch to fail")
            error = placeholder.error.value
            assert f"version {reg.version} is not on {box.endpoint} any more" in error
            assert "Re-run the %%flyte_fast cell: it uploads and registers the release again." in error
            assert "does not exist" not in error
    finally:
        widget.close()
