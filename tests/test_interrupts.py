"""Ctrl-C (the notebook's stop button) at each step: one line saying what stopped and the state it
left, nothing half-registered, and every run that was started known to the user.

The interrupt arrives as a real one: a SIGINT to the main thread, sent by
a real gRPC client interceptor the moment a given Admin RPC goes out or comes back, so it lands exactly
between two steps; in a real kernel, ``KernelManager.interrupt_kernel()`` or a SIGINT the process sends
itself from inside flytekit's import; for the `fastreg` command, a SIGINT to its own process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest

from fastreg_magic import config

FASTREG = [sys.executable, "-m", "fastreg_magic.cli"]

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


def press_ctrl_c() -> None:
    """SIGINT to the main thread, as the terminal or the kernel's stop button sends it (it wakes the main
    thread from a wait, as ``_thread.interrupt_main`` would not)."""
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


def main_thread_leaves(function: str, limit_s: float = 60.0) -> None:
    """Wait until ``function`` is no longer on the main thread's stack."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(threading.main_thread().ident)
        while frame is not None and frame.f_code.co_name != function:
            frame = frame.f_back
        if frame is None:
            return
        time.sleep(0.001)


class CtrlCAt(grpc.UnaryUnaryClientInterceptor):
    """Presses Ctrl-C once, when ``method`` is sent (``after=False``) or has been answered (``after=True``)."""

    def __init__(self):
        self.method: str | None = None
        self.after = False
        self.hold: str | None = None
        self.calls: list[str] = []

    def arm(self, method: str, *, after: bool = False, until_main_thread_leaves: str | None = None) -> None:
        """``until_main_thread_leaves``: hold the RPC (sent from a worker thread) until the main thread has
        taken the Ctrl-C and left that function, so the step after the RPC surely comes after it."""
        self.method, self.after, self.hold = method, after, until_main_thread_leaves

    def intercept_unary_unary(self, continuation, details, request):
        method = details.method.rsplit("/", 1)[-1]
        self.calls.append(method)
        fire = method == self.method
        if fire:
            self.method = None
        if fire and not self.after:
            press_ctrl_c()
            if self.hold and threading.current_thread() is not threading.main_thread():
                main_thread_leaves(self.hold)
        answer = continuation(details, request)
        if fire and self.after:
            answer.result()  # the backend has answered
            press_ctrl_c()
        return answer

    def creates(self) -> list[str]:
        return [c for c in self.calls if c.startswith("Create") and c not in ("CreateUploadLocation", "CreateExecution")]


