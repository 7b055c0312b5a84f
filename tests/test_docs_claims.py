"""What the README, `fastreg --help` and `%%flyte_fast?` say, checked against what the product does.

A sentence of the docs is a promise: each test here takes one as a user reads it (a command to copy,
a name to import, where a warning points) and does what it says.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import uuid
import warnings
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from sandbox_support import PLUS_ONE_CELL as CELL

FASTREG = [sys.executable, "-m", "fastreg_magic.cli"]


def fastreg(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*FASTREG, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- an unknown project


def _hinted_create_project(message: str) -> list[str]:
    """The `fastreg sandbox --create-project ...` command a refusal hints at, as the user would copy it."""
    found = re.search(r"`?fastreg sandbox (--create-project \S+(?: --data-dir \S+)?)", message)
    assert found, message
    return found.group(1).rstrip("`.").split()


def test_an_unknown_project_on_a_sandbox_named_by_its_config_hints_at_that_sandbox(sandbox_shell, sandbox, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = unique("newproj")
    with pytest.raises(UsageError) as refused:
        sandbox_shell.run_cell_magic("flyte_fast", f"-p {project} -m hinted_here", CELL)
    message = str(refused.value)
    assert sandbox.endpoint in message  # which backend refused, not "this backend"
    assert "%%flyte_fast" in message  # where a notebook user picks the project
    # The hinted command, run as the user copies it, creates the project on the sandbox that refused.
    created = fastreg("sandbox", *_hinted_create_project(message))
    assert created.returncode == 0 and sandbox.endpoint in created.stdout, created.stdout + created.stderr
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-p {project} -m hinted_here", CELL)
    assert reg.registered and reg.project == project


def test_register_files_into_an_unknown_project_says_the_command_line_way(tmp_path, sandbox):
    module = tmp_path / "hinted_files.py"
    module.write_text(textwrap.dedent(CELL))
    assert fastreg("serialize", module, "-o", tmp_path / "out").returncode == 0
    project = unique("newproj")
    refused = fastreg("register-files", tmp_path / "out", "-p", project, "--config", sandbox.config_file)
    assert refused.returncode == 1
    assert sandbox.endpoint in refused.stderr
    assert "%config" not in refused.stderr and "-p/-d" in refused.stderr  # no notebook here
    assert _hinted_create_project(refused.stderr)[-2:] == ["--data-dir", str(sandbox.data_dir)]


# ---------------------------------------------------------------- fast_register() from a plain script


def _script_with_nothing_configured(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    """``python ship.py`` with no Flyte configuration anywhere (a fresh HOME); the background sandbox it
    starts is stopped afterwards."""
    import os

    from sandbox_support import stop_background_sandbox

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYTE", "FLYTECTL", "XDG_"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CACHE_HOME=str(home / "cache"))
    script = tmp_path / "ship.py"
    script.write_text(textwrap.dedent(code))
    try:
        return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        for state in (home / "data").rglob("sandbox.json"):
            stop_background_sandbox(state.parent)


def test_the_apis_no_backend_warning_points_at_the_callers_line_and_names_its_keywords(tmp_path):
    result = _script_with_nothing_configured(tmp_path, """\
        from fastreg_magic import fast_register
        cell = "from flytekit import task\\n\\n@task\\ndef hi() -> str:\\n    return 'hi'\\n"
        reg = fast_register(cell, module="script_cell")
        """)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "No Flyte backend configured" in line]
    assert len(warned) == 1, result.stderr
    assert warned[0].startswith(f"{tmp_path / 'ship.py'}:3: UserWarning: No Flyte backend configured"), warned
    assert "endpoint=/config_file=" in warned[0] and "--endpoint" not in warned[0]


# ---------------------------------------------------------------- the errors a caller catches


def test_the_errors_the_readme_names_come_from_the_package_without_importing_flytekit():
    code = textwrap.dedent("""\
        import json, sys
        import fastreg_magic
        from fastreg_magic import (BackendError, CollectError, FastRegError, Interrupted, RunError, RunLost,
                                   UploadError)
        print(json.dumps({"flytekit": "flytekit" in sys.modules, "all": fastreg_magic.__all__}))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["flytekit"] is False  # `import fastreg_magic` and its errors stay cheap
    for name in ("FastRegError", "CollectError", "PackageError", "UploadError", "BackendError", "RegistrationError",
                 "VersionConflict", "RunError", "RunLost", "SandboxError", "NotYetSupported", "Interrupted"):
        assert name in result["all"]


def test_an_error_of_fast_register_is_caught_by_the_class_the_package_exports(tmp_path):
    import fastreg_magic

    with pytest.raises(fastreg_magic.CollectError, match="`NOWHERE` is used by this cell"):
        fastreg_magic.fast_register("from flytekit import task\n\n@task\ndef t() -> int:\n    return NOWHERE\n",
                                    module="caught_cell", source_root=tmp_path, dry_run=True)
    assert issubclass(fastreg_magic.CollectError, fastreg_magic.FastRegError)
    assert issubclass(fastreg_magic.RunLost, fastreg_magic.RunError)
    assert issubclass(fastreg_magic.Interrupted, KeyboardInterrupt)


# ---------------------------------------------------------------- help texts


def test_fastreg_help_names_the_cell_magic_as_it_is_typed():
    result = fastreg("--help")
    assert result.returncode == 0
    assert "serialize a notebook's %%flyte_fast cells" in " ".join(result.stdout.split())


def test_the_magics_usage_line_names_it_as_it_is_typed():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "fastreg_magic")
    assert "\n  %%flyte_fast [-p PROJECT]" in ip.object_inspect_text("%%flyte_fast")  # what `%%flyte_fast?` shows
    assert "\n  %flyte_watch [-p PROJECT]" in ip.object_inspect_text("%flyte_watch")
    # the options still parse under that name
    with pytest.raises(UsageError, match=r"%%flyte_fast: .*--nope.*Run `%%flyte_fast\?`"):
        ip.run_cell_magic("flyte_fast", "--nope", "x = 1\n")
