"""Node handlers: task (and dynamic), sub-workflow, launch plan, branch, gate (``gates``), the failure
node; anything else fails clearly.

Each handler gets the node's resolved inputs and its ``NodeReporter``; it reports RUNNING (and,
for a dynamic task, DYNAMIC_RUNNING with the generated workflow) and returns an ``Outcome``; the
graph reports the final phase. Nested nodes (in a sub-workflow, a branch or a dynamic job) run in
a nested ``Scope`` so their executions are children of this node, as in flytepropeller.
"""

from __future__ import annotations

from flyteidl.core import catalog_pb2, compiler_pb2, identifier_pb2, literals_pb2, types_pb2, workflow_pb2
from flyteidl.core import execution_pb2 as core_exec
from flyteidl.event import event_pb2

from fastreg_magic.sandbox import graph, taskcache
from fastreg_magic.sandbox.branches import ConditionError, choose
from fastreg_magic.sandbox.reporting import NodePhase, NodeReporter, WorkflowPhase
from fastreg_magic.sandbox.graph import Outcome, failed
from fastreg_magic.sandbox.runstate import Cancel, RunContext, Scope, entity_key, show_id
from fastreg_magic.sandbox.tasknode import run_task_node, unsupported_task

_SYSTEM = core_exec.ExecutionError.SYSTEM


def node_kind(node: workflow_pb2.Node) -> str:
    return node.WhichOneof("target") or "unknown"


def prepare_reporter(ctx: RunContext, scope: Scope, node: workflow_pb2.Node, reporter: NodeReporter) -> None:
    """Set the fields FlyteAdmin records from a node's first event (target, parent/array flags)."""
    kind = node_kind(node)
    if kind == "task_node":
        reporter.target_entity = node.task_node.reference_id
        template = ctx.task(scope, node.task_node.reference_id)
        reporter.is_eager = template is not None and template.metadata.is_eager
    elif kind == "workflow_node":
        ref = node.workflow_node
        reporter.target_entity = ref.launchplan_ref if ref.HasField("launchplan_ref") else ref.sub_workflow_ref
        reporter.is_parent = ref.HasField("sub_workflow_ref")
    elif kind == "branch_node":
        reporter.is_parent = True
    elif kind == "array_node":
        reporter.is_array = True
        if node.array_node.node.HasField("task_node"):
            reporter.target_entity = node.array_node.node.task_node.reference_id


def handler_for(node: workflow_pb2.Node):
    from fastreg_magic.sandbox.arrays import run_array_node
    from fastreg_magic.sandbox.gates import run_gate

    return {
        "task_node": run_task,
        "workflow_node": run_workflow_node,
        "branch_node": run_branch,
        "array_node": run_array_node,
        "gate_node": run_gate,
    }.get(node_kind(node), run_unsupported)


def run_unsupported(ctx, scope, node, inputs, available, reporter: NodeReporter, cancel) -> Outcome:
    kind = node_kind(node)
    return failed(
        f"Node {node.id!r} is a {kind.replace('_', ' ')}, which the sandbox cannot run.",
        code="UnsupportedNodeType",
        kind=_SYSTEM,
    )


# --- task nodes (and dynamic tasks) -------------------------------------------------------------


def run_task(ctx, scope, node, inputs, available, reporter: NodeReporter, cancel: Cancel) -> Outcome:
    template = ctx.task(scope, node.task_node.reference_id)
    if template is None:
        return failed(f"Task {show_id(node.task_node.reference_id)} is not in the workflow's closure.", kind=_SYSTEM)
    problem = unsupported_task(template)
    if problem:
        return failed(problem, code="UnsupportedTaskType", kind=_SYSTEM)
    key, cached = taskcache.find(ctx, template, inputs)
    if cached is None and key is not None:
        # cache_serialize: wait while another attempt computes the same outputs
        turn = taskcache.wait_turn(ctx, template, key, f"{ctx.execution_id.name}/{reporter.node_id}", cancel)
        cached = turn.outputs
    else:
        turn = taskcache.Turn()
    if cached is not None:
        # no attempt: the outputs are known; the node names the task execution that stored them
        reporter.cache_status = catalog_pb2.CACHE_HIT
        reporter.catalog_key = taskcache.catalog_key(ctx.cache_dir, template, key)
        return Outcome(NodePhase.SUCCEEDED, outputs=cached)
    try:
        phase, result, attempt = run_task_node(ctx, node, template, inputs, reporter, cancel)
        if phase == NodePhase.SUCCEEDED and result.dynamic is None and key is not None:
            source = identifier_pb2.TaskExecutionIdentifier(
                task_id=template.id, node_execution_id=reporter.id, retry_attempt=attempt)
            taskcache.store(ctx.cache_dir, key, result.outputs, source)
            reporter.cache_status = catalog_pb2.CACHE_POPULATED
    finally:
        turn.release()
    if phase != NodePhase.SUCCEEDED:
        return Outcome(phase, error=result.error)
    if result.dynamic is not None:
        return run_dynamic(ctx, scope, node, template, inputs, result.dynamic, attempt, reporter, cancel)
    return Outcome(NodePhase.SUCCEEDED, outputs=result.outputs)


