"""What a failed or stopped run shows: its nodes as they ended, why a Terminate failed, and an error that
names the task and its exception before anything else.

The cell runs through a real InteractiveShell on the session sandbox; the Terminate test stops a
`fastreg sandbox` process of its own (SIGSTOP) as a backend that does not answer.
"""

from __future__ import annotations

import os
import re
import textwrap
import threading
import time
import uuid

import pytest
from sandbox_support import SandboxProcess

from fastreg_magic.runs_tree import flatten

pytestmark = pytest.mark.slow

CELL = textwrap.dedent(
    """
    import os, sys, time
    from flytekit import task, workflow

    @task
    def s1() -> int:
        return 1

    @task
    def s2(x: int, go: str) -> int:
        deadline = time.time() + 300
        while not os.path.exists(go) and time.time() < deadline:
            time.sleep(0.05)
        raise ValueError(f"step two failed on {x}")
        return x

    @task
    def s3(x: int) -> int:
        return x + 1

    @workflow
    def wf3(go: str) -> int:
        return s3(x=s2(x=s1(), go=go))

    @task
    def t_warn() -> int:
        print("RuntimeWarning: running low on memory, continuing", file=sys.stderr)
        print("ConnectionError: retrying fetch (attempt 1)... ok", file=sys.stderr)
        raise ValueError("the real cause")
        return 0

    @task
    def t_badtype() -> int:
        return "not an int"

    @task(retries=2)
    def flaky() -> int:
        raise RuntimeError("not worth retrying")
        return 0

    @workflow
    def flaky_wf() -> int:
        return flaky()

    @task
    def nap(s: int) -> int:
        time.sleep(s)
        return s
    """
)


def wait_until(predicate, timeout: float = 240) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def phases(rows) -> dict[str, str]:
    """{"s2": "FAILED", ...}: each node's phase by its task's short name."""
    return {(row.task or "").rsplit(".", 1)[-1]: row.phase for _, row in flatten(rows)}


def visible(widget) -> str:
    """The text a user sees in ``widget`` and the widgets inside it."""
    import ipywidgets as widgets

    if widget.layout.display == "none":
        return ""
    if isinstance(widget, widgets.HTML):
        return plain(widget.value) + "\n"
    return "".join(visible(child) for child in getattr(widget, "children", ()))


def plain(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html).replace("&#x27;", "'").replace("&lt;", "<").replace("&gt;", ">")


@pytest.fixture(scope="module")
def reg(sandbox_shell, tmp_path_factory):
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("run-status"))
    try:
        yield sandbox_shell.run_cell_magic("flyte_fast", f"-m status_{uuid.uuid4().hex[:8]}", CELL)
    finally:
        os.chdir(cwd)


# -- 1. the nodes of an ended run are the ones it ended with --------------------------------------------


def test_a_run_that_ends_while_its_nodes_are_read_shows_the_nodes_it_ended_with(reg, tmp_path):
    """The user's `r.wait()` refreshes the run between the poller's read of the nodes (s2 RUNNING) and its
    look at the phase: the view must not keep s2 RUNNING beside a FAILED badge, now or in a later view."""
    from fastreg_magic.widget_run import RunView

    go = tmp_path / "go"
    run = reg.launch("wf3", go=str(go))
    read_while_running, ended = threading.Event(), threading.Event()
    read_nodes = run.nodes

    def nodes_held_until_the_run_ended():
        rows = read_nodes()
        if not read_while_running.is_set() and phases(rows).get("s2") == "RUNNING":
            read_while_running.set()
            ended.wait(300)  # the poll goes on only once the user's wait saw the run end
        return rows

    run.nodes = nodes_held_until_the_run_ended
    view = RunView(run)
    try:
        assert read_while_running.wait(240), view.phase
        go.touch()
        run.wait(timeout=240)  # as the user does, on the main thread
        ended.set()
        assert wait_until(lambda: not view._watch.active)
        assert view.phase == "FAILED"
        assert phases(view.nodes)["s2"] == "FAILED", phases(view.nodes)
        assert "data-phase='RUNNING'" not in view.node_table.value
        later = RunView(run)  # a view opened afterwards draws what the run ended with
        try:
            assert wait_until(lambda: later._watch is not None and not later._watch.active)
            assert phases(later.nodes)["s2"] == "FAILED", phases(later.nodes)
            assert "data-phase='RUNNING'" not in later.node_table.value
        finally:
            later.close()
    finally:
        ended.set()
        go.touch()
        view.close()


