"""The state one workflow execution carries through its node handlers.

``Cancel`` is a ``threading.Event`` that is also set when any ancestor is: terminating the
execution cancels every nested graph, and a failing node cancels only its siblings. ``RunContext``
holds what the handlers share (the job, the sinks, the slots that bound concurrent task
processes, the live process groups, the entities of the closure); ``Scope`` is where in the node
tree a graph runs, which gives nested node executions their propeller-style unique ids.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from flyteidl.core import compiler_pb2, identifier_pb2, tasks_pb2, workflow_pb2

from fastreg_magic.sandbox import raw_outputs
from fastreg_magic.sandbox.archive_guard import ArchiveGuard
from fastreg_magic.sandbox.contract import ChildLauncher, ExecutionJob
from fastreg_magic.sandbox.reporting import SafeSink
from fastreg_magic.sandbox.signals import SignalBoard
from fastreg_magic.sandbox.taskrun import ProcessRegistry

_WAIT_SLICE_S = 0.2


class Cancel(threading.Event):
    """An event that also reads as set when its parent is; carries the reason it was set."""

    def __init__(self, parent: Cancel | None = None):
        super().__init__()
        self.parent = parent
        self._reason = ""

    def is_set(self) -> bool:
        return super().is_set() or (self.parent is not None and self.parent.is_set())

    def cancel(self, reason: str) -> None:
        if not super().is_set():
            self._reason = reason
            self.set()

    @property
    def reason(self) -> str:
        if super().is_set():
            return self._reason
        return self.parent.reason if self.parent is not None else ""

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = _WAIT_SLICE_S if deadline is None else min(_WAIT_SLICE_S, deadline - time.monotonic())
            if left <= 0:
                return False
            super().wait(left)
        return True

    def child(self) -> Cancel:
        return Cancel(self)


def entity_key(identifier: identifier_pb2.Identifier) -> tuple[str, str, str, str]:
    return (identifier.project, identifier.domain, identifier.name, identifier.version)


def show_id(identifier: identifier_pb2.Identifier) -> str:
    return f"{identifier.project}/{identifier.domain}/{identifier.name}@{identifier.version}"


@dataclass(frozen=True)
class Scope:
    """Where a graph runs: under which parent node execution (None at the top) and its attempt."""

    parent_unique_id: str | None = None
    retry_group: str = ""
    tasks: dict = field(default_factory=dict)  # extra task templates (a dynamic job's)
    workflows: dict = field(default_factory=dict)  # extra sub-workflow templates (a dynamic job's)

    def unique_id(self, node_id: str) -> str:
        # flytepropeller's GenerateUniqueID: <parent unique id>-<parent attempt>-<node id>
        if self.parent_unique_id is None:
            return node_id
        return f"{self.parent_unique_id}-{self.retry_group or '0'}-{node_id}"

    def nested(self, parent_unique_id: str, attempt: int = 0, *, tasks=None, workflows=None) -> Scope:
        return Scope(
            parent_unique_id=parent_unique_id,
            retry_group=str(attempt),
            tasks={**self.tasks, **(tasks or {})},
            workflows={**self.workflows, **(workflows or {})},
        )


class Slots:
    """Bounds concurrent task processes: the executor's limit and, if set, the execution's own."""

    def __init__(self, shared: threading.Semaphore, own: threading.Semaphore | None):
        self._shared = shared
        self._own = own

    def acquire(self, cancel: Cancel) -> bool:
        """Take a slot, or give up (False) when cancelled while waiting."""
        held = []
        for sem in (self._own, self._shared):
            if sem is None:
                continue
            while not sem.acquire(timeout=_WAIT_SLICE_S):
                if cancel.is_set():
                    for taken in held:
                        taken.release()
                    return False
            held.append(sem)
        return True

    def release(self) -> None:
        for sem in (self._shared, self._own):
            if sem is not None:
                sem.release()


@dataclass
class RunContext:
    """What every node handler of one execution shares."""

    job: ExecutionJob
    sink: SafeSink
    children: ChildLauncher
    slots: Slots
    guard: ArchiveGuard
    task_env: Mapping[str, str] = field(default_factory=dict)  # for every task process: how to reach the sandbox
    cache_dir: Path | None = None  # where cached tasks' outputs are kept (taskcache); None: no caching
    secrets_dir: Path | None = None  # where requested secrets may be kept as files (secrets); None: env only
    signals: SignalBoard | None = None  # what gate nodes wait for (signals); None: gates that wait fail
    cancel: Cancel = field(default_factory=Cancel)
    processes: ProcessRegistry = field(default_factory=ProcessRegistry)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _children: dict = field(default_factory=dict)  # child execution name -> id, while running

    def __post_init__(self):
        closure: compiler_pb2.CompiledWorkflowClosure = self.job.closure
        self.tasks = {entity_key(t.template.id): t.template for t in closure.tasks}
        self.workflows = {entity_key(w.template.id): w.template for w in closure.sub_workflows}
        self.data_dir = Path(self.job.data_dir)

    @property
    def execution_id(self) -> identifier_pb2.WorkflowExecutionIdentifier:
        return self.job.execution_id

    def task(self, scope: Scope, ref: identifier_pb2.Identifier) -> tasks_pb2.TaskTemplate | None:
        key = entity_key(ref)
        return scope.tasks.get(key) or self.tasks.get(key)

    def workflow(self, scope: Scope, ref: identifier_pb2.Identifier) -> workflow_pb2.WorkflowTemplate | None:
        key = entity_key(ref)
        return scope.workflows.get(key) or self.workflows.get(key)

    def node_dir(self, unique_id: str) -> Path:
        return self.data_dir / "nodes" / unique_id

    def raw_output_prefix(self, unique_id: str, attempt: int) -> str:
        """Where one attempt of node ``unique_id`` writes offloaded data: a URI for a bucket prefix."""
        return raw_outputs.attempt_prefix(self.job.raw_output_prefix, self.execution_id.name, unique_id, attempt)

    # child executions (launch-plan nodes), so that terminate can end them
    def track_child(self, child: identifier_pb2.WorkflowExecutionIdentifier) -> None:
        with self._lock:
            self._children[child.name] = child

    def untrack_child(self, child: identifier_pb2.WorkflowExecutionIdentifier) -> bool:
        """Forget a child; True if it was still tracked (nobody terminated it yet)."""
        with self._lock:
            return self._children.pop(child.name, None) is not None

    def take_children(self) -> list[identifier_pb2.WorkflowExecutionIdentifier]:
        with self._lock:
            children, self._children = list(self._children.values()), {}
        return children
