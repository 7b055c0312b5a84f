"""A finished run's outputs (and a watched run's inputs) as Python values, typed by their interface.

The types come from the local workflow when the run was launched from this notebook;
for a run we only attached to, from the interface the backend registered. Each value is what
flytekit gives for its type, as FlyteRemote does: a FlyteFile or FlyteDirectory opens (and
downloads) like a path. One that cannot be read here is told about, never returned as its raw
literal (`runs_values`).
"""

from __future__ import annotations

import os
import re
import tempfile

from flyteidl.admin import common_pb2, execution_pb2
from flyteidl.core import identifier_pb2, literals_pb2

from fastreg_magic.runs_errors import rpc
from fastreg_magic.runs_values import RunValues, unreadable


def read_outputs(run, execution) -> dict:
    """The outputs of ``run`` (whose GetExecution answer is ``execution``), as Python values."""
    literal_map = _output_literal_map(run, execution)
    if not literal_map.literals:
        return {}
    types = run._output_types or _registered_output_types(run, execution)
    return to_python_values(run._remote, literal_map, types, run_name=run.name)


def read_inputs(run) -> dict:
    """What a run started elsewhere was launched with, typed by its registered interface."""
    request = execution_pb2.WorkflowExecutionGetDataRequest(id=run.id)
    data = rpc(run._client, "get_execution_data", request, what=f"Reading the inputs of run {run.name}", remote=run._remote)
    literal_map = data.full_inputs
    if not literal_map.literals and data.inputs.url:
        literal_map = _download_literal_map(run._remote, data.inputs.url)
    if not literal_map.literals:
        return {}
    return to_python_values(run._remote, literal_map, _registered_input_types(run), run_name=run.name, what="input")


def _registered_input_types(run) -> dict:
    from flytekit.core.type_engine import TypeEngine
    from flytekit.models.types import LiteralType

    lp_id = run._spec.launch_plan
    what = f"Reading the interface of run {run.name}"
    request = common_pb2.ObjectGetRequest(id=lp_id)
    if lp_id.resource_type == identifier_pb2.TASK:
        task = rpc(run._client, "get_task", request, what=what, remote=run._remote)
        variables = {k: v.type for k, v in task.closure.compiled_task.template.interface.inputs.variables.items()}
    else:
        lp = rpc(run._client, "get_launch_plan", request, what=what, remote=run._remote)
        variables = {k: p.var.type for k, p in lp.closure.expected_inputs.parameters.items()}
        if lp.spec.fixed_inputs.literals:
            variables = {**_workflow_input_types(run, lp.spec.workflow_id, what), **variables}
    types = {}
    for name in sorted(variables, key=_natural_key):
        try:
            types[name] = TypeEngine.guess_python_type(LiteralType.from_flyte_idl(variables[name]))
        except Exception:  # a type flytekit cannot guess: that input is told about as unreadable
            types[name] = None
    return types


def _workflow_input_types(run, workflow_id, what: str) -> dict:
    """The input types of a launch plan's workflow: its expected inputs leave out the fixed ones,
    which a run still has among its inputs."""
    request = common_pb2.ObjectGetRequest(id=workflow_id)
    workflow = rpc(run._client, "get_workflow", request, what=what, remote=run._remote)
    interface = workflow.closure.compiled_workflow.primary.template.interface
    return {k: v.type for k, v in interface.inputs.variables.items()}


def to_python_values(remote, literal_map: literals_pb2.LiteralMap, types: dict, *, run_name: str | None = None,
                     what: str = "output") -> RunValues:
    """The values of ``literal_map`` typed by ``types``, in declared order. One that cannot be read
    (its data gone, its type unknown here) becomes an `runs_values.Unreadable` saying why; the others
    are read all the same."""
    from flytekit.models.literals import Literal

    values = RunValues()
    with remote.remote_context() as ctx:
        for name in output_order(literal_map.literals, types):
            literal = Literal.from_flyte_idl(literal_map.literals[name])
            python_type = types.get(name)
            if python_type is None:  # flytekit here could not guess its type from the registered interface
                values[name] = unreadable(name, None, what=what, run_name=run_name, uri=_where(literal))
                continue
            try:
                values[name] = _python_value(ctx, literal, python_type)
            except Exception as exc:  # e.g. its data deleted, or a plugin this kernel lacks
                values[name] = unreadable(name, exc, what=what, run_name=run_name, uri=_where(literal))
    return values


def _python_value(ctx, literal, python_type):
    from flytekit.core.type_engine import TypeEngine
    from flytekit.types.structured import StructuredDataset

    value = TypeEngine.to_python_value(ctx, literal, python_type)
    if isinstance(value, StructuredDataset) and value.uri is None:
        # flytekit keeps where a dataset it read is in a private field: say it where people look.
        value.uri = _where(literal)
    return value


def _where(literal) -> str | None:
    """Where a file, directory or dataset literal's data is; None for other literals."""
    scalar = literal.scalar
    if scalar is None:
        return None
    for held in (scalar.blob, scalar.structured_dataset, scalar.schema):
        if held is not None and getattr(held, "uri", None):
            return held.uri
    return None


def output_order(names, types: dict) -> list[str]:
    """The outputs' names in declared order: the protobuf map keeps none.

    ``types`` is in declaration order when it comes from the local interface, in natural order
    (o2 before o10) when read from the registered one; names it does not know follow, naturally ordered.
    """
    declared = [name for name in types if name in names]
    rest = sorted((name for name in names if name not in types), key=_natural_key)
    return declared + rest


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _output_literal_map(run, execution) -> literals_pb2.LiteralMap:
    closure = execution.closure
    if closure.WhichOneof("output_result") == "output_data" and closure.output_data.literals:
        return closure.output_data
    request = execution_pb2.WorkflowExecutionGetDataRequest(id=run.id)
    data = rpc(run._client, "get_execution_data", request, what=f"Reading the outputs of run {run.name}", remote=run._remote)
    if data.full_outputs.literals:
        return data.full_outputs
    if data.outputs.url:
        return _download_literal_map(run._remote, data.outputs.url)
    return literals_pb2.LiteralMap()


def _download_literal_map(remote, url: str) -> literals_pb2.LiteralMap:
    with tempfile.TemporaryDirectory(prefix="fastreg-outputs-") as tmp:
        local = os.path.join(tmp, "outputs.pb")
        remote.file_access.get_data(url, local)
        literal_map = literals_pb2.LiteralMap()
        with open(local, "rb") as fh:
            literal_map.ParseFromString(fh.read())
        return literal_map


def _registered_output_types(run, execution) -> dict:
    """Python types guessed from the interface registered for the run's launch plan or task."""
    from flytekit.core.type_engine import TypeEngine
    from flytekit.models.types import LiteralType

    lp_id = execution.spec.launch_plan
    what = f"Reading the interface of run {run.name}"
    request = common_pb2.ObjectGetRequest(id=lp_id)
    if lp_id.resource_type == identifier_pb2.TASK:
        task = rpc(run._client, "get_task", request, what=what, remote=run._remote)
        variables = task.closure.compiled_task.template.interface.outputs.variables
    else:
        lp = rpc(run._client, "get_launch_plan", request, what=what, remote=run._remote)
        variables = lp.closure.expected_outputs.variables
    types = {}
    for name in sorted(variables, key=_natural_key):  # the registered interface keeps no order
        variable = variables[name]
        try:
            types[name] = TypeEngine.guess_python_type(LiteralType.from_flyte_idl(variable.type))
        except Exception:  # a type flytekit cannot guess: that output is told about as unreadable
            types[name] = None
    run._output_types = types
    return types
