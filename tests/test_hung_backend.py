"""A backend that stops answering in the middle of a registration (a FlyteAdmin stuck, a sandbox stopped
with SIGSTOP): the cell neither waits for good nor goes silent.

The first Stop says at once what the cell waits for, and that a second one gives up; the second gives up,
saying how far the registration got. A Create with no answer fails the registration once its deadline
has passed (``$FASTREG_CREATE_DEADLINE_S``, short here), in one line naming the backend, and nothing is
sent after it.

The backend is a real `fastreg sandbox` process; a gRPC client interceptor in a real kernel stops it
(SIGSTOP) the moment a given Create goes out, so the Creates hang exactly there; the stop button is
``KernelManager.interrupt_kernel()``.
"""

from __future__ import annotations

import re
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from sandbox_support import SandboxProcess

pytestmark = pytest.mark.slow

# How long a cell may show nothing before the test gives up on it: a cell waiting for good never ends.
GIVE_UP_S = 120.0

CELL = textwrap.dedent(
    """
    from flytekit import task, workflow

    @task
    def double(n: int) -> int:
        return n * 2

    @workflow
    def pipeline(n: int = 3) -> int:
        return double(n=n)
    """
)

# More tasks than Creates go out at once (register.MAX_PARALLEL_CREATES), and a workflow that needs one.
MANY_TASKS = 40
MANY_CELL = "from flytekit import task, workflow\n" + "".join(
    f"\n@task\ndef t{i}(n: int) -> int:\n    return n + {i}\n" for i in range(MANY_TASKS)
) + "\n@workflow\ndef many(n: int = 1) -> int:\n    return t0(n=n)\n"

# Run in the kernel: the backend's process is stopped (`stopper.signal`, SIGSTOP) as the first Create of
# `stopper.method` goes out, before it is sent; `stopper.sent` lists the Creates sent, and the file
# `marker` is written once the signal is sent.
STOP_THE_BACKEND = textwrap.dedent(
    """\
    import os, signal, threading
    import grpc
    from flyteidl.service.admin_pb2_grpc import AdminServiceStub
    from fastreg_magic import config

    class StopTheBackend(grpc.UnaryUnaryClientInterceptor):
        def __init__(self, pid, marker):
            self.pid, self.marker, self.method, self.sent, self.lock = pid, marker, None, [], threading.Lock()
            self.signal = signal.SIGSTOP

        def intercept_unary_unary(self, continuation, details, request):
            method = details.method.rsplit("/", 1)[-1]
            with self.lock:
                if method.startswith("Create") and method not in ("CreateUploadLocation", "CreateExecution"):
                    self.sent.append(method)
                if method == self.method:
                    self.method = None
                    os.kill(self.pid, self.signal)
                    open(self.marker, "w").close()
            return continuation(details, request)

    stopper = StopTheBackend({pid}, {marker!r})
    opened = config._shared_client

    def shared_client_stopping_the_backend(*args):
        client = opened(*args)
        if not getattr(client, "stopper", None):
            client._stub = AdminServiceStub(grpc.intercept_channel(client._channel, stopper))
            client.stopper = stopper
        return client

    config._shared_client = shared_client_stopping_the_backend
    %load_ext fastreg_magic
    """
)


@pytest.fixture
def backend(tmp_path):
    box = SandboxProcess(tmp_path / "sandbox")
    try:
        yield box
    finally:
        box.close()


