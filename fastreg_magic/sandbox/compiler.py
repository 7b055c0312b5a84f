"""Workflow compilation: a registered ``WorkflowSpec`` becomes the closure FlyteAdmin stores.

Like flytepropeller's compiler, it adds the ``start-node`` and ``end-node``, rewrites
bindings to workflow inputs (flytekit sends node id ``""``) to come from ``start-node``,
derives every node's upstream nodes from its bindings, records the upstream/downstream
connections, and gathers the templates of every task the workflow and its sub-workflows
reference. ``FlyteWorkflow.promote_from_closure`` and the executor both read the result.

    closure = compile_workflow(spec, find_task=store_lookup, find_launch_plan=lp_lookup)

A reference that cannot be resolved (an unregistered task, a sub-workflow missing from the
spec, an unregistered launch plan, a node that depends on an unknown node) is an
``INVALID_ARGUMENT`` naming it; so is a dependency cycle, and so are bindings that do not
type-check (``typecheck``), with FlyteAdmin's "failed to compile workflow" message.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator

from flyteidl.admin import launch_plan_pb2
from flyteidl.admin import workflow_pb2 as admin_workflow_pb2
from flyteidl.core import compiler_pb2, identifier_pb2, interface_pb2, literals_pb2, tasks_pb2, types_pb2, workflow_pb2

from fastreg_magic.sandbox.typecheck import binding_errors, failure_message
from fastreg_magic.sandbox.validation import id_text, invalid

START_NODE = "start-node"
END_NODE = "end-node"

TaskLookup = Callable[[identifier_pb2.Identifier], "tasks_pb2.TaskTemplate | None"]
# a registered launch plan's closure (its expected_inputs and expected_outputs), None when unknown
LaunchPlanLookup = Callable[[identifier_pb2.Identifier], "launch_plan_pb2.LaunchPlanClosure | None"]


def id_key(identifier: identifier_pb2.Identifier) -> tuple:
    return (identifier.resource_type, identifier.project, identifier.domain, identifier.name, identifier.version)


def compile_workflow(
    spec: admin_workflow_pb2.WorkflowSpec, find_task: TaskLookup, find_launch_plan: LaunchPlanLookup
) -> compiler_pb2.CompiledWorkflowClosure:
    """The compiled closure of a workflow and its sub-workflows."""
    refs = _References({id_key(sw.id): sw for sw in spec.sub_workflows}, find_task, find_launch_plan)
    primary = _compile_one(spec.template, refs)
    compiled_subs = [_compile_one(sw, refs) for sw in spec.sub_workflows]
    return compiler_pb2.CompiledWorkflowClosure(
        primary=primary, sub_workflows=compiled_subs, tasks=list(refs.tasks.values())
    )


def _compile_one(template, refs: "_References") -> compiler_pb2.CompiledWorkflow:
    compiled = workflow_pb2.WorkflowTemplate()
    compiled.CopyFrom(template)
    workflow_name = id_text(template.id)
    node_ids = [node.id for node in compiled.nodes]
    duplicates = {n for n in node_ids if node_ids.count(n) > 1}
    if duplicates:
        raise invalid(f"workflow {workflow_name} has duplicate node ids: {', '.join(sorted(duplicates))}")
    if START_NODE in node_ids or END_NODE in node_ids:
        raise invalid(f"workflow {workflow_name} uses a reserved node id ({START_NODE} or {END_NODE})")

    for node in _all_nodes(compiled.nodes, compiled.failure_node if compiled.HasField("failure_node") else None):
        _rewrite_global_inputs(node.inputs)
        refs.resolve(node, workflow_name)
    _rewrite_global_inputs(compiled.outputs)
    errors = binding_errors(compiled, refs.interface_of)
    if errors:
        raise invalid(failure_message(template.id, errors))

    known = set(node_ids)
    upstream: dict[str, set[str]] = {}
    for node in compiled.nodes:
        deps = set(node.upstream_node_ids) | _binding_sources(node)
        deps.discard(START_NODE)
        deps.discard(node.id)
        unknown = deps - known
        if unknown:
            raise invalid(f"node {node.id} of workflow {workflow_name} depends on unknown node(s): {', '.join(sorted(unknown))}")
        upstream[node.id] = deps
        del node.upstream_node_ids[:]
        node.upstream_node_ids.extend(sorted(deps))
    _check_acyclic(upstream, workflow_name)

    end_deps = _promises_in(compiled.outputs)  # also those inside a list or dict of outputs
    end_deps.discard(START_NODE)
    if end_deps - known:
        raise invalid(f"workflow {workflow_name} outputs refer to unknown node(s): {', '.join(sorted(end_deps - known))}")
    start = workflow_pb2.Node(id=START_NODE)
    end = workflow_pb2.Node(id=END_NODE, inputs=list(compiled.outputs), upstream_node_ids=sorted(end_deps))
    nodes = list(compiled.nodes)
    del compiled.nodes[:]
    compiled.nodes.extend([start] + nodes + [end])
    return compiler_pb2.CompiledWorkflow(template=compiled, connections=_connections(upstream, end_deps))


def _connections(upstream: dict[str, set[str]], end_deps: set[str]) -> compiler_pb2.ConnectionSet:
    full_upstream = {node: (deps or {START_NODE}) for node, deps in upstream.items()}
    has_downstream = {dep for deps in upstream.values() for dep in deps}
    full_upstream[END_NODE] = end_deps | {n for n in upstream if n not in has_downstream} or {START_NODE}
    downstream: dict[str, set[str]] = {}
    for node, deps in full_upstream.items():
        for dep in deps:
            downstream.setdefault(dep, set()).add(node)
    return compiler_pb2.ConnectionSet(
        upstream={n: compiler_pb2.ConnectionSet.IdList(ids=sorted(d)) for n, d in full_upstream.items()},
        downstream={n: compiler_pb2.ConnectionSet.IdList(ids=sorted(d)) for n, d in downstream.items()},
    )


def _check_acyclic(upstream: dict[str, set[str]], workflow_name: str) -> None:
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            raise invalid(f"workflow {workflow_name} has a dependency cycle through node {node}")
        visiting.add(node)
        for dep in upstream.get(node, ()):
            visit(dep)
        visiting.discard(node)
        done.add(node)

    for node in upstream:
        visit(node)


def _all_nodes(nodes, failure_node=None) -> Iterator[workflow_pb2.Node]:
    """Every node, including those nested in branches and array nodes."""
    for node in list(nodes) + ([failure_node] if failure_node is not None else []):
        yield node
        kind = node.WhichOneof("target")
        if kind == "branch_node":
            block = node.branch_node.if_else
            inner = [block.case.then_node] + [c.then_node for c in block.other]
            if block.HasField("else_node"):
                inner.append(block.else_node)
            yield from _all_nodes(inner)
        elif kind == "array_node":
            yield from _all_nodes([node.array_node.node])


class _References:
    """What a workflow's nodes refer to: tasks (gathered into the closure), sub-workflows, launch plans."""

    def __init__(self, sub_workflows: dict, find_task: TaskLookup, find_launch_plan: LaunchPlanLookup):
        self.sub_workflows, self.find_task, self.find_launch_plan = sub_workflows, find_task, find_launch_plan
        self.tasks: dict[tuple, compiler_pb2.CompiledTask] = {}
        self.launch_plans: dict[tuple, launch_plan_pb2.LaunchPlanClosure] = {}

    def resolve(self, node, workflow_name: str) -> None:
        kind = node.WhichOneof("target")
        if kind == "task_node":
            self._resolve_task(node, workflow_name)
        elif kind == "workflow_node":
            self._resolve_workflow(node, workflow_name)
        elif kind is None:
            raise invalid(f"node {node.id} of workflow {workflow_name} has no target (task, workflow, branch, gate or array)")

    def _resolve_task(self, node, workflow_name: str) -> None:
        ref = node.task_node.reference_id
        if id_key(ref) not in self.tasks:
            template = self.find_task(ref)
            if template is None:
                raise invalid(f"task {id_text(ref)} referenced by node {node.id} of workflow {workflow_name} is not registered")
            self.tasks[id_key(ref)] = compiler_pb2.CompiledTask(template=template)

    def _resolve_workflow(self, node, workflow_name: str) -> None:
        target = node.workflow_node.WhichOneof("reference")
        if target == "sub_workflow_ref" and id_key(node.workflow_node.sub_workflow_ref) not in self.sub_workflows:
            raise invalid(
                f"sub-workflow {id_text(node.workflow_node.sub_workflow_ref)} referenced by node {node.id} "
                f"of workflow {workflow_name} is not part of the workflow spec"
            )
        if target == "launchplan_ref":
            ref = node.workflow_node.launchplan_ref
            plan = self.launch_plans[id_key(ref)] if id_key(ref) in self.launch_plans else self.find_launch_plan(ref)
            if plan is None:
                raise invalid(
                    f"launch plan {id_text(ref)} referenced by node {node.id} of workflow {workflow_name} is not registered"
                )
            self.launch_plans[id_key(ref)] = plan

    def interface_of(self, node) -> interface_pb2.TypedInterface | None:
        """The interface of a task or workflow node's target, as the node sees it."""
        kind = node.WhichOneof("target")
        if kind == "task_node":
            compiled = self.tasks.get(id_key(node.task_node.reference_id))
            return compiled.template.interface if compiled else None
        if kind != "workflow_node":
            return None
        if node.workflow_node.HasField("sub_workflow_ref"):
            sub = self.sub_workflows.get(id_key(node.workflow_node.sub_workflow_ref))
            return sub.interface if sub else None
        plan = self.launch_plans.get(id_key(node.workflow_node.launchplan_ref))
        return _launch_plan_node_interface(plan, node) if plan else None


