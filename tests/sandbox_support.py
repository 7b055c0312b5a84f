"""Shared pieces of the sandbox tests: write a workflow module to disk and import it, read gRPC details."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import signal
import subprocess
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


class SandboxProcess:
    """`fastreg sandbox` in a process of its own, which a test can freeze (SIGSTOP) as a hung backend,
    resume, or end as a crash would."""

    def __init__(self, data_dir: Path):
        self.log = data_dir.parent / f"{data_dir.name}.log"
        with open(self.log, "w") as log:  # a file, not a pipe nobody reads
            self.process = subprocess.Popen([sys.executable, "-m", "fastreg_magic.cli", "sandbox", "--port", "0",
                                             "--data-dir", str(data_dir)], stdout=subprocess.PIPE, stderr=log,
                                            text=True, start_new_session=True)
        line = self.process.stdout.readline()
        assert line.startswith("fastreg sandbox ready on"), line + self.log.read_text()
        self.config_file = data_dir / "config.yaml"
        self.endpoint = re.search(r"127\.0\.0\.1:\d+", self.config_file.read_text()).group(0)

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def close(self) -> None:
        """Resumed, then killed: a stopped process acts on no signal but SIGKILL until it runs again."""
        if self.process.poll() is None:
            self.resume()
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=60)


class CallCounter:
    """Names every Admin RPC a client sends while it counts (see `counting_admin_calls`)."""

    def __init__(self):
        self.calls: list[str] = []

    def creates(self) -> list[str]:
        return [c for c in self.calls if c.startswith("Create") and c != "CreateUploadLocation"]


@contextlib.contextmanager
def counting_admin_calls(backend):
    """A `CallCounter` of the kernel's one shared client to ``backend``, from now to the block's end."""
    import grpc
    from flyteidl.service.admin_pb2_grpc import AdminServiceStub

    from fastreg_magic import config

    class Interceptor(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            counter.calls.append(details.method.rsplit("/", 1)[-1])
            return continuation(details, request)

    counter = CallCounter()
    client = config.shared_client(backend)
    original = client._stub
    client._stub = AdminServiceStub(grpc.intercept_channel(client._channel, Interceptor()))
    try:
        yield counter
    finally:
        client._stub = original


def sandbox_channel(handle):
    """A raw gRPC channel to an embedded sandbox that carries its access token, as its owner's tools do."""
    import grpc

    from fastreg_magic.sandbox import access

    metadata = access.bearer(handle.data_dir)

    class WithToken(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            return continuation(details._replace(metadata=[*(details.metadata or []), *metadata]), request)

    return grpc.intercept_channel(grpc.insecure_channel(handle.endpoint), WithToken())
