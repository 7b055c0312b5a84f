#!/usr/bin/env python3
"""Set up the project from a fresh clone and run one of its jobs. Needs only python3.

    python3 .ci/dev.py quickstart   # set up, start the embedded sandbox, run the quickstart
    python3 .ci/dev.py test         # set up (with test tools and a browser), run every test
    python3 .ci/dev.py other-python 3.10   # the version-dependent tests on Python 3.10 (also part of `test`)

Setup is idempotent: a `.venv/` in the project root, the project installed into it in
editable mode, and for `test` Debian's chromium (for the browser test) when missing.
Extra arguments after the job name go to the job (e.g. pytest selectors).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"


def run(*cmd: str, **kw) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, **kw)


def must(*cmd: str) -> None:
    code = run(*cmd)
    if code:
        sys.exit(f"setup step failed with exit code {code}: {' '.join(cmd)}")


def setup(extras: str) -> None:
    if not PY.exists():
        must(sys.executable, "-m", "venv", str(VENV))
        must(str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip")
    must(str(PY), "-m", "pip", "install", "-q", "-e", f".[{extras}]" if extras else ".")


def ensure_chromium() -> None:
    """Debian's chromium for the browser test (Playwright drives it; its own browser download needs network).

    When it cannot be installed here (not root, no apt-get, no package source), the browser test is
    skipped with that reason rather than failing the whole run.
    """
    if shutil.which("chromium"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print("chromium is not installed and cannot be installed here (needs root and apt-get); the browser test will be skipped")
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if run(*cmd, env=env):
            print(f"could not install chromium ({' '.join(cmd)} failed); the browser test will be skipped")
            return


def job_test(args: list[str]) -> int:
    setup("test")
    ensure_chromium()
    code = pytest_in(VENV, args or ["tests"])
    if args or code:
        return code
    # The whole suite runs on this Python; the parts that depend on the Python and IPython version
    # (parsing cells, tracebacks, hashing, typed inputs) run again on the other Pythons we support.
    for version in OTHER_PYTHONS:
        code = job_other_python([version]) or code
    return code


# Python versions besides the main one (pyproject's requires-python), and the tests that depend on them.
OTHER_PYTHONS = ("3.10", "3.12")
VERSION_TESTS = [
    "tests/test_collect.py", "tests/test_lift_names.py", "tests/test_magic.py", "tests/test_cell_warnings.py",
    "tests/test_files.py", "tests/test_serialize_package.py", "tests/test_launch_inputs.py",
    "tests/test_magic_sandbox.py", "tests/test_widget_forms.py",
]

# What those tests import besides the project (a subset of the `test` extra: no browser, no JupyterLab).
VERSION_TEST_TOOLS = ["pytest>=8", "pytest-timeout>=2.2", "pydantic>=2", "moto[server]>=5", "s3fs>=2024.2"]


def job_other_python(args: list[str]) -> int:
    """``other-python 3.10 [pytest args]``: the version-dependent tests in a venv of that Python (the
    project and what those tests import: IPython is whatever pip picks for that Python, as a user gets)."""
    version, rest = args[0], args[1:]
    python = find_python(version)
    if python is None:
        print(f"Python {version} is not installed here (python{version} or pyenv): its tests did not run")
        return 0
    venv = ROOT / f".venv-{version}"
    if not (venv / "bin" / "python").exists():
        must(python, "-m", "venv", str(venv))
        must(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip")
    must(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", ".", *VERSION_TEST_TOOLS)
    names_tests = any(arg.startswith("tests") for arg in rest)
    return pytest_in(venv, rest if names_tests else [*VERSION_TESTS, *rest])


def find_python(version: str) -> str | None:
    """An interpreter of that version that runs (a pyenv shim for a version not selected does not)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [str(p) for p in sorted(pyenv.glob(f"{version}.*/bin/python"), reverse=True)]
    candidates += [found for found in [shutil.which(f"python{version}")] if found]
    for candidate in candidates:
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def pytest_in(venv: Path, args: list[str]) -> int:
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    code = run(str(venv / "bin" / "python"), "-m", "pytest", *args, env=env)
    if code == 5:  # pytest: no tests collected. That is a failure, never a green run.
        print("pytest collected no tests: failing the run")
        return 1
    return code


def job_quickstart(args: list[str]) -> int:
    setup("test")
    env = dict(os.environ, PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    return run(str(VENV / "bin" / "fastreg"), "quickstart", *args, env=env)


JOBS = {"test": job_test, "other-python": job_other_python, "quickstart": job_quickstart}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in JOBS:
        sys.exit(f"usage: python3 .ci/dev.py {{{'|'.join(JOBS)}}} [args...]")
    sys.exit(JOBS[sys.argv[1]](sys.argv[2:]))