def _launch_plan_node_interface(plan, node) -> interface_pb2.TypedInterface:
    """A launch plan node takes the plan's required inputs, and those of its defaults the node sets."""
    bound = {binding.var for binding in node.inputs}
    interface = interface_pb2.TypedInterface(outputs=plan.expected_outputs)
    for name, parameter in plan.expected_inputs.parameters.items():
        if parameter.required or name in bound:
            interface.inputs.variables[name].CopyFrom(parameter.var)
    return interface


def _rewrite_global_inputs(bindings) -> None:
    for binding in bindings:
        _rewrite_binding_data(binding.binding)


def _rewrite_binding_data(data: literals_pb2.BindingData) -> None:
    for promise in _promises(data):
        if promise.node_id == "":
            promise.node_id = START_NODE


def _binding_sources(node: workflow_pb2.Node) -> set[str]:
    sources = _promises_in(node.inputs)
    if node.WhichOneof("target") == "branch_node":
        # nodes nested in a branch read outputs of the branch's siblings through their own bindings
        for inner in _all_nodes([node]):
            if inner is not node:
                sources |= _promises_in(inner.inputs)
    return sources


def _promises_in(bindings) -> set[str]:
    return {promise.node_id for binding in bindings for promise in _promises(binding.binding)}


def _promises(data: literals_pb2.BindingData) -> Iterator[types_pb2.OutputReference]:
    """Every promise in a binding, however deep in collections and maps."""
    kind = data.WhichOneof("value")
    if kind == "promise":
        yield data.promise
    elif kind == "collection":
        for item in data.collection.bindings:
            yield from _promises(item)
    elif kind == "map":
        for item in data.map.bindings.values():
            yield from _promises(item)