# -- 3. and 4. the error names the task and its exception first ---------------------------------------------


def test_a_failed_workflows_error_starts_with_the_task_and_its_exception(reg, tmp_path):
    go = tmp_path / "go"
    go.touch()
    run = reg.launch("wf3", go=str(go)).wait(timeout=240)
    assert run.phase == "FAILED"
    lines = run.error.splitlines()
    assert lines[0] == "s2 (node n1) failed: ValueError: step two failed on 1", run.error
    assert "Traceback (most recent call last):" in run.error
    assert re.search(r'File ".*status_\w+\.py", line \d+, in s2', run.error), run.error
    assert 'raise ValueError(f"step two failed on {x}")' in run.error
    assert "flytekit" not in run.error  # none of flytekit's frames
    assert "Message:" not in run.error and "Trace:" not in run.error
    assert run.error.count("ValueError: step two failed on 1") == 2  # the headline and the traceback's last line
    assert len(lines) <= 7, run.error
    assert "retries" not in run.error  # s2 declares none
    assert run.backend_error.startswith("Node [n1] failed: Trace:")  # the backend's words stay at hand
    assert "flytekit/core/base_task.py" in run.backend_error


def test_a_wrong_return_type_is_a_few_lines_without_flytekits_frames(reg):
    run = reg.launch("t_badtype").wait(timeout=240)
    assert run.phase == "FAILED"
    lines = run.error.splitlines()
    assert lines[0].startswith("t_badtype (node "), run.error
    assert "TypeTransformerFailedError: Failed to convert outputs of task" in lines[0]
    assert "got 'not an int' of type <class 'str'>" in run.error
    assert "File " not in run.error and "asyncio" not in run.error, run.error
    assert len(lines) <= 5, run.error


def test_the_headline_is_the_tasks_exception_not_a_line_it_printed(reg):
    from fastreg_magic.widget_run import RunView

    run = reg.launch("t_warn").wait(timeout=240)
    assert "ConnectionError: retrying fetch" in run.error  # its stderr still follows the error
    assert run.error_headline.endswith("failed: ValueError: the real cause"), run.error_headline
    view = RunView(run)
    try:
        assert wait_until(lambda: view.phase == "FAILED")
        summary = re.search(r"fastreg-error-summary'>(.*?)</span>", view.error.value).group(1)
        assert plain(summary).endswith("failed: ValueError: the real cause"), summary
        assert plain(summary).startswith("t_warn (node ")
    finally:
        view.close()


# -- 6. a task that declared retries and was not retried says why -------------------------------------------


@pytest.mark.parametrize("launched", ["flaky", "flaky_wf"], ids=["task", "workflow"])
def test_a_task_declaring_retries_that_raised_a_plain_exception_says_why_it_was_not_retried(reg, launched):
    run = reg.launch(launched).wait(timeout=240)
    lines = run.error.splitlines()
    assert lines[0].startswith("flaky (node ") and lines[0].endswith("failed: RuntimeError: not worth retrying")
    assert lines[1].startswith("flaky declares retries=2 but was not retried"), run.error
    assert "FlyteRecoverableException" in lines[1]
    assert [row.retries for _, row in flatten(run.nodes())] == [0]


# -- 5. a launch from code on an old Registration reaches the re-run cell's widget ---------------------------


