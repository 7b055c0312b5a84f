"""Run one attempt of a task's container command, as a Flyte pod would, and read what it left.

The registered command (``pyflyte-fast-execute ... -- pyflyte-execute --inputs {{.input}} ...``)
is rendered with flytepropeller's template placeholders, started in a fresh working directory
with the container's env and the ``FLYTE_INTERNAL_*`` variables, in its own process group (so a
timeout or a terminate ends the whole tree), and judged by the files flytekit's entrypoint
writes under the output prefix: ``outputs.pb``, ``error.pb`` or ``futures.pb`` (dynamic tasks).
The image is not pulled: the sandbox's own Python environment plays the container.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from flyteidl.core import dynamic_job_pb2, errors_pb2, literals_pb2, tasks_pb2
from flyteidl.core import execution_pb2 as core_exec

from fastreg_magic.sandbox import raw_outputs

# Seconds between SIGTERM and SIGKILL when ending an attempt's process group.
TERMINATE_GRACE_S = 3.0
# How often a running attempt checks for cancellation and its deadline.
POLL_INTERVAL_S = 0.1
# How much of a crashed process's stderr goes into the error message.
STDERR_TAIL_CHARS = 4000
# The highest signal number an exit status can carry (Linux real-time signals end at 64).
MAX_SIGNAL = 64

_PLACEHOLDER = re.compile(r"{{\s*[.$](\w+)\s*}}")
_INPUT_VALUE = re.compile(r"(?i){{\s*[.$]Inputs\.([^}\s]+)\s*}}")


@dataclass(frozen=True)
class AttemptPaths:
    """Where one attempt reads and writes: plain absolute local paths, but for the raw output
    prefix, which is a URI when the run's raw outputs go to a bucket (see raw_outputs)."""

    inputs_file: Path
    output_prefix: Path
    raw_output_prefix: str
    checkpoint_prefix: Path
    prev_checkpoint_prefix: Path | None
    workdir: Path

    def create(self) -> None:
        for path in (self.output_prefix, self.checkpoint_prefix, self.workdir):
            path.mkdir(parents=True, exist_ok=True)
        raw_outputs.create(self.raw_output_prefix)


@dataclass(frozen=True)
class AttemptResult:
    """How an attempt ended: outputs, a dynamic job spec, or an error (recoverable or not).

    ``timed_out``: its time limit ended it (the caller knows whether that limit was the node's).
    """

    outputs: literals_pb2.LiteralMap | None = None
    dynamic: dynamic_job_pb2.DynamicJobSpec | None = None
    error: core_exec.ExecutionError | None = None
    recoverable: bool = False
    cancelled: bool = False
    timed_out: bool = False


def render_args(args: list[str], paths: AttemptPaths, inputs: literals_pb2.LiteralMap, unique_key: str) -> list[str]:
    """Render propeller's placeholders, case-insensitively; unknown ones are left as they are."""
    values = {
        "input": str(paths.inputs_file),
        "inputprefix": str(paths.inputs_file.parent),
        "outputprefix": str(paths.output_prefix),
        "rawoutputdataprefix": paths.raw_output_prefix,
        "checkpointoutputprefix": str(paths.checkpoint_prefix),
        # propeller renders an empty previous checkpoint as a quoted empty string
        "prevcheckpointprefix": str(paths.prev_checkpoint_prefix) if paths.prev_checkpoint_prefix else '""',
        "perretryuniquekey": unique_key,
        "namespace": "",
    }

    def placeholder(match: re.Match) -> str:
        return values.get(match.group(1).lower(), match.group(0))

    def input_value(match: re.Match) -> str:
        literal = inputs.literals.get(match.group(1))
        return _literal_to_arg(literal) if literal is not None else match.group(0)

    return [_PLACEHOLDER.sub(placeholder, _INPUT_VALUE.sub(input_value, arg)) for arg in args]


def _literal_to_arg(literal: literals_pb2.Literal) -> str:
    """A literal as propeller prints it into a command line (``{{.Inputs.x}}``)."""
    if literal.HasField("collection"):
        return "[" + ",".join(_literal_to_arg(item) for item in literal.collection.literals) + "]"
    scalar = literal.scalar
    if scalar.HasField("primitive"):
        primitive = scalar.primitive
        kind = primitive.WhichOneof("value")
        if kind == "boolean":
            return "true" if primitive.boolean else "false"
        if kind == "datetime":
            return primitive.datetime.ToJsonString()
        if kind == "duration":
            return primitive.duration.ToJsonString()
        return str(getattr(primitive, kind))
    if scalar.HasField("blob"):
        return scalar.blob.uri
    if scalar.HasField("schema"):
        return scalar.schema.uri
    return ""


def task_environment(template: tasks_pb2.TaskTemplate, base: dict[str, str]) -> dict[str, str]:
    """The attempt's environment: ours, the execution's envs and the container's, PATH on our Python first."""
    env = dict(os.environ)
    env.update(base)
    env.update({pair.key: pair.value for pair in template.container.env})
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    return env


