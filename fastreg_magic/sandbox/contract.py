"""The seam between the sandbox's control plane (service + store) and its executor.

The control plane hands the executor an :class:`ExecutionJob` (a compiled workflow, its
inputs, where to write data) and the executor reports back only through flyteidl event
protos, the way flytepropeller reports to FlyteAdmin (``CreateWorkflowEvent``,
``CreateNodeEvent``, ``CreateTaskEvent``). Neither side knows the other's internals:

    service.CreateExecution ──ExecutionJob──▶ executor.submit()
    store.apply_*_event()   ◀──event protos── executor (from its worker threads)
    service.TerminateExecution ─────────────▶ executor.terminate()

Launch-plan nodes start child executions through :class:`ChildLauncher`, which the
control plane implements with its own CreateExecution logic.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from flyteidl.admin import execution_pb2
from flyteidl.core import compiler_pb2, execution_pb2 as core_execution_pb2
from flyteidl.core import identifier_pb2, literals_pb2
from flyteidl.event import event_pb2


@dataclass(frozen=True)
class ExecutionJob:
    """Everything the executor needs to run one workflow execution.

    ``closure`` is what the compiler produced at registration (primary workflow, its
    sub-workflows, and every task template it references). ``data_dir`` is an absolute
    local directory that belongs to this execution: per-node ``inputs.pb``/``outputs.pb``
    and each attempt's working directory live below it. ``raw_output_prefix`` is where
    tasks write offloaded data (files, directories): a store's URI (``s3://bucket/raw``) or a
    local path; each attempt writes under its own place below it (``raw_outputs``).
    """

    execution_id: identifier_pb2.WorkflowExecutionIdentifier
    closure: compiler_pb2.CompiledWorkflowClosure
    inputs: literals_pb2.LiteralMap
    data_dir: str
    raw_output_prefix: str
    envs: dict[str, str] = field(default_factory=dict)
    service_account: str = ""
    max_parallelism: int = 0  # 0 = the executor's own bound
    parent_node_execution: identifier_pb2.NodeExecutionIdentifier | None = None
    spec: execution_pb2.ExecutionSpec | None = None


@dataclass(frozen=True)
class ChildOutcome:
    """How a child execution (a launch-plan node) ended."""

    phase: int  # core_execution_pb2.WorkflowExecution.Phase
    outputs: literals_pb2.LiteralMap | None = None
    error: core_execution_pb2.ExecutionError | None = None


class EventSink(Protocol):
    """Receives the executor's events; the control plane stores them (thread-safe)."""

    def on_workflow_event(self, event: event_pb2.WorkflowExecutionEvent) -> None: ...

    def on_node_event(self, event: event_pb2.NodeExecutionEvent) -> None: ...

    def on_task_event(self, event: event_pb2.TaskExecutionEvent) -> None: ...


class ChildLauncher(Protocol):
    """Starts and follows the child executions of launch-plan nodes."""

    def launch_child(
        self,
        launch_plan_id: identifier_pb2.Identifier,
        inputs: literals_pb2.LiteralMap,
        parent: identifier_pb2.NodeExecutionIdentifier,
        *,
        element: int | None = None,
        attempt: int = 0,
    ) -> identifier_pb2.WorkflowExecutionIdentifier:
        """Start (or find again) the child of node ``parent`` at ``attempt``; ``element`` is the index
        of a map task's element, each of which has its own child."""
        ...

    def wait_child(
        self, execution_id: identifier_pb2.WorkflowExecutionIdentifier, stop: threading.Event
    ) -> ChildOutcome | None:
        """Block until the child ends (its outcome) or ``stop`` is set (None)."""
        ...

    def terminate_child(self, execution_id: identifier_pb2.WorkflowExecutionIdentifier, cause: str) -> None: ...

    def eager_children(
        self, execution_id: identifier_pb2.WorkflowExecutionIdentifier
    ) -> list[tuple[identifier_pb2.WorkflowExecutionIdentifier, int]]:
        """The runs an eager task of ``execution_id`` launched (oldest first) and their workflow phases."""
        ...
