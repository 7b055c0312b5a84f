"""Run a graph of nodes (a workflow, a sub-workflow, a dynamic job) with independent nodes in parallel.

A node starts once every node it depends on (``upstream_node_ids`` and the nodes its bindings
read) has succeeded; each node runs on its own thread, and only task processes take one of the
executor's bounded slots, so nested graphs can never starve each other. On a failure the
workflow's policy decides: FAIL_IMMEDIATELY aborts the running siblings, FAIL_AFTER_EXECUTABLE_
NODES_COMPLETE lets every node that can still run finish first.

    outcome = run_graph(ctx, Scope(), template.nodes, inputs, template.outputs, ctx.cancel)
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from flyteidl.core import execution_pb2 as core_exec
from flyteidl.core import literals_pb2, workflow_pb2

from fastreg_magic.sandbox.bindings import START_NODE, BindingError, promise_nodes, resolve_inputs
from fastreg_magic.sandbox.reporting import NodePhase, NodeReporter
from fastreg_magic.sandbox.runstate import Cancel, RunContext, Scope

log = logging.getLogger(__name__)

END_NODE = "end-node"
_DONE = (NodePhase.SUCCEEDED, NodePhase.SKIPPED)


@dataclass(frozen=True)
class Outcome:
    """How a node or a graph ended."""

    phase: int  # a NodeExecution.Phase
    outputs: literals_pb2.LiteralMap | None = None
    error: core_exec.ExecutionError | None = None
    failed_node: str = ""  # the node whose failure ended a graph


def failed(message: str, *, code: str = "", kind: int = core_exec.ExecutionError.USER) -> Outcome:
    return Outcome(NodePhase.FAILED, error=core_exec.ExecutionError(code=code, message=message, kind=kind))


def run_graph(
    ctx: RunContext,
    scope: Scope,
    nodes,
    start_outputs: literals_pb2.LiteralMap,
    output_bindings,
    cancel: Cancel,
    *,
    on_failure: int = workflow_pb2.WorkflowMetadata.FAIL_IMMEDIATELY,
) -> Outcome:
    """Run ``nodes`` to the end; the outcome carries the graph's outputs or its first error."""
    graph_cancel = cancel.child()
    pending = {node.id: node for node in nodes if node.id not in (START_NODE, END_NODE)}
    deps = {
        node_id: (set(node.upstream_node_ids) | promise_nodes(node.inputs) | _branch_reads(node)) & set(pending)
        for node_id, node in pending.items()
    }
    results: dict[str, Outcome] = {}
    available = {START_NODE: start_outputs}
    finished: queue.Queue = queue.Queue()
    running: set[str] = set()
    first_error: tuple[str, core_exec.ExecutionError] | None = None

    while pending or running:
        if first_error is None or on_failure != workflow_pb2.WorkflowMetadata.FAIL_IMMEDIATELY:
            for node_id in [n for n in pending if deps[n] <= results.keys() and not graph_cancel.is_set()]:
                upstream = [results[d].phase for d in deps[node_id]]
                if any(phase not in _DONE for phase in upstream):
                    continue
                node = pending.pop(node_id)
                running.add(node_id)
                skip = any(phase == NodePhase.SKIPPED for phase in upstream)
                # queued here, one after another in the workflow's order, so the control plane
                # creates (and lists) the node executions in that order, as propeller's do
                try:
                    queued = _queue_node(ctx, scope, node, available, skip=skip)
                except Exception as exc:  # a bug must end the node, never the graph
                    finished.put((node_id, _crashed(node, exc)))
                    continue
                threading.Thread(
                    target=_run_node_thread,
                    args=(ctx, scope, node, queued, dict(available), graph_cancel, finished),
                    name=f"node-{scope.unique_id(node_id)}",
                    daemon=True,
                ).start()
        if not running:
            break  # what is left waits on nodes that failed
        node_id, outcome = finished.get()
        running.discard(node_id)
        results[node_id] = outcome
        if outcome.phase == NodePhase.SUCCEEDED and outcome.outputs is not None:
            available[node_id] = outcome.outputs
        elif outcome.phase not in _DONE and first_error is None and outcome.phase != NodePhase.ABORTED:
            first_error = (node_id, outcome.error or core_exec.ExecutionError(message="failed"))
            if on_failure == workflow_pb2.WorkflowMetadata.FAIL_IMMEDIATELY:
                graph_cancel.cancel(f"node {node_id} failed")

    if cancel.is_set():
        return Outcome(NodePhase.ABORTED, error=core_exec.ExecutionError(code="Aborted", message=cancel.reason))
    if first_error is not None:
        node_id, error = first_error
        return Outcome(
            NodePhase.FAILED,
            error=core_exec.ExecutionError(
                code=error.code, kind=error.kind, message=f"Node [{node_id}] failed: {error.message}"
            ),
            failed_node=node_id,
        )
    try:
        return Outcome(NodePhase.SUCCEEDED, outputs=resolve_inputs(output_bindings, available))
    except BindingError as exc:
        return failed(f"The outputs could not be collected: {exc}", code="OutputsNotFound")