@pytest.fixture
def python_ctrl_c():
    """Ctrl-C raising KeyboardInterrupt in this process, as in a kernel running a cell (flytekit, imported
    by other tests, would have put its own handler in)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def backend(sandbox):
    return config.resolve_backend(config_file=str(sandbox.config_file))


@pytest.fixture
def ctrl_c(backend, python_ctrl_c):
    from flyteidl.service.admin_pb2_grpc import AdminServiceStub
    from flyteidl.service.dataproxy_pb2_grpc import DataProxyServiceStub

    client = config.shared_client(backend)
    interceptor = CtrlCAt()
    original = client._stub, client._dataproxy_stub
    channel = grpc.intercept_channel(client._channel, interceptor)
    client._stub, client._dataproxy_stub = AdminServiceStub(channel), DataProxyServiceStub(channel)
    yield interceptor
    client._stub, client._dataproxy_stub = original


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def run_cell(shell, code: str, capsys) -> tuple[object, str]:
    """Run ``code`` as a notebook cell; returns (its result, what the cell showed)."""
    capsys.readouterr()
    result = shell.run_cell(code)
    return result, capsys.readouterr().out


def executions_of(remote, launch_plan: str) -> list[str]:
    found, _ = remote.client.list_executions_paginated("flytesnacks", "development", limit=1000)
    return [e.id.name for e in found if e.spec.launch_plan.name == launch_plan]


# ---------------------------------------------------------------- launch


def registered(shell, mod: str, workdir, config_file) -> None:
    shell.user_ns["reg"] = shell.run_cell_magic("flyte_fast", f"-m {mod} --config {config_file}", CELL)


def test_launch_interrupted_after_the_run_started_keeps_it(sandbox_shell, sandbox, remote, workdir, ctrl_c, capsys):
    mod = unique("launched")
    registered(sandbox_shell, mod, workdir, sandbox.config_file)
    ctrl_c.arm("CreateExecution", after=True)  # before flytekit's follow-up GetExecution has returned
    result, shown = run_cell(sandbox_shell, "run = reg.launch('pipeline', n=3)", capsys)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    runs = sandbox_shell.user_ns["reg"].runs
    assert len(runs) == 1, shown  # known to the user: in reg.runs, hence in the cell's view
    name = runs[0].name
    assert executions_of(remote, f"{mod}.pipeline") == [name]
    line = [text for text in shown.splitlines() if text.strip()]
    assert len(line) == 1, shown
    assert name in line[0] and "had started and goes on" in line[0] and "terminate()" in line[0], shown
    assert "Traceback" not in shown
    runs[0].wait(timeout=120)  # it does run
    assert runs[0].outputs == {"o0": 6}


PRESS_CTRL_C_AS_THE_RUN_IS_KEPT = textwrap.dedent(
    """
    import os, signal, sys

    def _press_at_keep_run(frame, event, arg):
        # Stop pressed just as the started run is being kept (joining reg.runs, its view and watcher built)
        if event == "call" and frame.f_code.co_name == "keep_run" and "widget_registration" in frame.f_code.co_filename:
            sys.setprofile(None)
            os.kill(os.getpid(), signal.SIGINT)

    sys.setprofile(_press_at_keep_run)
    try:
        run = reg.launch('pipeline', n=3)
    finally:
        sys.setprofile(None)
    """
)


def test_launch_interrupted_as_the_started_run_is_kept_says_so_in_one_line(sandbox_shell, sandbox, remote, workdir,
                                                                        python_ctrl_c, capsys):
    mod = unique("keeping")
    registered(sandbox_shell, mod, workdir, sandbox.config_file)
    sandbox_shell.user_ns.pop("run", None)
    result, shown = run_cell(sandbox_shell, PRESS_CTRL_C_AS_THE_RUN_IS_KEPT, capsys)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    runs = sandbox_shell.user_ns["reg"].runs
    assert len(runs) == 1, shown  # kept, though the Stop came before it joined
    assert executions_of(remote, f"{mod}.pipeline") == [runs[0].name]
    lines = [text for text in shown.splitlines() if text.strip()]
    assert len(lines) == 1 and "Traceback" not in shown, shown
    assert runs[0].name in lines[0] and "had started and goes on" in lines[0], shown
    assert "reg.runs[-1].terminate()" in lines[0], shown
    runs[0].wait(timeout=120)  # it does run
    assert runs[0].outputs == {"o0": 6}


def test_launch_interrupted_before_the_create_starts_nothing(sandbox_shell, sandbox, remote, workdir, ctrl_c, capsys):
    mod = unique("notlaunched")
    registered(sandbox_shell, mod, workdir, sandbox.config_file)
    # Finding what to launch: no CreateExecution yet.
    ctrl_c.arm("GetLaunchPlan", until_main_thread_leaves="launch")
    result, shown = run_cell(sandbox_shell, "run = reg.launch('pipeline', n=3)", capsys)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert shown.strip().splitlines() == [f"Interrupted while launching {mod}.pipeline: nothing was started."], shown
    # A launch after it starts exactly one run: the interrupted one never sent its CreateExecution.
    sandbox_shell.run_cell("again = reg.launch('pipeline', n=1).wait(timeout=120)")
    assert executions_of(remote, f"{mod}.pipeline") == [sandbox_shell.user_ns["again"].name]
    assert "CreateExecution" in ctrl_c.calls and ctrl_c.calls.count("CreateExecution") == 1


SLOW_CELL = textwrap.dedent(
    """
    import time
    from flytekit import task, workflow

    @task
    def slow(n: int) -> int:
        time.sleep(120)
        return n

    @workflow
    def sleepy(n: int = 1) -> int:
        return slow(n=n)
    """
)


def test_interrupted_wait_says_the_run_goes_on(sandbox_shell, sandbox, workdir, ctrl_c, capsys):
    mod = unique("waited")
    sandbox_shell.user_ns["reg"] = sandbox_shell.run_cell_magic("flyte_fast", f"-m {mod} --config {sandbox.config_file}",
                                                                SLOW_CELL)
    sandbox_shell.run_cell("run = reg.launch('sleepy')")
    run = sandbox_shell.user_ns["run"]
    try:
        ctrl_c.arm("GetExecution")
        result, shown = run_cell(sandbox_shell, "run.wait()", capsys)
        assert isinstance(result.error_in_exec, KeyboardInterrupt)
        assert shown.strip().splitlines() == [
            f"Stopped waiting; run {run.name} goes on (run.terminate() stops it)."
        ], shown
        assert not run.refresh().done
    finally:
        run.terminate()


# ---------------------------------------------------------------- the %%flyte_fast cell


def test_interrupt_during_the_creates_completes_the_version(sandbox_shell, sandbox, remote, workdir, ctrl_c, capsys):
    mod = unique("creates")
    ctrl_c.arm("CreateTask")
    result, shown = run_cell(sandbox_shell, f"%%flyte_fast -m {mod} --config {sandbox.config_file}\n{CELL}", capsys)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    lines = [text for text in shown.splitlines() if text.strip()]
    assert len(lines) == 1 and "Traceback" not in shown, shown
    assert "Interrupted while registering version" in lines[0] and "is registered (3 entities)" in lines[0], shown
    version = lines[0].split("version ", 1)[1].split(":", 1)[0]
    # Not half-registered: the workflow and its launch plan are there with the task.
    assert remote.fetch_task(name=f"{mod}.double", version=version)
    assert remote.fetch_workflow(name=f"{mod}.pipeline", version=version)
    assert remote.fetch_launch_plan(name=f"{mod}.pipeline", version=version)


class CtrlCTwiceWhileRegistering(grpc.UnaryUnaryClientInterceptor):
    """Ctrl-C as the task's Create goes out, and again while the cell waits for the workflow's."""

    def intercept_unary_unary(self, continuation, details, request):
        method = details.method.rsplit("/", 1)[-1]
        if method == "CreateTask":
            press_ctrl_c()
        elif method == "CreateWorkflow":
            main_thread_reaches("_interrupted_registration")
            press_ctrl_c()
            main_thread_leaves("register_specs")  # the cell has stopped waiting: the workflow is not there yet
        return continuation(details, request)


def main_thread_reaches(function: str, limit_s: float = 60.0) -> None:
    """Wait until ``function`` is on the main thread's stack."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(threading.main_thread().ident)
        while frame is not None and frame.f_code.co_name != function:
            frame = frame.f_back
        if frame is not None:
            return
        time.sleep(0.001)


