"""A run's node table as a tree: the nodes inside sub-workflows, dynamic tasks, branches and map tasks.

FlyteAdmin lists a run's top-level nodes; the nodes under a parent node (``metadata.is_parent_node``)
are listed with ``ListNodeExecutions(unique_parent_id=...)``, and a map task's elements are the
external resources of its task execution: each element runs the mapped task itself, and its times are
the ones the sandbox adds to the resource's ``custom_info`` (FlyteAdmin's own leave them out, and
the element's duration blank). `NodeTree` reads them for one `Run`, keeping the
reads light for a follower that redraws the table about once a second:

- a parent that has ended and not changed since the last read is served from memory (a finished
  sub-workflow costs nothing after its first read); a parent still running is read again, since
  its children change while the parent itself does not;
- attempts (retries, the task's name, its log links) are asked once per change of a task node,
  and again while a running node has no log links yet;
- nesting is followed ``MAX_DEPTH`` levels down; deeper parents are marked ``truncated``.

A gate node runs no task: its row says what it is, from the workflow as registered ("sleep 30s",
"signal v (int)", "approval review"), and while it waits, what for and how to let it pass
(``FlyteRemote(...).set_signal("v", "<run>", value)``), since that is what a user watching it needs.
A dynamic task's nodes are in no registered workflow: the workflow it generated is in its node
execution's data (``GetNodeExecutionData`` -> ``dynamic_workflow.compiled_workflow``, as FlyteAdmin
keeps it), asked once per attempt of a dynamic node (``metadata.is_dynamic``) and kept: a run with no
dynamic node never asks, and its gates and not yet started nodes are shown as a sub-workflow's are.

    tree = NodeTree(run)
    tree.rows(graph, subgraphs)   -> [NodeStatus("n0", ..., children=(NodeStatus("n0-0-n0", path="n0/n0"), ...))]
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace

from flyteidl.admin import node_execution_pb2, task_execution_pb2
from flyteidl.core import catalog_pb2
from flyteidl.core import execution_pb2 as core_exec
from google.protobuf import timestamp_pb2

from fastreg_magic.runs_data import (
    NODE_TERMINAL,
    END_NODE,
    START_NODE,
    Graph,
    NodeStatus,
    node_phase_name,
    node_statuses,
    timestamp,
    workflow_graph,
)
from fastreg_magic.errors import FastRegError
from fastreg_magic.runs_errors import rpc

# How many levels of nesting below the top the table follows (sub-workflow in a dynamic in ...).
MAX_DEPTH = 4
PAGE = 200


def _stamp(ne) -> tuple:
    """What changes whenever FlyteAdmin records an event for a node."""
    updated = ne.closure.updated_at
    return (updated.seconds, updated.nanos, ne.closure.phase)


def _child_run(ne) -> str | None:
    """The child execution a launch-plan node started, if any."""
    if ne.closure.HasField("workflow_node_metadata"):
        return ne.closure.workflow_node_metadata.executionId.name or None
    return None


def _cached_task(ne) -> str | None:
    """The task a node answered from the cache ran: the one that stored the entry it read."""
    source = ne.closure.task_node_metadata.catalog_key.source_task_execution
    return source.task_id.name or None


def _is_task_like(ne) -> bool:
    """A node whose work is a task (so it has attempts): not a parent, not a launch plan."""
    node_id = ne.metadata.spec_node_id or ne.id.node_id
    if node_id in (START_NODE, END_NODE):
        return False
    return (not ne.metadata.is_parent_node or ne.metadata.is_dynamic) and _child_run(ne) is None


class NodeTree:
    """Reads and caches the node tree of one run.

    Two readers at once (the follower and a user's ``run.nodes()``) at worst repeat an RPC: the
    caches only ever hold complete answers, replaced whole.
    """

    def __init__(self, run):
        self.run = run
        self._attempts: dict[str, tuple] = {}  # unique node id -> (stamp, Attempts)
        self._children: dict[str, tuple] = {}  # unique parent id -> (stamp, [NodeStatus])
        # (unique node id, attempt) of a dynamic node -> the graphs of the workflow it generated
        self._dynamic: dict[tuple[str, int], tuple[Graph, dict[str, Graph]]] = {}

    # -- public ------------------------------------------------------------------------------
    def rows(self, graph: Graph, subgraphs: dict[str, Graph], task_name: str | None = None) -> list[NodeStatus]:
        """The top-level rows, each with its children, for a run whose workflow is ``graph``."""
        executions = self._list(None)
        return self._level(graph, executions, subgraphs, depth=0, prefix="", default_task=task_name)

    # -- one level ---------------------------------------------------------------------------
    def _level(self, graph, executions, subgraphs, depth, prefix, default_task=None) -> list[NodeStatus]:
        by_node = {}
        attempts = {}
        for ne in executions:
            if ne.metadata.retry_group and depth == 0:
                continue
            node_id = ne.metadata.spec_node_id or ne.id.node_id
            by_node[node_id] = ne
            if _is_task_like(ne):
                attempts[node_id] = self._attempts_of(ne)
        rows = node_statuses(graph, executions, {k: a.retries for k, a in attempts.items()}, nested=depth > 0)
        kinds = {n.id: n for n in graph.nodes}
        result = []
        for row in rows:
            ne = by_node.get(row.node)
            found = attempts.get(row.node)
            cached_task = _cached_task(ne) if ne is not None else None
            task = row.task or (found.task if found else None) or cached_task or default_task
            row = replace(row, task=task, path=f"{prefix}{row.node}", logs=found.logs if found else ())
            gnode = kinds.get(row.node)
            if gnode is not None and gnode.gate is not None:
                row = self._gate_row(row, gnode.gate)
            if ne is not None:
                row = replace(row, child_run=_child_run(ne))
                sub = subgraphs.get(gnode.task) if gnode is not None and gnode.kind == "workflow" else None
                row = self._with_children(row, ne, found, sub, subgraphs, depth)
            result.append(row)
        return result

    def _with_children(self, row, ne, found, sub: Graph | None, subgraphs, depth) -> NodeStatus:
        if found is not None and found.elements:
            now = dt.datetime.now(dt.timezone.utc)
            elements = tuple(replace(e, path=f"{row.path}{e.node}", duration=_so_far(e, now)) for e in found.elements)
            return replace(row, children=elements)
        if not ne.metadata.is_parent_node:
            return row
        if depth + 1 > MAX_DEPTH:
            return replace(row, truncated=True)
        unique_id = ne.id.node_id
        cached = self._children.get(unique_id)
        stamp = _stamp(ne)
        if cached is not None and cached[0] == stamp and row.phase in NODE_TERMINAL:
            return replace(row, children=cached[1])
        children = self._list(unique_id)
        # Attempts of a retried parent are grouped by retry_group: show the latest attempt's nodes.
        groups = {c.metadata.retry_group for c in children}
        if len(groups) > 1:
            latest = max(groups, key=lambda g: int(g) if g.isdigit() else -1)
            children = [c for c in children if c.metadata.retry_group == latest]
        if sub is None and ne.metadata.is_dynamic:
            generated = self._dynamic_graphs(ne, found.retries if found is not None else 0)
            if generated is not None:
                sub, subgraphs = generated[0], {**subgraphs, **generated[1]}
        kids = tuple(self._level(sub or Graph(()), children, subgraphs, depth + 1, f"{row.path}/"))
        self._children[unique_id] = (stamp, kids)
        return replace(row, children=kids)

    def _gate_row(self, row: NodeStatus, gate) -> NodeStatus:
        """A gate's row says what it is and, while it waits, how to let it pass."""
        waiting = row.phase == "RUNNING"
        hint = gate_hint(gate, self.run.name, self.run.project, self.run.domain) if waiting else ""
        return replace(row, gate=gate_text(gate, waiting), gate_hint=hint)

    # -- RPCs ----------------------------------------------------------------------------------
    def _list(self, parent: str | None) -> list:
        run = self.run
        executions, token = [], ""
        what = f"Reading the nodes of run {run.name}" + (f" under node {parent}" if parent else "")
        while True:
            request = node_execution_pb2.NodeExecutionListRequest(
                workflow_execution_id=run._id, limit=PAGE, token=token, unique_parent_id=parent or ""
            )
            page = rpc(run._client, "list_node_executions_paginated", request, what=what, remote=run._remote)
            executions.extend(page.node_executions)
            token = page.token
            if not token or not page.node_executions:
                return executions

    def _dynamic_graphs(self, ne, attempt: int) -> tuple[Graph, dict[str, Graph]] | None:
        """The workflow a dynamic node generated (its nodes, and its sub-workflows by name), asked once per
        attempt; None while the backend has none for it yet (asked again next time)."""
        key = (ne.id.node_id, attempt)
        if key in self._dynamic:
            return self._dynamic[key]
        run = self.run
        request = node_execution_pb2.NodeExecutionGetDataRequest(id=ne.id)
        try:
            data = rpc(run._client, "get_node_execution_data", request,
                       what=f"Reading the workflow node {ne.id.node_id} generated", remote=run._remote)
        except FastRegError:  # the node's rows stand without it (no gate described): asked again next time
            return None
        if not data.dynamic_workflow.compiled_workflow.primary.template.nodes:
            return None
        closure = data.dynamic_workflow.compiled_workflow
        generated = (workflow_graph(closure.primary),
                     {sub.template.id.name: workflow_graph(sub) for sub in closure.sub_workflows})
        self._dynamic[key] = generated
        return generated

    def _attempts_of(self, ne) -> "Attempts":
        """Retries, task name and (for a map task) elements of one task node; asked once per change."""
        key = ne.id.node_id
        stamp = _stamp(ne)
        cached = self._attempts.get(key)
        if cached and cached[0] == stamp:
            return cached[1]
        run = self.run
        request = task_execution_pb2.TaskExecutionListRequest(node_execution_id=ne.id, limit=100)
        page = rpc(run._client, "list_task_executions_paginated", request, what=f"Reading the attempts of node {key}", remote=run._remote)
        found = Attempts.of(page.task_executions)
        # Log links arrive with the attempt's own events, which need not change the node: a running
        # node without them yet is asked again next time.
        if found.logs or node_phase_name(ne.closure.phase) in NODE_TERMINAL:
            self._attempts[key] = (stamp, found)
        return found


class Attempts:
    """What a node's task executions say: how many retries, which task, a map task's elements, the logs."""

    def __init__(self, retries: int = 0, task: str | None = None, elements: tuple[NodeStatus, ...] = (),
                 logs: tuple[tuple[str, str], ...] = ()):
        self.retries, self.task, self.elements, self.logs = retries, task, elements, logs

    @classmethod
    def of(cls, task_executions) -> "Attempts":
        if not task_executions:
            return cls()
        latest = max(task_executions, key=lambda te: te.id.retry_attempt)
        task = latest.id.task_id.name or None
        elements = tuple(
            NodeStatus(
                node=f"[{r.index}]",
                task=_mapped_task(task),
                phase=_task_phase(r.phase),
                started=_element_time(r, "started_at"),
                duration=_element_duration(r),
                retries=r.retry_attempt,
                child_run=_element_run(r),
                cached=r.cache_status == catalog_pb2.CACHE_HIT,
                logs=_logs(r.logs),
            )
            for r in sorted(latest.closure.metadata.external_resources, key=lambda r: r.index)
        )
        return cls(latest.id.retry_attempt, task, elements, _attempt_logs(task_executions))


def _logs(task_logs, prefix: str = "") -> tuple[tuple[str, str], ...]:
    return tuple((prefix + (log.name or "log"), log.uri) for log in task_logs if log.uri)


def _attempt_logs(task_executions) -> tuple[tuple[str, str], ...]:
    """Every attempt's logs, in order; an earlier attempt's names say which attempt they are of."""
    ordered = sorted(task_executions, key=lambda te: te.id.retry_attempt)
    if len(ordered) == 1:
        return _logs(ordered[0].closure.logs)
    return tuple(entry for te in ordered for entry in _logs(te.closure.logs, f"attempt {te.id.retry_attempt}: "))


# flytekit's name for map_task(f)'s task: "<module>.map_<f>_<hash>-arraynode"
_MAP_TASK = re.compile(r"(?P<module>.*\.)?map_(?P<task>.+)_[0-9a-f]{32}-arraynode")


def _mapped_task(name: str | None) -> str | None:
    """The task a map task's element runs: ``mod.map_square_<hash>-arraynode`` -> ``mod.square``."""
    mapped = _MAP_TASK.fullmatch(name or "")
    return f"{mapped['module'] or ''}{mapped['task']}" if mapped else name


def _element_time(resource, name: str) -> dt.datetime | None:
    """When an element started or ended, as the sandbox records it in the resource's ``custom_info``."""
    value = resource.custom_info.fields.get(name)
    if value is None or not value.string_value:
        return None
    stamp = timestamp_pb2.Timestamp()
    try:
        stamp.FromJsonString(value.string_value)
    except ValueError:  # not a time this reader knows: the duration stays blank
        return None
    return timestamp(stamp)


def _element_duration(resource) -> float | None:
    """How long an element that ended took; None while it runs (see `_so_far`) or when not recorded."""
    started, ended = _element_time(resource, "started_at"), _element_time(resource, "ended_at")
    return max(0.0, (ended - started).total_seconds()) if started and ended else None


def _so_far(element: NodeStatus, now: dt.datetime) -> float | None:
    """An element's duration; for one still running, the time so far, as for a node."""
    if element.duration is not None or element.started is None or element.phase in NODE_TERMINAL:
        return element.duration
    return max(0.0, (now - element.started).total_seconds())


def _element_run(resource) -> str | None:
    """The child execution of a mapped launch plan's element, if any."""
    if resource.HasField("workflow_node_metadata"):
        return resource.workflow_node_metadata.execution_id.name or None
    return None


def _task_phase(phase: int) -> str:
    """A map task element's phase (a task execution phase) in the node table's words."""
    name = core_exec.TaskExecution.Phase.Name(phase) if phase in core_exec.TaskExecution.Phase.values() else "UNDEFINED"
    return {"RETRYABLE_FAILED": "FAILING"}.get(name, name)


def gate_text(gate, waiting: bool) -> str:
    """What a gate node (``core.GateNode``) is: "sleep 30s", "signal v (int)", "approval review";
    while it waits, "waiting for signal v (int)" (a sleep ends by itself, and says only how long)."""
    kind = gate.WhichOneof("condition")
    if kind == "sleep":
        return f"sleep {_sleep_text(gate.sleep.duration)}"
    if kind == "signal":
        what = f"signal {gate.signal.signal_id} ({_type_text(gate.signal.type)})"
    elif kind == "approve":
        what = f"approval {gate.approve.signal_id}"
    else:
        return "gate"
    return f"waiting for {what}" if waiting else what


def gate_hint(gate, run_name: str, project: str, domain: str) -> str:
    """How to let a waiting gate pass, with stock flytekit; "" for a sleep, which ends by itself. flytekit
    needs the run's project and domain (it refuses "missing project" without them), and the Python type
    of a value whose own type does not say it (a list's items, an Optional): runnable as written, given
    ``config`` and ``value`` (and ``typing`` and the classes it names imported)."""
    remote = f'FlyteRemote(config, default_project="{project}", default_domain="{domain}")'
    kind = gate.WhichOneof("condition")
    if kind == "signal":
        source = _python_type_source(gate.signal.type)
        typed = f", python_type={source}" if source else ""
        return f'{remote}.set_signal("{gate.signal.signal_id}", "{run_name}", value{typed})'
    if kind == "approve":
        signal = gate.approve.signal_id
        return f'{remote}.approve("{signal}", "{run_name}") (or .reject(...))'
    return ""


def _python_type_source(literal_type) -> str | None:
    """The signal's Python type as code to pass flytekit's ``set_signal`` (``typing.List[int]``,
    ``typing.Optional[int]``) when the value's own type does not say it; None when it does (an int, a
    dataclass instance: flytekit converts it by its type) or when it cannot be named exactly (an enum
    flytekit rebuilds under another name): the hint then passes none rather than a guess."""
    if literal_type.WhichOneof("type") == "simple":
        return None
    python_type = _guessed_python_type(literal_type)
    if python_type is None or isinstance(python_type, type):
        return None
    return _type_words(python_type, source=True)


def _sleep_text(duration) -> str:
    """How long a sleep is: 30s, 2m, 1h30m, 1500ms."""
    total_ms = duration.seconds * 1000 + duration.nanos // 1_000_000
    if total_ms % 1000:
        return f"{total_ms}ms"
    hours, rest = divmod(total_ms // 1000, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


_SIMPLE_TYPES = {"INTEGER": "int", "FLOAT": "float", "STRING": "str", "BOOLEAN": "bool",
                 "DATETIME": "datetime", "DURATION": "timedelta"}


def _type_text(literal_type) -> str:
    """A signal's type in Python's words: int, str, List[int], Optional[int], the dataclass's name; the
    Flyte type when flytekit here has no Python type for it to name."""
    from flyteidl.core import types_pb2

    kind = literal_type.WhichOneof("type")
    if kind == "simple" and literal_type.simple != types_pb2.STRUCT:
        name = types_pb2.SimpleType.Name(literal_type.simple)
        return _SIMPLE_TYPES.get(name, name.lower())
    python_type = _guessed_python_type(literal_type)
    words = _type_words(python_type, source=False) if python_type is not None else None
    return words or {"simple": "struct", "enum_type": "enum"}.get(kind, kind or "value")


def _guessed_python_type(literal_type):
    """The Python type flytekit makes of a Flyte type (a dataclass from its JSON schema, under the name the
    workflow gave it); None when it has none (a plugin's type this kernel lacks)."""
    try:
        from flytekit.core.type_engine import TypeEngine
        from flytekit.models.types import LiteralType

        return TypeEngine.guess_python_type(LiteralType.from_flyte_idl(literal_type))
    except Exception:
        return None


# Python types by (their name in the table, their name in code a user runs).
_NAMED_TYPES = {int: ("int", "int"), float: ("float", "float"), str: ("str", "str"), bool: ("bool", "bool"),
                dict: ("dict", "dict"), type(None): ("None", "None"),
                dt.datetime: ("datetime", "datetime.datetime"), dt.timedelta: ("timedelta", "datetime.timedelta")}


def _type_words(python_type, source: bool) -> str | None:
    """``python_type`` in words (``source``: as code, ``typing.`` spelled out); None when a part of it has
    no exact name. flytekit's own ``repr`` is not used: it names a dataclass rebuilt from its schema
    ``types.Params`` and an Any ``FlytePickle``, neither of which a user's code has."""
    import enum
    import typing

    prefix = "typing." if source else ""
    origin, args = typing.get_origin(python_type), typing.get_args(python_type)
    if origin in (list, dict, typing.Union):
        words = [_type_words(arg, source) for arg in args if not (origin is typing.Union and arg is type(None))]
        if not words or None in words:
            return None
        if origin is typing.Union:
            if len(words) < len(args):  # None among the variants
                return f"{prefix}Optional[{words[0]}]" if len(words) == 1 else \
                    f"{prefix}Optional[{prefix}Union[{', '.join(words)}]]"
            return f"{prefix}Union[{', '.join(words)}]"
        return f"{prefix}{'List' if origin is list else 'Dict'}[{', '.join(words)}]"
    if python_type in _NAMED_TYPES:
        return _NAMED_TYPES[python_type][source]
    if not isinstance(python_type, type) or not python_type.__name__.isidentifier():
        return None
    module, name = python_type.__module__, python_type.__name__
    if module == "flytekit.types.pickle.pickle":  # how flytekit carries an Any
        return f"{prefix}Any"
    if module == "types" or (module.startswith("flytekit.types.") and name in ("FlyteFile", "FlyteDirectory",
                                                                                "StructuredDataset")):
        return name  # a dataclass or Pydantic model, by the name its schema gives; flytekit's data types
    if source:
        return None  # an enum flytekit rebuilt as DynamicEnum, a class flytekit made up
    return "enum" if issubclass(python_type, enum.Enum) else name


def flatten(rows, depth: int = 0):
    """(depth, row) pairs in reading order: each parent followed by its children."""
    for row in rows:
        yield depth, row
        yield from flatten(row.children, depth + 1)