def run_dynamic(ctx, scope, node, template, inputs, spec, attempt, reporter: NodeReporter, cancel) -> Outcome:
    """Run the nodes of a dynamic task's futures file as children of this node."""
    reporter.is_parent = True
    reporter.is_dynamic = True
    closure = dynamic_closure(template, spec)
    futures_file = ctx.node_dir(reporter.node_id) / str(attempt) / "outputs" / "futures.pb"
    reporter.emit(
        NodePhase.DYNAMIC_RUNNING,
        dynamic_workflow=event_pb2.DynamicWorkflowNodeMetadata(
            id=closure.primary.template.id, compiled_workflow=closure, dynamic_job_spec_uri=str(futures_file)
        ),
    )
    nested = scope.nested(
        reporter.node_id,
        attempt,
        tasks={entity_key(t.id): t for t in spec.tasks},
        workflows={entity_key(w.id): w for w in spec.subworkflows},
    )
    return graph.run_graph(ctx, nested, spec.nodes, inputs, spec.outputs, cancel)


def dynamic_closure(template, spec) -> compiler_pb2.CompiledWorkflowClosure:
    """The workflow a dynamic task generated, in the compiled form FlyteRemote reads back."""
    workflow_id = identifier_pb2.Identifier(
        resource_type=identifier_pb2.WORKFLOW,
        project=template.id.project,
        domain=template.id.domain,
        name=f"{template.id.name}_dynamic",
        version=template.id.version,
    )
    primary = compiler_pb2.CompiledWorkflow(
        template=workflow_pb2.WorkflowTemplate(
            id=workflow_id, interface=template.interface, nodes=spec.nodes, outputs=spec.outputs
        ),
        connections=_connections(spec.nodes),
    )
    return compiler_pb2.CompiledWorkflowClosure(
        primary=primary,
        sub_workflows=[
            compiler_pb2.CompiledWorkflow(template=w, connections=_connections(w.nodes)) for w in spec.subworkflows
        ],
        tasks=[compiler_pb2.CompiledTask(template=t) for t in spec.tasks],
    )


def _connections(nodes) -> compiler_pb2.ConnectionSet:
    connections = compiler_pb2.ConnectionSet()
    for node in nodes:
        upstream = list(node.upstream_node_ids)
        connections.upstream[node.id].ids.extend(upstream)
        for parent in upstream:
            connections.downstream[parent].ids.append(node.id)
    return connections


# --- sub-workflows and launch plans ---------------------------------------------------------------


def run_workflow_node(ctx, scope, node, inputs, available, reporter: NodeReporter, cancel: Cancel) -> Outcome:
    ref = node.workflow_node
    if ref.HasField("launchplan_ref"):
        return run_launch_plan(ctx, ref.launchplan_ref, inputs, reporter, cancel)
    template = ctx.workflow(scope, ref.sub_workflow_ref)
    if template is None:
        return failed(f"Sub-workflow {show_id(ref.sub_workflow_ref)} is not in the workflow's closure.", kind=_SYSTEM)
    reporter.emit(NodePhase.RUNNING)
    nested = scope.nested(reporter.node_id)
    outcome = graph.run_graph(
        ctx, nested, template.nodes, inputs, template.outputs, cancel, on_failure=template.metadata.on_failure,
    )
    if outcome.phase == NodePhase.FAILED and template.HasField("failure_node"):
        return _handle_sub_workflow_failure(ctx, nested, template.failure_node, inputs, outcome, cancel)
    return outcome


def _handle_sub_workflow_failure(ctx, nested: Scope, failure_node, inputs, failure: Outcome, cancel) -> Outcome:
    """Run a failed sub-workflow's ``on_failure`` node among its nodes, as propeller's
    ``HandleFailureNodeOfSubWorkflow`` does: the sub-workflow node still fails, with the original
    error, unless the failure node fails too, whose error then masks it."""
    handled = run_failure_node(ctx, failure_node, inputs, failure, cancel, scope=nested)
    return handled if handled.phase == NodePhase.FAILED else failure


