"""A per-user sandbox that outlives the kernel: find it if it runs, start it in the background if not.

    info = ensure_running()          # SandboxInfo(endpoint, config_file, data_dir, started)
    stop_running()                   # True if one was running and has stopped

A running sandbox announces itself in ``<data dir>/sandbox.json`` (endpoint, pid, config
file). ``ensure_running`` trusts that file only if the process is alive and answers a
cheap RPC (GetVersion). Otherwise it starts ``fastreg sandbox --port 0`` detached (own
session, output to ``<data dir>/sandbox.log``) and waits for it to announce itself. A file
lock makes two kernels calling at once share one sandbox instead of starting two.
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

STATE_NAME = "sandbox.json"
LOG_NAME = "sandbox.log"
LOCK_NAME = "sandbox.lock"
START_TIMEOUT_SECONDS = 90  # a cold start imports flytekit and grpc on a busy machine
LOCK_TIMEOUT_SECONDS = START_TIMEOUT_SECONDS + 30
HEALTH_TIMEOUT_SECONDS = 3
LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class SandboxInfo:
    """Where a sandbox serves, and whether this call started it."""

    endpoint: str
    config_file: Path
    data_dir: Path
    started: bool


def write_state(data_dir: Path, endpoint: str, config_file: Path) -> None:
    state = {"endpoint": endpoint, "pid": os.getpid(), "config_file": str(config_file)}
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


def live_sandbox(data_dir: Path) -> dict | None:
    """The state of a sandbox that is alive and answering on ``data_dir``, else None."""
    state = read_state(data_dir)
    if not state or not _pid_alive(int(state.get("pid", 0))):
        return None
    return state if answers(state.get("endpoint", "")) else None


def answers(endpoint: str) -> bool:
    """True if a FlyteAdmin answers GetVersion at ``endpoint`` (host:port)."""
    # imported here: `import fastreg_magic.sandbox` must stay cheap for the magic's first use
    import grpc
    from flyteidl.admin import version_pb2
    from flyteidl.service import admin_pb2_grpc

    with grpc.insecure_channel(endpoint) as channel:
        try:
            admin_pb2_grpc.AdminServiceStub(channel).GetVersion(version_pb2.GetVersionRequest(),
                                                                timeout=HEALTH_TIMEOUT_SECONDS)
            return True
        except grpc.RpcError:
            return False


def ensure_running(data_dir: str | os.PathLike | None = None) -> SandboxInfo:
    """Reuse the live sandbox of ``data_dir`` or start one in the background; raise SandboxError if it fails."""
    from fastreg_magic.sandbox.server import default_data_dir

    data_dir = (Path(data_dir) if data_dir is not None else default_data_dir()).absolute()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SandboxError(f"cannot create the sandbox data dir {data_dir} ({err.strerror}).",
                           "Pass a writable data dir.") from err
    with _locked(data_dir / LOCK_NAME):
        state = live_sandbox(data_dir)
        if state:
            return SandboxInfo(state["endpoint"], Path(state["config_file"]), data_dir, started=False)
        return _start_detached(data_dir)


def stop_running(data_dir: str | os.PathLike | None = None, timeout: float = 30) -> bool:
    """Stop the live sandbox of ``data_dir`` (SIGTERM: tasks ended, state kept); False if none was running."""
    from fastreg_magic.sandbox.server import default_data_dir

    data_dir = (Path(data_dir) if data_dir is not None else default_data_dir()).absolute()
    state = read_state(data_dir)
    pid = int(state.get("pid", 0)) if state else 0
    if not _pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            raise SandboxError(f"the sandbox (pid {pid}) did not stop within {timeout:.0f}s.",
                               f"Stop it with `kill -9 {pid}`.")
        time.sleep(0.1)
    return True


def _start_detached(data_dir: Path) -> SandboxInfo:
    (data_dir / STATE_NAME).unlink(missing_ok=True)
    log_path = data_dir / LOG_NAME
    with open(log_path, "ab") as log:
        log.write(f"\n--- starting sandbox at {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "fastreg_magic.cli", "sandbox", "--port", "0", "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=data_dir,
            close_fds=True,
        )
    # reap it when it exits, so a stopped sandbox does not linger as a zombie of this kernel
    threading.Thread(target=process.wait, name="sandbox-reaper", daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        state = read_state(data_dir)
        if state and state.get("pid") == process.pid:
            return SandboxInfo(state["endpoint"], Path(state["config_file"]), data_dir, started=True)
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


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited: it only waits for its parent to read its status
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


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
