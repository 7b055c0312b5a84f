"""Malformed and incomplete requests get a proper gRPC status with a message, and change nothing.

An uncaught servicer exception reaches flytekit as UNKNOWN, which it reads as an
authentication failure; so every RPC is called here with an empty request and must answer
with a deliberate status (never UNKNOWN, never INTERNAL).
"""

from __future__ import annotations

import grpc
import pytest
from flyteidl.admin import common_pb2, execution_pb2, launch_plan_pb2, task_pb2
from flyteidl.core import identifier_pb2
from flyteidl.service import admin_pb2, admin_pb2_grpc, dataproxy_pb2
from sandbox_support import sandbox_channel

ADMIN_METHODS = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].methods
DATAPROXY_METHODS = dataproxy_pb2.DESCRIPTOR.services_by_name["DataProxyService"].methods
RPC_DEADLINE_SECONDS = 120  # a deadline for a loaded machine, not a speed requirement
ALLOWED_FOR_EMPTY = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED,
                     grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}


@pytest.fixture(scope="module")
def channel(sandbox):
    with sandbox_channel(sandbox) as chan:
        yield chan


def call(channel, service: str, method, request):
    stub = channel.unary_unary(
        f"/flyteidl.service.{service}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )
    try:
        stub(request, timeout=RPC_DEADLINE_SECONDS)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as err:
        return err.code(), err.details()


def _message_class(descriptor):
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


@pytest.mark.parametrize("method", list(ADMIN_METHODS), ids=lambda m: m.name)
def test_every_admin_rpc_answers_an_empty_request_deliberately(channel, method):
    code, details = call(channel, "AdminService", method, _message_class(method.input_type)())
    assert code in ALLOWED_FOR_EMPTY, (code, details)
    if code != grpc.StatusCode.OK:
        assert details.strip(), f"{method.name} refused without saying why"


@pytest.mark.parametrize("method", list(DATAPROXY_METHODS), ids=lambda m: m.name)
def test_every_dataproxy_rpc_answers_an_empty_request_deliberately(channel, method):
    code, details = call(channel, "DataProxyService", method, _message_class(method.input_type)())
    assert code in ALLOWED_FOR_EMPTY, (code, details)


def test_incomplete_requests_name_what_is_missing(channel):
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    cases = [
        (admin.CreateTask, task_pb2.TaskCreateRequest(), "missing id"),
        (admin.CreateTask, task_pb2.TaskCreateRequest(id=identifier_pb2.Identifier(
            resource_type=identifier_pb2.TASK, project="flytesnacks", domain="development", name="t", version="v")),
         "missing spec"),
        (admin.CreateTask, task_pb2.TaskCreateRequest(id=identifier_pb2.Identifier(
            resource_type=identifier_pb2.WORKFLOW, project="flytesnacks", domain="development", name="t",
            version="v")), "unexpected resource type workflow"),
        (admin.ListTasks, common_pb2.ResourceListRequest(
            id=common_pb2.NamedEntityIdentifier(project="flytesnacks", domain="development")), "limit"),
        (admin.ListTasks, common_pb2.ResourceListRequest(
            id=common_pb2.NamedEntityIdentifier(project="flytesnacks", domain="development"), limit=5, token="x"),
         "invalid pagination token"),
        (admin.CreateExecution, execution_pb2.ExecutionCreateRequest(project="flytesnacks", domain="development"),
         "missing spec"),
        (admin.CreateExecution, execution_pb2.ExecutionCreateRequest(
            project="flytesnacks", domain="development", spec=execution_pb2.ExecutionSpec()), "missing launch_plan"),
        (admin.UpdateLaunchPlan, launch_plan_pb2.LaunchPlanUpdateRequest(id=identifier_pb2.Identifier(
            resource_type=identifier_pb2.LAUNCH_PLAN, project="flytesnacks", domain="development", name="none",
            version="v")), "not registered"),
        (admin.GetExecution, execution_pb2.WorkflowExecutionGetRequest(
            id=identifier_pb2.WorkflowExecutionIdentifier(project="flytesnacks", domain="development",
                                                          name="doesnotexist")), "does not exist"),
    ]
    for rpc, request, expected in cases:
        with pytest.raises(grpc.RpcError) as info:
            rpc(request, timeout=RPC_DEADLINE_SECONDS)
        assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        assert expected in info.value.details(), (expected, info.value.details())


def test_refused_requests_change_nothing(channel):
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    before = admin.ListTaskIds(common_pb2.NamedEntityIdentifierListRequest(
        project="flytesnacks", domain="development", limit=10000), timeout=RPC_DEADLINE_SECONDS)
    with pytest.raises(grpc.RpcError):
        admin.CreateTask(task_pb2.TaskCreateRequest(
            id=identifier_pb2.Identifier(resource_type=identifier_pb2.TASK, project="flytesnacks",
                                         domain="development", name="half.task", version="v1"),
            spec=task_pb2.TaskSpec()), timeout=RPC_DEADLINE_SECONDS)
    after = admin.ListTaskIds(common_pb2.NamedEntityIdentifierListRequest(
        project="flytesnacks", domain="development", limit=10000), timeout=RPC_DEADLINE_SECONDS)
    assert [e.name for e in after.entities] == [e.name for e in before.entities]


def test_a_servicer_bug_answers_internal_and_a_deliberate_abort_keeps_its_status():
    """The guard every sandbox servicer wears, on a servicer that fails on purpose, over real gRPC."""
    from concurrent.futures import ThreadPoolExecutor

    from flyteidl.admin import version_pb2

    from fastreg_magic.sandbox.guard import guarded

    @guarded
    class Failing(admin_pb2_grpc.AdminServiceServicer):
        def GetVersion(self, request, context):
            raise KeyError("no such thing")

        def GetTask(self, request, context):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours to read")

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    admin_pb2_grpc.add_AdminServiceServicer_to_server(Failing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
            stub = admin_pb2_grpc.AdminServiceStub(chan)
            calls = [(stub.GetVersion, version_pb2.GetVersionRequest(), grpc.StatusCode.INTERNAL,
                      "the sandbox failed in GetVersion: KeyError"),
                     (stub.GetTask, common_pb2.ObjectGetRequest(), grpc.StatusCode.PERMISSION_DENIED,
                      "not yours to read"),
                     (stub.GetWorkflow, common_pb2.ObjectGetRequest(), grpc.StatusCode.UNIMPLEMENTED,
                      "GetWorkflow is not supported by the fastreg sandbox")]
            for rpc, request, code, message in calls:
                with pytest.raises(grpc.RpcError) as info:
                    rpc(request, timeout=RPC_DEADLINE_SECONDS)
                assert (info.value.code(), message in info.value.details()) == (code, True), info.value.details()
    finally:
        server.stop(None)
