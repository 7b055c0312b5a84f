"""The sandbox's executor: runs workflow executions the way flytepropeller does, reporting by events.

The control plane hands over an :class:`~fastreg_magic.sandbox.contract.ExecutionJob`; the
executor runs it on its own threads and reports only flyteidl events to the sink:

    executor = Executor(sink, children)
    executor.submit(job)                      # returns at once
    executor.terminate(job.execution_id, "stopped by user")
    executor.shutdown()                       # on SIGINT/SIGTERM: ends every task process tree

Task nodes run their registered container command (see ``taskrun``); sub-workflows, branches
and dynamic jobs run as nested graphs (``graph``, ``nodes``); map tasks in ``arrays``; launch
plans start child executions through the control plane's ``ChildLauncher``. Every task process is
told how to reach the sandbox itself (``task_env``), so an eager workflow's task launches its
sub-executions here. Tasks declared with ``cache=True`` are looked up in ``taskcache`` first;
tasks that request secrets get them from ``secrets_dir`` or the environment (``secrets``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Mapping

from flyteidl.core import execution_pb2 as core_exec
from flyteidl.core import identifier_pb2, literals_pb2

from fastreg_magic.sandbox.archive_guard import ArchiveGuard
from fastreg_magic.sandbox.contract import ChildLauncher, EventSink, ExecutionJob
from fastreg_magic.sandbox.bindings import START_NODE
from fastreg_magic.sandbox.graph import END_NODE, Outcome, run_graph
from fastreg_magic.sandbox.reporting import NodePhase, NodeReporter, SafeSink, WorkflowPhase, workflow_event
from fastreg_magic.sandbox.runstate import RunContext, Scope, Slots
from fastreg_magic.sandbox.signals import SignalBoard

log = logging.getLogger(__name__)

# Task processes per CPU: each attempt spends much of its life starting Python and importing flytekit.
WORKERS_PER_CPU = 2
SHUTDOWN_CAUSE = "The sandbox was stopped while this execution was running."


def default_max_workers() -> int:
    return WORKERS_PER_CPU * (os.cpu_count() or 1)


def _key(execution_id: identifier_pb2.WorkflowExecutionIdentifier) -> tuple[str, str, str]:
    return (execution_id.project, execution_id.domain, execution_id.name)


class Executor:
    """Runs submitted executions concurrently; at most ``max_workers`` task processes at a time."""

    def __init__(self, sink: EventSink, children: ChildLauncher, *, max_workers: int | None = None,
                 task_env: Mapping[str, str] | None = None, cache_dir: Path | None = None,
                 secrets_dir: Path | None = None, signals: SignalBoard | None = None):
        self._sink = SafeSink(sink)
        self._task_env = dict(task_env or {})  # every task process gets these (how to reach the sandbox)
        self._cache_dir = cache_dir  # cached tasks' outputs, shared by every execution
        self._secrets_dir = secrets_dir  # secrets that tasks request, one file each
        self._signals = signals  # what approve/wait_for_input gates wait for
        self._children = children
        self._max_workers = max_workers or default_max_workers()
        self._slots = threading.BoundedSemaphore(self._max_workers)
        self._guard = ArchiveGuard()
        self._lock = threading.Lock()
        self._runs: dict[tuple, tuple[RunContext, threading.Thread]] = {}
        self._closed = False

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def submit(self, job: ExecutionJob) -> None:
        own = threading.BoundedSemaphore(job.max_parallelism) if job.max_parallelism > 0 else None
        ctx = RunContext(job=job, sink=self._sink, children=self._children, slots=Slots(self._slots, own),
                         guard=self._guard, task_env=self._task_env, cache_dir=self._cache_dir,
                         secrets_dir=self._secrets_dir, signals=self._signals)
        thread = threading.Thread(target=self._run, args=(ctx,), name=f"execution-{job.execution_id.name}",
                                  daemon=True)
        with self._lock:
            if self._closed:
                ctx.cancel.cancel(SHUTDOWN_CAUSE)
            self._runs[_key(job.execution_id)] = (ctx, thread)
        thread.start()

    def terminate(self, execution_id: identifier_pb2.WorkflowExecutionIdentifier, cause: str) -> bool:
        """Abort a run: its task process trees are signalled now, its ABORTED events follow from its thread.

        False if no such run is going on (it has ended and reported its last event, or was never here).
        """
        with self._lock:
            entry = self._runs.get(_key(execution_id))
        if entry is None:
            return False
        ctx, _ = entry
        ctx.cancel.cancel(cause or "terminated")
        ctx.processes.signal_all(signal.SIGTERM)
        for child in ctx.take_children():
            self._terminate_child(child, cause)
        return True

    def shutdown(self, timeout: float = 10) -> None:
        """End every running execution's process trees; wait up to ``timeout`` seconds for the runs."""
        with self._lock:
            self._closed = True
            entries = list(self._runs.values())
        for ctx, _ in entries:
            ctx.cancel.cancel(SHUTDOWN_CAUSE)
            ctx.processes.signal_all(signal.SIGTERM)
        deadline = _Deadline(timeout)
        for ctx, thread in entries:
            thread.join(deadline.left())
        for ctx, thread in entries:
            if thread.is_alive():
                ctx.processes.signal_all(signal.SIGKILL)

    def running(self) -> list[identifier_pb2.WorkflowExecutionIdentifier]:
        with self._lock:
            return [ctx.execution_id for ctx, thread in self._runs.values() if thread.is_alive()]

    def _terminate_child(self, child, cause: str) -> None:
        try:
            self._children.terminate_child(child, cause)
        except Exception:  # the child may have ended on its own meanwhile
            log.exception("could not terminate child execution %s", child.name)

    def _run(self, ctx: RunContext) -> None:
        try:
            run_execution(ctx)
        except Exception as exc:  # a bug must still end the execution, never leave it RUNNING
            log.exception("execution %s crashed", ctx.execution_id.name)
            error = core_exec.ExecutionError(
                code="SandboxError", message=f"The sandbox failed while running this execution: {exc!r}",
                kind=core_exec.ExecutionError.SYSTEM,
            )
            self._sink.workflow(workflow_event(ctx.execution_id, WorkflowPhase.FAILED, error=error))
        finally:
            with self._lock:
                self._runs.pop(_key(ctx.execution_id), None)