def kernel_on(tmp_path, backend, monkeypatch, *, deadline_s: float | None = None):
    """A real kernel, whose connection to ``backend`` stops it as ``stopper.method`` goes out; its Creates
    have ``deadline_s`` (the kernel's environment is this one's)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from kernel_driver import KernelDriver

    if deadline_s is not None:
        monkeypatch.setenv("FASTREG_CREATE_DEADLINE_S", str(deadline_s))
    kernel = KernelDriver(cwd=tmp_path)
    kernel.run(STOP_THE_BACKEND.format(pid=backend.process.pid, marker=str(tmp_path / "stopped")))
    return kernel


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def run_pressing_stop(kernel, code: str, *, stop_when: Path | None = None, stop_again_on: str | None = None):
    """Run ``code``, pressing the stop button once ``stop_when`` exists, and again once the cell has written
    a line containing ``stop_again_on``. Returns the lines it showed: on stderr (where its one-line errors
    go too), then the error it ended with; raises if it shows nothing more for GIVE_UP_S."""
    msg_id = kernel.kc.execute(code)
    stderr, error, pressed = [], "", 0
    give_up = time.monotonic() + GIVE_UP_S
    while True:
        if stop_when is not None and pressed == 0 and stop_when.exists():
            kernel.km.interrupt_kernel()
            pressed, give_up = 1, time.monotonic() + GIVE_UP_S
        if stop_again_on is not None and pressed == 1 and stop_again_on in "".join(stderr):
            kernel.km.interrupt_kernel()
            pressed = 2
        try:
            msg = kernel._next_iopub(min(give_up, time.monotonic() + 0.05))
        except TimeoutError:
            if time.monotonic() >= give_up:
                raise AssertionError(f"the cell showed nothing for {GIVE_UP_S:g} s after {stderr}") from None
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stderr":
            stderr.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            error = plain("\n".join(msg["content"]["traceback"]))
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return plain("".join(stderr) + error).strip().splitlines()


def cell(module: str, backend, body: str = CELL) -> str:
    return f"%%flyte_fast -m {module} --config {backend.config_file}\n{body}"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_first_stop_says_what_the_cell_waits_for_and_a_second_gives_up(tmp_path, backend, monkeypatch):
    kernel = kernel_on(tmp_path, backend, monkeypatch)
    try:
        mod = unique("hung")
        kernel.run("stopper.method = 'CreateWorkflow'")  # the task is registered; the workflow's Create hangs
        shown = run_pressing_stop(kernel, cell(mod, backend), stop_when=tmp_path / "stopped",
                                  stop_again_on="press stop (Ctrl-C) again")
        assert len(shown) == 2 and "Traceback" not in str(shown), shown
        version = re.search(r"so that version (\w+) is not left", shown[0]).group(1)
        # The first stop: one line, at once, saying what the cell waits for and how to stop waiting.
        assert shown[0] == (f"Waiting for the 2 registration calls under way to answer, so that version {version} is "
                            "not left half-registered; press stop (Ctrl-C) again to give up now."), shown
        # The second: where things stand, in one line.
        assert shown[1] == (f"Stopped waiting for the registration of version {version}: it may be incomplete (1 of 3 "
                            "entities registered so far). Re-running the cell (or the command) completes it."), shown

        backend.resume()  # the backend answers again: re-running the cell completes the version
        kernel.run(cell(mod, backend))
        assert kernel.eval("[_.version, _.registered, len(_.entities)]") == [version, True, 3]
    finally:
        kernel.close()


def test_a_create_the_backend_never_answers_fails_the_cell_naming_the_backend(tmp_path, backend, monkeypatch):
    kernel = kernel_on(tmp_path, backend, monkeypatch, deadline_s=2)
    try:
        mod = unique("unanswered")
        kernel.run("stopper.method = 'CreateTask'")  # stopped before any Create reaches it
        shown = run_pressing_stop(kernel, cell(mod, backend, MANY_CELL))
        assert len(shown) == 1 and "Traceback" not in shown[0], shown
        pattern = (rf"UsageError: The Flyte backend at {re.escape(backend.endpoint)} did not answer the registration "
                   rf"of task '{mod}\.t\d+' version '(\w+)' within 2 s: nothing after it was sent \(0 of "
                   rf"{MANY_TASKS + 2} entities of version (\w+) registered\)\. Check that the backend is up and not "
                   r"overloaded, then re-run the cell \(or the command\): it registers what is missing\.")
        assert re.fullmatch(pattern, shown[0]), shown
        # Nothing after it: the Creates that had gone out when the backend stopped, and no other.
        sent = kernel.eval("stopper.sent")
        assert "CreateWorkflow" not in sent and "CreateLaunchPlan" not in sent, sent
        assert 0 < sent.count("CreateTask") < MANY_TASKS, sent

        backend.resume()
        kernel.run(cell(mod, backend, MANY_CELL))  # re-running the cell registers it all
        assert kernel.eval("[_.registered, len(_.entities)]") == [True, MANY_TASKS + 2]
    finally:
        kernel.close()


def test_one_stop_while_the_backend_hangs_ends_at_the_deadline(tmp_path, backend, monkeypatch):
    """The stop button pressed once while a Create hangs: the cell says what it waits for, then fails when
    the deadline passes, instead of waiting until the backend answers."""
    kernel = kernel_on(tmp_path, backend, monkeypatch, deadline_s=8)
    try:
        mod = unique("stopped_once")
        kernel.run("stopper.method = 'CreateWorkflow'")
        shown = run_pressing_stop(kernel, cell(mod, backend), stop_when=tmp_path / "stopped")
        assert len(shown) == 2 and "Traceback" not in str(shown), shown
        assert shown[0].startswith("Waiting for the 2 registration calls under way to answer"), shown
        assert shown[1].startswith(f"UsageError: The Flyte backend at {backend.endpoint} did not answer the "
                                   f"registration of workflow '{mod}.pipeline' version "), shown
        assert "within 8 s: nothing after it was sent (1 of 3 entities of version " in shown[1], shown
        assert kernel.eval("stopper.sent") == ["CreateTask", "CreateWorkflow"]  # not the launch plan's
    finally:
        kernel.close()


def test_a_backend_gone_during_the_creates_fails_the_cell_naming_it(tmp_path, backend, monkeypatch):
    """The connection goes (the backend's process ended; gRPC's keepalive gives up on one that answers
    nothing): the same one line, saying what the connection said, and nothing sent after it."""
    kernel = kernel_on(tmp_path, backend, monkeypatch)
    try:
        mod = unique("gone")
        kernel.run("stopper.method, stopper.signal = 'CreateWorkflow', signal.SIGKILL")
        shown = run_pressing_stop(kernel, cell(mod, backend))
        assert len(shown) == 1 and "Traceback" not in shown[0], shown
        assert shown[0].startswith(f"UsageError: The Flyte backend at {backend.endpoint} stopped answering during the "
                                   f"registration of workflow '{mod}.pipeline' version "), shown
        assert "): nothing after it was sent (1 of 3 entities of version " in shown[0], shown
        assert shown[0].endswith("registered). Check that the backend is up and not overloaded, then re-run the cell "
                                 "(or the command): it registers what is missing."), shown
        assert kernel.eval("stopper.sent") == ["CreateTask", "CreateWorkflow"]
    finally:
        kernel.close()
