"""Reading a run's state out of FlyteAdmin's protos: phases, the node table, the graph, outputs.

Pure functions over flyteidl messages, so the watcher, the `Run` object and the tests share
one reading of what the backend said. Nothing here makes an RPC.

    phase_name(WorkflowExecution.RUNNING)          -> "RUNNING"
    workflow_graph(compiled_workflow)              -> Graph(nodes=[GraphNode("n0", "mod.t1", ...)], ...)
    node_statuses(graph, node_executions, tries)   -> [NodeStatus(node="n0", task="mod.t1", phase=...)]
    parse_execution_ref("p:d:abc")                 -> ("p", "d", "abc", None)
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from flyteidl.core import catalog_pb2
from flyteidl.core import execution_pb2 as core_exec

from fastreg_magic.errors import RunError

# Phases after which a run or node never changes again.
RUN_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT"})
NODE_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "ABORTED", "SKIPPED", "TIMED_OUT", "RECOVERED"})

# A node the backend has not reported on yet; Flyte itself has no phase for it.
NOT_STARTED = "NOT_STARTED"

# flytepropeller's implicit nodes: they carry no work and only clutter the table.
START_NODE = "start-node"
END_NODE = "end-node"


def phase_name(phase: int) -> str:
    """Flyte's name for a workflow execution phase (``"SUCCEEDED"``)."""
    return core_exec.WorkflowExecution.Phase.Name(phase) if phase in _RUN_PHASES else "UNDEFINED"


def node_phase_name(phase: int) -> str:
    return core_exec.NodeExecution.Phase.Name(phase) if phase in _NODE_PHASES else "UNDEFINED"


_RUN_PHASES = set(core_exec.WorkflowExecution.Phase.values())
_NODE_PHASES = set(core_exec.NodeExecution.Phase.values())


def timestamp(ts) -> dt.datetime | None:
    """A protobuf Timestamp as an aware datetime, None when unset (seconds and nanos both 0)."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=dt.timezone.utc)


def seconds(duration) -> float | None:
    if duration is None or (duration.seconds == 0 and duration.nanos == 0):
        return None
    return duration.ToTimedelta().total_seconds()


@dataclass(frozen=True)
class GraphNode:
    """One node of a workflow as registered: what it runs and what it waits for."""

    id: str
    task: str | None  # the task (or sub-workflow / launch plan) it runs, fully qualified
    kind: str  # "task", "workflow", "launch plan", "branch", "gate", "array"
    upstream: tuple[str, ...] = ()
    gate: Any = field(default=None, compare=False)  # a gate node's ``core.GateNode``: sleep, signal or approve


@dataclass(frozen=True)
class Graph:
    nodes: tuple[GraphNode, ...] = ()

    @property
    def edges(self) -> list[tuple[str, str]]:
        ids = {n.id for n in self.nodes}
        return [(u, n.id) for n in self.nodes for u in n.upstream if u in ids]


@dataclass(frozen=True)
class NodeStatus:
    """One row of a run's node table."""

    node: str
    task: str | None
    phase: str
    started: dt.datetime | None = None
    duration: float | None = None  # seconds; for a running node, the time so far
    retries: int = 0
    error: str | None = None
    # The tree below this node: a sub-workflow's or dynamic task's nodes, a map task's elements.
    children: tuple["NodeStatus", ...] = ()
    path: str = ""  # node ids from the top, "n1/n0"; a map task element is "n2[3]"
    child_run: str | None = None  # the execution a launch-plan node started
    truncated: bool = False  # has children deeper than the table follows
    cached: bool = False  # its outputs came from the task cache: the task did not run
    # Its task's logs as the backend names and links them: (name, URI), a retried task's attempts in order.
    logs: tuple[tuple[str, str], ...] = ()
    # A gate node: what it is ("sleep 30s", "waiting for signal v (int)") and, while it waits, how to let it pass.
    gate: str = ""
    gate_hint: str = ""
    # FlyteAdmin's id of the node execution ("n0-0-dn1" for a dynamic task's child); "" before it ran.
    execution_id: str = ""
    # Where the backend keeps the HTML report (Flyte Deck) its task wrote; "" for none (`runs_decks`).
    deck_uri: str = ""

    @property
    def label(self) -> str:
        return self.path or self.node


def workflow_graph(compiled_workflow) -> Graph:
    """The top-level nodes of a compiled workflow (``core.compiler_pb2.CompiledWorkflow``), in order."""
    template = compiled_workflow.template
    upstream = {k: tuple(v.ids) for k, v in compiled_workflow.connections.upstream.items()}
    nodes = []
    for node in template.nodes:
        if node.id in (START_NODE, END_NODE):
            continue
        task, kind = _node_target(node)
        declared = tuple(node.upstream_node_ids) or upstream.get(node.id, ())
        gate = node.gate_node if kind == "gate" else None
        nodes.append(GraphNode(node.id, task, kind, tuple(u for u in declared if u not in (START_NODE, END_NODE)), gate))
    return Graph(tuple(_topological(nodes)))


