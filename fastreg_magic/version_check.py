"""Refuse an explicit ``--version`` that already holds different entities, before anything is created.

A registered version is immutable: FlyteAdmin answers a Create for an existing id with a different
structure by refusing it. Registration sends many Creates, so a cell that adds new entities and also
changes one already registered under the version would leave the new ones registered before the
refusal. :func:`check_version_free` looks every entity up first (Get RPCs in parallel; NOT_FOUND is
fine) and compares what FlyteAdmin compares:

* a task: its template (FlyteAdmin's compiled task is the template itself);
* a workflow: its template and sub-workflow templates, minus what the compiler adds (the start and
  end nodes, upstream node ids, ``start-node`` for the workflow's own inputs);
* a launch plan: its spec.

Content-derived versions need no check: a different structure cannot have the same version.
"""

from __future__ import annotations

from typing import Sequence

from fastreg_magic.errors import VersionConflict
from fastreg_magic.specs import Spec

# Node ids the workflow compiler adds to every compiled template (flytepropeller's compiler).
_START_NODE = "start-node"
_END_NODE = "end-node"
_NAMED = 6  # entities named in the refusal; more would bury the hint


def check_version_free(client, specs: Sequence[Spec]) -> None:
    """Raise VersionConflict naming the entities that exist under this version with another structure."""
    from fastreg_magic import register

    lookups = [(spec, register.worker_pool().submit(_registered, client, spec)) for spec in specs]
    changed = [spec for spec, stored in lookups if _differs(spec, stored.result())]
    if not changed:
        return
    version = changed[0].identifier.version
    names = ", ".join(f"{s.kind.replace('_', ' ')} {s.name!r}" for s in changed[:_NAMED])
    if len(changed) > _NAMED:
        names += f" and {len(changed) - _NAMED} more"
    raise VersionConflict(
        f"Version {version!r} is already registered with a different structure for {names}; nothing was registered.",
        "A registered version is immutable: pass a new --version, or drop --version to use the content-derived one.",
    )


def _registered(client, spec: Spec):
    """The entity stored under the spec's id, or None when there is none."""
    import grpc
    from flyteidl.admin import common_pb2

    from fastreg_magic import register

    request = common_pb2.ObjectGetRequest(id=spec.identifier)
    get = {"task": client.get_task, "workflow": client.get_workflow, "launch_plan": client.get_launch_plan}[spec.kind]
    try:
        return get(request)
    except Exception as exc:
        error = register.grpc_error_of(exc)
        if error is not None and error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise register.error_for(exc, spec) from exc


def _differs(spec: Spec, stored) -> bool:
    if stored is None:
        return False
    if spec.kind == "task":
        return _with_id(spec.proto.template, spec.identifier) != stored.closure.compiled_task.template
    if spec.kind == "launch_plan":
        return spec.proto.spec != stored.spec
    compiled = stored.closure.compiled_workflow
    ours = [_with_id(spec.proto.template, spec.identifier), *spec.proto.sub_workflows]
    theirs = [compiled.primary.template, *(sub.template for sub in compiled.sub_workflows)]
    return sorted(_comparable(t) for t in ours) != sorted(_comparable(t) for t in theirs)


def _with_id(template, identifier):
    copy = type(template)()
    copy.CopyFrom(template)
    copy.id.CopyFrom(identifier)
    return copy


def _comparable(template) -> bytes:
    """A workflow template as bytes, without what compiling it adds, so sent and stored compare."""
    from flyteidl.core import workflow_pb2

    copy = workflow_pb2.WorkflowTemplate()
    copy.CopyFrom(template)
    kept = [node for node in copy.nodes if node.id not in (_START_NODE, _END_NODE)]
    del copy.nodes[:]
    copy.nodes.extend(kept)
    failure = [copy.failure_node] if copy.HasField("failure_node") else []
    for node in _all_nodes([*copy.nodes, *failure]):
        del node.upstream_node_ids[:]
        for binding in node.inputs:
            _own_inputs_from_start(binding.binding)
    for binding in copy.outputs:
        _own_inputs_from_start(binding.binding)
    return copy.SerializeToString(deterministic=True)


def _all_nodes(nodes):
    for node in nodes:
        yield node
        kind = node.WhichOneof("target")
        if kind == "branch_node":
            block = node.branch_node.if_else
            inner = [block.case.then_node, *(c.then_node for c in block.other)]
            if block.HasField("else_node"):
                inner.append(block.else_node)
            yield from _all_nodes(inner)
        elif kind == "array_node":
            yield from _all_nodes([node.array_node.node])


def _own_inputs_from_start(data) -> None:
    """A promise of the workflow's own input names node "" when sent and the start node once compiled."""
    kind = data.WhichOneof("value")
    if kind == "promise" and data.promise.node_id == "":
        data.promise.node_id = _START_NODE
    elif kind == "collection":
        for item in data.collection.bindings:
            _own_inputs_from_start(item)
    elif kind == "map":
        for item in data.map.bindings.values():
            _own_inputs_from_start(item)
