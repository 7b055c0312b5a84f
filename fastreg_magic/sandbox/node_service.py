"""Admin RPCs for the parts of an execution: node executions and task executions (attempts).

``ListNodeExecutions`` returns the top-level nodes of an execution, or, with
``unique_parent_id``, the children of one parent node (sub-workflow, dynamic, branch and
array nodes), as FlyteAdmin does: without ``sort_by``, in the order they were created (FlyteAdmin
adds no ORDER BY then, so its database returns them by insertion). The data RPCs answer inline (``full_inputs``,
``full_outputs``) and with the ``flyte://`` URLs that DataProxy ``GetData`` resolves.
"""

from __future__ import annotations

from flyteidl.admin import common_pb2, node_execution_pb2, task_execution_pb2
from flyteidl.core import execution_pb2 as core_execution_pb2
from flyteidl.core import literals_pb2

from fastreg_magic.sandbox.events import literal_map_from, read_literal_map
from fastreg_magic.sandbox.execution_service import execution_key
from fastreg_magic.sandbox.listing import list_page, timestamp_seconds
from fastreg_magic.sandbox.validation import check_limit, check_named_id, id_text, invalid, not_found, require

NODE_GETTERS = {
    "node_id": lambda n: n.id.node_id,
    "phase": lambda n: core_execution_pb2.NodeExecution.Phase.Name(n.closure.phase),
    "created_at": lambda n: timestamp_seconds(n.closure.created_at),
    "updated_at": lambda n: timestamp_seconds(n.closure.updated_at),
    "started_at": lambda n: timestamp_seconds(n.closure.started_at),
    "duration": lambda n: n.closure.duration.ToTimedelta().total_seconds(),
    "spec_node_id": lambda n: n.metadata.spec_node_id,
    "retry_group": lambda n: n.metadata.retry_group,
}
TASK_GETTERS = {
    "retry_attempt": lambda t: t.id.retry_attempt,
    "phase": lambda t: core_execution_pb2.TaskExecution.Phase.Name(t.closure.phase),
    "created_at": lambda t: timestamp_seconds(t.closure.created_at),
    "updated_at": lambda t: timestamp_seconds(t.closure.updated_at),
    "started_at": lambda t: timestamp_seconds(t.closure.started_at),
    "task.name": lambda t: t.id.task_id.name,
    "task.version": lambda t: t.id.task_id.version,
}


def node_key(node_id) -> tuple:
    return execution_key(node_id.execution_id) + (node_id.node_id,)


def flyte_urls(node_id, attempt: int | None = None) -> common_pb2.FlyteURLs:
    execution = node_id.execution_id
    base = f"flyte://v1/{execution.project}/{execution.domain}/{execution.name}/{node_id.node_id}"
    if attempt is not None:
        base += f"/{attempt}"
    return common_pb2.FlyteURLs(inputs=f"{base}/i", outputs=f"{base}/o", deck=f"{base}/d")


def _with_data(response, inputs, outputs, input_uri, output_uri):
    response.full_inputs.CopyFrom(inputs)
    response.full_outputs.CopyFrom(outputs)
    response.inputs.CopyFrom(common_pb2.UrlBlob(url=input_uri, bytes=inputs.ByteSize()))
    response.outputs.CopyFrom(common_pb2.UrlBlob(url=output_uri, bytes=outputs.ByteSize()))
    return response