def test_second_interrupt_during_the_creates_says_the_version_may_be_incomplete(sandbox_shell, sandbox, backend,
                                                                               workdir, python_ctrl_c, capsys):
    from flyteidl.service.admin_pb2_grpc import AdminServiceStub

    mod = unique("twice")
    client = config.shared_client(backend)
    original = client._stub
    client._stub = AdminServiceStub(grpc.intercept_channel(client._channel, CtrlCTwiceWhileRegistering()))
    try:
        result, shown = run_cell(sandbox_shell, f"%%flyte_fast -m {mod} --config {sandbox.config_file}\n{CELL}", capsys)
    finally:
        client._stub = original
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    lines = shown.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Stopped waiting for the registration of version "), shown
    assert lines[0].endswith(": it may be incomplete (1 of 3 entities registered so far). Re-running the cell "
                             "(or the command) completes it."), shown
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-m {mod} --config {sandbox.config_file}", CELL)
    assert reg.registered and len(reg.entities) == 3  # completed


def test_interrupt_during_the_upload_registers_nothing(sandbox_shell, sandbox, workdir, ctrl_c, capsys,
                                                       monkeypatch):
    """An archive big enough for a progress bar goes up on the cell's thread: Ctrl-C as the bar shows."""
    mod = unique("upload")
    (workdir / "weights.bin").write_bytes(os.urandom(6 * 1024 * 1024))  # incompressible: a 6 MiB archive
    publish = sandbox_shell.display_pub.publish

    def publish_pressing_ctrl_c(data, *args, **kwargs):
        publish(data, *args, **kwargs)
        if data.get("text/plain", "").startswith("Uploading the archive") and "pressed" not in ctrl_c.calls:
            ctrl_c.calls.append("pressed")
            press_ctrl_c()  # as the bar shows

    monkeypatch.setattr(sandbox_shell.display_pub, "publish", publish_pressing_ctrl_c)
    line = f"-m {mod} --copy all --source-root {workdir} --config {sandbox.config_file}"
    result, shown = run_cell(sandbox_shell, f"%%flyte_fast {line}\n{CELL}", capsys)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    lines = shown.strip().splitlines()
    assert lines[-1] == "Interrupted while uploading the archive: nothing was registered.", shown
    assert len(lines) > 1 and lines[-2].startswith("Upload of the archive stopped at"), repr(shown)  # the bar does not stay as it was
    assert "Traceback" not in shown and len(lines) == 3, shown
    assert ctrl_c.creates() == []
    monkeypatch.setattr(sandbox_shell.display_pub, "publish", publish)
    reg = sandbox_shell.run_cell_magic("flyte_fast", line, CELL)  # re-running the cell registers it
    assert reg.registered and len(reg.entities) == 3


