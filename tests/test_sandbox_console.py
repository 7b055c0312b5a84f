"""The console links stock flytekit prints for the sandbox open a page about the run or the entity.

flytekit builds them from ``console.endpoint`` in the sandbox's config file (``pyflyte run --remote``,
``pyflyte register``, ``FlyteRemote.generate_console_url``); these tests open them as a browser would,
with urllib, and read what the page says.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

PYFLYTE = str(Path(sys.executable).parent / "pyflyte")
WAIT = timedelta(minutes=5)

FLOWS = '''
import time

from flytekit import task, workflow


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def check(x: int) -> int:
    if x > 0:
        raise ValueError("<script>alert('owned')</script> & <b>bold</b>")
    return x


@task
def nap(seconds: int) -> int:
    time.sleep(seconds)
    return seconds


@workflow
def adds(a: int = 1) -> int:
    return add(a=add(a=a, b=2), b=3)


@workflow
def breaks(x: int = 1) -> int:
    return check(x=add(a=x, b=1))


@workflow
def sleeps(seconds: int = 600) -> int:
    return nap(seconds=seconds)
'''


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory):
    """A project folder with a package of one workflow module (``PKG.flows``), named uniquely so each
    session registers it afresh; returns the folder and the module's name."""
    root = tmp_path_factory.mktemp("console")
    package = root / f"consolepkg_{uuid.uuid4().hex[:8]}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "flows.py").write_text(textwrap.dedent(FLOWS))
    return root, f"{package.name}.flows"


@pytest.fixture(scope="module")
def registered(sandbox, project_dir):
    """The module registered twice with stock ``pyflyte register``: versions v1, then v2; v2's output
    (``-v 1``: the links themselves, as a terminal shows them)."""
    root, module = project_dir
    outputs = {}
    for version in ("v1", "v2"):
        result = pyflyte(sandbox, root, "-v", "register", "--version", version, module.split(".")[0])
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        outputs[version] = result.stdout
    return outputs["v2"]


def pyflyte(sandbox, cwd, *args) -> subprocess.CompletedProcess:
    return subprocess.run([PYFLYTE, "-c", str(sandbox.config_file), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "COLUMNS": "400"})  # one link, one line


def fetch(url: str, host: str | None = None) -> tuple[int, str, dict]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


def page_text(page: str) -> str:
    """What a reader sees: the page without its tags (and its style sheet), entities decoded."""
    import html

    body = page.split("<body>", 1)[1]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def test_the_link_pyflyte_run_prints_opens_the_runs_page(sandbox, remote, project_dir, registered):
    root, module = project_dir
    name = f"console{uuid.uuid4().hex[:10]}"
    result = pyflyte(sandbox, root, "run", "--remote", "--name", name, "--wait-execution",
                     module.replace(".", "/") + ".py", "adds",
                     "--a", "4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    printed = re.search(r"http://\S+/executions/" + name, result.stdout).group(0)
    assert printed == remote.generate_console_url(remote.fetch_execution(name=name))

    status, page, headers = fetch(printed)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    shown = page_text(page)
    assert f"Run {name}" in shown and "SUCCEEDED" in shown
    assert f"{module}.adds" in shown  # the launch plan and workflow it ran
    assert re.search(rf"n0 {module}\.add SUCCEEDED", shown) and re.search(rf"n1 {module}\.add SUCCEEDED", shown)
    assert f"%flyte_watch {name}" in shown
    assert 'http-equiv="refresh"' not in page  # a finished run's page stays as it is


def test_a_failed_runs_error_is_shown_as_text_not_markup(remote, registered, project_dir):
    _, module = project_dir
    execution = remote.execute(remote.fetch_launch_plan(name=f"{module}.breaks", version="v2"), inputs={"x": 1})
    execution = remote.wait(execution, timeout=WAIT)
    status, page, headers = fetch(remote.generate_console_url(execution))
    assert status == 200
    shown = page_text(page)
    assert "FAILED" in shown and f"{module}.check FAILED" in shown
    assert "ValueError: <script>alert('owned')</script> & <b>bold</b>" in shown  # the message, as written
    assert "<script>" not in page and "<b>bold" not in page  # ... and not as markup
    assert "script-src" not in headers["Content-Security-Policy"]  # no script would run anyway


def test_a_running_runs_page_refreshes_itself_until_it_ends(remote, registered, project_dir):
    _, module = project_dir
    execution = remote.execute(remote.fetch_launch_plan(name=f"{module}.sleeps", version="v2"), inputs={})
    url = remote.generate_console_url(execution)
    try:
        status, page, _ = fetch(url)
        assert status == 200 and 'http-equiv="refresh"' in page
        assert re.search(r"Phase (QUEUED|RUNNING)", page_text(page))
    finally:
        remote.terminate(execution, cause="seen enough")
    remote.wait(execution, timeout=WAIT)
    status, page, _ = fetch(url)
    shown = page_text(page)
    assert "Phase ABORTED" in shown and "seen enough" in shown
    assert 'http-equiv="refresh"' not in page


def test_the_links_pyflyte_register_prints_list_the_versions_newest_first(registered, project_dir):
    _, module = project_dir
    links = re.findall(r"http://\S+/console/\S+", registered)
    workflow = next(link for link in links if f"/workflow/{module}.adds/version/v2" in link)
    status, page, _ = fetch(workflow)
    assert status == 200
    shown = page_text(page)
    assert f"Workflow {module}.adds" in shown
    assert shown.index("v2") < shown.index("v1")  # newest first

    plan = next(link for link in links if f"/launch_plan/{module}.breaks/version/v2" in link)
    assert "Launch plan" in page_text(fetch(plan)[1])
    status, page, _ = fetch(workflow.replace("/version/v2", "/version/v9"))
    assert status == 404 and "has no version v9" in page_text(page)


def test_an_unknown_run_or_a_link_without_the_key_is_a_404(remote, sandbox, registered):
    from flytekit.models.core.identifier import WorkflowExecutionIdentifier

    unknown = remote.generate_console_url(WorkflowExecutionIdentifier("flytesnacks", "development", "nosuchrun"))
    status, page, _ = fetch(unknown)
    assert status == 404 and "no run nosuchrun in project flytesnacks" in page_text(page)

    known = next(link for link in re.findall(r"http://\S+/console/\S+", registered) if "/workflow/" in link)
    assert fetch(known)[0] == 200
    base, path = known.split("/console/", 1)
    port_only = base.rsplit("/", 1)[0]  # the server, without the pages' key
    for guessed in (f"{port_only}/console/{path}", f"{port_only}/wrong-key/console/{path}"):
        status, page, _ = fetch(guessed)
        assert status == 404 and "no page here" in page and "v1" not in page_text(page)

    status, _, _ = fetch(known, host="rebound.example.com")  # a web page's own name pointed at 127.0.0.1
    assert status == 403


def test_the_magic_shows_no_links_to_the_sandboxs_pages(sandbox):
    """The cells' run views are the live ones; a console from the sandbox's own config file is not linked,
    with --endpoint too (which takes the file's other settings, as flytectl does)."""
    from fastreg_magic import config

    for backend in (config.resolve_backend(config_file=str(sandbox.config_file)),
                    config.resolve_backend(endpoint=sandbox.endpoint, config_file=str(sandbox.config_file))):
        identified = config.ensure_reachable(backend)
        assert identified.is_sandbox and identified.console_url is None
