"""What a starting sandbox does about executions its previous process left unfinished.

Nothing can resume after a crash, so every execution, node execution and task attempt
still in a non-terminal phase ends FAILED with a message saying the sandbox restarted (an
execution that was being aborted ends ABORTED), and its duration runs to now. Finished
records are left exactly as they were.

    ended = recover(store, ended_without_stopping=True)   # at start, before serving

Task processes run in their own sessions (so that terminate can end a whole tree); when
the sandbox is killed outright they outlive it. ``end_orphaned_tasks`` finds them by their
command line, which names this data dir's ``executions/`` directory, and ends their
process groups, so a crashed run does not keep computing (and writing) after the restart.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from flyteidl.admin import execution_pb2, node_execution_pb2, task_execution_pb2
from flyteidl.core import execution_pb2 as core_execution_pb2

from fastreg_magic.sandbox.entity_service import now_timestamp
from fastreg_magic.sandbox.events import NODE_TERMINAL, TASK_TERMINAL, WORKFLOW_TERMINAL
from fastreg_magic.sandbox.store import Store
from fastreg_magic.sandbox.validation import id_text

RESTARTED_MESSAGE = "the sandbox restarted while this execution was running; launch it again"
RESTARTED_CODE = "SandboxRestarted"
PROC = Path("/proc")
PROC_SCAN_PAUSE_SECONDS = 0.1

log = logging.getLogger("fastreg_magic.sandbox")


def _fail(closure, phase: int) -> None:
    stamp = now_timestamp()
    closure.phase = phase
    closure.error.CopyFrom(core_execution_pb2.ExecutionError(
        code=RESTARTED_CODE, message=RESTARTED_MESSAGE, kind=core_execution_pb2.ExecutionError.SYSTEM))
    start = closure.started_at if closure.started_at.seconds else closure.created_at
    closure.duration.FromNanoseconds(max(0, stamp.ToNanoseconds() - start.ToNanoseconds()))
    closure.updated_at.CopyFrom(stamp)


def _end_execution(execution) -> None:
    """FAILED, saying the sandbox restarted; one that was being aborted ends ABORTED with its cause."""
    closure = execution.closure
    if closure.phase != core_execution_pb2.WorkflowExecution.ABORTING:
        _fail(closure, core_execution_pb2.WorkflowExecution.FAILED)
        return
    stamp = now_timestamp()
    closure.phase = core_execution_pb2.WorkflowExecution.ABORTED
    start = closure.started_at if closure.started_at.seconds else closure.created_at
    closure.duration.FromNanoseconds(max(0, stamp.ToNanoseconds() - start.ToNanoseconds()))
    closure.updated_at.CopyFrom(stamp)


def end_interrupted_executions(store: Store) -> list[str]:
    """End every unfinished execution (and its unfinished nodes and attempts) FAILED; returns their ids."""
    ended = []
    for execution in store.all_executions(execution_pb2.Execution):
        if execution.closure.phase in WORKFLOW_TERMINAL:
            continue
        key = (execution.id.project, execution.id.domain, execution.id.name)
        store.update_execution(key, execution_pb2.Execution, _end_execution)
        _end_nodes(store, key)
        ended.append(id_text(execution.id))
    return ended


def _end_nodes(store: Store, key: tuple) -> None:
    for node in store.all_node_executions(key, node_execution_pb2.NodeExecution):
        if node.closure.phase not in NODE_TERMINAL:
            _fail(node.closure, core_execution_pb2.NodeExecution.FAILED)
            parent = None  # put_node_execution keeps the stored parent of an existing row
            store.put_node_execution(key + (node.id.node_id,), parent, node)
    for task in store.all_task_executions(key, task_execution_pb2.TaskExecution):
        if task.closure.phase not in TASK_TERMINAL:
            _fail(task.closure, core_execution_pb2.TaskExecution.FAILED)
            task_key = key + (task.id.node_execution_id.node_id, id_text(task.id.task_id), task.id.retry_attempt)
            store.put_task_execution(task_key, task)


def recover(store: Store, ended_without_stopping: bool) -> list[str]:
    """What a starting sandbox does first: end what its predecessor left running; returns the executions ended.

    Task processes are looked for when the previous sandbox died without stopping (its
    ``sandbox.json`` is still there) or left executions unfinished, whichever way it ended.
    """
    unfinished = [e for e in store.all_executions(execution_pb2.Execution)
                  if e.closure.phase not in WORKFLOW_TERMINAL]
    if ended_without_stopping or unfinished:
        end_orphaned_tasks(store.data_dir)
    return end_interrupted_executions(store)


def end_orphaned_tasks(data_dir: Path, settle_seconds: float = 0.3, timeout_seconds: float = 30) -> list[int]:
    """Kill the process groups of task processes left running on ``data_dir``; return once they are gone (Linux).

    A task forked just as its sandbox died shows the sandbox's command line until it
    execs, and only then the one that names the data dir: hence ``settle_seconds``.
    """
    marker = str(Path(data_dir).resolve() / "executions") + os.sep
    return end_process_groups(marker, settle_seconds, timeout_seconds)


def end_process_groups(marker: str, settle_seconds: float = 0.3, timeout_seconds: float = 30) -> list[int]:
    """Kill every process group (but the caller's) with a process whose command line contains ``marker``.

    Scans until a scan finds none and ``settle_seconds`` have passed since the first. A
    killed process counts as gone once it is a zombie; a loaded machine may take a moment
    to get there (a process in uninterruptible I/O dies only when the I/O ends), so this
    waits for it rather than returning while it still runs. Gives up, with a warning,
    after ``timeout_seconds``.
    """
    ended: set[int] = set()
    start = time.monotonic()
    while True:
        groups = _groups_mentioning(marker)
        for group in groups - ended:
            log.warning("ending process group %s left running (its command line names %s)", group, marker)
        ended |= groups
        _kill_groups(groups)
        elapsed = time.monotonic() - start
        if not groups and elapsed >= settle_seconds:
            return sorted(ended)
        if elapsed > timeout_seconds:
            log.warning("process groups %s did not end within %ss", sorted(groups), timeout_seconds)
            return sorted(ended)
        time.sleep(PROC_SCAN_PAUSE_SECONDS)


def _groups_mentioning(marker: str) -> set[int]:
    """Process groups of live (not zombie) processes whose command line contains ``marker``.

    Task processes lead their own groups (their own sessions). A group whose live leader is
    something else (a shell, a viewer someone opened on a log file) is never chosen, nor the
    caller's own group.
    """
    if not PROC.is_dir():
        return set()
    groups = set()
    for pid in _pids():
        if pid == os.getpid() or not _mentions(pid, marker):
            continue
        try:
            group = os.getpgid(pid)
        except OSError:
            continue  # gone meanwhile
        if group != os.getpgrp() and (group == pid or not _alive(group) or _mentions(group, marker)):
            groups.add(group)
    return groups


def _pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def _mentions(pid: int, marker: str) -> bool:
    """True if ``pid`` is alive (not a zombie) and its command line contains ``marker``."""
    try:
        command = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False  # gone meanwhile, or not ours to read
    return marker in command and _alive(pid)


def _alive(pid: int) -> bool:
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill_groups(groups: set[int]) -> None:
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
