"""Array nodes (``map_task``): one sub-task (or child execution) per list element, gathered into lists.

As in flytepropeller, every sub-task reads the array node's whole ``inputs.pb`` and learns its
index from ``BATCH_JOB_ARRAY_INDEX_VAR_NAME``/``FLYTE_K8S_ARRAY_INDEX``; each writes a one-element
``outputs.pb`` that is gathered into the node's list outputs. With ``min_success_ratio`` (or
``min_successes``) below everything, failed elements become ``None`` as long as enough succeeded.
``concurrency`` bounds how many elements run at once. The array node reports one task execution
whose external resources are the elements, which is how FlyteRemote reads map tasks back.
Mapping a launch plan (``map_task(launch_plan)``) starts one child execution per element, on that
element's slice of the inputs. Mapping a cached task looks each element up in ``taskcache`` on its own
slice of the inputs, as propeller does for map sub-tasks. Each element is retried on its own, with
the retries and timeout of the array's inner node (where flytekit puts the task's values and
``with_overrides``'), as propeller runs each element as a sub-node of that spec.

A failed array node's error is propeller's summary of its elements' errors, each distinct error once
after the elements it failed (``"[1]: <error>"``, ``"[0-2][5]: <error>"``), then how many elements
succeeded of those needed. Propeller's external resources carry no times; each element's here also
says, in its ``custom_info``, when it started running and when it ended (``started_at``, ``ended_at``,
RFC 3339), so the notebook can show how long each element took.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

from flyteidl.core import catalog_pb2
from flyteidl.core import execution_pb2 as core_exec
from flyteidl.core import literals_pb2
from flyteidl.event import event_pb2
from google.protobuf import timestamp_pb2

from fastreg_magic.sandbox import reporting as events
from fastreg_magic.sandbox import taskcache
from fastreg_magic.sandbox.reporting import NodePhase, NodeReporter, TaskPhase, WorkflowPhase
from fastreg_magic.sandbox.graph import Outcome, failed
from fastreg_magic.sandbox.runstate import Cancel, RunContext, Scope, show_id
from fastreg_magic.sandbox.taskrun import AttemptResult
from fastreg_magic.sandbox.tasknode import (
    SYSTEM_RETRIES,
    AttemptSpec,
    NodeDeadlines,
    user_retries,
    logs_of,
    run_one_attempt,
    timeout_seconds,
    unsupported_task,
)

_SYSTEM = core_exec.ExecutionError.SYSTEM
INDEX_VAR = "FLYTE_K8S_ARRAY_INDEX"


def run_array_node(ctx: RunContext, scope, node, inputs, available, reporter: NodeReporter, cancel: Cancel) -> Outcome:
    array = node.array_node
    inner = array.node
    try:
        size = _array_size(inputs, set(array.bound_inputs))
    except ValueError as exc:
        return failed(f"Array node {node.id!r}: {exc}", code="BadArrayInputs")
    if inner.HasField("task_node"):
        template = ctx.task(scope, inner.task_node.reference_id)
        if template is None:
            return failed(f"Task {show_id(inner.task_node.reference_id)} is not in the workflow's closure.",
                          kind=_SYSTEM)
        problem = unsupported_task(template)
        if problem:
            return failed(problem, code="UnsupportedTaskType", kind=_SYSTEM)
        run = _ArrayRun(ctx, node, template.id, template.type, inputs, reporter, cancel, size)
        run.use_task(template)
    elif inner.HasField("workflow_node") and inner.workflow_node.HasField("launchplan_ref"):
        run = _ArrayRun(ctx, node, inner.workflow_node.launchplan_ref, "launch_plan", inputs, reporter, cancel, size)
        run.use_launch_plan(inner.workflow_node.launchplan_ref, set(array.bound_inputs))
    else:
        return failed(
            f"Array node {node.id!r} maps over a {inner.WhichOneof('target')}; "
            "the sandbox maps over tasks and launch plans.",
            code="UnsupportedNodeType", kind=_SYSTEM,
        )
    needed = _min_successes(array, size)
    reporter.emit(NodePhase.RUNNING)
    run.report(TaskPhase.RUNNING)
    workers = array.parallelism if array.HasField("parallelism") and array.parallelism > 0 else max(size, 1)
    with ThreadPoolExecutor(max_workers=min(workers, max(size, 1)), thread_name_prefix=f"array-{node.id}") as pool:
        for index in range(size):
            pool.submit(run.element, index, needed)
    if cancel.is_set():
        run.report(TaskPhase.ABORTED)
        return Outcome(NodePhase.ABORTED)
    succeeded = sum(1 for r in run.results if r is not None and r.error is None and not r.cancelled)
    if succeeded < needed:
        error = _array_error(run.results, succeeded, needed)
        run.report(TaskPhase.FAILED, error=error)
        return Outcome(NodePhase.FAILED, error=error)
    outputs = _gather(run.output_names(), run.results)
    run.report(TaskPhase.SUCCEEDED, outputs=outputs)
    return Outcome(NodePhase.SUCCEEDED, outputs=outputs)


def _array_size(inputs: literals_pb2.LiteralMap, bound: set[str]) -> int:
    sizes = {
        name: len(literal.collection.literals)
        for name, literal in inputs.literals.items()
        if name not in bound and literal.HasField("collection")
    }
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the mapped lists have different lengths: {sizes}")
    return next(iter(sizes.values()), 0)


def _min_successes(array, size: int) -> int:
    if array.HasField("min_successes"):
        return min(array.min_successes, size)
    if array.HasField("min_success_ratio"):
        return math.ceil(array.min_success_ratio * size)
    return size


class _ArrayRun:
    """The elements of one array node run: their results and the aggregated task events."""

    def __init__(self, ctx, node, entity_id, entity_type, inputs, reporter, cancel, size):
        self.ctx, self.node, self.entity_id, self.entity_type, self.inputs = ctx, node, entity_id, entity_type, inputs
        self.reporter, self.cancel, self.size = reporter, cancel.child(), size
        self.results: list[AttemptResult | None] = [None] * size
        self.attempts = [0] * size
        self.phases = [TaskPhase.QUEUED] * size
        self.children: list = [None] * size  # child executions, when mapping a launch plan
        self.cache_statuses = [catalog_pb2.CACHE_DISABLED] * size  # elements of a cached task
        # when each element started running and when it ended (its retries included)
        self.started: list[str | None] = [None] * size
        self.ended: list[str | None] = [None] * size
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._version = 0
        self._failures = 0
        self._run_one = None
        self._declared_outputs: list[str] | None = None

    def use_task(self, template) -> None:
        # each element runs as propeller's sub-node: the inner node's retries and timeout (where
        # flytekit puts the task's and with_overrides' values), its own attempts and budgets
        sub_node = self.node.array_node.node
        retries = user_retries(sub_node.metadata, template)
        timeout_s = timeout_seconds(sub_node.metadata)
        self._declared_outputs = list(template.interface.outputs.variables)
        self._run_one = lambda index: self._task_element(index, template, retries, timeout_s)

    def use_launch_plan(self, launch_plan, bound: set[str]) -> None:
        self._run_one = lambda index: self._launch_plan_element(index, launch_plan, bound)

    def output_names(self) -> list[str]:
        if self._declared_outputs is not None:
            return self._declared_outputs
        return sorted({name for r in self.results if r is not None and r.outputs for name in r.outputs.literals})

    def element(self, index: int, needed: int) -> None:
        result = self._run_one(index) if not self.cancel.is_set() else AttemptResult(cancelled=True)
        self.results[index] = result
        self.ended[index] = _now()
        if self.started[index] is None:  # it never ran (answered from the cache, stopped while queued)
            self.started[index] = self.ended[index]
        ok = result.error is None and not result.cancelled
        ended = TaskPhase.SUCCEEDED if ok else TaskPhase.ABORTED if result.cancelled else TaskPhase.FAILED
        self._set_phase(index, ended)
        if not ok and not result.cancelled:
            with self._lock:
                self._failures += 1
                hopeless = self.size - self._failures < needed
            if hopeless and not self.node.array_node.run_all_sub_nodes:
                self.cancel.cancel("too many elements of the map task failed")

    def _task_element(self, index: int, template, retries: int, timeout_s) -> AttemptResult:
        """One element's outputs: from the task cache when the task is cached and they are there,
        else from running its task, with retries, as propeller runs a map task's sub-task."""
        element_inputs = _element_inputs(self.inputs, index, set(self.node.array_node.bound_inputs))
        key, cached = taskcache.find(self.ctx, template, element_inputs)
        turn = taskcache.Turn()
        if cached is None and key is not None:  # cache_serialize: wait while another attempt computes it
            owner = f"{self.ctx.execution_id.name}/{self.reporter.node_id}/{index}"
            turn = taskcache.wait_turn(self.ctx, template, key, owner, self.cancel)
            cached = turn.outputs
        if cached is not None:
            self.cache_statuses[index] = catalog_pb2.CACHE_HIT
            return AttemptResult(outputs=cached)
        try:
            result = self._run_element(index, template, retries, timeout_s)
            if key is not None and result.error is None and not result.cancelled and result.outputs is not None:
                taskcache.store(self.ctx.cache_dir, key, result.outputs)
                self.cache_statuses[index] = catalog_pb2.CACHE_POPULATED
        finally:
            turn.release()
        return result

    def _run_element(self, index: int, template, retries: int, timeout_s) -> AttemptResult:
        user_budget, system_budget = retries, SYSTEM_RETRIES
        deadlines = NodeDeadlines(timeout_s)  # each element is a sub-node with its own deadlines
        node_dir = self.ctx.node_dir(self.reporter.node_id)
        # propeller names element i the sub-node "n<i>" of the array node's attempt 0
        element_id = Scope(parent_unique_id=self.reporter.node_id).unique_id(f"n{index}")
        while not self.cancel.is_set():
            spec = AttemptSpec(
                self.attempts[index], node_dir / str(index), element_id,
                node_dir / "inputs.pb",
                {"BATCH_JOB_ARRAY_INDEX_VAR_NAME": INDEX_VAR, INDEX_VAR: str(index)},
            )
            result, _ = run_one_attempt(self.ctx, template, spec, self.inputs, self.cancel, deadlines,
                                        on_start=lambda _dir: self._set_phase(index, TaskPhase.RUNNING))
            if result.error is None or result.cancelled:
                return result
            is_system = result.error.kind == _SYSTEM
            if result.recoverable and is_system and system_budget > 0:
                system_budget -= 1
            elif result.recoverable and not is_system and user_budget > 0:
                user_budget -= 1
            else:
                return result
            self.attempts[index] += 1
        return AttemptResult(cancelled=True)

    def _launch_plan_element(self, index: int, launch_plan, bound: set[str]) -> AttemptResult:
        """Run one element as a child execution of the launch plan, on that element's inputs."""
        element_inputs = _element_inputs(self.inputs, index, bound)
        # no worker slot held here: the child's own tasks take slots, and holding one while waiting
        # for them could starve them; the array's concurrency bounds how many children run at once
        try:
            child = self.ctx.children.launch_child(launch_plan, element_inputs, self.reporter.id, element=index)
        except Exception as exc:  # the control plane refused (bad inputs, unknown launch plan)
            return AttemptResult(error=core_exec.ExecutionError(
                code="LaunchFailed", message=f"Could not launch {show_id(launch_plan)}: {exc}"))
        self.children[index] = child
        self.ctx.track_child(child)
        self._set_phase(index, TaskPhase.RUNNING)
        outcome = self.ctx.children.wait_child(child, self.cancel)
        if outcome is None:
            if self.ctx.untrack_child(child):
                self.ctx.children.terminate_child(child, self.cancel.reason or "map task aborted")
            return AttemptResult(cancelled=True)
        self.ctx.untrack_child(child)
        if outcome.phase == WorkflowPhase.SUCCEEDED:
            return AttemptResult(outputs=outcome.outputs or literals_pb2.LiteralMap())
        error = outcome.error or core_exec.ExecutionError()
        return AttemptResult(error=core_exec.ExecutionError(
            code=error.code or "ChildFailed", kind=error.kind or core_exec.ExecutionError.USER,
            message=f"Child execution {child.name} ended {WorkflowPhase.Name(outcome.phase)}: {error.message}",
        ))

    def _set_phase(self, index: int, phase: int) -> None:
        with self._lock:
            self.phases[index] = phase
            if phase == TaskPhase.RUNNING and self.started[index] is None:
                self.started[index] = _now()  # from when it runs, not from when it waited for a worker
        self.report(TaskPhase.RUNNING)

    def report(self, phase: int, *, outputs=None, error=None) -> None:
        # one at a time, so the control plane sees phase versions in order
        with self._report_lock:
            self._report(phase, outputs, error)

    def _resource(self, index: int, node_dir) -> event_pb2.ExternalResourceInfo:
        resource = event_pb2.ExternalResourceInfo(
            external_id=f"{self.reporter.node_id}-{index}",
            index=index,
            retry_attempt=self.attempts[index],
            phase=self.phases[index],
            cache_status=self.cache_statuses[index],
        )
        times = {"started_at": self.started[index], "ended_at": self.ended[index]}
        resource.custom_info.update({name: value for name, value in times.items() if value is not None})
        child = self.children[index]
        if child is not None:
            resource.workflow_node_metadata.execution_id.CopyFrom(child)
        else:
            resource.logs.extend(logs_of(node_dir / str(index) / str(self.attempts[index])))
        return resource

    def _report(self, phase: int, outputs, error) -> None:
        node_dir = self.ctx.node_dir(self.reporter.node_id)
        with self._lock:
            resources = [self._resource(index, node_dir) for index in range(self.size)]
            version = self._version
            self._version += 1
        self.ctx.sink.task(
            events.task_event(
                self.entity_id, self.reporter.id, 0, phase, task_type=self.entity_type,
                input_data=self.inputs if phase == TaskPhase.RUNNING and version == 0 else None,
                output_data=outputs, error=error, phase_version=version,
                generated_name=f"{self.ctx.execution_id.name}-{self.reporter.node_id}-0",
                external_resources=resources,
            )
        )


