"""A task's logs: the links the backend publishes, and the end of a log this machine can read.

The backend publishes each task attempt's logs as named links on its task execution
(``closure.logs``): a cluster links its log service (Kubernetes, CloudWatch, Stackdriver, ...), the
embedded sandbox links the attempt's stdout and stderr files (``file://``). A run shows every link;
the text of a local file is read from its end only, so a task that printed millions of lines costs
one bounded read, never the whole file.

    tail("file:///…/nodes/n0/0/stderr.log")   -> LogTail(text="…the last 200 lines…", complete=False, size=290257)
    failure_tail(rows)                        -> "Last lines of stderr.log (local file) of node n0 (/…/stderr.log):\n…"
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from fastreg_magic.errors import RunError
from fastreg_magic.runs_tree import flatten

# How much of a log the notebook reads and shows: its end, bounded in bytes, lines and line length,
# so a task that printed 20,000 lines (or one huge line) stays a small widget update.
TAIL_BYTES = 64 * 1024
TAIL_LINES = 200
LINE_CHARS = 500
# The end of a failed task's stderr that joins the run's error.
ERROR_TAIL_LINES = 20
ERROR_LINE_CHARS = 200


@dataclass(frozen=True)
class LogTail:
    """The end of one log file."""

    text: str
    lines: int  # how many lines ``text`` holds
    complete: bool  # ``text`` is the whole file
    size: int  # the file's size in bytes
    path: Path


def local_path(uri: str) -> Path | None:
    """The file a ``file://`` log link names; None for a link to a log service."""
    parsed = urlparse(uri or "")
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(unquote(parsed.path)))


def tail(uri: str, lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES, line_chars: int = LINE_CHARS) -> LogTail:
    """The last ``lines`` lines of a local log, read from at most its last ``max_bytes`` bytes."""
    path = local_path(uri)
    if path is None:
        raise RunError(f"The log {uri} is not a file on this machine.", "Open the link in your browser.")
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            start = max(0, size - max_bytes)
            fh.seek(start)
            data = fh.read(max_bytes)
    except FileNotFoundError:
        raise RunError(f"The log {path} is not there any more.",
                       "The backend's data directory was cleaned or replaced: run the task again to get new logs.") from None
    except OSError as exc:
        raise RunError(f"Cannot read the log {path}: {exc.strerror or exc}.", "Check that this user can read it.") from None
    found = data.decode("utf-8", errors="replace").splitlines()
    if start > 0 and found:
        found = found[1:]  # the read began inside this line
    kept = found[-lines:] if lines > 0 else []
    text = "\n".join(_cut(line, line_chars) for line in kept)
    return LogTail(text, len(kept), start == 0 and len(kept) == len(found), size, path)


def _cut(line: str, limit: int) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"


def is_stderr(name: str) -> bool:
    return "stderr" in name.lower()


def failure_tail(rows) -> str:
    """The last lines of the stderr of the first failed task in ``rows`` (a run's node tree) that has
    one on this machine; "" when there is none to read."""
    for _, row in flatten(rows):
        if row.phase != "FAILED" or row.children:
            continue
        for name, uri in row.logs:
            if is_stderr(name) and local_path(uri) is not None:
                try:
                    found = tail(uri, lines=ERROR_TAIL_LINES * 4, max_bytes=16 * 1024, line_chars=16 * 1024)
                except RunError:
                    continue
                lines = [_cut(line, ERROR_LINE_CHARS) for line in found.text.splitlines()
                         if line.strip() and not _restates_the_error(line)][-ERROR_TAIL_LINES:]
                if lines:
                    return f"Last lines of {name} of node {row.label} ({found.path}):\n" + "\n".join(lines)
    return ""


def _restates_the_error(line: str) -> bool:
    """flytekit's own JSON log records at ERROR level repeat the error the run already shows."""
    if not line.startswith("{"):
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("name") == "flytekit" and record.get("levelname") == "ERROR"
