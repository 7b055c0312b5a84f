#!/usr/bin/env python3
"""Set up the project from a fresh clone and run one of its jobs. Needs only python3.

    python3 .ci/dev.py quickstart   # set up, start the embedded sandbox, run the quickstart
    python3 .ci/dev.py test         # set up (with test tools and a browser), run every test

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
    env = dict(os.environ, PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    code = run(str(PY), "-m", "pytest", *(args or ["tests"]), env=env)
    if code == 5:  # pytest: no tests collected. That is a failure, never a green run.
        print("pytest collected no tests: failing the run")
        return 1
    return code


def job_quickstart(args: list[str]) -> int:
    setup("test")
    env = dict(os.environ, PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    return run(str(VENV / "bin" / "fastreg"), "quickstart", *args, env=env)


JOBS = {"test": job_test, "quickstart": job_quickstart}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in JOBS:
        sys.exit(f"usage: python3 .ci/dev.py {{{'|'.join(JOBS)}}} [args...]")
    sys.exit(JOBS[sys.argv[1]](sys.argv[2:]))