def _element_inputs(inputs: literals_pb2.LiteralMap, index: int, bound: set[str]) -> literals_pb2.LiteralMap:
    """One element's inputs: the index-th item of every mapped list (propeller's constructLiteralMap)."""
    element = literals_pb2.LiteralMap()
    for name, literal in inputs.literals.items():
        if name not in bound and literal.HasField("collection"):
            element.literals[name].CopyFrom(literal.collection.literals[index])
        else:
            element.literals[name].CopyFrom(literal)
    return element


def _array_error(results: list[AttemptResult | None], succeeded: int, needed: int) -> core_exec.ExecutionError:
    """The array node's error as propeller words it (each distinct element error once, sorted, after the
    elements it failed), then one line saying how many elements succeeded and how many were needed."""
    failed_with: dict[str, list[int]] = {}
    kind = core_exec.ExecutionError.UNKNOWN
    for index, result in enumerate(results):
        if result is not None and result.error is not None:
            failed_with.setdefault(result.error.message, []).append(index)
            kind = kind or result.error.kind
    summary = "".join(f"{_index_ranges(indexes)}: {message.rstrip()}\n" for message, indexes in sorted(failed_with.items()))
    return core_exec.ExecutionError(
        code="ArrayNodeFailed",
        message=f"{summary}{succeeded} of {len(results)} elements succeeded, {needed} needed.",
        kind=kind or core_exec.ExecutionError.USER,
    )


def _index_ranges(indexes: list[int]) -> str:
    """[0, 1, 2, 5] -> "[0-2][5]", as propeller's error collector names the elements an error is about."""
    ranges: list[list[int]] = []
    for index in sorted(indexes):
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    return "".join(f"[{start}]" if start == end else f"[{start}-{end}]" for start, end in ranges)


def _now() -> str:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp.ToJsonString()


def _gather(names: list[str], results: list[AttemptResult | None]) -> literals_pb2.LiteralMap:
    gathered = literals_pb2.LiteralMap()
    for name in names:
        collection = gathered.literals[name].collection
        collection.SetInParent()
        for result in results:
            item = collection.literals.add()
            if result is not None and result.outputs is not None and name in result.outputs.literals:
                item.CopyFrom(result.outputs.literals[name])
            else:
                item.scalar.none_type.SetInParent()  # a failed element, allowed by min_success_ratio
    return gathered