def _branch_reads(node: workflow_pb2.Node) -> set[str]:
    """Branch nodes also wait for the nodes their then/else nodes read."""
    if not node.HasField("branch_node"):
        return set()
    block = node.branch_node.if_else
    nodes = [block.case.then_node, *(case.then_node for case in block.other)]
    if block.HasField("else_node"):
        nodes.append(block.else_node)
    found: set[str] = set()
    for inner in nodes:
        found |= promise_nodes(inner.inputs) | _branch_reads(inner)
    return found


def _run_node_thread(ctx, scope, node, queued, available, cancel, finished: queue.Queue) -> None:
    try:
        outcome = _run_queued(ctx, scope, node, queued, available, cancel)
    except Exception as exc:  # a bug must end the node, never hang the graph
        outcome = _crashed(node, exc)
    finished.put((node.id, outcome))


def _crashed(node, exc: Exception) -> Outcome:
    log.exception("node %s crashed", node.id)
    return failed(f"The sandbox failed while running node {node.id!r}: {exc!r}", code="SandboxError",
                  kind=core_exec.ExecutionError.SYSTEM)


@dataclass(frozen=True)
class _Queued:
    """A node whose execution exists: its reporter, and its inputs or how it already ended."""

    reporter: NodeReporter
    inputs: literals_pb2.LiteralMap | None = None
    ended: Outcome | None = None


def execute_node(ctx: RunContext, scope: Scope, node, available, cancel: Cancel, *, skip: bool = False) -> Outcome:
    """Resolve inputs, report QUEUED, run the node's handler, report how it ended."""
    queued = _queue_node(ctx, scope, node, available, skip=skip)
    return _run_queued(ctx, scope, node, queued, available, cancel)


def _queue_node(ctx: RunContext, scope: Scope, node, available, *, skip: bool) -> _Queued:
    """The node's first event: QUEUED with its inputs (or SKIPPED, or FAILED when they cannot be resolved)."""
    from fastreg_magic.sandbox.nodes import prepare_reporter

    unique_id = scope.unique_id(node.id)
    reporter = NodeReporter(
        sink=ctx.sink,
        execution_id=ctx.execution_id,
        node_id=unique_id,
        spec_node_id=node.id,
        node_name=node.metadata.name or node.id,
        parent_node_id=scope.parent_unique_id,
        retry_group=scope.retry_group if scope.parent_unique_id is not None else "",
    )
    prepare_reporter(ctx, scope, node, reporter)
    if skip:
        reporter.emit(NodePhase.SKIPPED)
        return _Queued(reporter, ended=Outcome(NodePhase.SKIPPED))
    try:
        inputs = resolve_inputs(node.inputs, available)
    except BindingError as exc:
        outcome = failed(f"The inputs of node {node.id!r} could not be resolved: {exc}", code="BindingError")
        reporter.emit(NodePhase.FAILED, error=outcome.error)
        return _Queued(reporter, ended=outcome)
    node_dir = ctx.node_dir(unique_id)
    node_dir.mkdir(parents=True, exist_ok=True)
    (node_dir / "inputs.pb").write_bytes(inputs.SerializeToString())
    reporter.emit(NodePhase.QUEUED, input_data=inputs)
    return _Queued(reporter, inputs=inputs)


def _run_queued(ctx: RunContext, scope: Scope, node, queued: _Queued, available, cancel: Cancel) -> Outcome:
    """Run a queued node's handler and report how it ended."""
    from fastreg_magic.sandbox.nodes import handler_for

    if queued.ended is not None:
        return queued.ended
    reporter, node_cancel = queued.reporter, cancel.child()
    handler = handler_for(node)
    outcome = handler(ctx, scope, node, queued.inputs, available, reporter, node_cancel)
    if node_cancel.is_set() and outcome.phase not in _DONE:
        outcome = Outcome(NodePhase.ABORTED, error=core_exec.ExecutionError(code="Aborted", message=node_cancel.reason))
    _report_end(reporter, outcome)
    return outcome


def _report_end(reporter: NodeReporter, outcome: Outcome) -> None:
    if outcome.phase == NodePhase.SUCCEEDED:
        reporter.emit(NodePhase.SUCCEEDED, output_data=outcome.outputs or literals_pb2.LiteralMap())
    elif outcome.phase == NodePhase.SKIPPED:
        reporter.emit(NodePhase.SKIPPED)
    else:
        reporter.emit(outcome.phase, error=outcome.error)
