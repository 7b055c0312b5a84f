"""A per-user sandbox that outlives the kernel: find it if it runs, start it in the background if not.

    info = ensure_running()          # SandboxInfo(endpoint, config_file, data_dir, started)
    stop_running()                   # True if one was running and has stopped

A live sandbox holds its data dir's claim (``claim``: a lock the kernel drops when the
process dies, however it dies) and announces itself in ``<data dir>/sandbox.json``
(endpoint, pid, config file, and the Python it runs tasks with: the environment that started
it, which may not be the environment of every kernel that shares it). ``ensure_running`` reuses the sandbox that holds the claim,
waiting for it to answer a cheap RPC (GetVersion, sent with its access token: ``access.py``) if it is busy or still starting; only
when nobody holds the claim does it start ``fastreg sandbox`` detached (own session,
output to ``<data dir>/sandbox.log``), on the data dir's previous port if that is free. A
file lock makes two kernels calling at once share one sandbox instead of starting two. A
sandbox that was killed leaves its ``sandbox.json`` behind: the next one to start on the
data dir reads it as "ended without stopping" and ends the task processes the dead one
left running.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastreg_magic.errors import SandboxError
from fastreg_magic.sandbox.claim import is_claimed, process_is_alive

STATE_NAME = "sandbox.json"
LOG_NAME = "sandbox.log"
LOCK_NAME = "sandbox.lock"
START_TIMEOUT_SECONDS = 120  # a cold start imports flytekit and grpc on a busy machine
LOCK_TIMEOUT_SECONDS = START_TIMEOUT_SECONDS + 30
HEALTH_TIMEOUT_SECONDS = 5  # one GetVersion; a busy sandbox is asked again until START_TIMEOUT_SECONDS
STOP_TIMEOUT_SECONDS = 60  # SIGTERM ends task process trees first (a few seconds each on a busy machine)
LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class SandboxInfo:
    """Where a sandbox serves, whether this call started it, and the Python its tasks run with."""

    endpoint: str
    config_file: Path
    data_dir: Path
    started: bool
    python: str | None = None  # the sandbox's sys.executable (None: a sandbox from before it was recorded)
    environment: str | None = None  # its sys.prefix: which Python environment that is

    def runs_tasks_elsewhere(self) -> bool:
        """True if the sandbox runs tasks in another Python environment than this process's: a task
        importing a package only this environment has would fail there."""
        return self.environment is not None and not same_environment(self.environment, sys.prefix)


def same_environment(prefix: str, other: str) -> bool:
    # resolved: /tmp/v and /tmp/v/ (or a symlinked home) are one environment; a venv's *python* is
    # a symlink to the base interpreter, so environments are told apart by prefix, not executable
    return os.path.realpath(prefix) == os.path.realpath(other)


def write_state(data_dir: Path, endpoint: str, config_file: Path) -> None:
    state = {"endpoint": endpoint, "pid": os.getpid(), "config_file": str(config_file),
             "python": sys.executable, "environment": sys.prefix}
    temp = data_dir / f".{STATE_NAME}.{os.getpid()}"
    temp.write_text(json.dumps(state))
    os.replace(temp, data_dir / STATE_NAME)


def clear_state(data_dir: Path) -> None:
    """Remove the state file if it is this process's."""
    state = read_state(data_dir)
    if state and state.get("pid") == os.getpid():
        (data_dir / STATE_NAME).unlink(missing_ok=True)


def read_state(data_dir: Path) -> dict | None:
    try:
        return json.loads((data_dir / STATE_NAME).read_text())
    except (OSError, ValueError):
        return None


def wait_answering(data_dir: Path, timeout: float = START_TIMEOUT_SECONDS) -> dict | None:
    """The state of the sandbox holding ``data_dir`` once it answers; None if nobody holds it.

    A sandbox that holds the claim is alive: it may be starting (no state file yet) or too
    busy to answer at once, so it is asked again until ``timeout`` rather than replaced.
    """
    deadline = time.monotonic() + timeout
    while is_claimed(data_dir):
        state = read_state(data_dir)
        if state and answers(state.get("endpoint", ""), data_dir):
            return state
        if time.monotonic() > deadline:
            pid = state.get("pid", "?") if state else "?"
            raise SandboxError(
                f"the sandbox on {data_dir} (pid {pid}) holds its data dir but has not answered for {timeout:.0f}s.",
                f"See {data_dir / LOG_NAME}; stop it with `kill {pid}` if it hangs.",
            )
        time.sleep(0.2)
    return None


