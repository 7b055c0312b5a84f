"""The runs an ``@eager`` workflow launches, shown under its node.

An eager task launches its sub-runs itself, through FlyteRemote, from inside its process, and
flytekit labels each one ``eager-exec: <the launching execution's name>``. FlyteAdmin records no
node executions for them, so the sandbox reports them the way a map task over a launch plan
reports its children: as the eager attempt's external resources, each naming its run. They are
listed while the attempt runs (every ``WATCH_INTERVAL_S``) and once more when it ends.

    runs = EagerRuns(ctx, report=lambda resources, version: ...)
    runs.watch()                      # once the attempt's process started
    resources = runs.stop()           # the runs it launched, for the attempt's last event
"""

from __future__ import annotations

import logging
import threading

from flyteidl.event import event_pb2

from fastreg_magic.sandbox.reporting import TaskPhase, WorkflowPhase

log = logging.getLogger(__name__)

# How often a running eager attempt is checked for runs it launched.
WATCH_INTERVAL_S = 1.0

_TASK_PHASE = {
    WorkflowPhase.QUEUED: TaskPhase.QUEUED,
    WorkflowPhase.RUNNING: TaskPhase.RUNNING,
    WorkflowPhase.SUCCEEDING: TaskPhase.RUNNING,
    WorkflowPhase.SUCCEEDED: TaskPhase.SUCCEEDED,
    WorkflowPhase.FAILING: TaskPhase.RUNNING,
    WorkflowPhase.FAILED: TaskPhase.FAILED,
    WorkflowPhase.TIMED_OUT: TaskPhase.FAILED,
    WorkflowPhase.ABORTING: TaskPhase.RUNNING,
    WorkflowPhase.ABORTED: TaskPhase.ABORTED,
}


class EagerRuns:
    """Follows the runs one eager attempt launches; ``report(resources, version)`` is told of each change."""

    def __init__(self, ctx, report):
        self._ctx, self._report = ctx, report
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: list = []

    def watch(self) -> None:
        self._thread = threading.Thread(target=self._watch, name=f"eager-{self._ctx.execution_id.name}", daemon=True)
        self._thread.start()

    def stop(self) -> list[event_pb2.ExternalResourceInfo]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.resources()

    def resources(self) -> list[event_pb2.ExternalResourceInfo]:
        try:
            launched = self._ctx.children.eager_children(self._ctx.execution_id)
        except Exception:  # the control plane's answer is only for showing; the run goes on
            log.exception("could not list the runs of eager execution %s", self._ctx.execution_id.name)
            return []
        return [_resource(index, child, phase) for index, (child, phase) in enumerate(launched)]

    def _watch(self) -> None:
        version = 1  # the attempt's first RUNNING event was version 0
        while not self._stop.wait(WATCH_INTERVAL_S):
            resources = self.resources()
            if resources != self._seen:
                self._seen = resources
                self._report(resources, version)
                version += 1


def _resource(index: int, child, phase: int) -> event_pb2.ExternalResourceInfo:
    resource = event_pb2.ExternalResourceInfo(
        external_id=child.name, index=index, phase=_TASK_PHASE.get(phase, TaskPhase.UNDEFINED))
    resource.workflow_node_metadata.execution_id.CopyFrom(child)
    return resource
