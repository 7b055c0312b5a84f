"""The node tree of real runs on the sandbox: sub-workflows, dynamic tasks, map tasks, failures inside them."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from fastreg_magic import runs
from fastreg_magic.api import EntityRef
from fastreg_magic.runs_tree import flatten
from fastreg_magic.widget_text import nodes_html, run_text

sys.path.insert(0, str(Path(__file__).parent))
from run_flows import register_flows  # noqa: E402

pytestmark = pytest.mark.slow

FLOWS = '''
import typing
from flytekit import dynamic, map_task, task, workflow


@task
def inc(n: int) -> int:
    return n + 1


@task
def picky(n: int) -> int:
    if n == 2:
        raise ValueError("inner <b>failure</b> at " + str(n))
    return n


@workflow
def inner(n: int) -> int:
    return inc(n=inc(n=n))


@dynamic
def fan(n: int) -> typing.List[int]:
    return [inc(n=i) for i in range(n)]


@workflow
def nested(n: int = 1) -> typing.List[int]:
    return fan(n=inner(n=n))


@workflow
def inner_fails(n: int) -> int:
    first = inc(n=n)
    return picky(n=first)


@workflow
def failing_nested(n: int = 1) -> int:
    return inner_fails(n=n)


@workflow
def mapped(xs: typing.List[int] = [1, 2, 3]) -> typing.List[int]:
    return map_task(inc)(n=xs)
'''

WORKFLOWS = ("nested", "failing_nested", "mapped")


@pytest.fixture(scope="module")
def flows(remote, tmp_path_factory):
    _, module, version, mod = register_flows(
        remote, tmp_path_factory.mktemp("treeflows"), FLOWS, WORKFLOWS, prefix="treeflows"
    )
    return module, version, mod


def launch(remote, flows, name: str, inputs: dict) -> runs.Run:
    module, version, mod = flows
    ref = EntityRef("workflow", f"{module}.{name}", version, "flytesnacks", "development", None, getattr(mod, name))
    return runs.launch(remote, ref, inputs).wait(timeout=300)


def table(rows) -> list[tuple[int, str, str, str]]:
    return [(depth, r.label, (r.task or "").rsplit(".", 1)[-1], r.phase) for depth, r in flatten(rows)]


def test_sub_workflow_and_dynamic_nodes_are_children_of_their_parent(remote, flows):
    run = launch(remote, flows, "nested", {"n": 1})
    assert run.phase == "SUCCEEDED" and run.outputs == {"o0": [1, 2, 3]}
    rows = run.nodes()
    assert [r.node for r in rows] == ["n0", "n1"]  # the top level is unchanged
    seen = table(rows)
    # the sub-workflow's two inc nodes under n0
    assert (1, "n0/n0", "inc", "SUCCEEDED") in seen and (1, "n0/n1", "inc", "SUCCEEDED") in seen
    # the dynamic task's three generated inc nodes under n1 (n0 + 1 + 1 = 3 of them)
    dynamic = [row for row in seen if row[0] == 1 and row[1].startswith("n1/")]
    assert len(dynamic) == 3 and all(task == "inc" and phase == "SUCCEEDED" for _, _, task, phase in dynamic)
    assert all(r.duration is not None for _, r in flatten(rows) if r.phase == "SUCCEEDED")
    assert rows[1].task.endswith(".fan")

    # Reading a finished run again lists the top level only: ended, unchanged parents come from memory.
    calls = count_calls(run, ("ListNodeExecutions", "ListTaskExecutions"))
    assert table(run.nodes()) == seen
    assert calls == {"ListNodeExecutions": 1, "ListTaskExecutions": 0}
    assert "\n    n0/n0 " in run_text(run, rows)


def count_calls(run, names) -> dict:
    """Count the RPCs the run's own gRPC stub sends (the calls still go to the sandbox)."""
    calls = dict.fromkeys(names, 0)
    for name in names:
        real = getattr(run._client._stub, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        setattr(run._client._stub, name, counted)
    return calls


def test_a_failing_inner_task_shows_failed_under_its_parent(remote, flows):
    run = launch(remote, flows, "failing_nested", {"n": 1})
    assert run.phase == "FAILED"
    rows = run.nodes()
    (parent,) = rows
    assert parent.phase == "FAILED"
    inner = {r.node: r for r in parent.children}
    assert inner["n0"].phase == "SUCCEEDED" and inner["n1"].phase == "FAILED"
    assert inner["n1"].task.endswith(".picky") and "inner <b>failure</b> at 2" in inner["n1"].error

    page = nodes_html(rows)
    shown = re.findall(r"<tr class='fastreg-node' data-depth='(\d)' data-path='([^']*)' data-phase='(\w+)'>(.*?)</tr>", page, re.S)
    assert [(d, p, ph) for d, p, ph, _ in shown] == [("0", "n0", "FAILED"), ("1", "n0/n0", "SUCCEEDED"), ("1", "n0/n1", "FAILED")]
    assert ">FAILED</span>" in shown[2][3] and "padding:2px 8px 2px 24px" in shown[2][3]  # indented under n0
    assert "<b>failure</b>" not in page and "&lt;b&gt;failure&lt;/b&gt;" in page  # escaped, as text


def test_map_task_elements_are_listed_under_the_array_node(remote, flows):
    run = launch(remote, flows, "mapped", {"xs": [5, 6, 7, 8]})
    assert run.outputs == {"o0": [6, 7, 8, 9]}
    (array,) = run.nodes()
    assert array.phase == "SUCCEEDED"
    assert [(e.label, e.phase) for e in array.children] == [(f"n0[{i}]", "SUCCEEDED") for i in range(4)]


LIVE_FLOWS = '''
import time
from flytekit import LaunchPlan, task, workflow


@task
def nap(s: float) -> float:
    time.sleep(s)
    return s


@task
def double(n: int) -> int:
    return 2 * n


@workflow
def napping(s: float) -> float:
    return nap(s=s)


@workflow
def outer(s: float = 300.0) -> float:
    return napping(s=s)


@workflow
def child(n: int) -> int:
    return double(n=n)


child_lp = LaunchPlan.get_or_create(child, name="{module}.child_lp")


@workflow
def calls_lp(n: int = 4) -> int:
    return child_lp(n=n)
'''


@pytest.fixture(scope="module")
def live_flows(remote, tmp_path_factory):
    _, module, version, mod = register_flows(
        remote, tmp_path_factory.mktemp("liveflows"), LIVE_FLOWS, ("outer", "calls_lp"), prefix="liveflows"
    )
    return module, version, mod


def test_a_running_sub_workflow_shows_its_running_inner_task(remote, live_flows):
    module, version, mod = live_flows
    ref = EntityRef("workflow", f"{module}.outer", version, "flytesnacks", "development", None, mod.outer)
    run = runs.launch(remote, ref, {"s": 300.0})
    try:
        seen = []
        for _ in range(600):  # bounded by reads, not by time: the inner task starts within a few reads
            rows = run.nodes()
            seen = table(rows)
            if (1, "n0/n0", "nap", "RUNNING") in seen:
                break
            time.sleep(0.2)
        assert (0, "n0", "napping", "RUNNING") in seen and (1, "n0/n0", "nap", "RUNNING") in seen
        assert rows[0].children[0].duration is not None  # the time so far
    finally:
        run.terminate("stopped by the test")
    run.wait(timeout=120)
    assert run.phase == "ABORTED"


def test_a_launch_plan_node_names_its_child_run(remote, live_flows):
    module, version, mod = live_flows
    ref = EntityRef("workflow", f"{module}.calls_lp", version, "flytesnacks", "development", None, mod.calls_lp)
    run = runs.launch(remote, ref, {"n": 4}).wait(timeout=300)
    assert run.outputs == {"o0": 8}
    (node,) = run.nodes()
    assert node.phase == "SUCCEEDED" and node.child_run
    child = runs.attach(remote, node.child_run)
    assert child.wait(timeout=60).outputs == {"o0": 8}
    assert f"%flyte_watch {node.child_run}" in nodes_html([node])


def test_nesting_deeper_than_the_bound_is_marked_not_read(remote, flows, monkeypatch):
    from fastreg_magic import runs_tree

    run = launch(remote, flows, "failing_nested", {"n": 1})
    monkeypatch.setattr(runs_tree, "MAX_DEPTH", 0)
    calls = count_calls(run, ("ListNodeExecutions",))
    (parent,) = run.nodes()
    assert parent.truncated and parent.children == () and parent.phase == "FAILED"
    assert calls == {"ListNodeExecutions": 1}
    assert "deeper nodes not shown" in nodes_html([parent])
