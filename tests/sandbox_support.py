"""Shared pieces of the sandbox tests: write a workflow module to disk and import it, read gRPC details."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import textwrap
import time
import uuid
from pathlib import Path

# Two tasks and a workflow with a default input: the smallest pipeline the sandbox tests register.
PIPELINE_BODY = """

@task
def add(a: int, b: int) -> int:
    return a + b


@task
def double(x: int) -> int:
    return 2 * x


@workflow
def pipeline(a: int, b: int = 3) -> int:
    return double(x=add(a=a, b=b))
"""

# A run that stays RUNNING until it is terminated (or the sandbox stops); needs `import time`.
SLEEPY_BODY = """

@task
def nap(seconds: int) -> int:
    time.sleep(seconds)
    return seconds


@workflow
def sleepy(seconds: int = 600) -> int:
    return nap(seconds=seconds)
"""


# A one-task workflow cell for the tests that are about the connection, not the code.
PLUS_ONE_CELL = """
from flytekit import task, workflow

@task
def add_one(x: int) -> int:
    return x + 1

@workflow
def plus_one(x: int = 1) -> int:
    return add_one(x=x)
"""


def write_module(directory: Path, source: str, name: str | None = None):
    """Write ``source`` as a fresh module under ``directory`` and import it (unique name per call)."""
    name = name or f"wf_{uuid.uuid4().hex[:10]}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    return importlib.import_module(name)


def grpc_details(exc: BaseException) -> str:
    """The gRPC status message behind a flytekit exception (flytekit keeps it as the cause)."""
    while exc is not None:
        details = getattr(exc, "details", None)
        if callable(details):
            return details()
        exc = exc.__cause__
    return ""


def grpc_code(exc: BaseException):
    while exc is not None:
        code = getattr(exc, "code", None)
        if callable(code):
            return code()
        exc = exc.__cause__
    return None


def stop_background_sandbox(data_dir: Path) -> None:
    """End the background sandbox announced in ``data_dir`` (its pid is in sandbox.json), and wait for it."""
    from fastreg_magic.sandbox.background import read_state
    from fastreg_magic.sandbox.claim import process_is_alive

    state = read_state(data_dir)
    if not state:
        return
    pid = int(state["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 60
    while process_is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
