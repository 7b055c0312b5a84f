"""Without a widget frontend (terminal IPython, plain python) registrations and runs display as text."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from run_flows import register_flows  # noqa: E402

from fastreg_magic.api import EntityRef, Registration  # noqa: E402
from fastreg_magic.config import sandbox_backend  # noqa: E402

XSS = "<img src=x onerror=alert(1)>"


def registration(**over) -> Registration:
    fields = dict(
        module="pipe", version="0123abcd", project="flytesnacks", domain="development",
        backend=sandbox_backend("127.0.0.1:1", None), images=("ghcr.io/acme/ml:1",), archive_uri="file:///tmp/a.tar.gz",
        archive_size=4096, files=("pipe.py",), left_out=(), lifted=(), warnings=(),
        entities=(EntityRef("workflow", "pipe.wf", "0123abcd", "flytesnacks", "development", None, None),),
        uploaded=False, registered=False, timings={"collect": 0.001, "package": 0.0, "upload": 0.0, "register": 0.0},
    )
    fields.update(over)
    return Registration(**fields)


def test_terminal_ipython_shows_the_registration_as_text():
    # A real terminal IPython in its own process: the test session's other shells (InteractiveShell
    # is a process-wide singleton) cannot stand in for it.
    tests_dir = str(Path(__file__).parent)
    cells = f"import sys; sys.path.insert(0, {tests_dir!r}); from test_widget_fallbacks import registration\nregistration()\n"
    result = subprocess.run(
        [sys.executable, "-m", "IPython", "--simple-prompt", "--no-banner", "--colors=NoColor",
         "--HistoryManager.enabled=False"],
        input=cells, capture_output=True, text=True, timeout=300,
    )
    text = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Registered pipe version 0123abcd" in text
    assert "unchanged: nothing uploaded or registered" in text
    assert "embedded sandbox (127.0.0.1:1)" in text
    assert "VBox" not in text and "Traceback" not in text + result.stderr


def test_widget_needs_a_kernel():
    from fastreg_magic.widget import widget_frontend

    assert widget_frontend() is False


@pytest.mark.slow
def test_plain_python_shows_a_run_as_text(sandbox, remote, tmp_path):
    _, module, version, mod = register_flows(remote, tmp_path)
    from fastreg_magic import runs

    run = runs.launch(
        remote, EntityRef("workflow", f"{module}.failing", version, "flytesnacks", "development", None, mod.failing), {}
    ).wait(timeout=300)
    script = textwrap.dedent(
        f"""
        from flytekit.configuration import Config
        from flytekit.remote import FlyteRemote
        from fastreg_magic import runs
        from fastreg_magic.widget import display_run
        remote = FlyteRemote(Config.auto(config_file={str(sandbox.config_file)!r}), default_project="flytesnacks",
                             default_domain="development", interactive_mode_enabled=False)
        display_run(runs.attach(remote, {run.name!r}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"Run {run.name} ({module}.failing) in flytesnacks/development: FAILED" in out.stdout
    assert "ValueError: <img src=x onerror=alert(1)> went wrong with 1" in out.stdout  # text, not HTML
