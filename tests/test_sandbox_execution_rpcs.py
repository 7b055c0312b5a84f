"""The execution RPC surface of the sandbox, through stock FlyteRemote and its raw client.

A small module is fast-registered once with `pyflyte register` (so tasks can run from the
uploaded archive); each test then launches, inspects or refuses executions as a user would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import common_pb2, execution_pb2
from flyteidl.core import identifier_pb2, literals_pb2
from flyteidl.service import dataproxy_pb2
from flytekit.exceptions.user import (
    FlyteEntityAlreadyExistsException,
    FlyteEntityNotExistException,
    FlyteInvalidInputException,
)
from flytekit.models.core.execution import WorkflowExecutionPhase

from sandbox_support import PIPELINE_BODY, SLEEPY_BODY, grpc_code, grpc_details, sandbox_channel

FLOWS = """
import time

from flytekit import LaunchPlan, task, workflow
""" + PIPELINE_BODY + """


fixed = LaunchPlan.get_or_create(pipeline, name="{module}.fixed", fixed_inputs={{"b": 10}})


@workflow
def outer(a: int) -> int:
    return pipeline(a=a, b=1)
""" + SLEEPY_BODY

POLL = 0.3
DEADLINE_SECONDS = 300  # how long a run may take on a loaded machine before the test gives up


@pytest.fixture(scope="module")
def flows(sandbox, tmp_path_factory):
    """Fast-register the module with pyflyte; returns (module name, version)."""
    project_dir = tmp_path_factory.mktemp("flows")
    module = f"rpcflows_{uuid.uuid4().hex[:6]}"
    (project_dir / f"{module}.py").write_text(FLOWS.format(module=module))
    version = f"v-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "pyflyte"), "-c", str(sandbox.config_file), "register",
         "--version", version, f"{module}.py"],
        cwd=project_dir, capture_output=True, text=True, timeout=300, env={**os.environ},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return module, version


@pytest.fixture(scope="module")
def finished(remote, flows):
    """One successful run of `pipeline(a=1)`, synced with its nodes."""
    module, version = flows
    plan = remote.fetch_launch_plan(name=f"{module}.pipeline", version=version)
    execution = remote.execute(plan, inputs={"a": 1}, wait=False)
    return remote.wait(execution, timeout=DEADLINE_SECONDS, poll_interval=POLL, sync_nodes=True)


def lp_id(module, version, name="pipeline"):
    return identifier_pb2.Identifier(resource_type=identifier_pb2.LAUNCH_PLAN, project="flytesnacks",
                                     domain="development", name=f"{module}.{name}", version=version)


def int_literal(value: int) -> literals_pb2.Literal:
    return literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=value)))


def str_literal(value: str) -> literals_pb2.Literal:
    return literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(string_value=value)))


def create(remote, plan_id, inputs, name=""):
    request = execution_pb2.ExecutionCreateRequest(
        project="flytesnacks", domain="development", name=name,
        spec=execution_pb2.ExecutionSpec(launch_plan=plan_id,
                                         metadata=execution_pb2.ExecutionMetadata(mode=execution_pb2.ExecutionMetadata.MANUAL)),
        inputs=literals_pb2.LiteralMap(literals=inputs),
    )
    return remote.client.raw.create_execution(request)


def test_a_run_succeeds_with_outputs_timestamps_and_its_inputs_completed_by_defaults(remote, finished):
    assert finished.closure.phase == WorkflowExecutionPhase.SUCCEEDED
    assert finished.outputs["o0"] == 8
    assert finished.inputs["a"] == 1 and finished.inputs["b"] == 3  # the default was filled in by the sandbox
    closure = finished.closure
    assert closure.started_at >= closure.created_at and closure.duration.total_seconds() > 0
    assert re.fullmatch(r"a[a-z0-9]{19}", finished.id.name)


def test_node_and_task_executions_are_listed_with_their_data(remote, finished):
    nodes = finished.node_executions
    assert {"start-node", "n0", "n1", "end-node"} <= set(nodes)
    assert nodes["n0"].outputs["o0"] == 4 and nodes["n1"].outputs["o0"] == 8
    attempts = remote.client.list_task_executions_paginated(nodes["n1"].id, limit=10)[0]
    assert [t.id.retry_attempt for t in attempts] == [0]
    assert attempts[0].closure.phase == 3  # TaskExecution SUCCEEDED
    data = remote.client.get_task_execution_data(attempts[0].id)
    assert data.full_outputs.literals["o0"].scalar.primitive.integer == 8


def test_flyte_urls_of_a_node_resolve_through_dataproxy(remote, finished):
    node_id = finished.node_executions["n0"].id
    data = remote.client.raw.get_node_execution_data(
        __import__("flyteidl.admin.node_execution_pb2", fromlist=["x"]).NodeExecutionGetDataRequest(id=node_id.to_flyte_idl()))
    outputs = remote.get(data.flyte_urls.outputs)
    assert outputs.get("o0", int) == 4
    inputs = remote.client.get_data(data.flyte_urls.inputs)
    assert inputs.literal_map.literals["a"].scalar.primitive.integer == 1
    single = remote.client.get_data(data.flyte_urls.outputs + "/o0")
    assert single.literal.scalar.primitive.integer == 4
    with pytest.raises(FlyteInvalidInputException):
        remote.client.get_data("flyte://v1/nonsense")


def test_sub_workflow_children_are_listed_under_their_parent_node(remote, flows):
    module, version = flows
    plan = remote.fetch_launch_plan(name=f"{module}.outer", version=version)
    run = remote.wait(remote.execute(plan, inputs={"a": 2}, wait=False), timeout=DEADLINE_SECONDS, poll_interval=POLL)
    assert run.outputs["o0"] == 6
    top, _ = remote.client.list_node_executions(run.id, limit=100)
    parent = next(n for n in top if n.id.node_id == "n0")
    assert parent.metadata.is_parent_node
    children, _ = remote.client.list_node_executions(run.id, limit=100, unique_parent_id="n0")
    assert {c.metadata.spec_node_id for c in children} >= {"n0", "n1"}
    top_ids = {n.id.node_id for n in top}
    assert children and all(c.id.node_id not in top_ids for c in children)  # children are not top-level


def test_single_task_execution_uses_a_flytegen_workflow(remote, flows):
    module, version = flows
    task = remote.fetch_task(name=f"{module}.add", version=version)
    execution = remote.execute(task, inputs={"a": 2, "b": 5}, wait=False)
    execution = remote.wait(execution, timeout=DEADLINE_SECONDS, poll_interval=POLL)
    assert execution.outputs["o0"] == 7
    assert execution.spec.launch_plan.resource_type == identifier_pb2.TASK
    flytegen = remote.fetch_workflow(name=f".flytegen.{module}.add", version=version)
    assert flytegen.id.name == f".flytegen.{module}.add"


@pytest.mark.parametrize(
    "inputs, expected",
    [
        ({}, "expected_inputs a missing"),
        ({"a": int_literal(1), "zzz": int_literal(2)}, "invalid input zzz"),
        ({"a": str_literal("one")}, "invalid a input wrong type"),
    ],
)
def test_inputs_are_checked_against_the_launch_plan(remote, flows, inputs, expected):
    module, version = flows
    before = len(remote.client.list_executions_paginated("flytesnacks", "development", limit=1000)[0])
    with pytest.raises(FlyteInvalidInputException) as info:
        create(remote, lp_id(module, version), inputs)
    assert expected in grpc_details(info.value)
    after = len(remote.client.list_executions_paginated("flytesnacks", "development", limit=1000)[0])
    assert after == before  # nothing was recorded


def test_fixed_inputs_cannot_be_overridden(remote, flows):
    module, version = flows
    with pytest.raises(FlyteInvalidInputException) as info:
        create(remote, lp_id(module, version, "fixed"), {"a": int_literal(1), "b": int_literal(2)})
    assert "fixed_inputs b cannot be overridden" in grpc_details(info.value)


@pytest.mark.parametrize("name, expected", [
    ("Bad_Name", "invalid name format: Bad_Name"),
    ("a" * 64, "size of name exceeded length 63"),
    ("1abc", "invalid name format: 1abc"),
])
def test_invalid_execution_names_are_refused(remote, flows, name, expected):
    module, version = flows
    with pytest.raises(FlyteInvalidInputException) as info:
        create(remote, lp_id(module, version), {"a": int_literal(1)}, name=name)
    assert expected in grpc_details(info.value)


@pytest.mark.parametrize("labels, expected", [
    ({"Team Name": "ml"}, "invalid label key [Team Name]"),
    ({"team": "not ok!"}, "invalid label value [not ok!]"),
    ({f"k{i}": "v" for i in range(17)}, "labels map cannot exceed 16 entries"),
])
def test_labels_are_checked_as_flyteadmin_checks_them(remote, flows, labels, expected):
    module, version = flows
    request = execution_pb2.ExecutionCreateRequest(
        project="flytesnacks", domain="development",
        spec=execution_pb2.ExecutionSpec(launch_plan=lp_id(module, version), labels=common_pb2.Labels(values=labels)),
        inputs=literals_pb2.LiteralMap(literals={"a": int_literal(1)}),
    )
    with pytest.raises(FlyteInvalidInputException) as info:
        remote.client.raw.create_execution(request)
    assert expected in grpc_details(info.value)


def test_given_names_are_used_and_duplicates_refused(remote, flows):
    module, version = flows
    name = f"n{uuid.uuid4().hex[:12]}-" + "x" * 49  # 63: FlyteAdmin's longest (flytekit's eager names run long)
    assert len(name) == 63
    created = create(remote, lp_id(module, version), {"a": int_literal(1)}, name=name)
    assert created.id.name == name
    with pytest.raises(FlyteEntityAlreadyExistsException) as info:
        create(remote, lp_id(module, version), {"a": int_literal(5)}, name=name)
    assert grpc_code(info.value) == grpc.StatusCode.ALREADY_EXISTS
    remote.wait(remote.fetch_execution(name=name), timeout=DEADLINE_SECONDS, poll_interval=POLL)


def test_unknown_launch_plan_is_not_found(remote, flows):
    module, _ = flows
    with pytest.raises(FlyteEntityNotExistException) as info:
        create(remote, lp_id(module, "no-such-version"), {"a": int_literal(1)})
    assert "no-such-version" in grpc_details(info.value)


def test_terminating_a_finished_execution_is_a_failed_precondition(remote, finished):
    with pytest.raises(Exception) as info:
        remote.client.terminate_execution(finished.id, "too late")
    assert grpc_code(info.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert "SUCCEEDED" in grpc_details(info.value)


def test_terminate_aborts_a_running_execution(remote, flows):
    module, version = flows
    plan = remote.fetch_launch_plan(name=f"{module}.sleepy", version=version)
    execution = remote.execute(plan, inputs={}, wait=False)
    remote.terminate(execution, cause="stopped by the test")
    execution = remote.wait(execution, timeout=DEADLINE_SECONDS, poll_interval=POLL)
    assert execution.closure.phase == WorkflowExecutionPhase.ABORTED
    assert execution.closure.abort_metadata.cause == "stopped by the test"


def test_listing_filters_sorts_and_pages(remote, finished, flows):
    from flytekit.models.admin.common import Sort
    from flytekit.models.filters import Filter

    module, version = flows
    succeeded, _ = remote.client.list_executions_paginated(
        "flytesnacks", "development", limit=1000,
        filters=[Filter.from_python_std("eq(phase,SUCCEEDED)"),
                 Filter.from_python_std(f"eq(launch_plan.name,{module}.pipeline)")])
    assert finished.id.name in {e.id.name for e in succeeded}
    assert all(e.closure.phase == WorkflowExecutionPhase.SUCCEEDED for e in succeeded)
    everything, _ = remote.client.list_executions_paginated("flytesnacks", "development", limit=1000,
                                                            sort_by=Sort("created_at", Sort.Direction.ASCENDING))
    paged, token = [], None
    while token != "":
        page, token = remote.client.list_executions_paginated("flytesnacks", "development", limit=2,
                                                              token=token or "",
                                                              sort_by=Sort("created_at", Sort.Direction.ASCENDING))
        assert len(page) <= 2
        paged += page
    assert [e.id.name for e in paged] == [e.id.name for e in everything]  # pages of 2 add up to the whole
    since = remote.client.list_executions_paginated(
        "flytesnacks", "development", limit=1000,
        filters=[Filter.from_python_std(f"gte(execution_created_at,{finished.closure.created_at.isoformat()})")])[0]
    assert finished.id.name in {e.id.name for e in since}
    assert all(e.closure.created_at >= finished.closure.created_at for e in since)
    with pytest.raises(FlyteInvalidInputException) as info:
        remote.client.list_executions_paginated("flytesnacks", "development", limit=10,
                                                filters=[Filter.from_python_std("eq(colour,blue)")])
    assert "unknown filter field 'colour'" in grpc_details(info.value)


def test_relaunch_runs_again_with_the_same_inputs(remote, finished):
    created = remote.client.raw.relaunch_execution(
        execution_pb2.ExecutionRelaunchRequest(id=finished.id.to_flyte_idl()))
    relaunched = remote.client.raw.get_execution(execution_pb2.WorkflowExecutionGetRequest(id=created.id))
    assert relaunched.spec.metadata.mode == execution_pb2.ExecutionMetadata.RELAUNCH
    assert relaunched.spec.metadata.reference_execution.name == finished.id.name
    again = remote.wait(remote.fetch_execution(name=relaunched.id.name), timeout=DEADLINE_SECONDS, poll_interval=POLL)
    assert again.outputs["o0"] == 8


def test_relaunch_takes_overwrite_cache_from_the_request_not_from_the_run(remote, flows):
    module, version = flows
    request = execution_pb2.ExecutionCreateRequest(
        project="flytesnacks", domain="development",
        spec=execution_pb2.ExecutionSpec(launch_plan=lp_id(module, version), overwrite_cache=True),
        inputs=literals_pb2.LiteralMap(literals={"a": int_literal(1)}),
    )
    created = remote.client.raw.create_execution(request)
    plain = remote.client.raw.relaunch_execution(execution_pb2.ExecutionRelaunchRequest(id=created.id))
    asked = remote.client.raw.relaunch_execution(
        execution_pb2.ExecutionRelaunchRequest(id=created.id, overwrite_cache=True))
    specs = {name: remote.client.raw.get_execution(execution_pb2.WorkflowExecutionGetRequest(id=i.id)).spec
             for name, i in (("plain", plain), ("asked", asked))}
    assert (specs["plain"].overwrite_cache, specs["asked"].overwrite_cache) == (False, True)


def test_relaunch_of_a_launch_plan_with_fixed_inputs_keeps_them_fixed(remote, flows):
    module, version = flows
    created = create(remote, lp_id(module, version, "fixed"), {"a": int_literal(1)})
    relaunched = remote.client.raw.relaunch_execution(execution_pb2.ExecutionRelaunchRequest(id=created.id))
    for execution_id in (created.id, relaunched.id):
        run = remote.wait(remote.fetch_execution(name=execution_id.name), timeout=DEADLINE_SECONDS, poll_interval=POLL)
        assert run.outputs["o0"] == 22  # 2 * (1 + fixed b=10)


def test_archived_executions_are_listed_only_when_asked_for(remote, sandbox, finished):
    from flyteidl.service import admin_pb2_grpc
    from flytekit.models.filters import Filter

    def set_state(state):  # flytekit's client has no UpdateExecution; the generated stub does
        with sandbox_channel(sandbox) as channel:
            admin_pb2_grpc.AdminServiceStub(channel).UpdateExecution(
                execution_pb2.ExecutionUpdateRequest(id=finished.id.to_flyte_idl(), state=state), timeout=120)

    set_state(execution_pb2.EXECUTION_ARCHIVED)
    try:
        default = remote.client.list_executions_paginated("flytesnacks", "development", limit=1000)[0]
        assert finished.id.name not in {e.id.name for e in default}
        archived = remote.client.list_executions_paginated(
            "flytesnacks", "development", limit=1000,
            filters=[Filter.from_python_std(f"eq(state,{execution_pb2.EXECUTION_ARCHIVED})")])[0]
        assert finished.id.name in {e.id.name for e in archived}
    finally:
        set_state(execution_pb2.EXECUTION_ACTIVE)


def test_upload_and_download_link_round_trip(remote, sandbox, tmp_path):
    import requests

    payload = tmp_path / "notes.txt"
    payload.write_text("hello sandbox")
    _, native_url = remote.upload_file(payload)
    assert Path(native_url).read_text() == "hello sandbox"
    link = remote.client.raw.create_download_location(dataproxy_pb2.CreateDownloadLocationRequest(native_url=native_url))
    assert requests.get(link.signed_url, timeout=120).text == "hello sandbox"
