"""`fastreg sandbox`: run the embedded sandbox in the foreground until SIGINT/SIGTERM.

    $ fastreg sandbox --port 0 --config-out flyte.yaml
    fastreg sandbox ready on 127.0.0.1:40123 (config: flyte.yaml, data: ~/.local/share/fastreg/sandbox)

Prints exactly one line when it serves; failures (busy port, unwritable data dir) are one
line on stderr and exit status 1. On SIGINT/SIGTERM/SIGHUP it ends running task processes
and stops, keeping its data dir for the next start.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

READY_PREFIX = "fastreg sandbox ready on "
# SIGHUP too: a closed terminal must not leave task processes (in their own sessions) running
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0, help="gRPC port on 127.0.0.1 (default 0: any free port)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where entities, executions and uploads are kept (default: a per-user data dir)")
    parser.add_argument("--config-out", type=Path, default=None,
                        help="also write the flytekit/flytectl config (pyflyte -c FILE) to FILE")
    parser.add_argument("--workers", type=int, default=None, help="most task processes run at once")


def run(args: argparse.Namespace) -> int:
    from fastreg_magic.sandbox.server import start

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        sandbox = start(args.data_dir, port=args.port, config_out=args.config_out, max_workers=args.workers)
        config = args.config_out or sandbox.config_file
        print(f"{READY_PREFIX}{sandbox.endpoint} (config: {config}, data: {sandbox.data_dir})", flush=True)
        try:
            while not stop.wait(3600):
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
