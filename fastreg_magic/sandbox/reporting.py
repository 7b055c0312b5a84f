"""Builders for the flyteidl events the executor reports, shaped the way flytepropeller sends them.

FlyteAdmin creates a node execution from the first event it sees for it, so the fields that
identify a node (spec node id, name, parent, retry group, target entity, parent flags) are
repeated on every event of that node. ``occurred_at`` is filled on every event.

    node = NodeReporter(sink, exec_id, "n0", spec_node_id="n0", node_name="t1")
    node.emit(NodePhase.QUEUED, input_data=inputs)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from flyteidl.core import catalog_pb2
from flyteidl.core import execution_pb2 as core_exec
from flyteidl.core import identifier_pb2, literals_pb2
from flyteidl.event import event_pb2
from google.protobuf import timestamp_pb2

from fastreg_magic.sandbox.contract import EventSink

log = logging.getLogger(__name__)

PRODUCER_ID = "fastreg-sandbox"

NodePhase = core_exec.NodeExecution.Phase
TaskPhase = core_exec.TaskExecution.Phase
WorkflowPhase = core_exec.WorkflowExecution.Phase


def now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


class SafeSink:
    """Wraps the control plane's sink so that a store error never kills an executor thread.

    A lost event is logged; the run goes on (the control plane is the one that can explain it).
    """

    def __init__(self, sink: EventSink):
        self._sink = sink

    def workflow(self, event: event_pb2.WorkflowExecutionEvent) -> None:
        self._deliver(self._sink.on_workflow_event, event)

    def node(self, event: event_pb2.NodeExecutionEvent) -> None:
        self._deliver(self._sink.on_node_event, event)

    def task(self, event: event_pb2.TaskExecutionEvent) -> None:
        self._deliver(self._sink.on_task_event, event)

    @staticmethod
    def _deliver(method, event) -> None:
        try:
            method(event)
        except Exception:  # the sink belongs to the control plane; keep running whatever it does
            log.exception("the control plane refused a %s", type(event).__name__)


def workflow_event(
    execution_id: identifier_pb2.WorkflowExecutionIdentifier,
    phase: int,
    *,
    outputs: literals_pb2.LiteralMap | None = None,
    error: core_exec.ExecutionError | None = None,
) -> event_pb2.WorkflowExecutionEvent:
    event = event_pb2.WorkflowExecutionEvent(
        execution_id=execution_id, producer_id=PRODUCER_ID, phase=phase, occurred_at=now()
    )
    if error is not None:
        event.error.CopyFrom(error)
    elif outputs is not None:
        event.output_data.CopyFrom(outputs)
    return event


@dataclass
class NodeReporter:
    """Emits the events of one node execution, repeating its identifying fields on each."""

    sink: SafeSink
    execution_id: identifier_pb2.WorkflowExecutionIdentifier
    node_id: str  # the unique node execution id (nested ids are prefixed by their parent's)
    spec_node_id: str
    node_name: str = ""
    parent_node_id: str | None = None
    retry_group: str = ""
    target_entity: identifier_pb2.Identifier | None = None
    is_parent: bool = False
    is_array: bool = False
    is_dynamic: bool = False
    is_eager: bool = False
    cache_status: int | None = None  # a cached task's catalog.CatalogCacheStatus, sent on its events
    catalog_key: catalog_pb2.CatalogMetadata | None = None  # a cache hit's entry: which task stored it
    deck_uri: str | None = None  # the deck its task wrote, sent on its events once known
    phases: list[int] = field(default_factory=list)

    @property
    def id(self) -> identifier_pb2.NodeExecutionIdentifier:
        return identifier_pb2.NodeExecutionIdentifier(node_id=self.node_id, execution_id=self.execution_id)

    @property
    def last_phase(self) -> int:
        return self.phases[-1] if self.phases else NodePhase.UNDEFINED

    def emit(
        self,
        phase: int,
        *,
        input_data: literals_pb2.LiteralMap | None = None,
        output_data: literals_pb2.LiteralMap | None = None,
        error: core_exec.ExecutionError | None = None,
        child_execution: identifier_pb2.WorkflowExecutionIdentifier | None = None,
        dynamic_workflow: event_pb2.DynamicWorkflowNodeMetadata | None = None,
    ) -> None:
        event = event_pb2.NodeExecutionEvent(
            id=self.id,
            producer_id=PRODUCER_ID,
            phase=phase,
            occurred_at=now(),
            spec_node_id=self.spec_node_id,
            node_name=self.node_name,
            retry_group=self.retry_group,
            is_parent=self.is_parent,
            is_array=self.is_array,
            is_dynamic=self.is_dynamic,
            is_eager=self.is_eager,
            event_version=1,
        )
        event.reported_at.CopyFrom(event.occurred_at)
        if self.parent_node_id is not None:
            event.parent_node_metadata.node_id = self.parent_node_id
        if self.target_entity is not None:
            event.target_entity.CopyFrom(self.target_entity)
        _attach_data(event, input_data, output_data, error)
        if child_execution is not None:
            event.workflow_node_metadata.execution_id.CopyFrom(child_execution)
        if dynamic_workflow is not None:
            event.task_node_metadata.dynamic_workflow.CopyFrom(dynamic_workflow)
        if self.cache_status is not None:
            event.task_node_metadata.cache_status = self.cache_status
        if self.catalog_key is not None:
            event.task_node_metadata.catalog_key.CopyFrom(self.catalog_key)
        if self.deck_uri:
            event.deck_uri = self.deck_uri
        self.phases.append(phase)
        self.sink.node(event)


def task_event(
    task_id: identifier_pb2.Identifier,
    node: identifier_pb2.NodeExecutionIdentifier,
    attempt: int,
    phase: int,
    *,
    task_type: str = "",
    input_data: literals_pb2.LiteralMap | None = None,
    output_data: literals_pb2.LiteralMap | None = None,
    error: core_exec.ExecutionError | None = None,
    logs: list[core_exec.TaskLog] | None = None,
    reason: str = "",
    phase_version: int = 0,
    generated_name: str = "",
    external_resources: list[event_pb2.ExternalResourceInfo] | None = None,
    custom_info: dict | None = None,
) -> event_pb2.TaskExecutionEvent:
    event = event_pb2.TaskExecutionEvent(
        task_id=task_id,
        parent_node_execution_id=node,
        retry_attempt=attempt,
        phase=phase,
        producer_id=PRODUCER_ID,
        occurred_at=now(),
        reason=reason,
        phase_version=phase_version,
        task_type=task_type,
        event_version=1,
    )
    event.reported_at.CopyFrom(event.occurred_at)
    if reason:
        event.reasons.add(occurred_at=event.occurred_at, reason=reason)
    if logs:
        event.logs.extend(logs)
    _attach_data(event, input_data, output_data, error)
    event.metadata.generated_name = generated_name
    event.metadata.plugin_identifier = "container"
    if external_resources:
        event.metadata.external_resources.extend(external_resources)
    if custom_info:
        event.custom_info.update(custom_info)
    return event


def _attach_data(event, input_data, output_data, error) -> None:
    """Inputs inline, then either the error or the outputs (a node or task event carries one of them)."""
    if input_data is not None:
        event.input_data.CopyFrom(input_data)
    if error is not None:
        event.error.CopyFrom(error)
    elif output_data is not None:
        event.output_data.CopyFrom(output_data)