def single_task_workflow(task: tasks_pb2.TaskTemplate) -> admin_workflow_pb2.WorkflowSpec:
    """The ``.flytegen.<task>`` workflow FlyteAdmin makes to run one task on its own."""
    node_id = node_name_for_task(task.id.name)
    interface = task.interface
    node = workflow_pb2.Node(
        id=node_id,
        metadata=workflow_pb2.NodeMetadata(
            name=node_id,
            retries=task.metadata.retries,
            timeout=task.metadata.timeout,
            interruptible=task.metadata.interruptible,
        ),
        inputs=[
            literals_pb2.Binding(
                var=name,
                binding=literals_pb2.BindingData(promise=_output_ref("", name)),
            )
            for name in interface.inputs.variables
        ],
        task_node=workflow_pb2.TaskNode(reference_id=task.id),
    )
    workflow_id = identifier_pb2.Identifier(
        resource_type=identifier_pb2.WORKFLOW,
        project=task.id.project,
        domain=task.id.domain,
        name=f".flytegen.{task.id.name}",
        version=task.id.version,
    )
    template = workflow_pb2.WorkflowTemplate(
        id=workflow_id,
        interface=interface_pb2.TypedInterface(inputs=interface.inputs, outputs=interface.outputs),
        nodes=[node],
        outputs=[
            literals_pb2.Binding(var=name, binding=literals_pb2.BindingData(promise=_output_ref(node_id, name)))
            for name in interface.outputs.variables
        ],
        metadata=workflow_pb2.WorkflowMetadata(),
    )
    return admin_workflow_pb2.WorkflowSpec(template=template)


def node_name_for_task(task_name: str) -> str:
    """FlyteAdmin names the single node after the task's last dotted part, made DNS-friendly."""
    short = task_name.split(".")[-1]
    return re.sub(r"[^a-z0-9-]", "-", short.lower())[:63] or "n0"


def _output_ref(node_id: str, var: str) -> types_pb2.OutputReference:
    return types_pb2.OutputReference(node_id=node_id, var=var)
