"""How the sandbox runs nodes, as flytepropeller would: a map task over a launch plan, serialized
caching, task timeouts with retries, and the children of a dynamic task answered from the cache.

The workflows are registered with stock flytekit (``FlyteRemote.register_script``) and launched
and read back as the notebook does (``runs.launch``, ``Run.nodes()``), or with FlyteRemote's client.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from flytekit.models.core.identifier import NodeExecutionIdentifier, WorkflowExecutionIdentifier

from fastreg_magic import runs
from fastreg_magic.api import EntityRef
from fastreg_magic.runs_tree import flatten

sys.path.insert(0, str(Path(__file__).parent))
from run_flows import register_flows  # noqa: E402

pytestmark = pytest.mark.slow

FLOWS = '''
import time
import typing
from datetime import timedelta

from flytekit import LaunchPlan, dynamic, eager, map_task, task, workflow


@task
def inc(x: int) -> int:
    return x + 1


@workflow
def add_one(x: int) -> int:
    return inc(x=x)


add_one_lp = LaunchPlan.get_or_create(workflow=add_one, name="{module}.add_one_lp")


@workflow
def map_over_launch_plan(xs: typing.List[int]) -> typing.List[int]:
    return map_task(add_one_lp)(x=xs)


@task(cache=True, cache_version="1", cache_serialize=True)
def tallied(tally: str, n: int) -> int:
    with open(tally, "a") as out:  # one line per run of this body
        out.write("ran\\n")
    time.sleep(8)  # long enough for the other runs to ask while this one computes
    return n * 10


@workflow
def serialized(tally: str, n: int) -> int:
    return tallied(tally=tally, n=n)


@task(timeout=timedelta(seconds=2), retries=2)
def sleeper(seconds: int) -> int:
    time.sleep(seconds)
    return seconds


@workflow
def too_slow(seconds: int = 120) -> int:
    return sleeper(seconds=seconds)


@task(cache=True, cache_version="1")
def square(n: int) -> int:
    return n * n


@dynamic
def squares(n: int) -> typing.List[int]:
    return [square(n=i) for i in range(n)]


@workflow
def dynamic_squares(n: int) -> typing.List[int]:
    return squares(n=n)


@eager
async def eager_steps(x: int) -> int:
    return add_one(x=inc(x=x))
'''

WORKFLOWS = ("map_over_launch_plan", "serialized", "too_slow", "dynamic_squares")


@pytest.fixture(scope="module")
def flows(remote, tmp_path_factory):
    _, module, version, mod = register_flows(
        remote, tmp_path_factory.mktemp("noderuns"), FLOWS, WORKFLOWS, prefix="noderuns"
    )
    return module, version, mod


@pytest.fixture(scope="module")
def eager_flow(remote, flows):
    """The eager task, registered on its own (FlyteRemote registers what it launches when it runs)."""
    module, version, mod = flows
    remote.register_script(mod.eager_steps, version=version, source_path=str(Path(mod.__file__).parent),
                           module_name=module, copy_all=True)
    return flows


def start(remote, flows, name: str, inputs: dict, kind: str = "workflow") -> runs.Run:
    module, version, mod = flows
    ref = EntityRef(kind, f"{module}.{name}", version, "flytesnacks", "development", None, getattr(mod, name))
    return runs.launch(remote, ref, inputs)


def attempts(remote, run: runs.Run, node_id: str) -> list:
    """The task executions (attempts) of one node of a run, oldest first, as FlyteRemote's client lists them."""
    node = NodeExecutionIdentifier(node_id, WorkflowExecutionIdentifier("flytesnacks", "development", run.name))
    listed, _ = remote.client.list_task_executions_paginated(node, limit=100)
    return sorted(listed, key=lambda te: te.id.retry_attempt)


def test_each_element_of_a_map_over_a_launch_plan_gets_its_own_child_run(remote, flows):
    run = start(remote, flows, "map_over_launch_plan", {"xs": [1, 2, 3]}).wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": [2, 3, 4]}
    (mapped,) = run.nodes()
    children = [element.child_run for element in mapped.children]
    assert len(children) == 3 and all(children) and len(set(children)) == 3


def test_serialized_cache_runs_the_task_once_for_concurrent_runs(remote, flows, tmp_path):
    tally = tmp_path / "tally.txt"
    started = [start(remote, flows, "serialized", {"tally": str(tally), "n": 4}) for _ in range(3)]
    finished = [run.wait(timeout=300) for run in started]
    assert [run.phase for run in finished] == ["SUCCEEDED"] * 3, [run.error for run in finished]
    assert [run.outputs for run in finished] == [{"o0": 40}] * 3
    assert tally.read_text().splitlines() == ["ran"]  # one run computed, the others waited for it
    assert sorted(run.nodes()[0].cached for run in finished) == [False, True, True]


def test_a_timeout_is_per_attempt_and_the_node_gets_twice_it(remote, flows):
    """propeller: each attempt may run the timeout (then it is retried), the node twice the timeout."""
    run = start(remote, flows, "too_slow", {}).wait(timeout=300)
    assert run.phase == "FAILED"
    assert "task active timeout [4s] expired" in run.error
    (node,) = run.nodes()
    assert node.phase == "TIMED_OUT"
    first, *retried = attempts(remote, run, "n0")
    assert "task execution timeout [2s] expired" in first.closure.error.message
    assert len(retried) == 1  # retries were left, but the node's own time ran out in the second attempt


def test_dynamic_children_from_the_cache_name_their_task_and_keep_their_order(remote, flows):
    first = start(remote, flows, "dynamic_squares", {"n": 4}).wait(timeout=300)
    assert first.phase == "SUCCEEDED", first.error
    run = start(remote, flows, "dynamic_squares", {"n": 8}).wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": [i * i for i in range(8)]}
    children = [row for depth, row in flatten(run.nodes()) if depth == 1]
    assert [row.label for row in children] == [f"n0/dn{i}" for i in range(8)]
    assert [row.cached for row in children] == [True] * 4 + [False] * 4
    assert all(row.task and row.task.endswith(".square") for row in children), [row.task for row in children]


def test_an_eager_node_links_the_runs_it_launched(remote, eager_flow):
    run = start(remote, eager_flow, "eager_steps", {"x": 1}, kind="task").wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": 3}
    (node,) = run.nodes()
    launched = [child.child_run for child in node.children]
    assert len(launched) == 2 and all(launched), node.children  # inc, then the add_one workflow
    names = {remote.fetch_execution(name=name).spec.launch_plan.name.rsplit(".", 1)[-1] for name in launched}
    assert names == {"inc", "add_one"}
    assert {child.phase for child in node.children} == {"SUCCEEDED"}
