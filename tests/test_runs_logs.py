"""A task's logs from a run: the links the backend publishes for each node, the end of a local log
file, and the end of a failed task's stderr in the run's error. The session sandbox publishes each
attempt's stdout and stderr as ``file://`` links, as a cluster publishes its log service's links.

The task prints 20,000 lines: what the notebook reads and shows stays small.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from run_flows import register_flows  # noqa: E402

from fastreg_magic import runs  # noqa: E402
from fastreg_magic.api import EntityRef  # noqa: E402
from fastreg_magic.errors import RunError  # noqa: E402

pytestmark = pytest.mark.slow

CHATTY = '''
import sys
from flytekit import task, workflow


@task
def chatty(n: int, fail: bool) -> int:
    for i in range(n):
        print("out line", i)
        print("err line", i, file=sys.stderr)
    if fail:
        raise ValueError("gave up after " + str(n) + " lines")
    return n


@task
def quiet(n: int) -> int:
    return n


@workflow
def talk(n: int = 20000, fail: bool = True) -> int:
    return quiet(n=chatty(n=n, fail=fail))
'''
LINES = 20000


@pytest.fixture(scope="module")
def talk(remote, tmp_path_factory):
    _, module, version, mod = register_flows(remote, tmp_path_factory.mktemp("chatty"), CHATTY, ("talk",), prefix="chatty")
    return EntityRef("workflow", f"{module}.talk", version, "flytesnacks", "development", None, mod.talk)


@pytest.fixture(scope="module")
def failed(remote, talk):
    return runs.launch(remote, talk, {"n": LINES, "fail": True}).wait(timeout=300)


def test_each_node_lists_its_logs_as_the_backend_names_them(failed):
    logs = failed.logs()
    assert list(logs) == ["n0"]  # n1 never ran: no logs
    (out_name, out_uri), (err_name, err_uri) = logs["n0"]
    assert (out_name, err_name) == ("stdout.log (local file)", "stderr.log (local file)")
    assert out_uri.startswith("file:///") and out_uri.endswith("/stdout.log") and err_uri.endswith("/stderr.log")
    assert failed.logs("n0") == {"n0": logs["n0"]}
    assert failed.logs("n1") == {"n1": []}
    with pytest.raises(RunError, match=r"has no node 'n7'.*Its nodes are: n0, n1"):
        failed.logs("n7")


def test_the_end_of_a_local_log_is_read_however_much_the_task_printed(failed):
    text = failed.log("n0")  # stderr by default
    lines = text.splitlines()
    assert len(lines) == 200
    assert "err line 19999" in text and "err line 100 " not in text + " "
    out = failed.log("n0", "stdout", lines=3).splitlines()
    assert out == [f"out line {i}" for i in range(LINES - 3, LINES)]
    with pytest.raises(RunError, match=r"no log named like 'kubernetes'.*'stdout.log \(local file\)'"):
        failed.log("n0", "kubernetes")


def test_a_failed_runs_error_ends_with_the_last_lines_of_the_tasks_stderr(failed):
    from fastreg_magic.widget_text import run_text

    error = failed.error
    assert "ValueError: gave up after 20000 lines" in error  # the backend's error comes first
    tail = error.split("Last lines of stderr.log (local file) of node n0 (", 1)[1]
    assert tail.splitlines()[1:] == [f"err line {i}" for i in range(LINES - 20, LINES)]
    assert len(error) < 8000
    text = run_text(failed, failed.nodes())
    assert "log stderr.log (local file): file:///" in text and "err line 19999" in text


def test_the_run_view_links_each_log_and_shows_the_end_of_a_local_one(failed):
    from fastreg_magic.widget_run import RunView

    view = RunView(failed)
    try:
        deadline = time.monotonic() + 120
        while "stderr.log" not in view.logs.links.value and time.monotonic() < deadline:
            time.sleep(0.05)
        links = view.logs.links.value
        assert "<code>n0</code>" in links and "stdout.log (local file)" in links and "stderr.log (local file)" in links
        assert 'href="file:' not in links  # a browser will not open it from the notebook's page
        assert [label for label, _ in view.logs.choice.options] == [
            "n0 · stdout.log (local file)", "n0 · stderr.log (local file)"]
        view.logs.choice.label = "n0 · stderr.log (local file)"
        view.logs.show_button.click()
        while "err line" not in view.logs.text.value and time.monotonic() < deadline:
            time.sleep(0.05)
        shown = view.logs.text.value
        assert "err line 19999" in shown and "its last 200 lines of" in shown
        assert len(shown) < 20_000  # one small widget update, not the whole file
        assert not view.logs.show_button.disabled
    finally:
        view.close()


def test_a_log_services_links_open_in_the_browser():
    from fastreg_magic.widget_text import log_links_html

    html = log_links_html([("n0", "Kubernetes Logs (User)", "https://k8s.example/#/log/ns/pod?x=1&y=<2>"),
                           ("n0", "stderr.log (local file)", "file:///tmp/x/stderr.log")])
    assert '<a href="https://k8s.example/#/log/ns/pod?x=1&amp;y=&lt;2&gt;" target="_blank"' in html
    assert "Kubernetes Logs (User) ↗</a>" in html
    assert "title='file:///tmp/x/stderr.log'>stderr.log (local file)</span>" in html


def test_a_run_that_succeeded_lists_its_logs_too(remote, talk):
    run = runs.launch(remote, talk, {"n": 2, "fail": False}).wait(timeout=300)
    assert run.phase == "SUCCEEDED" and run.error is None
    assert sorted(run.logs()) == ["n0", "n1"]
    assert run.log("n0", "stdout").splitlines()[-2:] == ["out line 0", "out line 1"]
