"""Task nodes: attempts with retries and timeouts from the node's metadata, and their task events.

Retries follow flytepropeller: an error flytekit marks RECOVERABLE (``FlyteRecoverableException``,
a crash without ``error.pb``, an attempt that ran out of time) is retried while the node's
``retries`` budget lasts; a recoverable system error has its own budget; any other error fails the
node at once. As in propeller's compiler (``transformers/k8s/utils.go``), the budget is the node's
``retries`` when not zero, else the task's; the timeout is the node's ``timeout`` alone (flytekit
copies the task's timeout there, and ``with_overrides`` replaces it). The timeout is propeller's
two deadlines (``transformers/k8s/node.go``, the node executor's ``execute``): each attempt may run
that long, then fails retryably ("task execution timeout"); the node as a whole may run twice
that long, then ends TIMED_OUT whatever retries are left ("task active timeout"). A task that wrote a deck gets its node's
``deck_uri`` (propeller's task handler, ``AddDeckURI``). An eager task's attempt names the runs it
launched (``eager``). A task that requests a secret the sandbox
does not have fails before its process starts (``secrets``). Node and attempt stay QUEUED until
a worker slot is free and the attempt's process starts; they are RUNNING (and timed) from then.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from flyteidl.core import execution_pb2 as core_exec
from flyteidl.core import literals_pb2, tasks_pb2, workflow_pb2

from fastreg_magic.sandbox import reporting as events
from fastreg_magic.sandbox.eager import EagerRuns
from fastreg_magic.sandbox.reporting import NodePhase, NodeReporter, TaskPhase
from fastreg_magic.sandbox.runstate import Cancel, RunContext
from fastreg_magic.sandbox.secrets import MissingSecret, secrets_env
from fastreg_magic.sandbox.taskrun import AttemptPaths, AttemptResult, render_args, run_attempt, task_environment

log = logging.getLogger(__name__)

# Retries of recoverable system errors, on top of the task's own budget (propeller's default).
SYSTEM_RETRIES = 3
# Only container tasks run here: the task types flytekit gives a container command.
FAST_EXECUTE = "pyflyte-fast-execute"
# What flytekit writes a task's decks to, in its output prefix (propeller's ``GetDeckPath``).
DECK_FILE = "deck.html"
# A node's active deadline is this many times its timeout (propeller's compiler, ``node.go``).
ACTIVE_DEADLINE_FACTOR = 2


@dataclass(frozen=True)
class AttemptSpec:
    """One attempt to run: where its files go and what extra env it gets (an array index).

    ``unique_id`` is the node's (an array element's own, for a map task): with the attempt it
    places the attempt's raw outputs, as flytepropeller does.
    """

    attempt: int
    node_dir: Path
    unique_id: str
    inputs_file: Path
    extra_env: dict


def unsupported_task(template: tasks_pb2.TaskTemplate) -> str | None:
    if template.HasField("container"):
        return None
    return (
        f"Task {template.id.name!r} has type {template.type!r} without a container command; "
        "the sandbox runs container tasks only (python tasks, map tasks, dynamic tasks, eager workflows)."
    )


def user_retries(node_metadata: workflow_pb2.NodeMetadata, template: tasks_pb2.TaskTemplate) -> int:
    """The node's retries unless zero, else the task's (propeller's ``computeRetryStrategy``)."""
    return node_metadata.retries.retries or template.metadata.retries.retries


def timeout_seconds(node_metadata: workflow_pb2.NodeMetadata) -> float | None:
    """The node's timeout, if any (propeller's ``computeDeadline`` reads no task timeout)."""
    duration = node_metadata.timeout
    if duration.seconds or duration.nanos:
        return duration.seconds + duration.nanos / 1e9
    return None


class NodeDeadlines:
    """The two deadlines of a node with a ``timeout``, as flytepropeller keeps them.

    Each attempt may run ``timeout`` (the execution deadline: a retryable failure); the node as a
    whole ``ACTIVE_DEADLINE_FACTOR`` times that (the active deadline: the node ends TIMED_OUT).
    Both count from when a process starts: a node waiting for a worker slot has not started.

        deadlines = NodeDeadlines(2.0)
        limit, ends_node = deadlines.attempt_limit()    # (2.0, False), then at most 2 s more, True
    """

    def __init__(self, timeout_s: float | None):
        self.timeout_s = timeout_s
        self._started: float | None = None

    def attempt_limit(self) -> tuple[float | None, bool]:
        """How long the attempt starting now may run, and whether running out ends the node."""
        if self.timeout_s is None:
            return None, False
        now = time.monotonic()
        if self._started is None:
            self._started = now
        left = self._started + self.active_s - now
        if left <= self.timeout_s:
            return max(left, 0.0), True
        return self.timeout_s, False

    @property
    def active_s(self) -> float:
        return ACTIVE_DEADLINE_FACTOR * self.timeout_s

    def node_timed_out(self) -> AttemptResult:
        return AttemptResult(
            timed_out=True,
            error=core_exec.ExecutionError(
                code="TimeoutExpired",
                message=f"task active timeout [{self.active_s:g}s] expired (twice the task's timeout of "
                        f"{self.timeout_s:g}s, retries included); the task's process tree was ended",
                kind=core_exec.ExecutionError.USER,
            ),
        )


def deck_of(template: tasks_pb2.TaskTemplate, attempt_dir: Path) -> str | None:
    """The deck an attempt wrote (``<outputs>/deck.html``), unless the task says it makes none."""
    metadata = template.metadata
    if metadata.HasField("generates_deck") and not metadata.generates_deck.value:
        return None
    deck = attempt_dir / "outputs" / DECK_FILE
    return str(deck) if deck.is_file() else None


def flyte_env(ctx: RunContext, template: tasks_pb2.TaskTemplate, attempt: int) -> dict[str, str]:
    exe = ctx.execution_id
    spec = ctx.job.spec
    launch_plan = spec.launch_plan.name if spec is not None else ""
    workflow = ctx.job.closure.primary.template.id
    return {
        **ctx.task_env,
        **ctx.job.envs,
        "FLYTE_INTERNAL_EXECUTION_ID": exe.name,
        "FLYTE_INTERNAL_EXECUTION_PROJECT": exe.project,
        "FLYTE_INTERNAL_EXECUTION_DOMAIN": exe.domain,
        "FLYTE_INTERNAL_EXECUTION_WORKFLOW": f"{workflow.project}:{workflow.domain}:{workflow.name}",
        "FLYTE_INTERNAL_EXECUTION_LAUNCHPLAN": launch_plan,
        "FLYTE_INTERNAL_TASK_PROJECT": template.id.project,
        "FLYTE_INTERNAL_TASK_DOMAIN": template.id.domain,
        "FLYTE_INTERNAL_TASK_NAME": template.id.name,
        "FLYTE_INTERNAL_TASK_VERSION": template.id.version,
        "FLYTE_INTERNAL_PROJECT": template.id.project,
        "FLYTE_INTERNAL_DOMAIN": template.id.domain,
        "FLYTE_INTERNAL_NAME": template.id.name,
        "FLYTE_INTERNAL_VERSION": template.id.version,
        "FLYTE_ATTEMPT_NUMBER": str(attempt),
    }


def with_local_dest_dir(argv: list[str], workdir: Path) -> list[str]:
    """Unpack fast-registered code into the attempt's own working directory.

    The registered ``--dest-dir`` names a directory inside the image (``/root`` for pyflyte
    register); here the host plays the container, so that directory would be shared by every
    attempt and lie outside the task's directory. The attempt's fresh working directory is what
    a fresh container's destination is.
    """
    if FAST_EXECUTE not in argv:
        return argv
    end = argv.index("--") if "--" in argv else len(argv)
    rewritten = list(argv)
    for i in range(end - 1):
        if rewritten[i] == "--dest-dir":
            rewritten[i + 1] = str(workdir)
    return rewritten


def distribution_of(argv: list[str]) -> str | None:
    """The ``--additional-distribution`` of a fast-registered command, if any."""
    if FAST_EXECUTE not in argv:
        return None
    for flag, value in zip(argv, argv[1:]):
        if flag == "--additional-distribution":
            return value
    return None


def run_one_attempt(
    ctx: RunContext,
    template: tasks_pb2.TaskTemplate,
    spec: AttemptSpec,
    inputs: literals_pb2.LiteralMap,
    cancel: Cancel,
    deadlines: NodeDeadlines,
    on_start=None,
) -> tuple[AttemptResult, Path]:
    """Render and run one attempt; returns its result and the directory holding its logs.

    ``on_start`` is called once the attempt holds a worker slot, just before its process starts.
    An attempt that runs out of time is retryable, unless the node's own time ran out with it
    (then its result is ``timed_out``).
    """
    attempt_dir = spec.node_dir / str(spec.attempt)
    previous = spec.node_dir / str(spec.attempt - 1) / "checkpoint" if spec.attempt else None
    paths = AttemptPaths(
        inputs_file=spec.inputs_file,
        output_prefix=attempt_dir / "outputs",
        raw_output_prefix=ctx.raw_output_prefix(spec.unique_id, spec.attempt),
        checkpoint_prefix=attempt_dir / "checkpoint",
        prev_checkpoint_prefix=previous if previous is not None and previous.exists() else None,
        workdir=attempt_dir / "work",
    )
    paths.create()
    container = template.container
    unique_key = f"{ctx.execution_id.name}-{attempt_dir.parent.name}-{spec.attempt}"
    argv = render_args(list(container.command) + list(container.args), paths, inputs, unique_key)
    argv = with_local_dest_dir(argv, paths.workdir)
    problem = None
    archive = distribution_of(argv)
    if archive:
        checked, problem = ctx.guard.prepare(archive, ctx.data_dir / "code")
        argv = [checked if arg == archive else arg for arg in argv]
    (attempt_dir / "command.json").write_text(json.dumps({"image": container.image, "argv": argv}, indent=1))
    if problem:
        error = core_exec.ExecutionError(code="UnsafeCodeArchive", message=problem, kind=core_exec.ExecutionError.USER)
        return AttemptResult(error=error), attempt_dir
    try:
        secrets = secrets_env(template, ctx.secrets_dir)
    except MissingSecret as missing:
        error = core_exec.ExecutionError(code="SecretNotFound", message=str(missing), kind=core_exec.ExecutionError.USER)
        return AttemptResult(error=error), attempt_dir
    env = task_environment(template, {**flyte_env(ctx, template, spec.attempt), **spec.extra_env, **secrets})
    if not ctx.slots.acquire(cancel):
        return AttemptResult(cancelled=True), attempt_dir
    try:
        limit, ends_node = deadlines.attempt_limit()
        if ends_node and limit <= 0:  # the node's time ran out while it waited for a slot
            return deadlines.node_timed_out(), attempt_dir
        if on_start is not None:
            on_start(attempt_dir)
        result = run_attempt(argv, env, paths, timeout_s=limit, cancelled=cancel, registry=ctx.processes)
    finally:
        ctx.slots.release()
    if result.timed_out:
        result = deadlines.node_timed_out() if ends_node else replace(result, timed_out=False)
    return result, attempt_dir


def logs_of(attempt_dir: Path) -> list[core_exec.TaskLog]:
    return [
        core_exec.TaskLog(name=f"{name} (local file)", uri=(attempt_dir / name).as_uri(),
                          message_format=core_exec.TaskLog.UNKNOWN)
        for name in ("stdout.log", "stderr.log")
    ]


def run_task_node(
    ctx: RunContext,
    node,
    template: tasks_pb2.TaskTemplate,
    inputs: literals_pb2.LiteralMap,
    reporter: NodeReporter,
    cancel: Cancel,
) -> tuple[int, AttemptResult, int]:
    """Run attempts until one succeeds or the budgets run out: (node phase, last result, attempt)."""
    node_dir = ctx.node_dir(reporter.node_id)
    user_budget = user_retries(node.metadata, template)
    system_budget = SYSTEM_RETRIES
    deadlines = NodeDeadlines(timeout_seconds(node.metadata))
    attempt = 0
    while True:
        if cancel.is_set():
            return NodePhase.ABORTED, AttemptResult(cancelled=True), attempt
        # QUEUED until a worker slot (`fastreg sandbox --workers`) is free, as propeller reports a
        # task whose pod has not started
        ctx.sink.task(_task_event(ctx, template, reporter, attempt, TaskPhase.QUEUED, input_data=inputs))
        spec = AttemptSpec(attempt, node_dir, reporter.node_id, node_dir / "inputs.pb", {})
        eager = _eager_runs(ctx, template, reporter, attempt)

        def started(attempt_dir: Path, attempt: int = attempt, eager: EagerRuns | None = eager) -> None:
            # the node runs (and its started_at counts) from when its first process starts
            if reporter.last_phase != NodePhase.RUNNING:
                reporter.emit(NodePhase.RUNNING)
            # the image is recorded, not pulled: this machine's Python environment runs the command
            ctx.sink.task(_task_event(ctx, template, reporter, attempt, TaskPhase.RUNNING, input_data=inputs,
                                      logs=logs_of(attempt_dir),
                                      custom_info={"image": template.container.image, "workdir": str(attempt_dir)}))
            if eager is not None:
                eager.watch()

        result, attempt_dir = run_one_attempt(ctx, template, spec, inputs, cancel, deadlines, on_start=started)
        launched = eager.stop() if eager is not None else None
        result = _check_outputs(template, result)
        reporter.deck_uri = deck_of(template, attempt_dir) or reporter.deck_uri
        _report_attempt(ctx, template, reporter, attempt, result, attempt_dir, launched)
        if result.cancelled:
            return NodePhase.ABORTED, result, attempt
        if result.error is None:
            return NodePhase.SUCCEEDED, result, attempt
        is_system = result.error.kind == core_exec.ExecutionError.SYSTEM
        if result.recoverable and is_system and system_budget > 0:
            system_budget -= 1
        elif result.recoverable and not is_system and user_budget > 0:
            user_budget -= 1
        else:
            return (NodePhase.TIMED_OUT if result.timed_out else NodePhase.FAILED), result, attempt
        attempt += 1


def _check_outputs(template: tasks_pb2.TaskTemplate, result: AttemptResult) -> AttemptResult:
    """A task that exits cleanly but leaves out a declared output has failed (propeller: OutputsNotFound)."""
    if result.outputs is None:
        return result
    missing = [name for name in template.interface.outputs.variables if name not in result.outputs.literals]
    if not missing:
        return result
    return AttemptResult(
        error=core_exec.ExecutionError(
            code="OutputsNotFound",
            message=f"Task {template.id.name!r} exited without writing its outputs {', '.join(missing)}.",
            kind=core_exec.ExecutionError.SYSTEM,
        )
    )


def _eager_runs(ctx, template, reporter: NodeReporter, attempt: int) -> EagerRuns | None:
    """For an eager task's attempt: what follows the runs it launches, reporting them as they appear."""
    if not template.metadata.is_eager:
        return None

    def report(resources, version: int) -> None:
        ctx.sink.task(_task_event(ctx, template, reporter, attempt, TaskPhase.RUNNING, phase_version=version,
                                  external_resources=resources))

    return EagerRuns(ctx, report)


def _report_attempt(ctx, template, reporter, attempt, result: AttemptResult, attempt_dir: Path,
                    launched=None) -> None:
    if result.cancelled:
        phase, reason = TaskPhase.ABORTED, ctx.cancel.reason or "aborted"
    elif result.error is not None:
        phase, reason = TaskPhase.FAILED, result.error.code
    else:
        phase, reason = TaskPhase.SUCCEEDED, ""
    ctx.sink.task(
        _task_event(
            ctx, template, reporter, attempt, phase,
            output_data=result.outputs, error=result.error, reason=reason, logs=logs_of(attempt_dir),
            external_resources=launched,
        )
    )


def _task_event(ctx, template, reporter: NodeReporter, attempt: int, phase: int, **fields):
    return events.task_event(
        template.id, reporter.id, attempt, phase, task_type=template.type,
        generated_name=f"{ctx.execution_id.name}-{reporter.node_id}-{attempt}", **fields,
    )