# ---------------------------------------------------------------- a real kernel


@pytest.fixture
def kernel(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from kernel_driver import KernelDriver

    driver = KernelDriver(cwd=tmp_path)
    yield driver
    driver.close()


def failed_cell(kernel, code: str, interrupt_when: Path | None = None) -> str:
    """Run ``code``, pressing the stop button once ``interrupt_when`` exists; returns the error shown."""
    from kernel_driver import CellError

    msg_id = kernel.kc.execute(code)
    error, interrupted = None, interrupt_when is None
    deadline = time.monotonic() + 300
    while True:
        if not interrupted and interrupt_when.exists():
            kernel.km.interrupt_kernel()
            interrupted = True
        try:
            msg = kernel._next_iopub(min(deadline, time.monotonic() + 0.05))
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            error = "\n".join(msg["content"]["traceback"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    if error is None:
        raise CellError(f"the cell did not fail: {code}")
    return error


def plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_interrupt_while_the_cells_code_runs_shows_the_users_frames(kernel, sandbox, tmp_path):
    started = tmp_path / "started"
    kernel.run("%load_ext fastreg_magic")
    cell = textwrap.dedent(
        f"""\
        %%flyte_fast -m sleeper --config {sandbox.config_file}
        import pathlib, time
        from flytekit import task, workflow

        @task
        def t(n: int) -> int:
            return n

        pathlib.Path({str(started)!r}).write_text("x")
        time.sleep(300)
        """
    )
    shown = plain(failed_cell(kernel, cell, interrupt_when=started))
    assert "KeyboardInterrupt" in shown
    assert "time.sleep(300)" in shown  # the user's line, as a plain cell shows it
    assert "fastreg_magic" not in shown and "importlib" not in shown, shown
    assert shown.rstrip().endswith("(raised at line 10 of the cell)\nInterrupted as the cell ran: nothing was registered."), shown
    assert len(shown.splitlines()) < 25, shown


def test_interrupt_while_the_embedded_sandbox_starts(tmp_path, monkeypatch):
    """No Flyte backend configured: the first cell starts the sandbox, and the stop button is pressed then."""
    from kernel_driver import KernelDriver

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_DATA_HOME", "FLYTECTL_CONFIG", "FLYTE_PLATFORM_URL"):
        monkeypatch.delenv(name, raising=False)
    data_dir = home / ".local" / "share" / "fastreg" / "sandbox"
    kernel = KernelDriver(cwd=tmp_path)
    try:
        kernel.run("%load_ext fastreg_magic")
        cell = f"%%flyte_fast -m first\n{CELL}"
        shown = plain(failed_cell(kernel, cell, interrupt_when=data_dir / "sandbox.log"))
        endpoint = kernel.eval("__import__('fastreg_magic.sandbox', fromlist=['x']).ensure_running().endpoint")
        assert shown.strip().splitlines() == [
            f"Interrupted while finding the embedded sandbox: a start under way was let finish, and it runs at "
            f"{endpoint}; nothing was registered."
        ], shown
        rerun = kernel.run(cell)
        assert "Registered first version" in str(rerun["outputs"]), rerun  # re-running the cell uses it
    finally:
        kernel.close()
        subprocess.run([*FASTREG, "sandbox", "--stop", "--data-dir", str(data_dir)], capture_output=True)


def test_interrupt_while_flytekit_imports(kernel, tmp_path):
    """Ctrl-C right after flytekit's context manager set itself up, in the middle of the first cell."""
    kernel.run(textwrap.dedent(
        """\
        import os, signal, sys

        class CtrlCAfterFlytekitSetUp:
            fired = False

            def find_spec(self, name, path=None, target=None):
                context = sys.modules.get("flytekit.core.context_manager")
                setting_up = any(f.f_code.co_name == "initialize" for f in _frames())
                if not self.fired and getattr(context, "FlyteEntities", None) is not None and not setting_up:
                    self.fired = True
                    os.kill(os.getpid(), signal.SIGINT)
                return None

        def _frames():
            frame = sys._getframe()
            while frame is not None:
                yield frame
                frame = frame.f_back

        sys.meta_path.insert(0, CtrlCAfterFlytekitSetUp())
        %load_ext fastreg_magic
        """
    ))
    cell = "%%flyte_fast -m imported --dry-run\n" + CELL
    shown = plain(failed_cell(kernel, cell))
    assert shown.strip() == "Interrupted while importing flytekit: nothing was registered.", shown
    # Ctrl-C is still the kernel's, and the cell works on its next run.
    assert kernel.run("print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")["stdout"] == "True\n"
    kernel.run(cell)
    assert kernel.eval("'flytekit' in sys.modules and 'pipeline' in dir()")


# ---------------------------------------------------------------- the `fastreg` command


def test_serialize_interrupted_exits_130_saying_so(tmp_path):
    module = tmp_path / "stopped.py"
    module.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as it runs\n" + CELL)
    out = tmp_path / "out"
    result = subprocess.run([*FASTREG, "serialize", str(module), "-o", str(out)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == [f"fastreg serialize: interrupted: {out} was left as it was."]
    assert not out.exists()


def test_serialize_of_a_notebook_interrupted_in_a_plain_cell(tmp_path):
    """A plain cell that fails is skipped and reported; one that Ctrl-C stops ends the command."""
    import json

    notebook = tmp_path / "flows.ipynb"
    cells = ["import os, signal\nos.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as it runs", f"%%flyte_fast\n{CELL}"]
    notebook.write_text(json.dumps({
        "cells": [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
                  for c in cells],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
    }))
    out = tmp_path / "out"
    result = subprocess.run([*FASTREG, "serialize", str(notebook), "-o", str(out)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == [f"fastreg serialize: interrupted: {out} was left as it was."]
    assert not out.exists()


REGISTER_WITH_CTRL_C_AT = textwrap.dedent(
    """\
    # `fastreg ARGS...`, pressing Ctrl-C once when the Admin RPC METHOD goes out: python ctrl_c.py METHOD ARGS...
    import os, signal, sys
    import grpc
    from flyteidl.service.admin_pb2_grpc import AdminServiceStub  # flyteidl only: flytekit is the command's to import
    from fastreg_magic import config
    from fastreg_magic.cli import main

    class CtrlC(grpc.UnaryUnaryClientInterceptor):
        fired = False
        def intercept_unary_unary(self, continuation, details, request):
            if not self.fired and details.method.endswith("/" + sys.argv[1]):
                self.fired = True
                os.kill(os.getpid(), signal.SIGINT)
            return continuation(details, request)

    opened = config._shared_client

    def shared_client_pressing_ctrl_c(*args):
        client = opened(*args)
        if not getattr(client, "ctrl_c", False):
            client._stub = AdminServiceStub(grpc.intercept_channel(client._channel, CtrlC()))
            client.ctrl_c = True
        return client

    config._shared_client = shared_client_pressing_ctrl_c
    sys.exit(main(sys.argv[2:]))
    """
)


def _register_files_pressing_ctrl_c_at(call: str, sandbox, tmp_path):
    """`fastreg register-files` of a freshly serialized module, with Ctrl-C pressed as ``call`` goes out."""
    mod = unique("cli")
    module = tmp_path / f"{mod}.py"
    module.write_text(CELL)
    out = tmp_path / "out"
    subprocess.run([*FASTREG, "serialize", str(module), "-o", str(out)], check=True, capture_output=True, cwd=tmp_path)
    script = tmp_path / "ctrl_c.py"
    script.write_text(REGISTER_WITH_CTRL_C_AT)
    result = subprocess.run(
        [sys.executable, str(script), call, "register-files", str(out), "--config", str(sandbox.config_file)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    return mod, result


def test_register_files_interrupted_during_the_creates(sandbox, remote, tmp_path):
    mod, result = _register_files_pressing_ctrl_c_at("CreateTask", sandbox, tmp_path)
    assert result.returncode == 130, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastreg register-files: Interrupted while registering version"), result.stderr
    version = lines[0].split("version ", 1)[1].split(":", 1)[0]
    assert remote.fetch_launch_plan(name=f"{mod}.pipeline", version=version)


def test_register_files_interrupted_before_the_creates(sandbox, tmp_path):
    _, result = _register_files_pressing_ctrl_c_at("ListProjects", sandbox, tmp_path)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == [
        "fastreg register-files: interrupted before any Create of the release under way: it was not registered "
        "(the releases reported above were)."
    ]


# ---------------------------------------------------------------- Stop at any moment of a %%flyte_fast cell


def test_stop_while_flytekit_compiles_the_workflow_leaves_the_unchanged_cell_working(kernel, sandbox, tmp_path):
    """The workflow's body runs as flytekit compiles it, when the cell's module loads: Stop then is the
    cell's own code stopped. The unchanged cell, run again, registers the whole workflow, not the empty
    one flytekit had marked compiled ("Parameter not bound" from FlyteAdmin)."""
    started = tmp_path / "started"
    kernel.run("%load_ext fastreg_magic")
    cell = textwrap.dedent(
        f"""\
        %%flyte_fast -m slow_body --config {sandbox.config_file}
        import pathlib, time
        from flytekit import task, workflow

        @task
        def inc(n: int) -> int:
            return n + 1

        @workflow
        def wf(n: int = 1) -> int:
            a = inc(n=n)
            started = pathlib.Path({str(started)!r})
            if not started.exists():  # a big workflow, slow to compile the first time
                started.write_text("x")
                time.sleep(300)
            return inc(n=a)
        """
    )
    shown = plain(failed_cell(kernel, cell, interrupt_when=started))
    assert shown.rstrip().endswith("Interrupted as the cell ran: nothing was registered."), shown
    rerun = kernel.run(cell)  # unchanged
    assert "Registered slow_body version" in str(rerun["outputs"]), rerun
    kernel.run("run = _.launch('wf', n=1).wait(timeout=120)")
    assert kernel.eval("run.outputs") == {"o0": 3}


# In the kernel: Stop pressed (a SIGINT to the kernel) at the n-th Python call from IPython's first
# line running a %%flyte_fast cell (its `pre_run_cell` event) until the cell's result is drawn; with `n`
# None, the calls are only counted (`in_magic` of them until the magic returns). With `in_del`, the
# press is taken in an object's `__del__`, run then, as garbage collection runs them (ipywidgets'
# `Widget.__del__`): there Python drops the KeyboardInterrupt.
STOP_AT_A_CALL = textwrap.dedent(
    """\
    import os, signal, sys

    class Litter:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(3):  # the KeyboardInterrupt is raised here, in `__del__`
                pass

    class StopAt:
        def __init__(self):
            self.n, self.in_del, self.calls, self.in_magic, self.pressed = None, False, 0, 0, False

        def arm(self, info):
            if info.raw_cell.startswith("%%flyte_fast"):
                self.calls, self.pressed = 0, False
                sys.setprofile(self.profile)

        def disarm(self, result):
            sys.setprofile(None)

        def profile(self, frame, event, arg):
            code = frame.f_code
            ours = "fastreg_magic" in code.co_filename
            if event == "return" and ours and code.co_name == "_guarded":
                self.in_magic = self.calls
            elif event == "return" and ours and code.co_name == "_ipython_display_":
                sys.setprofile(None)  # drawn: the cell is done
            elif event == "call":
                self.calls += 1
                if self.calls == self.n:
                    sys.setprofile(None)
                    self.pressed = True
                    if self.in_del:
                        Litter()  # dropped at once
                    else:
                        os.kill(os.getpid(), signal.SIGINT)

    stop_at = StopAt()
    get_ipython().events.register("pre_run_cell", stop_at.arm)
    get_ipython().events.register("post_run_cell", stop_at.disarm)
    """
)


def cell_shows(kernel, code: str) -> tuple[str | None, str]:
    """Run ``code``; returns (the error it showed, or None; what it wrote to stdout and stderr)."""
    msg_id = kernel.kc.execute(code)
    error, streams = None, []
    deadline = time.monotonic() + 300
    while True:
        msg = kernel._next_iopub(deadline)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            error = plain("\n".join(msg["content"]["traceback"]))
        elif msg["msg_type"] == "stream":
            streams.append(msg["content"]["text"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return error, plain("".join(streams))


def stopped_in_one_line(kernel, cell: str, moment: str) -> bool:
    """Run ``cell`` with Stop pressed as `stop_at` says: one line naming the state it left. Whether it was pressed."""
    error, streams = cell_shows(kernel, cell)
    if not kernel.eval("stop_at.pressed"):  # a cell with no old widget to close makes fewer calls
        assert error is None, f"{moment}, never pressed:\n{error}"
        return False
    assert error is not None, f"{moment} was lost: {streams}"
    lines = error.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in error, f"{moment}:\n{error}"
    assert "nothing was registered" in lines[0] or "is registered" in lines[0], f"{moment}: {lines[0]}"
    assert "Traceback" not in streams and "Exception ignored" not in streams, f"{moment}:\n{streams}"
    return True


def test_stop_at_any_moment_of_an_unchanged_rerun_says_the_state_in_one_line(kernel, sandbox):
    kernel.run("%load_ext fastreg_magic")
    cell = f"%%flyte_fast -m rerun --config {sandbox.config_file}\n{CELL}"
    kernel.run(cell)
    kernel.run(STOP_AT_A_CALL)
    kernel.run(cell)  # answered from memory: its calls counted
    calls, in_magic = kernel.eval("[stop_at.calls, stop_at.in_magic]")
    assert 1000 < in_magic < calls, (in_magic, calls)
    # The first calls, IPython's, one by one; then as many moments until the magic returns as in the
    # drawing of the widget, which makes most of the calls.
    moments = [*range(1, 9), *(8 + (in_magic - 8) * k // 31 for k in range(1, 32)),
               *(in_magic + (calls - in_magic) * k // 16 for k in range(1, 17))]
    pressed = 0
    for n in moments:
        kernel.run(f"stop_at.n = {n}")
        pressed += stopped_in_one_line(kernel, cell, f"Stop at call {n} of {calls}")
    assert pressed > 45, pressed
    kernel.run("stop_at.in_del = True")
    pressed = 0
    for n in moments[::4]:
        kernel.run(f"stop_at.n = {n}")
        pressed += stopped_in_one_line(kernel, cell, f"Stop in a __del__ at call {n} of {calls}")
    assert pressed > 10, pressed
    kernel.run("stop_at.n = None")
    assert "Registered rerun version" in str(kernel.run(cell)["outputs"])  # shown again
    assert kernel.run("print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")["stdout"] == "True\n"