def test_a_launch_on_the_registration_a_rerun_replaced_shows_in_the_new_widget(sandbox_shell, tmp_path, monkeypatch):
    from fastreg_magic.widget_registration import RegistrationWidget

    monkeypatch.chdir(tmp_path)
    module = f"again_{uuid.uuid4().hex[:8]}"
    old = sandbox_shell.run_cell_magic("flyte_fast", f"-m {module}", CELL)
    old_widget = RegistrationWidget(old)
    new = sandbox_shell.run_cell_magic("flyte_fast", f"-m {module}", CELL + "\n# edited\n")
    assert new.runs is old.runs  # the cell's runs carry over to its re-run
    old_widget.close()  # the re-run cell's widget replaces it on screen
    new_widget = RegistrationWidget(new)
    try:
        run = old.launch("nap", s=0)
        assert run in new.runs
        assert any(view.run is run for view in new_widget.run_views), [v.run for v in new_widget.run_views]
    finally:
        new_widget.close()


# -- 2. a Terminate the backend does not answer says so, and stays said -----------------------------------


@pytest.fixture
def backend(tmp_path):
    box = SandboxProcess(tmp_path / "sandbox")
    try:
        yield box
    finally:
        box.close()


def test_a_terminate_the_backend_does_not_answer_stays_visible(sandbox_shell, backend, tmp_path, monkeypatch):
    from fastreg_magic.widget_run import RunView

    monkeypatch.chdir(tmp_path)
    reg = sandbox_shell.run_cell_magic(
        "flyte_fast", f"-m hung_{uuid.uuid4().hex[:8]} --config {backend.config_file}", CELL)
    run = reg.launch("nap", s=600)
    view = RunView(run)
    try:
        assert wait_until(lambda: view.phase == "RUNNING"), view.phase
        backend.stop()
        view.terminate_button.click()
        assert view.terminate_button.description == "Terminating…"
        assert wait_until(lambda: view.terminate_button.description == "Terminate", 120)
        assert not view.terminate_button.disabled
        problem = visible(view)
        assert "Terminate failed, the run goes on" in problem and "not answering" in problem, problem

        polls = view._watch.polls
        assert wait_until(lambda: view._watch.polls >= polls + 2, 120)  # later polls redraw the view...
        assert "reconnecting…" in visible(view)
        assert "Terminate failed" in visible(view)  # ...and the failure stays

        backend.resume()
        assert wait_until(lambda: view.connection.value == "", 120)  # the backend answers again
        assert view.phase == "RUNNING" and run.refresh().phase == "RUNNING"
        assert "Terminate failed" in visible(view)

        view.terminate_button.click()  # a terminate that succeeds clears it
        assert wait_until(lambda: view.phase == "ABORTED", 120), view.phase
        assert "Terminate failed" not in visible(view)
    finally:
        backend.resume()
        view.close()
        try:
            run.terminate()
        except Exception:  # the run ended with its backend
            pass


# -- a task failing inside a conditional() branch is named with its node path --------------------------------

BRANCH_CELL = textwrap.dedent(
    """
    from flytekit import task, workflow, conditional

    @task
    def boom(n: int) -> int:
        raise ValueError(f"boom on {n}")
        return n

    @task
    def fine(n: int) -> int:
        return n

    @workflow
    def pick(n: int) -> int:
        return conditional("zero").if_(n == 0).then(boom(n=n)).else_().then(fine(n=n))

    @workflow
    def sub(n: int) -> int:
        return boom(n=fine(n=n))

    @workflow
    def pick_sub(n: int) -> int:
        return conditional("zero").if_(n == 0).then(sub(n=n)).else_().then(fine(n=n))
    """
)


def test_a_task_failing_in_a_branch_is_named_with_its_node_path(sandbox_shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    branch = sandbox_shell.run_cell_magic("flyte_fast", f"-m branch_{uuid.uuid4().hex[:8]}", BRANCH_CELL)
    run = branch.launch("pick", n=0).wait(timeout=240)
    assert run.phase == "FAILED"
    headline = run.error.splitlines()[0]
    assert headline == "boom (node n0/n0) failed: ValueError: boom on 0", run.error
    assert 'raise ValueError(f"boom on {n}")' in run.error
    # a sub-workflow the branch chose: the task failing in it
    run = branch.launch("pick_sub", n=0).wait(timeout=240)
    assert run.error.splitlines()[0] == "boom (node n0/n0/n1) failed: ValueError: boom on 0", run.error