def run_launch_plan(ctx, launch_plan, inputs, reporter: NodeReporter, cancel: Cancel) -> Outcome:
    try:
        child = ctx.children.launch_child(launch_plan, inputs, reporter.id)
    except Exception as exc:  # the control plane refused (unknown launch plan, bad inputs)
        return failed(f"Could not launch {show_id(launch_plan)}: {exc}", code="LaunchFailed")
    ctx.track_child(child)
    reporter.emit(NodePhase.RUNNING, child_execution=child)
    outcome = ctx.children.wait_child(child, cancel)
    if outcome is None:  # cancelled while waiting: end the child unless terminate already did
        if ctx.untrack_child(child):
            ctx.children.terminate_child(child, cancel.reason or "parent node aborted")
        return Outcome(NodePhase.ABORTED, error=core_exec.ExecutionError(code="Aborted", message=cancel.reason))
    ctx.untrack_child(child)
    if outcome.phase == WorkflowPhase.SUCCEEDED:
        return Outcome(NodePhase.SUCCEEDED, outputs=outcome.outputs or literals_pb2.LiteralMap())
    phase_name = WorkflowPhase.Name(outcome.phase)
    error = outcome.error or core_exec.ExecutionError()
    return failed(
        f"Child execution {child.name} ({show_id(launch_plan)}) ended {phase_name}: {error.message}",
        code=error.code or "ChildFailed",
        kind=error.kind or core_exec.ExecutionError.USER,
    )


# --- branches ---------------------------------------------------------------------------------


def run_branch(ctx, scope, node, inputs, available, reporter: NodeReporter, cancel: Cancel) -> Outcome:
    block = node.branch_node.if_else
    reporter.emit(NodePhase.RUNNING)
    try:
        chosen = choose(block, inputs)
    except ConditionError as exc:
        return failed(f"Branch {node.id!r}: {exc}", code="ConditionError")
    if chosen is None:
        return failed(block.error.message or f"Branch {node.id!r} took its else branch, which fails.",
                      code="UserProvidedError")
    return graph.execute_node(ctx, scope.nested(reporter.node_id), chosen, available, cancel)


# --- the failure node of a workflow or sub-workflow (on_failure=...) ----------------------------------


def run_failure_node(ctx, failure_node, inputs, failure: Outcome, cancel: Cancel, *,
                     scope: Scope | None = None) -> Outcome:
    """Run ``on_failure`` after its workflow failed, on the workflow's inputs (``scope``: where that
    workflow's nodes ran). As in propeller (``ResolveOnFailureNodeInput``), an ``err`` input the node
    binds, whether the handler is a task or a workflow, gets the failure in place of its default."""
    scope = scope if scope is not None else Scope()
    node = workflow_pb2.Node()
    node.CopyFrom(failure_node)
    if any(binding.var == "err" for binding in node.inputs):
        kept = [b for b in node.inputs if b.var != "err"]
        del node.inputs[:]
        node.inputs.extend(kept)
        value = _error_literal(failure)
        node.inputs.add(var="err").binding.scalar.CopyFrom(_as_declared(value, _err_type(ctx, scope, node)).scalar)
    return graph.execute_node(ctx, scope, node, {graph.START_NODE: inputs}, cancel)


def _error_literal(failure: Outcome) -> literals_pb2.Literal:
    value = literals_pb2.Literal()
    value.scalar.error.message = failure.error.message if failure.error is not None else ""
    value.scalar.error.failed_node_id = failure.failed_node
    return value


def _err_type(ctx, scope: Scope, node: workflow_pb2.Node) -> types_pb2.LiteralType:
    """The type the handler declares for ``err``; propeller's ``Optional[FlyteError]`` union when unknown."""
    interface = None
    if node.HasField("task_node"):
        template = ctx.task(scope, node.task_node.reference_id)
        interface = template.interface if template is not None else None
    elif node.HasField("workflow_node") and node.workflow_node.HasField("sub_workflow_ref"):
        template = ctx.workflow(scope, node.workflow_node.sub_workflow_ref)
        interface = template.interface if template is not None else None
    if interface is not None and "err" in interface.inputs.variables:
        return interface.inputs.variables["err"].type
    error_type = types_pb2.LiteralType(simple=types_pb2.ERROR)
    error_type.structure.tag = "FlyteError"
    return types_pb2.LiteralType(union_type=types_pb2.UnionType(variants=[error_type]))


def _as_declared(value: literals_pb2.Literal, declared) -> literals_pb2.Literal:
    """Wrap an error literal in the union ``Optional[FlyteError]`` declares, as propeller does."""
    if not declared.HasField("union_type"):
        return value
    variant = next((v for v in declared.union_type.variants if v.simple == types_pb2.ERROR), None)
    if variant is None:
        return value
    wrapped = literals_pb2.Literal()
    wrapped.scalar.union.value.CopyFrom(value)
    wrapped.scalar.union.type.CopyFrom(variant)
    return wrapped