def run_execution(ctx: RunContext) -> None:
    """Run one execution start to end, reporting workflow, node and task events."""
    sink, exe, job = ctx.sink, ctx.execution_id, ctx.job
    sink.workflow(workflow_event(exe, WorkflowPhase.RUNNING))
    start = NodeReporter(sink, exe, START_NODE, spec_node_id=START_NODE, node_name=START_NODE)
    start.emit(NodePhase.SUCCEEDED, output_data=job.inputs)
    template = job.closure.primary.template
    if ctx.cancel.is_set():
        outcome = Outcome(NodePhase.ABORTED, error=core_exec.ExecutionError(code="Aborted", message=ctx.cancel.reason))
    else:
        outcome = run_graph(ctx, Scope(), template.nodes, job.inputs, template.outputs, ctx.cancel,
                            on_failure=template.metadata.on_failure)
    if outcome.phase == NodePhase.FAILED and template.HasField("failure_node"):
        from fastreg_magic.sandbox.nodes import run_failure_node

        handled = run_failure_node(ctx, template.failure_node, job.inputs, outcome, ctx.cancel)
        if handled.phase == NodePhase.FAILED:
            outcome = handled  # propeller's handleFailureNode: the handler's failure is the workflow's
    if outcome.phase == NodePhase.SUCCEEDED:
        outputs = outcome.outputs or literals_pb2.LiteralMap()
        end = NodeReporter(sink, exe, END_NODE, spec_node_id=END_NODE, node_name=END_NODE)
        end.emit(NodePhase.SUCCEEDED, input_data=outputs, output_data=outputs)
        sink.workflow(workflow_event(exe, WorkflowPhase.SUCCEEDED, outputs=outputs))
    elif outcome.phase == NodePhase.ABORTED:
        sink.workflow(workflow_event(exe, WorkflowPhase.ABORTED, error=outcome.error))
    else:
        sink.workflow(workflow_event(exe, WorkflowPhase.FAILED, error=outcome.error))


class _Deadline:
    def __init__(self, seconds: float):
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self._end - time.monotonic())