class ProcessRegistry:
    """The live process groups of a run, so terminate and shutdown can end them from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)

    def discard(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def signal_all(self, sig: int) -> None:
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _signal_group(proc, sig)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def end_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the attempt's whole process group, then SIGKILL what is left after a grace period."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    # children may outlive the leader; the group id stays valid while any member lives
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def run_attempt(
    argv: list[str],
    env: dict[str, str],
    paths: AttemptPaths,
    *,
    timeout_s: float | None,
    cancelled,  # a Cancel (see runstate.py)
    registry: ProcessRegistry,
) -> AttemptResult:
    """Run the rendered command to the end (or until cancelled / timed out) and read its result."""
    stdout = open(paths.workdir.parent / "stdout.log", "wb")
    stderr_path = paths.workdir.parent / "stderr.log"
    stderr = open(stderr_path, "wb")
    try:
        proc = subprocess.Popen(
            argv, cwd=paths.workdir, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        stdout.close()
        stderr.close()
        return AttemptResult(
            error=core_exec.ExecutionError(
                code="CommandNotFound",
                message=f"Could not start the task command {argv[0]!r}: {exc}",
                kind=core_exec.ExecutionError.SYSTEM,
            )
        )
    registry.add(proc)
    try:
        outcome = _wait(proc, timeout_s, cancelled)
    finally:
        registry.discard(proc)
        stdout.close()
        stderr.close()
    if outcome == "cancelled":
        return AttemptResult(cancelled=True)
    if outcome == "timed_out":
        return AttemptResult(
            timed_out=True,
            recoverable=True,
            error=core_exec.ExecutionError(
                code="TimeoutExpired",
                message=f"task execution timeout [{timeout_s:g}s] expired; the task's process tree was ended",
                kind=core_exec.ExecutionError.USER,
            ),
        )
    return read_result(paths.output_prefix, proc.returncode, stderr_path)


def _wait(proc: subprocess.Popen, timeout_s: float | None, cancelled) -> str:
    deadline = time.monotonic() + timeout_s if timeout_s else None
    while True:
        try:
            proc.wait(timeout=POLL_INTERVAL_S)
            if cancelled.is_set():
                # terminate() signals the group directly; make sure no member outlives the leader
                _signal_group(proc, signal.SIGKILL)
                return "cancelled"
            return "exited"
        except subprocess.TimeoutExpired:
            pass
        if cancelled.is_set():
            end_process_group(proc)
            return "cancelled"
        if deadline is not None and time.monotonic() >= deadline:
            end_process_group(proc)
            return "timed_out"


def read_result(output_prefix: Path, returncode: int, stderr_path: Path) -> AttemptResult:
    """Judge an attempt by what flytekit's entrypoint wrote, as propeller does."""
    error_file = _first_existing(output_prefix, "error.pb", "error*.pb")
    if error_file is not None:
        doc = errors_pb2.ErrorDocument()
        doc.ParseFromString(error_file.read_bytes())
        container = doc.error
        kind = container.origin or core_exec.ExecutionError.USER
        return AttemptResult(
            error=core_exec.ExecutionError(code=container.code, message=container.message, kind=kind),
            recoverable=container.kind == errors_pb2.ContainerError.RECOVERABLE,
        )
    futures = output_prefix / "futures.pb"
    if futures.exists():
        spec = dynamic_job_pb2.DynamicJobSpec()
        spec.ParseFromString(futures.read_bytes())
        return AttemptResult(dynamic=spec)
    outputs = output_prefix / "outputs.pb"
    if returncode == 0:
        literal_map = literals_pb2.LiteralMap()
        if outputs.exists():
            literal_map.ParseFromString(outputs.read_bytes())
        return AttemptResult(outputs=literal_map)
    tail = _tail(stderr_path)
    return AttemptResult(
        recoverable=True,
        error=core_exec.ExecutionError(
            code="ContainerFailed",
            message=f"{how_it_ended(returncode)}\n{tail}",
            kind=core_exec.ExecutionError.USER,
        ),
    )


def killing_signal(returncode: int) -> signal.Signals | None:
    """The signal behind an exit status, if it reads as one; None for a plain exit code.

    Negative: the process itself was killed. 256-N: ``pyflyte-fast-execute`` passes on its
    child's status with ``exit(-N)``, which the system reports as 256-N. 128+N: a shell in
    between (Kubernetes reports an OOM-killed container as 137 the same way). 255 stays a
    plain ``exit(-1)``.
    """
    if returncode < 0:
        number = -returncode
    elif 256 - MAX_SIGNAL <= returncode < 255:
        number = 256 - returncode
    elif 128 < returncode <= 128 + MAX_SIGNAL:
        number = returncode - 128
    else:
        return None
    try:
        return signal.Signals(number)
    except ValueError:
        return None


def how_it_ended(returncode: int) -> str:
    """What to tell the user about an attempt that ended without writing a result."""
    sig = killing_signal(returncode)
    if sig is None:
        return f"The task process exited with code {returncode} without writing a result."
    killed = f"The task process was killed by signal {sig.value} ({sig.name}) without writing a result"
    status = f" (exit code {returncode})" if returncode > 0 else ""
    if sig == signal.SIGKILL:
        return (f"{killed}, likely by the out-of-memory killer{status}. "
                "Give it less data per task or run it on a machine with more memory.")
    return f"{killed}{status}."


def _first_existing(directory: Path, name: str, pattern: str) -> Path | None:
    exact = directory / name
    if exact.exists():
        return exact
    return next(iter(sorted(directory.glob(pattern))), None)


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-STDERR_TAIL_CHARS:]
