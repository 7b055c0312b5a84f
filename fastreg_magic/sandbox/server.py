"""Wires the sandbox together: store, Admin + DataProxy + Signal gRPC services, blob server, executor.

The blob server also serves the console pages (``console_pages``): the config files written here set
``console.endpoint`` to it, under the pages' key of this start, so the console links stock flytekit
prints (``pyflyte run --remote``, ``pyflyte register``) open a page about the run or entity instead of
the gRPC port.

    with start(data_dir, port=0) as sandbox:
        FlyteRemote(Config.auto(config_file=str(sandbox.config_file)), ...)

Everything runs in threads of the calling process and binds 127.0.0.1 only. ``start``
returns once both servers listen; ``stop`` ends running task processes (through the
executor), then the servers, and keeps the data dir.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sqlite3
import threading
from concurrent import futures
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from flyteidl.service import admin_pb2_grpc, auth_pb2_grpc, dataproxy_pb2_grpc, signal_pb2_grpc

from fastreg_magic.errors import SandboxError
from fastreg_magic.sandbox import access
from fastreg_magic.sandbox.admin_service import AdminService
from fastreg_magic.sandbox.background import clear_state, make_data_dir, read_state, write_state
from fastreg_magic.sandbox.blobserver import BlobServer
from fastreg_magic.sandbox.claim import DataDirClaim
from fastreg_magic.sandbox.console_pages import ConsolePages
from fastreg_magic.sandbox.dataproxy import DataProxyService
from fastreg_magic.sandbox.events import EventRecorder
from fastreg_magic.sandbox.recovery import end_orphaned_tasks, recover
from fastreg_magic.sandbox.signals import SignalBoard, SignalService
from fastreg_magic.sandbox.store import Store

log = logging.getLogger("fastreg_magic.sandbox")

# Every handler holds the GIL for nearly all its work, so more threads only add switching: with 4
# instead of 16, a 16-entity registration costs the server about a tenth less CPU and time
# (measured with 8 concurrent Creates), and no handler blocks long enough for 4 to queue noticeably.
GRPC_WORKERS = 4
MAX_MESSAGE_BYTES = 20 * 1024 * 1024  # FlyteAdmin's limit, which flytekit mirrors
CONFIG_NAME = "config.yaml"


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("fastreg")) / "sandbox"


def config_text(endpoint: str, data_dir: Path | None = None, console: str | None = None) -> str:
    """A flytekit/flytectl config for this sandbox (``pyflyte -c``, ``Config.auto(config_file=...)``);
    it names the data dir, so a cell using it can say how to start that sandbox again, and its console
    (``console.endpoint``, which flytekit's console links start with: ``ConsolePages.console_endpoint``)."""
    return (
        "# Written by `fastreg sandbox`: the embedded Flyte sandbox on loopback.\n"
        + (f"# Data dir: {data_dir}\n" if data_dir is not None else "")
        + "admin:\n"
        f"  endpoint: dns:///{endpoint}\n"
        "  insecure: true\n"
        + (access.config_lines(data_dir, endpoint) if data_dir is not None else "")
        + (f"console:\n  endpoint: {console}\n" if console is not None else "")
    )


@dataclass
class Sandbox:
    """A running sandbox: where to reach it and how to stop it."""

    endpoint: str
    config_file: Path
    data_dir: Path
    _grpc: grpc.Server = field(repr=False)
    _blobs: BlobServer = field(repr=False)
    _store: Store = field(repr=False)
    _admin: AdminService = field(repr=False)
    _claim: DataDirClaim = field(repr=False)
    _stopped: bool = field(default=False, repr=False)
    _stop_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def stop(self, timeout: float = 10) -> None:
        """End running task processes, stop serving, keep the data. Safe to call more than once, from any thread."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self._end_runs(timeout)
        finally:
            self._grpc.stop(grace=1).wait()
            self._blobs.stop()
            self._store.close()
            access.withdraw(self.endpoint, self.data_dir)
            access.remove_tokens(self.data_dir)
            clear_state(self.data_dir)
            self._claim.release()

    def _end_runs(self, timeout: float) -> None:
        """The executor ends its runs' process trees; a sweep then ends any it lost track of."""
        executor = self._admin.executor
        if executor is not None:
            try:
                executor.shutdown(timeout=timeout)
            except Exception:  # noqa: BLE001 - keep stopping the rest
                log.exception("executor shutdown failed")
        self._admin.close()
        still_running = executor is not None and bool(executor.running())
        # a run thread still alive may be between fork and exec: look again a moment later
        end_orphaned_tasks(self.data_dir, settle_seconds=0.3 if still_running else 0)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(data_dir: str | os.PathLike | None = None, port: int | None = None, *,
          config_out: str | os.PathLike | None = None, max_workers: int | None = None) -> Sandbox:
    """Start a sandbox in this process; returns when it serves. Raises SandboxError if it cannot.

    ``port``: 1-65535 to bind that one, 0 for any free port, None (default) for the port this
    data dir's sandbox had last time if it is free, else any free port.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    with ExitStack() as undo:  # everything started so far is stopped again if a later step fails
        _prepare_data_dir(data_dir)
        claim = _claim(data_dir)
        undo.callback(claim.release)
        store = _open_store(data_dir)
        undo.callback(store.close)
        _recover(store)
        console = ConsolePages(store, store.data_dir / CONFIG_NAME)
        blobs = BlobServer(store.data_dir, pages=console.page)
        undo.callback(blobs.stop)
        admin = AdminService(store)
        signals = SignalBoard(store)
        token = access.new_token()
        token_check = access.TokenCheck(token)
        services = (admin, DataProxyService(store, blobs.signer, admin), SignalService(signals), token_check)
        server, bound = _bind(services, port, store.data_dir)
        undo.callback(server.stop, None)
        endpoint = f"127.0.0.1:{bound}"
        access.write_token(store.data_dir, endpoint, token)
        token_check.refusal = access.refusal(endpoint, Path(config_out).absolute() if config_out else store.data_dir / CONFIG_NAME)
        _attach_executor(admin, store, max_workers, admin_env(endpoint, store.data_dir / CONFIG_NAME), signals)
        server.start()
        blobs.start()
        sandbox = Sandbox(endpoint, store.data_dir / CONFIG_NAME, store.data_dir, server, blobs, store, admin, claim)
        undo.pop_all()
    try:
        for path in [sandbox.config_file] + ([Path(config_out)] if config_out is not None else []):
            access.write_private(path, config_text(endpoint, store.data_dir, console.console_endpoint(blobs.port)))
    except OSError as err:
        sandbox.stop()
        raise SandboxError(f"cannot write the config file {err.filename} ({err.strerror}).",
                           "Pass a writable path to --config-out.") from err
    write_state(store.data_dir, endpoint, sandbox.config_file)
    access.announce(endpoint, store.data_dir)
    return sandbox


def _bind(services: tuple, port: int | None, data_dir: Path) -> tuple[grpc.Server, int]:
    """The gRPC server bound to ``port``; with None, to this data dir's previous port or any free one.

    A port asked for must be free (SandboxError if not); the previous port is only a
    preference, so losing it to another process between the check and the bind is no error.
    """
    if port is not None and not 0 <= port <= 65535:
        raise SandboxError(f"port {port} is out of range.", "Pick one of 1-65535 with --port, or --port 0 for any free port.")
    if port:
        if not _port_free(port):
            raise _busy(port)
        return _bound_or_busy(*_grpc_server(services, port), port)
    preferred = _previous_port(data_dir) if port is None else 0
    server, bound = _grpc_server(services, preferred)
    if not bound and preferred:
        server.stop(None)
        server, bound = _grpc_server(services, 0)
    return _bound_or_busy(server, bound, preferred)


def _bound_or_busy(server: grpc.Server, bound: int, port: int) -> tuple[grpc.Server, int]:
    if not bound:
        server.stop(None)
        raise _busy(port)
    return server, bound


def _grpc_server(services: tuple, port: int) -> tuple[grpc.Server, int]:
    """The gRPC server with the Admin, DataProxy and Signal services, bound to 127.0.0.1:port
    (bound port 0 = could not bind); calls need the access token (``access.py``), except to the public
    AuthMetadataService."""
    admin, dataproxy, signals, token_check = services
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS, thread_name_prefix="sandbox-grpc"),
        interceptors=[token_check],
        options=[
            ("grpc.so_reuseport", 0),  # a busy port must fail, not be shared
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # flytekit's channel pings every 30 s even when idle; without these the server answers
            # GOAWAY "too_many_pings" and the client's next call fails once.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 0),
        ],
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)
    dataproxy_pb2_grpc.add_DataProxyServiceServicer_to_server(dataproxy, server)
    signal_pb2_grpc.add_SignalServiceServicer_to_server(signals, server)
    auth_pb2_grpc.add_AuthMetadataServiceServicer_to_server(access.auth_metadata_servicer(), server)
    try:
        return server, server.add_insecure_port(f"127.0.0.1:{port}")
    except RuntimeError:
        return server, 0


def _claim(data_dir: Path) -> DataDirClaim:
    claim = DataDirClaim.take(data_dir)
    if claim is None:
        other = read_state(data_dir) or {}
        where = f"on {other['endpoint']} (pid {other.get('pid', '?')})" if "endpoint" in other else "starting there"
        raise SandboxError(f"the data dir {data_dir} is in use by the sandbox {where}.",
                           "Use that sandbox, stop it, or pass another --data-dir.")
    return claim


def _previous_port(data_dir: Path) -> int:
    """The port this data dir's sandbox had last time, if it is free again (else 0: any port).

    Keeping the endpoint stable across restarts keeps existing config files valid; flytekit
    also caches a config file's contents per path for the life of a process (``lru_cache``
    on ``get_config_file``), so a kernel would otherwise keep dialing the old port.
    """
    try:
        match = re.search(r"dns:///127\.0\.0\.1:(\d+)", (data_dir / CONFIG_NAME).read_text())
    except OSError:
        return 0
    port = int(match.group(1)) if match else 0
    return port if port and _port_free(port) else 0


def _port_free(port: int) -> bool:
    """Checked before gRPC binds, which would otherwise log its own error line to stderr."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as gRPC binds: SO_REUSEADDR lets a port with only TIME_WAIT leftovers count as free,
        # while a port someone listens on still fails
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except (OSError, OverflowError):  # OverflowError: not a port number at all
            return False
    return True


