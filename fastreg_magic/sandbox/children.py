"""Child executions of launch-plan nodes: the control plane's side of ``contract.ChildLauncher``.

A launch-plan node starts a real execution of that launch plan, with the parent node
recorded in its metadata (mode CHILD_WORKFLOW, nesting one deeper), through the same
checks as ``CreateExecution``. Its name is derived from the parent execution and node, so
asking twice for the same node's child returns the same execution instead of a second one.
"""

from __future__ import annotations

import hashlib
import threading

from flyteidl.admin import execution_pb2
from flyteidl.core import identifier_pb2

from fastreg_magic.sandbox.contract import ChildOutcome
from fastreg_magic.sandbox.execution_service import TERMINAL_PHASES, execution_key, literal_map
from fastreg_magic.sandbox.validation import GENERATED_NAME_LENGTH, AdminError, id_text

CHILD_POLL_SECONDS = 0.05


class ChildLaunching:
    """Mixin of the Admin servicer implementing ``ChildLauncher`` with its execution logic."""

    def launch_child(self, launch_plan_id, inputs, parent) -> identifier_pb2.WorkflowExecutionIdentifier:
        seed = f"{id_text(parent.execution_id)}/{parent.node_id}".encode()
        name = "f" + hashlib.sha256(seed).hexdigest()[: GENERATED_NAME_LENGTH - 1]
        spec = execution_pb2.ExecutionSpec(launch_plan=launch_plan_id)
        parent_execution = self.get_execution(parent.execution_id)
        spec.raw_output_data_config.CopyFrom(parent_execution.spec.raw_output_data_config)
        existing = self.store.get_execution((parent.execution_id.project, parent.execution_id.domain, name),
                                            execution_pb2.Execution)
        if existing is not None:
            return existing.id
        return self.create_execution(parent.execution_id.project, parent.execution_id.domain, name, spec, inputs,
                                     parent=parent, metadata_mode=execution_pb2.ExecutionMetadata.CHILD_WORKFLOW)

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