def _node_target(node) -> tuple[str | None, str]:
    target = node.WhichOneof("target")
    if target == "task_node":
        return node.task_node.reference_id.name, "task"
    if target == "workflow_node":
        ref = node.workflow_node
        if ref.WhichOneof("reference") == "launchplan_ref":
            return ref.launchplan_ref.name, "launch plan"
        return ref.sub_workflow_ref.name, "workflow"
    if target == "array_node":
        inner, _ = _node_target(node.array_node.node)
        return inner, "array"
    if target == "branch_node":
        return None, "branch"
    if target == "gate_node":
        return None, "gate"
    return None, target or "node"


def _topological(nodes: list[GraphNode]) -> list[GraphNode]:
    """Nodes ordered so each comes after what it waits for; ties keep the declared order."""
    by_id = {n.id: n for n in nodes}
    placed: list[GraphNode] = []
    seen: set[str] = set()

    def visit(node: GraphNode, stack: frozenset) -> None:
        if node.id in seen or node.id in stack:
            return
        for up in node.upstream:
            if up in by_id:
                visit(by_id[up], stack | {node.id})
        seen.add(node.id)
        placed.append(node)

    for node in nodes:
        visit(node, frozenset())
    return placed


def node_statuses(
    graph: Graph, node_executions, retries: dict[str, int], now: dt.datetime | None = None, *, nested: bool = False
) -> list[NodeStatus]:
    """Join the registered graph with the backend's node executions (``admin.NodeExecution`` protos).

    Nodes in the graph that have no execution yet are ``NOT_STARTED``; executions for nodes the
    graph does not know (a single-task run, a dynamic workflow's children) are listed after them.
    ``nested`` rows are the children of a parent node, which carry their parent's attempt as
    ``retry_group``; at the top level such rows belong to no one and are skipped.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    executions = {}
    for ne in node_executions:
        node_id = ne.metadata.spec_node_id or ne.id.node_id
        if node_id in (START_NODE, END_NODE) or (ne.metadata.retry_group and not nested):
            continue
        executions[node_id] = ne
    rows = []
    for gnode in graph.nodes:
        rows.append(_row(gnode.id, gnode.task, executions.pop(gnode.id, None), retries, now))
    for node_id, ne in executions.items():
        rows.append(_row(node_id, None, ne, retries, now))
    return rows


def _row(node_id, task, ne, retries, now) -> NodeStatus:
    if ne is None:
        return NodeStatus(node_id, task, NOT_STARTED)
    closure = ne.closure
    phase = node_phase_name(closure.phase)
    started = timestamp(closure.started_at)
    duration = seconds(closure.duration)
    if duration is None and started is not None and phase not in NODE_TERMINAL:
        duration = max(0.0, (now - started).total_seconds())
    error = closure.error.message if closure.HasField("error") else None
    cached = closure.task_node_metadata.cache_status == catalog_pb2.CACHE_HIT
    return NodeStatus(node_id, task, phase, started, duration, retries.get(node_id, 0), error, cached=cached,
                      execution_id=ne.id.node_id, deck_uri=closure.deck_uri)


def run_error(closure) -> str | None:
    """What went wrong, for a run that failed or was aborted (``admin.ExecutionClosure``)."""
    result = closure.WhichOneof("output_result")
    if result == "error":
        return closure.error.message or closure.error.code or "the run failed without a message"
    if result == "abort_metadata":
        who = f" by {closure.abort_metadata.principal}" if closure.abort_metadata.principal else ""
        return f"aborted{who}: {closure.abort_metadata.cause}"
    if result == "abort_cause":
        return f"aborted: {closure.abort_cause}"
    return None


@dataclass
class RunState:
    """What one GetExecution said about a run, kept as one value so readers never see half an update."""

    phase: str = "UNDEFINED"
    created: dt.datetime | None = None
    started: dt.datetime | None = None
    duration: float | None = None
    updated: dt.datetime | None = None
    error: str | None = None

    @classmethod
    def from_execution(cls, execution) -> RunState:
        closure = execution.closure
        return cls(
            phase=phase_name(closure.phase),
            created=timestamp(closure.created_at),
            started=timestamp(closure.started_at),
            duration=seconds(closure.duration),
            updated=timestamp(closure.updated_at),
            error=run_error(closure),
        )


_CONSOLE_RE = re.compile(r"^(?P<console>https?://.+?)/projects/(?P<p>[^/]+)/domains/(?P<d>[^/]+)/executions/(?P<n>[^/?#]+)")
_NAME_RE = re.compile(r"^[a-z0-9][-a-z0-9_]*$", re.IGNORECASE)


def parse_execution_ref(text: str) -> tuple[str | None, str | None, str, str | None]:
    """(project, domain, name, console prefix) from a URL, ``ex:p:d:n``, ``p:d:n``, ``p/d/n`` or a name."""
    text = (text or "").strip().strip("'\"")
    match = _CONSOLE_RE.match(text)
    if match:
        return match["p"], match["d"], match["n"], match["console"]
    if text.startswith("flyte://v1/"):
        parts = text[len("flyte://v1/") :].split("/")
        if len(parts) >= 3:
            return parts[0], parts[1], parts[2], None
    if text.startswith("ex:"):
        text = text[3:]
    for sep in (":", "/"):
        parts = text.split(sep)
        if len(parts) == 3 and all(parts):
            return parts[0], parts[1], parts[2], None
    if _NAME_RE.match(text):
        return None, None, text, None
    raise RunError(
        f"{text!r} is not an execution id or URL.",
        "Give a console URL (…/projects/P/domains/D/executions/NAME), P:D:NAME, or an execution name.",
    )
