"""Runs survive an edited cell: re-running a changed `%%flyte_fast` cell registers a new version, and the
runs started from the version it replaces stay in the new widget, marked with their version, to be
watched, terminated and relaunched (on the new version). A real InteractiveShell on the session sandbox."""

from __future__ import annotations

import time
import uuid

import pytest

pytestmark = pytest.mark.slow

CELL = """
import time
from flytekit import task, workflow

@task
def nap(n: int) -> int:
    time.sleep(n)
    return n {change}

@workflow
def slow(n: int) -> int:
    return nap(n=n)
"""
LIMIT_S = 300.0  # how long a step may take on a busy machine before the test gives up


def until(condition, what: str):
    """Wait for ``condition()`` to hold (the widget follows runs in the background)."""
    deadline = time.monotonic() + LIMIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_an_edited_cell_keeps_the_runs_of_the_version_it_replaced(sandbox_shell, workdir):
    from fastreg_magic.widget_registration import RegistrationWidget

    module = f"naps_{uuid.uuid4().hex[:8]}"
    first = sandbox_shell.run_cell_magic("flyte_fast", f"-m {module}", CELL.format(change=""))
    old_widget = RegistrationWidget(first)
    old_widget.form().editors["n"].value = "30"
    old_widget.form().launch_clicked()
    until(lambda: first.runs and first.runs[0].phase == "RUNNING", "the run to start")
    running = first.runs[0]

    edited = sandbox_shell.run_cell_magic("flyte_fast", f"-m {module}", CELL.format(change="+ 1"))
    assert edited.version != first.version and edited.registered
    assert running in edited.runs  # Registration.runs too, not only the widget
    from fastreg_magic.widget_text import registration_text

    assert f"{running.name} ({module}.slow)" in registration_text(edited)
    assert f"(previous version {first.version})" in registration_text(edited)  # terminal IPython says so too
    widget = RegistrationWidget(edited)
    try:
        (view,) = widget.run_views
        assert view.run is running
        assert f"v {first.version[:8]}… (previous version)" in view.title.value
        assert view.relaunch_button.description == "Relaunch on this version"
        assert edited.version in view.relaunch_button.tooltip

        until(lambda: view.phase == "RUNNING" and not view.terminate_button.disabled, "the view to follow the run")
        view._terminate_clicked()
        until(lambda: view.phase == "ABORTED", "the old version's run to be terminated")

        view._relaunch_clicked()
        until(lambda: len(widget.run_views) == 2 and widget.run_views[1].run is not None, "the relaunch")
        again = widget.run_views[1].run
        assert again.version == edited.version and again.inputs == {"n": 30}
        assert "previous version" not in widget.run_views[1].title.value
        again.terminate()
    finally:
        widget.close()
        old_widget.close()