def _busy(port: int) -> SandboxError:
    return SandboxError(f"port {port} on 127.0.0.1 is busy.", "Pick another with --port, or --port 0 for any free port.")


def _prepare_data_dir(data_dir: Path) -> None:
    make_data_dir(data_dir)
    access.tighten_data_dir(data_dir)
    try:
        probe = data_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise SandboxError(
            f"the data dir {data_dir} is not writable ({err.strerror or err}).",
            "Pass --data-dir with a directory you can write to.",
        ) from err


def _open_store(data_dir: Path) -> Store:
    try:
        return Store(data_dir)
    except (OSError, sqlite3.Error) as err:
        raise SandboxError(
            f"cannot open the sandbox database in {data_dir} ({err}).",
            "Move the data dir aside or pass another --data-dir.",
        ) from err


def _recover(store: Store) -> None:
    # the claim was free, so a sandbox.json still here is that of a sandbox that died without stopping
    try:
        recover(store, ended_without_stopping=read_state(store.data_dir) is not None)
    except sqlite3.Error as err:
        raise SandboxError(f"cannot read the sandbox database in {store.data_dir} ({err}).",
                           "Move the data dir aside or pass another --data-dir.") from err


def admin_env(endpoint: str, config_file: Path) -> dict[str, str]:
    """What a task process needs to reach this sandbox, as Flyte gives its tasks their cluster's admin.

    flytekit inside a task (an eager workflow, a FlyteRemote call) finds its backend through these;
    set here, they win over the user's own Flyte settings inherited from the environment, which may
    name a real cluster. Flytekit reads its private override variable before FLYTECTL_CONFIG.
    """
    return {
        "FLYTECTL_CONFIG": str(config_file),
        "_FLYTECTL_CONFIG_PYFLYTE_OVERRIDE": str(config_file),
        "FLYTE_PLATFORM_URL": endpoint,
        "FLYTE_PLATFORM_INSECURE": "True",
        # the config file's login (its access token, ``access.py``) over one the user set for a cluster
        "FLYTE_CREDENTIALS_AUTH_MODE": "ExternalCommand",
        # and its command, which flytekit also reads from the environment first (comma-separated)
        **({"FLYTE_CREDENTIALS_COMMAND": f"cat,{token}"} if (token := _token_of(config_file, endpoint)) else {}),
        # gRPC would take a proxy variable inherited from the user's environment on the way to this
        # loopback sandbox too; it reads no_grpc_proxy before no_proxy, so the user's list is kept in it.
        "no_grpc_proxy": ",".join(filter(None, (os.environ.get("no_grpc_proxy") or os.environ.get("no_proxy"),
                                                "127.0.0.1,localhost,::1"))),
    }


def _token_of(config_file: Path, endpoint: str) -> str | None:
    """The token file a task's flytekit reads (a path with a comma cannot go in flytekit's comma list)."""
    path = str(access.token_file(config_file.parent, endpoint))
    return None if "," in path else path


def _attach_executor(admin: AdminService, store: Store, max_workers: int | None, task_env: dict[str, str],
                     signals: SignalBoard) -> None:
    try:
        from fastreg_magic.sandbox.executor import Executor
        from fastreg_magic.sandbox.secrets import SECRETS_DIR
        from fastreg_magic.sandbox.taskcache import CACHE_DIR
    except ImportError as err:
        admin.executor = None
        admin.executor_error = f"its executor could not be loaded ({err})"
        return
    secrets_dir = store.data_dir / SECRETS_DIR
    with contextlib.suppress(OSError):  # without it, tasks still get secrets from the environment
        secrets_dir.mkdir(mode=0o700, exist_ok=True)  # there to be found, readable by its owner only
    admin.executor = Executor(EventRecorder(store), admin, max_workers=max_workers, task_env=task_env,
                              cache_dir=store.data_dir / CACHE_DIR, secrets_dir=secrets_dir, signals=signals)