class NodeRpcs:
    """Mixin of the Admin servicer: node and task executions."""

    # -- node executions -------------------------------------------------------------------

    def node_execution(self, node_id) -> node_execution_pb2.NodeExecution:
        check_named_id(node_id.execution_id)
        require(node_id.node_id, "node_id")
        found = self.store.get_node_execution(node_key(node_id), node_execution_pb2.NodeExecution)
        if found is None:
            raise not_found(f"node execution {node_id.node_id} of {id_text(node_id.execution_id)} does not exist")
        return found

    def node_io(self, node_id) -> tuple[literals_pb2.LiteralMap, literals_pb2.LiteralMap]:
        node = self.node_execution(node_id)
        inputs, outputs, _ = self.store.node_execution_data(node_key(node_id))
        inputs = inputs if inputs is not None else read_literal_map(node.input_uri)
        outputs = outputs if outputs is not None else read_literal_map(node.closure.output_uri)
        return literal_map_from(inputs), literal_map_from(outputs)

    def GetNodeExecution(self, request, context):
        return self.node_execution(request.id)

    def ListNodeExecutions(self, request, context):
        if not request.HasField("workflow_execution_id"):
            raise invalid("missing workflow_execution_id")
        check_limit(request.limit)
        self.get_execution(request.workflow_execution_id)
        nodes = self.store.list_node_executions(execution_key(request.workflow_execution_id),
                                                request.unique_parent_id or None, node_execution_pb2.NodeExecution)
        page, token = list_page(nodes, request, NODE_GETTERS, default_key=None, descending=False)
        return node_execution_pb2.NodeExecutionList(node_executions=page, token=token)

    def ListNodeExecutionsForTask(self, request, context):
        task_id = request.task_execution_id
        check_limit(request.limit)
        parent = task_id.node_execution_id
        self.node_execution(parent)
        nodes = self.store.list_node_executions(execution_key(parent.execution_id), parent.node_id,
                                                node_execution_pb2.NodeExecution)
        page, token = list_page(nodes, request, NODE_GETTERS, default_key=None, descending=False)
        return node_execution_pb2.NodeExecutionList(node_executions=page, token=token)

    def GetNodeExecutionData(self, request, context):
        node = self.node_execution(request.id)
        inputs, outputs = self.node_io(request.id)
        response = _with_data(node_execution_pb2.NodeExecutionGetDataResponse(), inputs, outputs,
                              node.input_uri, node.closure.output_uri)
        _, _, dynamic = self.store.node_execution_data(node_key(request.id))
        if dynamic:
            response.dynamic_workflow.ParseFromString(dynamic)
        response.flyte_urls.CopyFrom(flyte_urls(request.id))
        return response

    # -- task executions -------------------------------------------------------------------

    def _task_key(self, task_execution_id) -> tuple:
        return node_key(task_execution_id.node_execution_id) + (id_text(task_execution_id.task_id),
                                                                 task_execution_id.retry_attempt)

    def task_execution(self, task_execution_id) -> task_execution_pb2.TaskExecution:
        found = self.store.get_task_execution(self._task_key(task_execution_id), task_execution_pb2.TaskExecution)
        if found is None:
            raise not_found(
                f"task execution {id_text(task_execution_id.task_id)} attempt {task_execution_id.retry_attempt} "
                f"of node {task_execution_id.node_execution_id.node_id} does not exist"
            )
        return found

    def task_io(self, node_id, attempt: int) -> tuple[literals_pb2.LiteralMap, literals_pb2.LiteralMap]:
        for task in self.store.list_task_executions(node_key(node_id), task_execution_pb2.TaskExecution):
            if task.id.retry_attempt == attempt:
                return self._task_io(task)
        raise not_found(f"attempt {attempt} of node {node_id.node_id} does not exist")

    def _task_io(self, task) -> tuple[literals_pb2.LiteralMap, literals_pb2.LiteralMap]:
        inputs, outputs = self.store.task_execution_data(self._task_key(task.id))
        inputs = inputs if inputs is not None else read_literal_map(task.input_uri)
        outputs = outputs if outputs is not None else read_literal_map(task.closure.output_uri)
        return literal_map_from(inputs), literal_map_from(outputs)

    def GetTaskExecution(self, request, context):
        return self.task_execution(request.id)

    def ListTaskExecutions(self, request, context):
        if not request.HasField("node_execution_id"):
            raise invalid("missing node_execution_id")
        check_limit(request.limit)
        self.node_execution(request.node_execution_id)
        tasks = self.store.list_task_executions(node_key(request.node_execution_id), task_execution_pb2.TaskExecution)
        page, token = list_page(tasks, request, TASK_GETTERS, default_key="retry_attempt", descending=False)
        return task_execution_pb2.TaskExecutionList(task_executions=page, token=token)

    def GetTaskExecutionData(self, request, context):
        task = self.task_execution(request.id)
        inputs, outputs = self._task_io(task)
        response = _with_data(task_execution_pb2.TaskExecutionGetDataResponse(), inputs, outputs,
                              task.input_uri, task.closure.output_uri)
        response.flyte_urls.CopyFrom(flyte_urls(request.id.node_execution_id, request.id.retry_attempt))
        return response
