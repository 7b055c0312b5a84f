"""Applies the executor's flyteidl events to the store, as FlyteAdmin's Create*Event RPCs do.

Workflow, node and task execution events carry a phase, when it happened, and what was
produced (inputs, outputs or an error, by URI or inline). The recorder keeps the phase,
sets ``started_at`` on the first RUNNING, ``duration`` on the terminal phase, keeps
parent/child node relations (``parent_node_metadata``), the child execution of a
launch-plan node, a dynamic node's compiled workflow, and every task attempt's logs.
An event that would move a finished record to another phase is ignored, as FlyteAdmin
refuses it (``AlreadyInTerminalState``); so is a non-terminal event for an execution being
aborted (ABORTING, set by TerminateExecution until the executor reports how it ended).

It implements ``contract.EventSink``; the executor calls it from its worker threads.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flyteidl.admin import execution_pb2, node_execution_pb2, task_execution_pb2
from flyteidl.core import execution_pb2 as core_execution_pb2
from flyteidl.core import literals_pb2
from flyteidl.event import event_pb2

from fastreg_magic.sandbox.store import Store
from fastreg_magic.sandbox.validation import id_text

log = logging.getLogger("fastreg_magic.sandbox")

WF = core_execution_pb2.WorkflowExecution
NODE = core_execution_pb2.NodeExecution
TASK = core_execution_pb2.TaskExecution
WORKFLOW_TERMINAL = {WF.SUCCEEDED, WF.FAILED, WF.ABORTED, WF.TIMED_OUT}
NODE_TERMINAL = {NODE.SUCCEEDED, NODE.FAILED, NODE.ABORTED, NODE.SKIPPED, NODE.TIMED_OUT, NODE.RECOVERED}
TASK_TERMINAL = {TASK.SUCCEEDED, TASK.FAILED, TASK.ABORTED}


def read_literal_map(uri: str) -> bytes | None:
    """The bytes of a LiteralMap stored at a local path (plain or file://); None if absent."""
    if not uri:
        return None
    path = Path(uri.removeprefix("file://"))
    try:
        return path.read_bytes()
    except OSError:
        return None


def _apply_timing(closure, phase, occurred_at, running_phases, terminal_phases) -> None:
    if phase in running_phases and not closure.started_at.seconds:
        closure.started_at.CopyFrom(occurred_at)
    if phase in terminal_phases:
        start = closure.started_at if closure.started_at.seconds else closure.created_at
        closure.duration.FromNanoseconds(max(0, occurred_at.ToNanoseconds() - start.ToNanoseconds()))
    closure.updated_at.CopyFrom(occurred_at)


def _outputs_bytes(event) -> bytes | None:
    if event.HasField("output_data"):
        return event.output_data.SerializeToString()
    if event.output_uri:
        return read_literal_map(event.output_uri)
    return None


class EventRecorder:
    """The control plane's ``EventSink``: stores every event's effect."""

    def __init__(self, store: Store):
        self.store = store

    def on_workflow_event(self, event: event_pb2.WorkflowExecutionEvent) -> None:
        try:
            self._workflow_event(event)
        except Exception:  # noqa: BLE001 - a bad event must not kill the executor's thread
            log.exception("could not record workflow event for %s", id_text(event.execution_id))

    def on_node_event(self, event: event_pb2.NodeExecutionEvent) -> None:
        try:
            self._node_event(event)
        except Exception:  # noqa: BLE001
            log.exception("could not record node event for %s", event.id.node_id)

    def on_task_event(self, event: event_pb2.TaskExecutionEvent) -> None:
        try:
            self._task_event(event)
        except Exception:  # noqa: BLE001
            log.exception("could not record task event for %s", event.parent_node_execution_id.node_id)

    # -- workflow --------------------------------------------------------------------------

    def _workflow_event(self, event: event_pb2.WorkflowExecutionEvent) -> None:
        key = (event.execution_id.project, event.execution_id.domain, event.execution_id.name)

        def change(execution: execution_pb2.Execution):
            closure = execution.closure
            if closure.phase in WORKFLOW_TERMINAL and event.phase != closure.phase:
                log.debug("ignoring %s for finished execution %s", WF.Phase.Name(event.phase), key)
                return None
            if closure.phase == WF.ABORTING and event.phase not in WORKFLOW_TERMINAL:
                # FlyteAdmin: from ABORTING only a terminal phase is accepted (a run aborted before it started)
                log.debug("ignoring %s for aborting execution %s", WF.Phase.Name(event.phase), key)
                return None
            closure.phase = event.phase
            _apply_timing(closure, event.phase, event.occurred_at, {WF.RUNNING}, WORKFLOW_TERMINAL)
            if event.output_uri:
                closure.outputs.uri = event.output_uri
            # outputs, error and abort_metadata share a oneof: an abort keeps the cause given to Terminate
            if event.phase == WF.ABORTED:
                if not closure.abort_metadata.cause:
                    closure.abort_metadata.cause = event.error.message or "aborted"
            elif event.HasField("error"):
                closure.error.CopyFrom(event.error)
            return _outputs_bytes(event)

        if self.store.update_execution(key, execution_pb2.Execution, change) is None:
            log.warning("workflow event for unknown execution %s", key)

    # -- node ------------------------------------------------------------------------------

    def _node_event(self, event: event_pb2.NodeExecutionEvent) -> None:
        exec_id = event.id.execution_id
        key = (exec_id.project, exec_id.domain, exec_id.name, event.id.node_id)
        with self.store.lock:
            node = self.store.get_node_execution(key, node_execution_pb2.NodeExecution)
            if node is None:
                node = node_execution_pb2.NodeExecution(id=event.id)
                node.closure.created_at.CopyFrom(event.occurred_at)
            if not _advance(node.closure, event, {NODE.RUNNING, NODE.DYNAMIC_RUNNING}, NODE_TERMINAL):
                return
            if event.input_uri:
                node.input_uri = event.input_uri
            if event.deck_uri:
                node.closure.deck_uri = event.deck_uri
            self._node_metadata(node, event)
            dynamic = _task_node_metadata(node.closure, event)
            if event.HasField("workflow_node_metadata"):
                node.closure.workflow_node_metadata.executionId.CopyFrom(event.workflow_node_metadata.execution_id)
            self.store.put_node_execution(
                key, self._parent_id(event), node,
                inputs=event.input_data.SerializeToString() if event.HasField("input_data") else None,
                outputs=_outputs_bytes(event),
                dynamic=dynamic.SerializeToString() if dynamic is not None else None,
            )

    @staticmethod
    def _node_metadata(node, event) -> None:
        metadata = node.metadata
        if event.retry_group:
            metadata.retry_group = event.retry_group
        if event.spec_node_id:
            metadata.spec_node_id = event.spec_node_id
        metadata.is_parent_node = metadata.is_parent_node or event.is_parent
        metadata.is_dynamic = metadata.is_dynamic or event.is_dynamic
        metadata.is_array = metadata.is_array or event.is_array
        metadata.is_eager = metadata.is_eager or event.is_eager

    @staticmethod
    def _parent_id(event) -> str | None:
        if event.HasField("parent_node_metadata") and event.parent_node_metadata.node_id:
            return event.parent_node_metadata.node_id
        if event.HasField("parent_task_metadata"):
            return event.parent_task_metadata.id.node_execution_id.node_id or None
        return None

    # -- task ------------------------------------------------------------------------------

    def _task_event(self, event: event_pb2.TaskExecutionEvent) -> None:
        node_id = event.parent_node_execution_id
        exec_id = node_id.execution_id
        key = (exec_id.project, exec_id.domain, exec_id.name, node_id.node_id, id_text(event.task_id),
               event.retry_attempt)
        with self.store.lock:
            task = self.store.get_task_execution(key, task_execution_pb2.TaskExecution)
            if task is None:
                task = task_execution_pb2.TaskExecution()
                task.id.task_id.CopyFrom(event.task_id)
                task.id.node_execution_id.CopyFrom(node_id)
                task.id.retry_attempt = event.retry_attempt
                task.closure.created_at.CopyFrom(event.occurred_at)
            if not _advance(task.closure, event, {TASK.RUNNING}, TASK_TERMINAL):
                return
            if event.input_uri:
                task.input_uri = event.input_uri
            _task_details(task.closure, event)
            self.store.put_task_execution(
                key, task,
                inputs=event.input_data.SerializeToString() if event.HasField("input_data") else None,
                outputs=_outputs_bytes(event),
            )


def _advance(closure, event, running_phases, terminal_phases) -> bool:
    """Apply a node or task event's phase, timing, output location and error; False if already finished.

    A finished record keeps its phase (FlyteAdmin refuses such events as ``AlreadyInTerminalState``).
    """
    if closure.phase in terminal_phases and event.phase != closure.phase:
        return False
    closure.phase = event.phase
    _apply_timing(closure, event.phase, event.occurred_at, running_phases, terminal_phases)
    if event.output_uri:
        closure.output_uri = event.output_uri
    if event.HasField("error"):
        closure.error.CopyFrom(event.error)
    return True


def _task_node_metadata(closure, event) -> node_execution_pb2.DynamicWorkflowNodeMetadata | None:
    """Copy a task node's cache and checkpoint details; return its dynamic workflow, if it generated one."""
    if not event.HasField("task_node_metadata"):
        return None
    meta = event.task_node_metadata
    closure.task_node_metadata.cache_status = meta.cache_status
    closure.task_node_metadata.catalog_key.CopyFrom(meta.catalog_key)
    closure.task_node_metadata.checkpoint_uri = meta.checkpoint_uri
    if not meta.HasField("dynamic_workflow"):
        return None
    closure.dynamic_job_spec_uri = meta.dynamic_workflow.dynamic_job_spec_uri
    return node_execution_pb2.DynamicWorkflowNodeMetadata(
        id=meta.dynamic_workflow.id,
        compiled_workflow=meta.dynamic_workflow.compiled_workflow,
        dynamic_job_spec_uri=meta.dynamic_workflow.dynamic_job_spec_uri,
    )


def _task_details(closure, event) -> None:
    """Logs (once each), reasons, type, plugin details and event version of a task attempt."""
    known_logs = {(entry.name, entry.uri) for entry in closure.logs}
    closure.logs.extend(entry for entry in event.logs if (entry.name, entry.uri) not in known_logs)
    if event.reason:
        closure.reason = event.reason
    for reason in event.reasons:
        closure.reasons.add(occurred_at=reason.occurred_at, message=reason.reason)
    if event.reason and not event.reasons:
        closure.reasons.add(occurred_at=event.occurred_at, message=event.reason)
    if event.task_type:
        closure.task_type = event.task_type
    if event.HasField("custom_info"):
        closure.custom_info.CopyFrom(event.custom_info)
    if event.HasField("metadata"):
        closure.metadata.CopyFrom(event.metadata)
    closure.event_version = event.event_version


def literal_map_from(data: bytes | None) -> literals_pb2.LiteralMap:
    literal_map = literals_pb2.LiteralMap()
    if data:
        literal_map.ParseFromString(data)
    return literal_map
