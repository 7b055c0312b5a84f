"""`fastreg sandbox`: run the embedded sandbox in the foreground until SIGINT/SIGTERM.

    $ fastreg sandbox --port 0 --config-out flyte.yaml
    fastreg sandbox ready on 127.0.0.1:40123 (config: flyte.yaml, data: ~/.local/share/fastreg/sandbox)
    $ fastreg sandbox --status      # is the sandbox of this data dir running (e.g. the magic's)?
    $ fastreg sandbox --stop        # stop it: task processes ended, data kept
    $ fastreg sandbox --create-project ml   # a project for `-p ml` (started in the background if needed)

Prints exactly one line when it serves; failures (busy port, unwritable data dir) are one
line on stderr and exit status 1. On SIGINT/SIGTERM/SIGHUP it ends running task processes
and stops, keeping its data dir for the next start.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from pathlib import Path

READY_PREFIX = "fastreg sandbox ready on "
# SIGHUP too: a closed terminal must not leave task processes (in their own sessions) running
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# FlyteAdmin refuses any other project id: its ValidateProject checks that the id is a DNS-1123 label
PROJECT_ID = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=port_number, default=None,
                        help="gRPC port on 127.0.0.1, 1-65535, or 0 for any free port (default: the port this "
                             "data dir's sandbox had last time if it is free, so config files stay valid; "
                             "else any free port)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where entities, executions and uploads are kept (default: a per-user data dir)")
    parser.add_argument("--config-out", type=Path, default=None,
                        help="also write the flytekit/flytectl config (pyflyte -c FILE) to FILE")
    parser.add_argument("--workers", type=worker_count, default=None,
                        help="most task processes run at once, at least 1 (default: two per CPU)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--stop", action="store_true",
                        help="stop the sandbox running on this data dir (e.g. the one the magic started) and exit")
    action.add_argument("--status", action="store_true",
                        help="say whether a sandbox runs on this data dir, where, and the Python it runs tasks "
                             "with; exit 1 if none")
    action.add_argument("--create-project", metavar="ID", type=project_id, default=None,
                        help="create project ID (domains development, staging, production) on this data dir's "
                             "sandbox, starting it in the background if it is not running, and exit")


def port_number(text: str) -> int:
    """argparse type of --port: 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port number; pass 1-65535, or 0 for any free port") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range; pass 1-65535, or 0 for any free port")
    return port


def worker_count(text: str) -> int:
    """argparse type of --workers: a positive number of task processes."""
    try:
        workers = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number; pass how many task processes may run at once (1 or more)") from None
    if workers < 1:
        raise argparse.ArgumentTypeError(f"{workers} is too few; pass 1 or more (omit --workers for two per CPU)")
    return workers


def project_id(text: str) -> str:
    """argparse type of --create-project: FlyteAdmin's project ids are DNS-1123 labels."""
    if not PROJECT_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a project id; use lowercase letters, digits and '-', starting and ending with a letter "
            "or digit, at most 63 characters (e.g. ml-team)")
    return text


def run(args: argparse.Namespace) -> int:
    if args.stop:
        return _stop(args.data_dir)
    if args.status:
        return _status(args.data_dir)
    if args.create_project:
        return _create_project(args.data_dir, args.create_project)
    return _serve(args)


def _stop(data_dir: Path | None) -> int:
    from fastreg_magic.sandbox.background import stop_running
    from fastreg_magic.sandbox.server import default_data_dir

    where = data_dir or default_data_dir()
    print(f"stopped the sandbox of {where}" if stop_running(data_dir) else f"no sandbox is running on {where}")
    return 0


def _status(data_dir: Path | None) -> int:
    from fastreg_magic.sandbox.background import read_state
    from fastreg_magic.sandbox.claim import is_claimed
    from fastreg_magic.sandbox.server import default_data_dir

    where = (data_dir or default_data_dir()).absolute()
    state = read_state(where) if is_claimed(where) else None
    if not state:
        print(f"no sandbox is running on {where}")
        return 1
    python = state.get("python") or "unknown (started by an older version)"
    print(f"sandbox running on {state['endpoint']} (pid {state['pid']}, config: {state.get('config_file')}, data: {where})")
    print(f"tasks run with: {python}")
    return 0


def _create_project(data_dir: Path | None, project: str) -> int:
    """Register ``project`` on the data dir's sandbox with flytekit's client, as flytectl would on a cluster."""
    from fastreg_magic.sandbox.background import ensure_running

    info = ensure_running(data_dir)
    if info.started:
        print(f"embedded sandbox: {info.endpoint} (started in the background, data in {info.data_dir})")
    if _register_project(info.endpoint, project, info.data_dir):
        print(f"created project {project} on the embedded sandbox at {info.endpoint}: use it with -p {project} "
              f"(or %config FlyteFast.project = {project!r})")
    else:
        print(f"project {project} already exists on the embedded sandbox at {info.endpoint}")
    return 0


def _register_project(endpoint: str, project: str, data_dir: Path) -> bool:
    """True if created, False if it already existed; SandboxError for any other refusal."""
    import grpc
    from flytekit.clients.friendly import SynchronousFlyteClient
    from flytekit.configuration import PlatformConfig
    from flytekit.models.project import Project

    from fastreg_magic.errors import SandboxError
    from fastreg_magic.register import grpc_error_of

    from fastreg_magic.proxies import NO_PROXY_OPTION

    # the sandbox is on loopback: a proxy named in the environment could only stand in the way
    from fastreg_magic.sandbox.access import platform_with_token

    platform = platform_with_token(PlatformConfig(endpoint=endpoint, insecure=True), data_dir)
    client = SynchronousFlyteClient(platform, options=[NO_PROXY_OPTION])
    try:
        client.register_project(Project(id=project, name=project, description=""))
        return True
    except Exception as exc:  # flytekit wraps gRPC errors in its own exception types
        error = grpc_error_of(exc)
        if error is not None and error.code() == grpc.StatusCode.ALREADY_EXISTS:
            return False
        detail = error.details() if error is not None else str(exc)
        raise SandboxError(f"the sandbox at {endpoint} refused to create project {project}: {detail}",
                           "Check `fastreg sandbox --status`, then try again.") from exc


def _serve(args: argparse.Namespace) -> int:
    from fastreg_magic.sandbox.server import start

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        sandbox = start(args.data_dir, port=args.port, config_out=args.config_out, max_workers=args.workers)
        config = args.config_out or sandbox.config_file
        print(f"{READY_PREFIX}{sandbox.endpoint} (config: {config}, data: {sandbox.data_dir})", flush=True)
        try:
            # Short waits: a stop signal's handler runs between them even where a long lock wait would
            # not wake for it (a signal that arrived while the process was stopped, SIGSTOP/SIGCONT).
            while not stop.wait(1.0):
                pass
        finally:
            sandbox.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    from fastreg_magic.cli import main

    sys.exit(main(["sandbox", *sys.argv[1:]]))
