"""Child executions of launch-plan nodes: the control plane's side of ``contract.ChildLauncher``.

A launch-plan node starts a real execution of that launch plan, with the parent node
recorded in its metadata (mode CHILD_WORKFLOW, nesting one deeper), through the same
checks as ``CreateExecution``. Its name is derived as flytepropeller derives it
(``GetChildWorkflowExecutionIDV2``): from the parent execution, the unique id of the node
that launches and that node's attempt. An element of a map task over a launch plan launches
as the array's sub-node ``<array node>-0-n<index>``, so every element gets its own child. The
same node asking again (a retried call, a second look after a restart) finds the same
execution instead of starting a second one.
"""

from __future__ import annotations

import hashlib
import threading

import grpc
from flyteidl.admin import execution_pb2
from flyteidl.core import identifier_pb2

from fastreg_magic.sandbox.contract import ChildOutcome
from fastreg_magic.sandbox.execution_service import TERMINAL_PHASES, execution_key, literal_map
from fastreg_magic.sandbox.validation import GENERATED_NAME_LENGTH, AdminError

CHILD_POLL_SECONDS = 0.05
# The label flytekit gives the runs an eager task launches: the launching execution's name.
EAGER_LABEL = "eager-exec"
# The attempt of an array node whose elements launch: the sandbox runs an array node once.
ARRAY_ATTEMPT = 0


def launching_node_id(parent: identifier_pb2.NodeExecutionIdentifier, element: int | None) -> str:
    """The unique id of the node that launches: the node itself, or an array element's sub-node
    (propeller names it ``n<index>`` under the array node's attempt)."""
    if element is None:
        return parent.node_id
    return f"{parent.node_id}-{ARRAY_ATTEMPT}-n{element}"


def child_execution_name(execution_name: str, node_id: str, attempt: int) -> str:
    """A fixed-length name that is the same every time the same node attempt asks."""
    seed = "/".join((execution_name, node_id, str(attempt))).encode()
    return "f" + hashlib.sha256(seed).hexdigest()[: GENERATED_NAME_LENGTH - 1]


class ChildLaunching:
    """Mixin of the Admin servicer implementing ``ChildLauncher`` with its execution logic."""

    def launch_child(self, launch_plan_id, inputs, parent, *, element: int | None = None,
                     attempt: int = 0) -> identifier_pb2.WorkflowExecutionIdentifier:
        execution = parent.execution_id
        name = child_execution_name(execution.name, launching_node_id(parent, element), attempt)
        key = (execution.project, execution.domain, name)
        existing = self.store.get_execution(key, execution_pb2.Execution)
        if existing is not None:
            return existing.id
        spec = execution_pb2.ExecutionSpec(launch_plan=launch_plan_id)
        spec.raw_output_data_config.CopyFrom(self.get_execution(execution).spec.raw_output_data_config)
        try:
            return self.create_execution(execution.project, execution.domain, name, spec, inputs,
                                         parent=parent, metadata_mode=execution_pb2.ExecutionMetadata.CHILD_WORKFLOW)
        except AdminError as exc:
            if exc.code != grpc.StatusCode.ALREADY_EXISTS:
                raise
            # the same node asked twice at once: both follow the one child
            return self.store.get_execution(key, execution_pb2.Execution).id
    def eager_children(self, execution_id) -> list[tuple[identifier_pb2.WorkflowExecutionIdentifier, int]]:
        """The runs the eager tasks of ``execution_id`` launched, oldest first, with their phases."""
        executions = self.store.list_executions(execution_id.project, execution_id.domain, execution_pb2.Execution)
        launched = [e for e in executions if e.spec.labels.values.get(EAGER_LABEL) == execution_id.name]
        launched.sort(key=lambda e: (e.closure.created_at.seconds, e.closure.created_at.nanos))
        return [(e.id, e.closure.phase) for e in launched]

    def wait_child(self, execution_id, stop: threading.Event) -> ChildOutcome | None:
        while not stop.is_set():
            execution = self.store.get_execution(execution_key(execution_id), execution_pb2.Execution)
            if execution is not None and execution.closure.phase in TERMINAL_PHASES:
                _, outputs = self.store.execution_data(execution_key(execution_id))
                return ChildOutcome(
                    phase=execution.closure.phase,
                    outputs=literal_map(outputs) if outputs else None,
                    error=execution.closure.error if execution.closure.HasField("error") else None,
                )
            stop.wait(CHILD_POLL_SECONDS)
        return None

    def terminate_child(self, execution_id, cause: str) -> None:
        try:
            self.terminate_execution(execution_id, cause)
        except AdminError:
            pass  # already finished: nothing to end
