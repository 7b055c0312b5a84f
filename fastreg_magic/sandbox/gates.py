"""Gate nodes, as flytepropeller's gate handler runs them: ``sleep``, ``wait_for_input`` and ``approve``.

A sleep gate succeeds once its duration has passed. A signal gate (``wait_for_input``) creates its
signal (``SignalBoard.get_or_create``) and waits until ``SetSignal`` gives it a value, which becomes
the node's output; an approve gate waits for a boolean signal and passes its input on when it is
true, failing on false (``reject``). The signal belongs to the top-level execution, as in propeller.

Every gate node has a ``timeout`` (flytekit gives one hour unless told): propeller treats running
out of it as a retryable failure, so a gate without retries fails at its timeout
("RetriesExhausted|TimeoutExpired"), and one with retries waits until its active deadline, twice
the timeout, then ends TIMED_OUT. A terminated run ends a waiting gate at once (ABORTED).
"""

from __future__ import annotations

from flyteidl.core import execution_pb2 as core_exec
from flyteidl.core import identifier_pb2, literals_pb2, types_pb2

from fastreg_magic.sandbox.graph import Outcome, failed
from fastreg_magic.sandbox.reporting import NodePhase, NodeReporter
from fastreg_magic.sandbox.runstate import Cancel, RunContext
from fastreg_magic.sandbox.tasknode import ACTIVE_DEADLINE_FACTOR, timeout_seconds

_BOOLEAN = types_pb2.LiteralType(simple=types_pb2.BOOLEAN)


def run_gate(ctx: RunContext, scope, node, inputs, available, reporter: NodeReporter, cancel: Cancel) -> Outcome:
    gate = node.gate_node
    kind = gate.WhichOneof("condition")
    limit = _GateLimit(node)
    if kind == "sleep":
        return _sleep(gate.sleep.duration.ToTimedelta().total_seconds(), limit, reporter, cancel)
    if kind not in ("signal", "approve"):
        return failed(f"Gate node {node.id!r} has no approve, signal or sleep condition.",
                      code="BadSpecificationError", kind=core_exec.ExecutionError.SYSTEM)
    if ctx.signals is None:
        return failed(f"Gate node {node.id!r} waits for a signal, and this executor has no signal service.",
                      code="SignalsUnavailable", kind=core_exec.ExecutionError.SYSTEM)
    signal_id = identifier_pb2.SignalIdentifier(
        execution_id=ctx.execution_id, signal_id=gate.signal.signal_id if kind == "signal" else gate.approve.signal_id,
    )
    ctx.signals.get_or_create(signal_id, gate.signal.type if kind == "signal" else _BOOLEAN)
    reporter.emit(NodePhase.RUNNING)
    value = ctx.signals.wait_for_value(signal_id, cancel, limit.wait_s)
    if value is None:
        return _aborted(cancel) if cancel.is_set() else limit.expired(
            f"signal {signal_id.signal_id!r} was not set in time; set it sooner (FlyteRemote.set_signal, "
            "approve) or give the gate a longer timeout")
    if kind == "signal":
        return Outcome(NodePhase.SUCCEEDED,
                       outputs=literals_pb2.LiteralMap(literals={gate.signal.output_variable_name: value}))
    if not value.scalar.primitive.boolean:
        return failed("received a reject signal to disapprove the node input values", code="ReceivedRejectSignal")
    return Outcome(NodePhase.SUCCEEDED, outputs=inputs)  # approved: what was gated goes on as it came


def _sleep(duration_s: float, limit: "_GateLimit", reporter: NodeReporter, cancel: Cancel) -> Outcome:
    reporter.emit(NodePhase.RUNNING)
    if limit.wait_s is not None and duration_s > limit.wait_s:
        if cancel.wait(limit.wait_s):
            return _aborted(cancel)
        return limit.expired(
            f"the sleep of {go_duration(duration_s)} is longer than the gate's timeout; give it a longer timeout")
    if cancel.wait(duration_s):
        return _aborted(cancel)
    return Outcome(NodePhase.SUCCEEDED, outputs=literals_pb2.LiteralMap())


def _aborted(cancel: Cancel) -> Outcome:
    return Outcome(NodePhase.ABORTED, error=core_exec.ExecutionError(code="Aborted", message=cancel.reason))


class _GateLimit:
    """How long a gate may wait under its node's ``timeout`` and ``retries``, and how it ends then.

    Propeller's execution deadline (the timeout) is a retryable failure and its active deadline
    (twice the timeout) ends the node: without retries the first ends it, with any the second.
    """

    def __init__(self, node):
        self.timeout_s = timeout_seconds(node.metadata)
        self.retries = node.metadata.retries.retries

    @property
    def wait_s(self) -> float | None:
        if self.timeout_s is None:
            return None
        return self.timeout_s if self.retries == 0 else ACTIVE_DEADLINE_FACTOR * self.timeout_s

    def expired(self, why: str) -> Outcome:
        if self.retries == 0:
            return failed(
                f"[1/1] currentAttempt done. Last Error: USER::task execution timeout "
                f"[{go_duration(self.timeout_s)}] expired ({why})",
                code="RetriesExhausted|TimeoutExpired",
            )
        return Outcome(NodePhase.TIMED_OUT, error=core_exec.ExecutionError(
            code="TimeoutExpired", kind=core_exec.ExecutionError.USER,
            message=f"task active timeout [{go_duration(ACTIVE_DEADLINE_FACTOR * self.timeout_s)}] expired "
                    f"(twice the gate's timeout, retries included; {why})",
        ))


def go_duration(seconds: float) -> str:
    """A duration as propeller's messages show it (Go's ``Duration.String``: ``1h0m0s``, ``1m30s``, ``3s``)."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{int(hours)}h{int(minutes)}m{secs:g}s"
    if minutes:
        return f"{int(minutes)}m{secs:g}s"
    return f"{secs:g}s"
