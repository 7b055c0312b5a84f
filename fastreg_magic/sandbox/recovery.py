"""What a starting sandbox does about executions its previous process left unfinished.

Nothing can resume after a crash, so every execution, node execution and task attempt
still in a non-terminal phase ends FAILED with a message saying the sandbox restarted, and
its duration runs to now. Finished records are left exactly as they were.

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

log = logging.getLogger("fastreg_magic.sandbox")


def _fail(closure, phase: int) -> None:
    stamp = now_timestamp()
    closure.phase = phase
    closure.error.CopyFrom(core_execution_pb2.ExecutionError(
        code=RESTARTED_CODE, message=RESTARTED_MESSAGE, kind=core_execution_pb2.ExecutionError.SYSTEM))
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
        store.update_execution(key, execution_pb2.Execution,
                               lambda current: _fail(current.closure, core_execution_pb2.WorkflowExecution.FAILED))
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


def end_orphaned_tasks(data_dir: Path, passes: int = 2, pause_seconds: float = 0.3) -> list[int]:
    """Kill the process groups of task processes a dead sandbox on ``data_dir`` left behind (Linux).

    Scanned twice: a task forked just as the sandbox died shows the sandbox's command line
    until it execs, and only then the one that names the data dir.
    """
    ended: set[int] = set()
    for attempt in range(passes):
        if attempt:
            time.sleep(pause_seconds)
        ended |= set(_kill_task_groups(data_dir))
    return sorted(ended)


def _kill_task_groups(data_dir: Path) -> list[int]:
    if not PROC.is_dir():
        return []
    marker = str(Path(data_dir).resolve() / "executions") + os.sep
    groups = set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if marker in command:
            try:
                groups.add(os.getpgid(int(entry.name)))
            except ProcessLookupError:
                continue
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
            log.warning("ended task process group %s left running by a previous sandbox", group)
        except (ProcessLookupError, PermissionError):
            continue
    return sorted(groups)
