"""Wires the sandbox together: store, Admin + DataProxy gRPC services, blob server, executor.

    with start(data_dir, port=0) as sandbox:
        FlyteRemote(Config.auto(config_file=str(sandbox.config_file)), ...)

Everything runs in threads of the calling process and binds 127.0.0.1 only. ``start``
returns once both servers listen; ``stop`` ends running task processes (through the
executor), then the servers, and keeps the data dir.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sqlite3
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from flyteidl.service import admin_pb2_grpc, dataproxy_pb2_grpc

from fastreg_magic.errors import SandboxError
from fastreg_magic.sandbox.admin_service import AdminService
from fastreg_magic.sandbox.background import clear_state, live_sandbox, read_state, write_state
from fastreg_magic.sandbox.blobserver import BlobServer
from fastreg_magic.sandbox.dataproxy import DataProxyService
from fastreg_magic.sandbox.events import EventRecorder
from fastreg_magic.sandbox.recovery import end_interrupted_executions, end_orphaned_tasks
from fastreg_magic.sandbox.store import Store

log = logging.getLogger("fastreg_magic.sandbox")

GRPC_WORKERS = 16
MAX_MESSAGE_BYTES = 20 * 1024 * 1024  # FlyteAdmin's limit, which flytekit mirrors
CONFIG_NAME = "config.yaml"


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("fastreg")) / "sandbox"


def config_text(endpoint: str) -> str:
    """A flytekit/flytectl config for this sandbox (``pyflyte -c``, ``Config.auto(config_file=...)``)."""
    return (
        "# Written by `fastreg sandbox`: the embedded Flyte sandbox on loopback.\n"
        "admin:\n"
        f"  endpoint: dns:///{endpoint}\n"
        "  insecure: true\n"
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
    _stopped: bool = field(default=False, repr=False)

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def stop(self, timeout: float = 10) -> None:
        """End running task processes, stop serving, keep the data."""
        if self._stopped:
            return
        self._stopped = True
        executor = self._admin.executor
        if executor is not None:
            try:
                executor.shutdown(timeout=timeout)
            except Exception:  # noqa: BLE001 - keep stopping the rest
                log.exception("executor shutdown failed")
        self._grpc.stop(grace=1).wait()
        self._blobs.stop()
        self._store.close()
        clear_state(self.data_dir)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(data_dir: str | os.PathLike | None = None, port: int = 0, *, config_out: str | os.PathLike | None = None,
          max_workers: int | None = None) -> Sandbox:
    """Start a sandbox in this process; returns when it serves. Raises SandboxError if it cannot."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    store = _open_store(data_dir)
    try:
        _refuse_if_in_use(store.data_dir)
        if read_state(store.data_dir):  # its last sandbox did not stop cleanly: tasks may outlive it
            end_orphaned_tasks(store.data_dir)
        end_interrupted_executions(store)
        port = port or _previous_port(store.data_dir)
        if port and not _port_free(port):
            raise _busy(port)
    except SandboxError:
        store.close()
        raise
    blobs = BlobServer(store.data_dir)
    admin = AdminService(store)
    server, bound = _grpc_server(admin, DataProxyService(store, blobs.signer, admin), port)
    if not bound:
        blobs.stop()
        store.close()
        raise _busy(port)
    _attach_executor(admin, store, max_workers)
    server.start()
    blobs.start()
    endpoint = f"127.0.0.1:{bound}"
    sandbox = Sandbox(endpoint, store.data_dir / CONFIG_NAME, store.data_dir, server, blobs, store, admin)
    try:
        for path in [sandbox.config_file] + ([Path(config_out)] if config_out is not None else []):
            path.write_text(config_text(endpoint))
    except OSError as err:
        sandbox.stop()
        raise SandboxError(f"cannot write the config file {err.filename} ({err.strerror}).",
                           "Pass a writable path to --config-out.") from err
    write_state(store.data_dir, endpoint, sandbox.config_file)
    return sandbox


def _grpc_server(admin, dataproxy, port: int) -> tuple[grpc.Server, int]:
    """The gRPC server with both services, bound to 127.0.0.1:port (bound port 0 = could not bind)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS, thread_name_prefix="sandbox-grpc"),
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
    try:
        return server, server.add_insecure_port(f"127.0.0.1:{port}")
    except RuntimeError:
        return server, 0


def _refuse_if_in_use(data_dir: Path) -> None:
    other = live_sandbox(data_dir)
    if other and other.get("pid") != os.getpid():
        raise SandboxError(f"the data dir {data_dir} is in use by the sandbox on {other['endpoint']} (pid {other['pid']}).",
                           "Use that sandbox, stop it, or pass another --data-dir.")


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
        except OSError:
            return False
    return True


def _busy(port: int) -> SandboxError:
    return SandboxError(f"port {port} on 127.0.0.1 is busy.", "Pick another with --port, or --port 0 for any free port.")


def _open_store(data_dir: Path) -> Store:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise SandboxError(
            f"the data dir {data_dir} is not writable ({err.strerror or err}).",
            "Pass --data-dir with a directory you can write to.",
        ) from err
    try:
        return Store(data_dir)
    except (OSError, sqlite3.Error) as err:
        raise SandboxError(
            f"cannot open the sandbox database in {data_dir} ({err}).",
            "Move the data dir aside or pass another --data-dir.",
        ) from err


def _attach_executor(admin: AdminService, store: Store, max_workers: int | None) -> None:
    try:
        from fastreg_magic.sandbox.executor import Executor
    except ImportError as err:
        admin.executor = None
        admin.executor_error = f"its executor could not be loaded ({err})"
        return
    admin.executor = Executor(EventRecorder(store), admin, max_workers=max_workers)