def answers(endpoint: str, data_dir: Path | None = None) -> bool:
    """True if a FlyteAdmin answers GetVersion at ``endpoint`` (host:port), asked with the access token
    of the sandbox of ``data_dir``, or else of this user's sandbox running there (``access.py``)."""
    # imported here: `import fastreg_magic.sandbox` must stay cheap for the magic's first use
    import grpc
    from flyteidl.admin import version_pb2
    from flyteidl.service import admin_pb2_grpc

    from fastreg_magic.proxies import NO_PROXY_OPTION
    from fastreg_magic.sandbox.access import bearer, running_sandbox

    data_dir = data_dir or running_sandbox(endpoint)
    # The sandbox is on loopback: a proxy named in the environment could only make it look dead.
    with grpc.insecure_channel(endpoint, options=[NO_PROXY_OPTION]) as channel:
        try:
            admin_pb2_grpc.AdminServiceStub(channel).GetVersion(
                version_pb2.GetVersionRequest(), timeout=HEALTH_TIMEOUT_SECONDS,
                metadata=bearer(data_dir) if data_dir is not None else None)
            return True
        except grpc.RpcError:
            return False


def ensure_running(data_dir: str | os.PathLike | None = None, start: bool = True) -> SandboxInfo | None:
    """Reuse the live sandbox of ``data_dir`` or start one in the background; raise SandboxError if it fails.
    With ``start=False``, None when none is running."""
    from fastreg_magic.sandbox.server import default_data_dir

    data_dir = (Path(data_dir) if data_dir is not None else default_data_dir()).absolute()
    make_data_dir(data_dir)
    with _locked(data_dir / LOCK_NAME):
        state = wait_answering(data_dir)
        if state:
            return info_of(state, data_dir, started=False)
        return _start_detached(data_dir) if start else None


def info_of(state: dict, data_dir: Path, started: bool) -> SandboxInfo:
    """The SandboxInfo that a sandbox's state file announces."""
    return SandboxInfo(state["endpoint"], Path(state["config_file"]), data_dir, started=started,
                       python=state.get("python"), environment=state.get("environment"))


def make_data_dir(data_dir: Path) -> None:
    """Create the data dir (and its parents); SandboxError saying why not, naming a file in the way."""
    in_the_way = next((path for path in (data_dir, *data_dir.parents) if path.is_file()), None)
    if in_the_way == data_dir:
        raise SandboxError(f"the data dir {data_dir} is a file, not a directory.",
                           "Pass --data-dir with a directory, or a path that does not exist yet.")
    if in_the_way is not None:
        raise SandboxError(f"cannot create the data dir {data_dir}: {in_the_way} is a file, not a directory.",
                           "Pass --data-dir with a directory, or a path that does not exist yet.")
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # its own files are the owner's alone
    except OSError as err:
        raise SandboxError(f"the data dir {data_dir} is not writable ({err.strerror or err}).",
                           "Pass --data-dir with a directory you can write to.") from err


def stop_running(data_dir: str | os.PathLike | None = None, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
    """Stop the live sandbox of ``data_dir`` (SIGTERM: tasks ended, state kept); False if none was running."""
    from fastreg_magic.sandbox.server import default_data_dir

    data_dir = (Path(data_dir) if data_dir is not None else default_data_dir()).absolute()
    state = read_state(data_dir)
    pid = int(state.get("pid", 0)) if state else 0
    # the claim, not the pid, says whether it runs: a stale file's pid may belong to someone else now
    if not is_claimed(data_dir) or not process_is_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_is_alive(pid):
        if time.monotonic() > deadline:
            raise SandboxError(f"the sandbox (pid {pid}) did not stop within {timeout:.0f}s.",
                               f"Stop it with `kill -9 {pid}`.")
        time.sleep(0.1)
    return True


def _start_detached(data_dir: Path) -> SandboxInfo:
    # a sandbox.json left here belongs to a sandbox that died without stopping; it stays, so
    # that the new one knows to end the task processes the dead one left running
    log_path = data_dir / LOG_NAME
    with open(log_path, "ab") as log:
        log.write(f"\n--- starting sandbox at {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
        log.flush()
        process = subprocess.Popen(
            # no --port: the data dir's previous port if free, so the kernel's config keeps working
            [sys.executable, "-m", "fastreg_magic.cli", "sandbox", "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=data_dir,
            close_fds=True,
        )
    # reap it when it exits, so a stopped sandbox does not linger as a zombie of this kernel
    threading.Thread(target=process.wait, name="sandbox-reaper", daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        state = read_state(data_dir)
        if state and state.get("pid") == process.pid:
            return info_of(state, data_dir, started=True)
        if process.poll() is not None:
            raise SandboxError(
                f"the background sandbox exited with status {process.returncode} before it was ready:\n"
                + _tail(log_path),
                f"See {log_path} for the whole log.",
            )
        time.sleep(0.1)
    process.terminate()
    raise SandboxError(f"the background sandbox was not ready after {START_TIMEOUT_SECONDS}s:\n" + _tail(log_path),
                       f"See {log_path} for the whole log.")


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL_LINES:])


@contextmanager
def _locked(path: Path):
    with open(path, "a+") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SandboxError(f"another process has held {path} for over {LOCK_TIMEOUT_SECONDS}s.",
                                       "If no sandbox is starting, delete the lock file.") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
