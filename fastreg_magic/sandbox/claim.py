"""One sandbox per data dir: a claim the operating system lets go of when its holder dies.

    claim = DataDirClaim.take(data_dir)      # SandboxError if another sandbox holds it
    ...                                      # serve
    claim.release()                          # on stop; a crash (even SIGKILL) releases it too

The claim is an exclusive ``flock`` on ``<data dir>/sandbox.active``. Unlike a pid in a
file it cannot go stale (the kernel drops it with the process), cannot be fooled by pid
reuse, and does not depend on the holder answering an RPC in time on a busy machine. Locks
of ``flock`` belong to the open file, so two sandboxes in one process exclude each other too.
The descriptor is not inherited by task processes (Python opens files non-inheritable), so
orphaned tasks of a killed sandbox never keep its data dir claimed.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

CLAIM_NAME = "sandbox.active"
# A probe (``is_claimed``) holds the lock for an instant; a starting sandbox retries that long.
TAKE_RETRY_SECONDS = 2.0
_RETRY_PAUSE_SECONDS = 0.05


class DataDirClaim:
    """The exclusive claim of one sandbox on its data dir."""

    def __init__(self, handle):
        self._handle = handle

    @classmethod
    def take(cls, data_dir: Path) -> "DataDirClaim | None":
        """Claim ``data_dir``; None when a live sandbox holds it."""
        handle = open(Path(data_dir) / CLAIM_NAME, "a+")
        deadline = time.monotonic() + TAKE_RETRY_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return cls(handle)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.close()
                    return None
                time.sleep(_RETRY_PAUSE_SECONDS)

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the last descriptor drops the lock
            self._handle = None


def is_claimed(data_dir: Path) -> bool:
    """True while a live sandbox (in any process, this one included) holds ``data_dir``."""
    path = Path(data_dir) / CLAIM_NAME
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def process_is_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, which only waits to be reaped, does not count)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
