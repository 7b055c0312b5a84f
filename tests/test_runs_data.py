"""Reading runs out of FlyteAdmin's protos, and the run references people paste."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from flyteidl.admin import execution_pb2, node_execution_pb2
from flyteidl.core import compiler_pb2, execution_pb2 as core_exec, identifier_pb2, workflow_pb2

from fastreg_magic.errors import RunError
from fastreg_magic.runs import parse_execution_ref, poll_intervals
from fastreg_magic.runs_data import NOT_STARTED, RunState, node_statuses, workflow_graph


def compiled(*nodes: tuple[str, str, list[str]]) -> compiler_pb2.CompiledWorkflow:
    template = workflow_pb2.WorkflowTemplate()
    template.nodes.add(id="start-node")
    for node_id, task, upstream in nodes:
        n = template.nodes.add(id=node_id, upstream_node_ids=upstream)
        n.task_node.reference_id.CopyFrom(identifier_pb2.Identifier(resource_type=identifier_pb2.TASK, name=task))
    template.nodes.add(id="end-node")
    return compiler_pb2.CompiledWorkflow(template=template)


def node_execution(node_id: str, phase: int, started: dt.datetime | None = None, seconds: float | None = None):
    ne = node_execution_pb2.NodeExecution()
    ne.id.node_id = node_id
    ne.closure.phase = phase
    if started:
        ne.closure.started_at.FromDatetime(started)
    if seconds is not None:
        ne.closure.duration.FromTimedelta(dt.timedelta(seconds=seconds))
    return ne


def test_graph_keeps_task_nodes_in_dependency_order():
    graph = workflow_graph(compiled(("n1", "m.train", ["n0"]), ("n0", "m.load", []), ("n2", "m.report", ["n1", "start-node"])))
    assert [n.id for n in graph.nodes] == ["n0", "n1", "n2"]
    assert graph.nodes[1].task == "m.train" and graph.nodes[1].kind == "task"
    assert graph.edges == [("n0", "n1"), ("n1", "n2")]


def test_node_statuses_join_graph_and_executions():
    graph = workflow_graph(compiled(("n0", "m.load", []), ("n1", "m.train", ["n0"]), ("n2", "m.report", ["n1"])))
    now = dt.datetime(2024, 1, 1, 12, 0, 10, tzinfo=dt.timezone.utc)
    start = dt.datetime(2024, 1, 1, 12, 0, 0)
    executions = [
        node_execution("start-node", core_exec.NodeExecution.SUCCEEDED),
        node_execution("n0", core_exec.NodeExecution.SUCCEEDED, start, 2.5),
        node_execution("n1", core_exec.NodeExecution.RUNNING, start + dt.timedelta(seconds=4)),
    ]
    rows = node_statuses(graph, executions, {"n1": 1}, now=now)
    assert [(r.node, r.task, r.phase) for r in rows] == [
        ("n0", "m.load", "SUCCEEDED"),
        ("n1", "m.train", "RUNNING"),
        ("n2", "m.report", NOT_STARTED),
    ]
    assert rows[0].duration == 2.5
    assert rows[1].duration == pytest.approx(6.0)  # still running: the time so far
    assert rows[1].retries == 1


def test_run_state_reads_phase_error_and_abort():
    ex = execution_pb2.Execution()
    ex.closure.phase = core_exec.WorkflowExecution.FAILED
    ex.closure.error.message = "Traceback ...\nValueError: boom"
    state = RunState.from_execution(ex)
    assert state.phase == "FAILED" and state.error.endswith("ValueError: boom")
    ex = execution_pb2.Execution()
    ex.closure.phase = core_exec.WorkflowExecution.ABORTED
    ex.closure.abort_metadata.cause = "terminated from the notebook"
    assert RunState.from_execution(ex).error == "aborted: terminated from the notebook"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("https://flyte.acme.dev/console/projects/p1/domains/dev/executions/abc123", ("p1", "dev", "abc123", "https://flyte.acme.dev/console")),
        ("http://localhost:30080/console/projects/p/domains/d/executions/f1x?tab=nodes", ("p", "d", "f1x", "http://localhost:30080/console")),
        ("ex:p:d:abc", ("p", "d", "abc", None)),
        ("p:d:abc", ("p", "d", "abc", None)),
        ("p/d/abc", ("p", "d", "abc", None)),
        ("flyte://v1/p/d/abc/n0", ("p", "d", "abc", None)),
        ("  'abc'  ", (None, None, "abc", None)),
    ],
)
def test_execution_references(text, expected):
    assert parse_execution_ref(text) == expected


def test_a_bad_reference_says_what_is_accepted():
    with pytest.raises(RunError, match="console URL"):
        parse_execution_ref("not a run!")


def test_polling_starts_fast_and_backs_off_to_a_ceiling():
    local = list(itertools.islice(poll_intervals(loopback=True), 12))
    remote = list(itertools.islice(poll_intervals(loopback=False), 30))
    assert local[0] == remote[0] == 0.1
    assert local == sorted(local) and max(local) == 0.3
    assert remote == sorted(remote) and max(remote) == 5.0


def test_children_of_a_parent_keep_their_attempt_rows():
    graph = workflow_graph(compiled(("n0", "m.inc", [])))
    child = node_execution("n0-0-n0", core_exec.NodeExecution.SUCCEEDED, seconds=1.0)
    child.metadata.spec_node_id = "n0"
    child.metadata.retry_group = "0"
    assert node_statuses(graph, [child], {}) == [node_statuses(graph, [], {})[0]]  # at the top: nobody's row
    (row,) = node_statuses(graph, [child], {}, nested=True)
    assert (row.node, row.task, row.phase, row.duration) == ("n0", "m.inc", "SUCCEEDED", 1.0)
