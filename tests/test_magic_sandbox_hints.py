"""What the magic tells a user on the embedded sandbox: how to create a project there, and no console links.

The embedded sandbox has no flytectl beside it, and its console pages are for stock tools (the run view in the
notebook is live): a hint naming flytectl would send the user nowhere, and the magic shows no console links.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from IPython.core.error import UsageError

from sandbox_support import PLUS_ONE_CELL as CELL


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_an_unknown_project_on_the_sandbox_names_the_command_that_creates_it(sandbox_shell, sandbox, workdir):
    project = unique("ml")
    sandbox_shell.run_line_magic("config", f"FlyteFast.project = {project!r}")
    try:
        with pytest.raises(UsageError, match=f"fastreg sandbox --create-project {project}") as refused:
            sandbox_shell.run_cell_magic("flyte_fast", "-m hinted", CELL)
        assert "flytectl" not in str(refused.value)
        # the hinted command, as the user runs it, on this sandbox's data dir; then the cell goes through
        created = subprocess.run([sys.executable, "-m", "fastreg_magic.cli", "sandbox", "--create-project", project,
                                  "--data-dir", str(sandbox.data_dir)], capture_output=True, text=True, timeout=300)
        assert created.returncode == 0 and f"created project {project}" in created.stdout, created.stderr
        reg = sandbox_shell.run_cell_magic("flyte_fast", "-m hinted", CELL)
        assert reg.registered and reg.project == project
    finally:
        sandbox_shell.run_line_magic("config", "FlyteFast.project = 'flytesnacks'")


def test_flyte_watch_of_the_link_pyflyte_printed_shows_no_console_link(sandbox_shell, remote, workdir):
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-m {unique('watched').replace('-', '_')}", CELL)
    execution = remote.execute(remote.fetch_launch_plan(name=f"{reg.module}.plus_one", version=reg.version),
                               inputs={"x": 1})
    printed = remote.generate_console_url(execution)  # what `pyflyte run --remote` prints for this sandbox
    assert "/console/" in printed
    run = sandbox_shell.run_line_magic("flyte_watch", printed)
    assert run.wait(timeout=300).phase == "SUCCEEDED", run.error
    assert run.url is None  # the magic links no console pages on the sandbox: its own run view is live
    assert "console" not in repr(run)


def test_a_launch_after_the_magics_sandbox_stopped_says_to_re_run_the_cell(tmp_path):
    """The per-user sandbox the magic starts comes back with the next cell: a launch that finds it stopped
    says so, rather than sending the user off to start a sandbox by hand."""
    import os
    import textwrap

    from sandbox_support import stop_background_sandbox

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYTE", "XDG_"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CACHE_HOME=str(home / "cache"))
    script = textwrap.dedent(f"""
        import subprocess, sys
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "fastreg_magic")
        reg = ip.run_cell_magic("flyte_fast", "-m stopped_box", {CELL!r})
        subprocess.run([sys.executable, "-m", "fastreg_magic.cli", "sandbox", "--stop"], check=True)
        try:
            reg.launch("plus_one", x=1)
        except Exception as err:
            print("LAUNCH:", err)
        """)
    try:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                                timeout=300)
    finally:
        stop_background_sandbox(home / "data" / "fastreg" / "sandbox")
    said = [line for line in result.stdout.splitlines() if line.startswith("LAUNCH:")]
    assert len(said) == 1, result.stdout + result.stderr[-3000:]
    assert "not answering" in said[0] and "re-run the %%flyte_fast cell to start it again" in said[0]
