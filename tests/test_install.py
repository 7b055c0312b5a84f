"""The product as a user installs it: a wheel in a fresh environment, not this clone.

A user runs `pip install` on a checkout or a wheel, then `fastreg quickstart` and their notebooks. These
tests build the wheel (offline: hatchling is a test dependency), install it into a new virtual
environment whose dependencies come from this one (``--no-deps --no-index``), and run the commands
there, with a fresh home. They also cover what sharing one background sandbox between environments does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from fastreg_magic.sandbox.background import read_state
from sandbox_support import stop_background_sandbox

DEADLINE_SECONDS = 900


def user_env(home: Path, venv: Path | None = None) -> dict[str, str]:
    """A newcomer's environment: a fresh home, no Flyte configuration, ``venv``'s commands first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYTE", "XDG_", "PYTHONPATH"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CACHE_HOME=str(home / "cache"),
               IPYTHONDIR=str(home / "ipython"))
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    return env


def new_environment(path: Path, *, with_clone: bool) -> Path:
    """A new virtual environment (its own sys.prefix) that finds this one's packages: flytekit and the
    rest without the network. ``with_clone`` also puts this clone on its path (fastreg_magic from here)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    lines = [sysconfig.get_path("purelib")] + ([str(ROOT)] if with_clone else [])
    Path(site, "zz_dependencies_from_the_test_env.pth").write_text("\n".join(lines) + "\n")
    return path


def build_wheel(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True, timeout=600)
    return next(out.glob("fastreg_magic-*.whl"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


def test_the_wheel_carries_the_notebooks_and_what_quickstart_needs(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for notebook in ("quickstart.ipynb", "local_modules.ipynb", "real_cluster.ipynb"):
        assert f"fastreg_magic/notebooks/{notebook}" in names
    # the local modules and files local_modules.ipynb works with
    for module in ("textkit/__init__.py", "textkit/clean.py", "textkit/stats.py", "scratch_notes.txt"):
        assert f"fastreg_magic/notebooks/{module}" in names
    requires = {line.split()[1].split(">")[0].split("<")[0] for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert {"nbclient", "nbformat", "ipykernel"} <= requires  # `fastreg quickstart` works after `pip install`
    assert not any(name.startswith(("tests/", "benchmarks/", "notebooks/")) for name in names)


@pytest.mark.slow
def test_quickstart_from_an_installed_wheel(wheel, tmp_path):
    venv = new_environment(tmp_path / "venv", with_clone=False)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, text=True, timeout=600)
    home, data_dir = tmp_path / "home", tmp_path / "sandbox"
    env = user_env(home, venv)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import fastreg_magic; print(fastreg_magic.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout
    assert where.startswith(str(venv)), where  # the installed package, not this clone
    try:
        result = subprocess.run([str(venv / "bin" / "fastreg"), "quickstart", "--data-dir", str(data_dir)],
                                capture_output=True, text=True, env=env, cwd=tmp_path, timeout=DEADLINE_SECONDS)
    finally:
        stop_background_sandbox(data_dir)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    copy = home / "data" / "fastreg" / "notebooks"
    assert f"running {copy / 'quickstart.ipynb'} in a Jupyter kernel" in result.stdout
    assert "HELLO, FLYTE" in result.stdout and "SUCCEEDED" in result.stdout
    assert (copy / "textkit" / "clean.py").is_file()  # the other notebooks and their modules, to open in Jupyter


def test_quickstart_missing_its_notebook_runner_says_so_before_starting_anything(tmp_path):
    """An environment without nbclient: one message saying what to install where, and no sandbox left running."""
    data_dir = tmp_path / "sandbox"
    code = textwrap.dedent("""
        import sys
        sys.modules["nbclient"] = None  # this environment has no nbclient
        from fastreg_magic.cli import main
        sys.exit(main(["quickstart", "--data-dir", sys.argv[1]]))
        """)
    try:
        result = subprocess.run([sys.executable, "-c", code, str(data_dir)], capture_output=True, text=True,
                                env=user_env(tmp_path / "home"), cwd=tmp_path, timeout=300)
        left_running = read_state(data_dir)
    finally:
        stop_background_sandbox(data_dir)
    assert left_running is None and "embedded sandbox" not in result.stdout  # nothing was started
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "nbclient missing" in message and f"{sys.executable} -m pip install nbclient" in message, result.stderr
    assert ".ci/dev.py" not in result.stderr


def test_a_sandbox_started_from_another_environment_is_named_by_the_magic_and_status(tmp_path):
    """Two environments share the per-user background sandbox; tasks run with the Python of the one that
    started it. A kernel of the other one is told so, with the way out; --status names that Python."""
    other = new_environment(tmp_path / "other-venv", with_clone=True)
    home = tmp_path / "home"
    env = user_env(home)
    data_dir = home / "data" / "fastreg" / "sandbox"
    started = subprocess.run(
        [str(other / "bin" / "python"), "-c", "from fastreg_magic.sandbox import ensure_running; ensure_running()"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    try:
        assert started.returncode == 0, started.stderr
        kernel = textwrap.dedent("""
            from IPython.core.interactiveshell import InteractiveShell
            ip = InteractiveShell.instance()
            ip.run_line_magic("load_ext", "fastreg_magic")
            cell = "from flytekit import task\\n\\n@task\\ndef hi() -> str:\\n    return 'hi'\\n"
            ip.run_cell_magic("flyte_fast", "-m other_env", cell)
            ip.run_cell_magic("flyte_fast", "-m other_env", cell)
            """)
        result = subprocess.run([sys.executable, "-c", kernel], capture_output=True, text=True, env=env, cwd=tmp_path,
                                timeout=300)
        status = subprocess.run([sys.executable, "-m", "fastreg_magic.cli", "sandbox", "--status"],
                                capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        config_file = read_state(data_dir)["config_file"]
        by_config = subprocess.run([sys.executable, "-c", kernel.replace("-m other_env", f"-m other_env --config {config_file}")],
                                   capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    finally:
        stop_background_sandbox(data_dir)
    # Named by its config file (--config), the same sandbox is said to run tasks elsewhere too, with how to
    # start it from this environment.
    assert by_config.returncode == 0, by_config.stderr[-3000:]
    named = [line for line in by_config.stdout.splitlines() if line.startswith("Warning: the embedded sandbox")]
    assert len(named) == 1 and str(other / "bin" / "python") in named[0], by_config.stdout
    assert f"fastreg sandbox --data-dir {data_dir}" in named[0]
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stdout.splitlines() if line.startswith("Warning: the embedded sandbox")]
    assert len(warnings) == 1, result.stdout  # said once, not at every cell
    assert str(other / "bin" / "python") in warnings[0] and sys.executable in warnings[0]
    assert "ModuleNotFoundError" in warnings[0] and "fastreg sandbox --stop" in warnings[0]
    assert status.returncode == 0 and f"tasks run with: {other / 'bin' / 'python'}" in status.stdout
