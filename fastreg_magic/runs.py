"""Launch a registered workflow, attach to any run, and follow it: the `Run` object.

    run = launch(remote, ref, {"n": 3})          # returns as soon as FlyteAdmin accepted it
    run.phase                                    # "QUEUED", "RUNNING", "SUCCEEDED", ...
    run.wait().outputs                           # {"o0": 6.0}
    run.logs()                                   # {"n0": [("stderr.log (local file)", "file:///…")]}
    run.deck("train")                            # the HTML report of a task with @task(enable_deck=True)
    attach(remote, "https://flyte.acme.dev/console/projects/p/domains/d/executions/abc").error

A `Run` is a thin, thread-safe view of one execution. ``refresh()`` is one GetExecution;
outputs (or the error) are read once, when the run ends; the node table and the workflow
graph are read on demand. A run the backend answers for no longer (a sandbox started afresh
behind the same address) is *lost*: `RunLost` says so once, instead of polling for ever.
Ctrl-C loses no run: a launch stopped before its CreateExecution starts nothing, one stopped after
it keeps the run and names it (`launch_stoppably`); a stopped `wait()` says the run goes on.
Widgets and terminals draw runs; nothing here imports IPython or ipywidgets. The background
follower lives in `runs_watch`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Mapping

from flyteidl.admin import common_pb2, execution_pb2
from flyteidl.core import identifier_pb2

from fastreg_magic.errors import FastRegError, RunError
from fastreg_magic.launch_options import LaunchOptions
from fastreg_magic.run_inputs import InputError, entity_fields, launch_value
from fastreg_magic.run_inputs_json import type_label
from fastreg_magic.runs_data import (  # noqa: F401  (parse_execution_ref is public here too)
    RUN_TERMINAL,
    Graph,
    NodeStatus,
    RunState,
    parse_execution_ref,
    workflow_graph,
)
from fastreg_magic.runs_errors import (
    backend_endpoint,
    conversion_problem,
    is_backend_failure,
    is_not_found,
    not_retried_note,
    readable_error,
    reraise,
    rpc,
)
from fastreg_magic.runs_logs import TAIL_LINES, failure_tail, tail
from fastreg_magic.runs_tree import NodeTree, flatten

log = logging.getLogger(__name__)

__all__ = ["Run", "NodeStatus", "InputRefused", "RunLost", "launch", "attach", "poll_intervals", "is_loopback"]

# Polling: fast at first (runs on the sandbox change phase within a fraction of a second),
# then backing off to a ceiling that depends on what a poll costs the backend.
FIRST_POLL_S = 0.1
POLL_GROWTH = 1.5
MAX_POLL_LOOPBACK_S = 0.3  # a GetExecution on loopback costs about a millisecond
MAX_POLL_REMOTE_S = 5.0  # a real cluster is shared: be gentle

# Launch targets fetched from the backend, per FlyteRemote, so a second launch costs one RPC.
_TARGETS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
_TARGETS_LOCK = threading.Lock()


def launch(
    remote,
    entity,
    inputs: Mapping[str, Any],
    *,
    execution_name: str | None = None,
    console_url: str | None = None,
    on_lost: Callable[[], None] | None = None,
    before_create: Callable[[], None] | None = None,
    options: LaunchOptions | None = None,
) -> "Run":
    """Start a run of a registered task, workflow or launch plan (an `api.EntityRef`).

    ``inputs`` are Python values typed by the entity's interface (a dict for a dataclass input is
    accepted, as the form's JSON is). Names, missing inputs and values are checked, and converted one
    by one, before anything reaches the backend; a value that cannot be converted is a `RunError`
    naming its input. Returns once FlyteAdmin has created the execution. ``on_lost()`` is called
    once if the backend later loses the run (and then, most likely, what it ran). ``before_create()``
    is called just before the CreateExecution is sent, and may raise to send none (see `launch_stoppably`).
    The run is named here when ``execution_name`` is None, so its name is known before the backend answers.
    ``options`` (`launch_options.LaunchOptions`, checked as they were made) go in the run's ExecutionSpec as
    ``pyflyte run`` puts them; a ``name`` among them that a run of the project and domain has is refused.
    """
    options = options or LaunchOptions()
    execution_name = execution_name or options.name or new_execution_name()
    local = getattr(entity, "entity", None)  # the flytekit object from the cell, when we have it
    if local is not None:
        fields = {f.name: f for f in entity_fields(local)}
        _check_input_names(entity, fields, inputs)
        inputs = _ready_inputs(entity, fields, inputs)
    given = dict(inputs)  # as the user gave them (and a task's defaults), for the run's view
    target = _remote_target(remote, entity)
    try:
        with uploads_through(remote):
            if local is not None:  # converted here, one input at a time, so a failure can name its input
                inputs = _literal_inputs(remote, entity, target, local.python_interface.inputs, inputs)
            if options.name is not None:
                _refuse_taken_name(remote, entity, execution_name)
            if before_create is not None:
                before_create()
            # Without the local object, flytekit guesses Python types from the registered interface.
            execution = remote.execute_remote_task_lp(
                target,
                dict(inputs),
                project=entity.project,
                domain=entity.domain,
                execution_name=execution_name,
                **options.flytekit_arguments(),
            )
    except _LaunchStopped:
        raise
    except Exception as exc:  # flytekit raises its own tree, gRPC's, and TypeEngine's errors
        reraise(exc, f"Launching {entity.name}", remote)
    run = Run(
        remote,
        execution.id.to_flyte_idl(),
        label=entity.name,
        output_types=dict(local.python_interface.outputs) if local is not None else None,
        console_url=console_url or _console_from_entity_url(getattr(entity, "url", None)),
        inputs=given,
        on_lost=on_lost,
    )
    run.options = options
    run._seen(execution.to_flyte_idl())  # flytekit already fetched it once: no second GetExecution
    return run


def _refuse_taken_name(remote, entity, name: str) -> None:
    """A run named ``name`` must not exist yet: flytekit, told it does, hands back that run as if it were new."""
    wid = identifier_pb2.WorkflowExecutionIdentifier(project=entity.project, domain=entity.domain, name=name)
    try:
        rpc(remote.client, "get_execution", execution_pb2.WorkflowExecutionGetRequest(id=wid),
            what=f"Checking that no run is named {name}", remote=remote)
    except RunError as err:
        if is_not_found(err.__cause__):
            return
        raise
    raise RunError(f"A run named {name!r} exists already in {entity.project}/{entity.domain}.",
                   "Pick another name=, or leave it out for a fresh one.")


def new_execution_name() -> str:
    """A fresh run name as FlyteAdmin makes them (a letter, then 19 letters and digits), chosen here so
    that a launch interrupted while the backend had not answered can still say which run it started."""
    return "f" + uuid.uuid4().hex[:19]


# ---------------------------------------------------------------- a launch Ctrl-C can stop

# How long an interrupted launch waits for a CreateExecution already sent to be answered, so the run
# it started is known (kept, shown, named). A second Ctrl-C stops waiting sooner.
LAUNCH_SETTLE_S = 30.0


class _LaunchStopped(Exception):
    """Raised on the launching thread, before the CreateExecution, when Ctrl-C came first."""


class _CreateGate:
    """Decides, once, whether a launch's CreateExecution goes out or Ctrl-C stopped it first."""

    def __init__(self):
        self._lock = threading.Lock()
        self._stopped = False
        self._sent = False

    def pass_through(self) -> None:
        """On the launching thread, just before the CreateExecution: raise if Ctrl-C came first."""
        with self._lock:
            if self._stopped:
                raise _LaunchStopped()
            self._sent = True

    def stop(self) -> bool:
        """On Ctrl-C: no CreateExecution goes out from now on; True if one had gone out already."""
        with self._lock:
            self._stopped = True
            return self._sent


def launch_stoppably(start: Callable[[str, Callable[[], None]], "Run"], what: str, keep: Callable[["Run"], None],
                     name: str | None = None) -> "Run":
    """``start(execution_name, before_create)`` on a worker thread, waited for here, then ``keep(run)``.

    On Ctrl-C nothing started is lost: before the CreateExecution, none is sent ("nothing was started");
    after it, the answer is waited for (briefly) and the run kept, and `errors.Interrupted` names the run
    and how to stop it, as it does for a Ctrl-C while the started run is being kept (its view built, its
    watcher started). A run whose answer comes later still is kept when it comes. ``name`` is the run's
    name when the user chose it, else a fresh one.
    """
    from fastreg_magic import register

    name = name or new_execution_name()
    gate = _CreateGate()
    future = register.worker_pool().submit(start, name, gate.pass_through)
    try:
        run = register.result_of(future)
    except KeyboardInterrupt:
        raise _interrupted_launch(future, gate, what, name, keep) from None
    try:
        keep(run)  # builds the run's view and starts its watcher: a Stop lands there as often as anywhere
    except KeyboardInterrupt:
        raise _started_and_goes_on(run, what) from None
    return run


def _interrupted_launch(future, gate: _CreateGate, what: str, name: str, keep) -> BaseException:
    from fastreg_magic.errors import Interrupted

    if not gate.stop():
        return Interrupted(f"Interrupted while launching {what}: nothing was started.")
    if not _settled(future):
        future.add_done_callback(functools.partial(_keep_when_started, keep))
        return Interrupted(
            f"Interrupted while launching {what}: run {name} was requested, and the backend has not answered yet.",
            f"If it starts, it joins reg.runs and the cell's view; `%flyte_watch {name}` shows it, "
            "and its Terminate button stops it.",
        )
    try:
        run = future.result()
    except Exception as err:  # the launch failed on its own: that is the news
        return err
    keep(run)
    return _started_and_goes_on(run, what)


def _started_and_goes_on(run, what: str) -> BaseException:
    from fastreg_magic.errors import Interrupted

    return Interrupted(f"Interrupted, but run {run.name} of {what} had started and goes on: it is reg.runs[-1] "
                       "(reg.runs[-1].terminate() stops it).")


def _settled(future) -> bool:
    """Whether the launch finished within LAUNCH_SETTLE_S; a second Ctrl-C stops waiting (short waits take it at once)."""
    from fastreg_magic import register

    try:
        return register.wait_for(future, LAUNCH_SETTLE_S)
    except KeyboardInterrupt:
        return future.done()


def _keep_when_started(keep, future) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    try:
        keep(future.result())
    except Exception:  # the run goes on either way; only its place in the view is missing
        log.debug("keeping a run started after an interrupt failed", exc_info=True)


_UPLOAD_BINDING = threading.RLock()  # re-entered by a cell's module that launches a run as it loads


@contextlib.contextmanager
def uploads_through(remote):
    """Local file inputs (FlyteFile, FlyteDirectory) upload through *this* remote's backend.

    flytekit uploads them via the process-wide ``flyte://`` fsspec protocol, which every new
    FlyteRemote re-binds to itself (remote.py: ``fsspec.register_implementation("flyte", ...)``);
    with two backends in one kernel, the last one built would receive the other's uploads.
    """
    import fsspec

    from fastreg_magic.default_data import flyte_fs_by_content

    with _UPLOAD_BINDING:
        bound = _FLYTE_FS.get(remote)
        if bound is None:  # flytekit builds a class for each call: one per remote is enough
            bound = _FLYTE_FS[remote] = flyte_fs_by_content(remote)  # a DataFrame written there: by content
        fsspec.register_implementation("flyte", bound, clobber=True)
        yield


_FLYTE_FS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # the flyte:// filesystem class of each remote


def attach(
    remote,
    execution_id_or_url: str,
    *,
    project: str | None = None,
    domain: str | None = None,
    console_url: str | None = None,
    has_console: bool = True,
) -> "Run":
    """A `Run` for an execution started anywhere: a console URL, ``project:domain:name``, or a name.

    ``has_console=False`` for a backend that serves no console (the embedded sandbox): a console URL
    given for one of its runs (pyflyte prints one from its gRPC address) would be a dead link.
    """
    p, d, name, console = parse_execution_ref(execution_id_or_url)
    if not has_console:
        console = console_url = None
    wid = identifier_pb2.WorkflowExecutionIdentifier(
        project=p or project or remote.default_project or "",
        domain=d or domain or remote.default_domain or "",
        name=name,
    )
    if not wid.project or not wid.domain:
        raise RunError(
            f"Cannot tell which project and domain the run {name!r} belongs to.",
            "Pass project= and domain=, or give the full console URL or project:domain:name.",
        )
    run = Run(remote, wid, console_url=console or console_url)
    run.refresh()
    run.inputs = _launched_with(run)
    run.options = LaunchOptions.from_spec(run._spec)
    return run


def attach_first(places: list[tuple[str, Callable[[], "Run"]]], execution: str, *, project: str, domain: str) -> "Run":
    """The run ``execution`` from the first of ``places`` that has it: (where, attach there) pairs, in the
    order to look. With one place its own error is raised; with several, a place that is down or is not
    the cluster a URL names is passed over, and a run found nowhere is one error naming every place."""
    if len(places) == 1:
        return places[0][1]()
    looked, failures = [], []
    for where, attach_there in places:
        try:
            return attach_there()
        except FastRegError as err:
            (looked if is_not_found(err.__cause__) else failures).append((where, err))
    if not looked:
        raise failures[0][1]
    where = ", ".join(w for w, _ in looked)
    raise RunError(
        f"Run {execution} was not found in {project}/{domain} on {where}.",
        _NO_SUCH_RUN.format(project=project, domain=domain),
    )


def _launched_with(run: "Run") -> dict | None:
    """The inputs of a run started elsewhere, for its view; None when they cannot be read."""
    from fastreg_magic.runs_outputs import read_inputs

    try:
        return read_inputs(run)
    except Exception:  # the run itself is there; only this extra line of its view is missing
        log.debug("reading the inputs of run %s failed", run.name, exc_info=True)
        return None


def refuse_other_backend(execution_id_or_url: str, backend) -> None:
    """A console URL of a cluster other than ``backend`` (a `config.Backend`) is refused, naming both:
    its run name could exist here too, and the view would show that run under the other cluster's link."""
    console = parse_execution_ref(execution_id_or_url)[3]
    if console is None:
        return
    host = _host(console)
    ours = {_host(backend.endpoint), _host(backend.console_url or "")} - {""}
    if host in ours or (_is_loopback_host(host) and any(_is_loopback_host(h) for h in ours)):
        return
    where = getattr(backend, "label", None) or backend.endpoint
    raise RunError(
        f"{execution_id_or_url} is a run on {host}, but this kernel's Flyte backend is {where}.",
        f"Watch it through that cluster: pass --config with its Flyte config file, or --endpoint HOST:PORT "
        f"of its FlyteAdmin (e.g. --endpoint {host}:443).",
    )


def _host(address: str) -> str:
    """``https://flyte.acme.dev/console`` / ``dns:///flyte.acme.dev:443`` / ``localhost:30080`` -> the host name."""
    rest = address.strip().lower().split("://", 1)[-1].lstrip("/")
    netloc = rest.split("/", 1)[0]
    if netloc.startswith("["):  # [::1]:8089
        return netloc[1:].split("]", 1)[0]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _is_loopback_host(host: str) -> bool:
    return host in ("localhost", "::1", "0.0.0.0") or host.startswith("127.")


_NO_SUCH_RUN = (
    "Check the run's name, and that it is in {project}/{domain}: give its project and domain (-p/-d), "
    "its console URL, or the backend it ran on (--config FILE or --endpoint HOST:PORT)."
)
LOST_HINT = "Re-run the %%flyte_fast cell, then launch again."


class RunLost(RunError):
    """The backend answers, but no longer has a run it had: it is not the backend that ran it (a
    sandbox started afresh, another data dir behind the same address). Nothing about the run can
    be learnt or done there any more."""


class Run:
    """One execution on a Flyte backend, as last seen. Safe to read from any thread."""

    def __init__(self, remote, execution_id, *, label=None, output_types=None, console_url=None, inputs=None,
                 on_lost: Callable[[], None] | None = None):
        self._remote = remote
        # The inputs it was launched with, as Python values; None for a run attached to (not launched here).
        self.inputs = dict(inputs) if inputs is not None else None
        # The options it was launched with (`LaunchOptions`): given here, or read from an attached run's spec.
        self.options = LaunchOptions()
        self._client = remote.client
        self._id = execution_id
        self._lock = threading.RLock()
        self._state = RunState(phase="UNDEFINED")
        self._spec = None
        self._outputs: dict | None = None
        self._output_types = output_types
        self._graph: Graph | None = None
        self._subgraphs: dict[str, Graph] = {}
        self._tree = NodeTree(self)
        self._on_lost = on_lost
        self._lost_at: dt.datetime | None = None  # when the backend was found to have lost it
        self._failure_tail: str | None = None  # the end of a failed task's stderr, read once
        self._node_tasks: dict[str, str | None] = {}  # a failed run's nodes (by path) and their tasks, read once
        self._retry_note = ""  # why a failed task that declared retries was not retried, read once
        self._task_retries: dict[str, int] = {}  # the retries each task of the workflow declares
        self.label = label
        console = (console_url or "").rstrip("/")
        self.url = f"{console}/projects/{self.project}/domains/{self.domain}/executions/{self.name}" if console else None
        self._console = console or None

    @classmethod
    def from_execution(cls, remote, execution, *, console_url=None) -> "Run":
        """A `Run` from flytekit's ``FlyteWorkflowExecution`` (or its model)."""
        run = cls(remote, execution.id.to_flyte_idl(), console_url=console_url)
        run.refresh()
        return run

    # -- identity ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._id.name

    @property
    def project(self) -> str:
        return self._id.project

    @property
    def domain(self) -> str:
        return self._id.domain

    @property
    def id(self) -> identifier_pb2.WorkflowExecutionIdentifier:
        return self._id

    @property
    def endpoint(self) -> str:
        return backend_endpoint(self._remote)

    @property
    def version(self) -> str | None:
        """The version of the launch plan (or task) it runs; None until the backend was first asked."""
        spec = self._spec
        return spec.launch_plan.version if spec is not None else None

    # -- state ------------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        return self._state.phase

    @property
    def done(self) -> bool:
        return self._state.phase in RUN_TERMINAL

    @property
    def lost(self) -> bool:
        """The backend answered that it no longer has this run (see `RunLost`)."""
        return self._lost_at is not None

    @property
    def error(self) -> str | None:
        """What went wrong: one line naming the failed task and its exception (`error_headline`), the
        traceback through the user's code, then the last lines of the failed task's stderr when the
        backend left it in a file here; for a lost run, that it is lost. ``backend_error`` is the
        backend's own text, flytekit's frames and all."""
        error = self._readable_error()
        if error and self._failure_tail and self._failure_tail not in error:
            error = f"{error.rstrip()}\n\n{self._failure_tail}"
        if error is None and self.lost:
            return str(self._lost_error())
        return error

    @property
    def error_headline(self) -> str | None:
        """What went wrong in one line ("s2 (node n1) failed: ValueError: ..."); None while nothing did."""
        error = self._readable_error()
        if error is None:
            return str(self._lost_error()) if self.lost else None
        return error.strip().partition("\n")[0]

    @property
    def backend_error(self) -> str | None:
        """The run's error exactly as the backend wrote it (flytekit's trace and message included)."""
        return self._state.error

    def _readable_error(self) -> str | None:
        raw = self._state.error  # no lock: `_seen` holds it through RPCs; the tasks are set before the state
        return readable_error(raw, self._node_tasks, self._retry_note) if raw else raw

    @property
    def outputs(self) -> dict | None:
        return self._outputs

    @property
    def started(self) -> dt.datetime | None:
        return self._state.started or self._state.created

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (its whole duration once it has ended)."""
        state = self._state
        if self.done and state.duration is not None:
            return state.duration
        start = state.started or state.created
        if start is None:
            return 0.0
        end = state.updated if self.done and state.updated else self._lost_at or dt.datetime.now(dt.timezone.utc)
        return max(0.0, (end - start).total_seconds())

    def refresh(self) -> "Run":
        """Ask the backend for the run's phase (one GetExecution); read outputs once it has ended."""
        request = execution_pb2.WorkflowExecutionGetRequest(id=self._id)
        try:
            execution = rpc(self._client, "get_execution", request, what=f"Reading run {self.name}", remote=self._remote,
                            not_found=_NO_SUCH_RUN.format(project=self.project, domain=self.domain))
        except RunError as err:
            self._check_lost(err)
            raise
        self._lost_at = None  # the backend that ran it is back (its data dir was started again)
        self._seen(execution)
        return self

    def _check_lost(self, err: RunError) -> None:
        """Raise `RunLost` when ``err`` is the backend answering that a run it had is not there.

        Only for a run the backend once answered for: a name never seen may just be mistyped."""
        if self._spec is None or not is_not_found(err.__cause__):
            return
        with self._lock:
            first = self._lost_at is None
            if first:
                self._lost_at = dt.datetime.now(dt.timezone.utc)
        if first and self._on_lost is not None:
            try:
                self._on_lost()
            except Exception:  # forgetting what was registered is a courtesy; the run is lost either way
                log.debug("on_lost of run %s failed", self.name, exc_info=True)
        raise self._lost_error() from err.__cause__

    def _lost_error(self) -> RunLost:
        return RunLost(
            f"Run {self.name} is not on {self.endpoint} any more: the backend there answers, but has lost it "
            "(a sandbox started afresh, or another one behind the same address).",
            LOST_HINT,
        )

    def _seen(self, execution) -> None:
        """Take in what one GetExecution answered (``admin.Execution``)."""
        with self._lock:
            if self._spec is None:
                self._spec = execution.spec
                self.label = self.label or execution.spec.launch_plan.name
            state = RunState.from_execution(execution)
            if state.phase == "SUCCEEDED" and self._outputs is None:
                from fastreg_magic.runs_outputs import read_outputs

                # Outputs first, so no reader sees SUCCEEDED without them.
                self._outputs = read_outputs(self, execution)
            if state.phase == "FAILED" and self._failure_tail is None:
                self._read_failure(state.error)  # before FAILED shows, as outputs are
            self._state = state

    def take_in(self, other: "Run") -> None:
        """Take in what ``other``, a `Run` of the same execution, last saw: one poller follows an
        execution however many `Run` objects stand for it (`runs_watch`), and each of them shows the same."""
        if other is self:
            return
        with other._lock:
            state, spec, outputs, tail, lost_at = other._state, other._spec, other._outputs, other._failure_tail, other._lost_at
            node_tasks, retry_note = other._node_tasks, other._retry_note
        graph, subgraphs, task_retries = other._graph, other._subgraphs, other._task_retries
        with self._lock:
            newly_lost = lost_at is not None and self._lost_at is None
            if self._spec is None and spec is not None:
                self._spec = spec
                self.label = self.label or spec.launch_plan.name
            if self._graph is None and graph is not None:
                self._graph, self._subgraphs, self._task_retries = graph, subgraphs, task_retries
            self._outputs = self._outputs if self._outputs is not None else outputs
            self._failure_tail = self._failure_tail if self._failure_tail is not None else tail
            self._node_tasks = self._node_tasks or node_tasks
            self._retry_note = self._retry_note or retry_note
            self._lost_at = lost_at
            self._state = state  # last, as in `_seen`: no reader sees SUCCEEDED without the outputs
        if newly_lost and self._on_lost is not None:
            try:
                self._on_lost()
            except Exception:  # as in `_check_lost`: the run is lost either way
                log.debug("on_lost of run %s failed", self.name, exc_info=True)

    def _read_failure(self, error: str | None) -> None:
        """Read, once, what the error needs from the node table: which task each node ran (the error
        names a node), whether a task that declared retries went without them, and the end of the
        failed task's stderr."""
        try:
            rows = self.nodes()
        except Exception:  # the error itself is known: only the task's name and its stderr are missing
            log.debug("reading the nodes of failed run %s failed", self.name, exc_info=True)
            self._failure_tail = ""
            return
        self._node_tasks = {row.label: row.task for _, row in flatten(rows)}
        try:
            self._retry_note = self._not_retried(rows, error or "")
        except Exception:  # a hint only: the error is whole without it
            log.debug("reading the retries of failed run %s failed", self.name, exc_info=True)
        try:
            self._failure_tail = failure_tail(rows)
        except Exception:  # as above: only the extra lines from the log are missing
            log.debug("reading the stderr of failed run %s failed", self.name, exc_info=True)
            self._failure_tail = ""

    def _not_retried(self, rows, error: str) -> str:
        """The note for a failed task that declared retries and was not retried (Flyte retries only a
        recoverable error), "" when there is none to make."""
        for _, row in flatten(rows):
            if row.phase == "FAILED" and not row.children and row.task and row.retries == 0:
                declared = self._declared_retries(row.task)
                if declared:
                    return not_retried_note(row.task, declared, error)
        return ""

    def _declared_retries(self, task: str) -> int:
        if self._spec.launch_plan.resource_type != identifier_pb2.TASK:
            return self._task_retries.get(task, 0)  # read with the workflow (`graph`)
        found = rpc(self._client, "get_task", common_pb2.ObjectGetRequest(id=self._spec.launch_plan),
                    what=f"Reading the task of run {self.name}", remote=self._remote)
        return found.closure.compiled_task.template.metadata.retries.retries

    def nodes(self) -> list[NodeStatus]:
        """The node table as a tree: node, task, phase, started, duration, retries, and each node's
        ``children`` (a sub-workflow's or dynamic task's nodes, a map task's elements)."""
        graph = self.graph()
        task = self._spec.launch_plan.name if self._spec.launch_plan.resource_type == identifier_pb2.TASK else None
        return self._tree.rows(graph, self._subgraphs, task_name=task)

    def logs(self, node: str | None = None) -> dict[str, list[tuple[str, str]]]:
        """Each node's logs as the backend names and links them: ``{"n0": [("stderr.log (local file)",
        "file:///…/stderr.log"), ...]}``; a log service's links on a cluster (Kubernetes, CloudWatch, ...).

        ``node`` is a node's path as the node table shows it (``"n1/n0"``, ``"n2[3]"``); nodes without
        logs (not started, cached, sub-workflows) are left out. Read the end of a local file with `log`.
        """
        rows = [row for _, row in flatten(self.nodes())]
        if node is None:
            return {row.label: list(row.logs) for row in rows if row.logs}
        for row in rows:
            if row.label == node:
                return {node: list(row.logs)}
        known = ", ".join(row.label for row in rows) or "none yet"
        raise RunError(f"Run {self.name} has no node {node!r}.", f"Its nodes are: {known}.")

    def log(self, node: str, name: str = "stderr", lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of one of ``node``'s logs (the latest attempt's whose name contains ``name``),
        when the backend left it in a file on this machine, as the embedded sandbox does."""
        found = self.logs(node)[node]
        matching = [(n, uri) for n, uri in found if name.lower() in n.lower()]
        if not matching:
            names = ", ".join(repr(n) for n, _ in found) or "none yet"
            raise RunError(f"Node {node} of run {self.name} has no log named like {name!r}.", f"Its logs: {names}.")
        return tail(matching[-1][1], lines=lines).text

    def deck(self, node: str | None = None):
        """The HTML report (Flyte Deck) a task of the run wrote with ``@task(enable_deck=True)``, as a
        `runs_decks.TaskDeck`: shown framed in Jupyter, with ``.html`` and ``.save(path)``.

        ``node`` is a node's path as the node table shows it (``"n1"``, ``"n0/n2"``) or its task's name;
        without it, the run's one node with a deck. A run with none says why (no task makes one, not
        finished yet, answered from the cache)."""
        from fastreg_magic.runs_decks import read_deck

        return read_deck(self, node)

    def graph(self) -> Graph:
        """The workflow's nodes and edges as registered (read once)."""
        if self._graph is not None:
            return self._graph
        if self._spec is None:
            self.refresh()
        lp_id = self._spec.launch_plan
        if lp_id.resource_type == identifier_pb2.TASK:
            graph = Graph(())  # one node, named by the backend: `nodes()` reports it
        else:
            what = f"Reading the workflow of run {self.name}"
            lp = rpc(self._client, "get_launch_plan", common_pb2.ObjectGetRequest(id=lp_id), what=what, remote=self._remote)
            wf = rpc(self._client, "get_workflow", common_pb2.ObjectGetRequest(id=lp.spec.workflow_id), what=what, remote=self._remote)
            graph = workflow_graph(wf.closure.compiled_workflow.primary)
            self._subgraphs = {sub.template.id.name: workflow_graph(sub) for sub in wf.closure.compiled_workflow.sub_workflows}
            self._task_retries = {t.template.id.name: t.template.metadata.retries.retries
                                  for t in wf.closure.compiled_workflow.tasks}
        self._graph = graph
        return graph

    def wait(self, timeout: float | None = None) -> "Run":
        """Block until the run ends, polling fast then backing off; RunError after ``timeout`` s.

        Before it returns, every open view of the run in this kernel shows how it ended, drawn on behalf
        of the caller's cell (`widget_registration.show_ended`): a notebook executed headless saves them so.
        """
        import sys

        from fastreg_magic.errors import Interrupted

        try:
            self._wait(timeout)
        except KeyboardInterrupt:
            raise Interrupted(f"Stopped waiting; run {self.name} goes on (run.terminate() stops it).") from None
        if "fastreg_magic.widget_run" not in sys.modules:  # no view was ever drawn: ipywidgets is not imported here
            return self
        from fastreg_magic.widget_registration import show_ended

        try:
            show_ended(self)
        except KeyboardInterrupt:
            raise Interrupted(f"Run {self.name} ended {self.phase}; stopped as its views were being updated.") from None
        except Exception:  # a drawing bug must not hide that the run ended: its views' follower draws it too
            log.exception("drawing the end of run %s in its views failed", self.name)
        return self

    def _wait(self, timeout: float | None) -> "Run":
        deadline = None if timeout is None else time.monotonic() + timeout
        for interval in poll_intervals(is_loopback(self._remote)):
            self.refresh()
            if self.done:
                return self
            if deadline is not None and time.monotonic() + interval > deadline:
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    time.sleep(remaining)
                    self.refresh()
                    if self.done:
                        return self
                raise RunError(
                    f"Run {self.name} is still {self.phase} after {timeout:g} s.",
                    "Wait longer (run.wait(timeout=...)), watch it in the widget, or run.terminate().",
                )
            time.sleep(interval)
        raise AssertionError("poll_intervals never ends")

    def terminate(self, cause: str = "terminated from the notebook") -> None:
        """Abort the run; a run that has already ended is left as it is."""
        self.refresh()
        if self.done:
            return
        request = execution_pb2.ExecutionTerminateRequest(id=self._id, cause=cause)
        rpc(self._client, "terminate_execution", request, what=f"Terminating run {self.name}", remote=self._remote)
        self.refresh()

    def relaunch(self) -> "Run":
        """Start the same launch plan again with the same inputs and options; returns the new run."""
        if self._spec is None:
            self.refresh()
        # FlyteAdmin copies the run's spec, but takes overwrite_cache from the request alone (RelaunchExecution).
        request = execution_pb2.ExecutionRelaunchRequest(id=self._id, overwrite_cache=self._spec.overwrite_cache)
        try:
            response = rpc(self._client, "relaunch_execution", request, what=f"Relaunching run {self.name}",
                           remote=self._remote)
        except RunError as err:
            self._check_lost(err)
            raise
        run = Run(self._remote, response.id, label=self.label, output_types=self._output_types, console_url=self._console,
                  inputs=self.inputs, on_lost=self._on_lost)
        run.options = self.options.without_name()  # the new run has a name of its own
        run.refresh()
        return run

    def reconnect(self) -> None:
        """Open a fresh connection to the backend (after it stopped answering).

        Not for the kernel's own backends: their shared channel comes back by itself, and a fresh one
        would mean logging in again (``connection.py``).
        """
        from flytekit.clients.friendly import SynchronousFlyteClient

        if getattr(self._remote, "reconnects_itself", False):
            return
        self._client = SynchronousFlyteClient(self._remote.config.platform)

    # -- helpers ----------------------------------------------------------------------------
    def __repr__(self) -> str:
        where = f" {self.url}" if self.url else ""
        phase = f"LOST (last seen {self.phase})" if self.lost else self.phase
        return f"<Run {self.project}/{self.domain}/{self.name} {phase}{where}>"

    def _ipython_display_(self) -> None:
        from fastreg_magic.widget import display_run

        display_run(self)

    def _repr_pretty_(self, printer, cycle) -> None:
        from fastreg_magic.widget_text import run_text

        printer.text(repr(self) if cycle else run_text(self))


def poll_intervals(loopback: bool):
    """Seconds to sleep between polls: 0.1, 0.15, 0.225, ... up to the ceiling, forever."""
    ceiling = MAX_POLL_LOOPBACK_S if loopback else MAX_POLL_REMOTE_S
    interval = FIRST_POLL_S
    while True:
        yield interval
        interval = min(ceiling, interval * POLL_GROWTH)


def is_loopback(remote) -> bool:
    return _is_loopback_host(_host(backend_endpoint(remote)))


def _check_input_names(entity, fields, inputs: Mapping[str, Any]) -> None:
    unknown = sorted(set(inputs) - set(fields))
    if unknown:
        known = ", ".join(fields) or "no inputs"
        raise RunError(f"{entity.name} has no input {unknown[0]!r}.", f"Its inputs are: {known}.")
    fixed = sorted(name for name in inputs if fields[name].fixed)
    if fixed:
        raise RunError(
            f"{fixed[0]!r} is fixed by launch plan {entity.name} and cannot be set at launch.",
            "Launch the workflow itself, or a launch plan that does not fix it.",
        )
    missing = [f.name for f in fields.values() if f.required and f.name not in inputs]
    if missing:
        raise RunError(
            f"{entity.name} needs a value for {', '.join(repr(m) for m in missing)}.",
            f"Pass it: launch({', '.join(f'{m}=...' for m in missing)}).",
        )


def _ready_inputs(entity, fields, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``inputs`` checked against their fields, plus a task's defaults (a task, unlike a launch plan,
    carries none to the backend: pyflyte sends them too, and None for an Optional input left out)."""
    ready = {}
    for name, field in fields.items():
        if name in inputs:
            try:
                ready[name] = launch_value(field, inputs[name])
            except InputError as err:
                raise _input_error(entity, field.name, field.type_label, err.problem) from None
        elif entity.kind == "task" and field.has_default:
            ready[name] = field.default
    return ready


def _literal_inputs(remote, entity, target, python_types: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict:
    """Each input as the Flyte literal the backend receives (local files are uploaded here)."""
    from flytekit.core.type_engine import TypeEngine
    from flytekit.models.literals import Literal

    from flytekit.core.context_manager import FlyteContextManager

    from fastreg_magic.default_data import forget_flytekit_conversions, stored_by_content

    variables = target.interface.inputs
    literals = {}
    # remote.remote_context(), but stored as defaults are (a directory keeps its layout), and with nothing
    # remembered of a file from an earlier launch: it may have been edited since.
    forget_flytekit_conversions()
    context = FlyteContextManager.current_context().with_file_access(stored_by_content(remote))
    with FlyteContextManager.with_context(context) as ctx:
        for name, value in inputs.items():
            if isinstance(value, Literal):
                literals[name] = value
                continue
            python_type = python_types[name]
            try:
                literals[name] = TypeEngine.to_literal(ctx, value, python_type, variables[name].type)
                literals[name].to_flyte_idl()  # what the request will carry: an int beyond 64 bits fails here
            except Exception as exc:
                if is_backend_failure(exc):
                    reraise(exc, f"Uploading input {name!r} of {entity.name}", remote)
                raise _input_error(entity, name, type_label(python_type), conversion_problem(exc)) from exc
    return literals


class InputRefused(RunError):
    """One input's value cannot be sent; ``input`` and ``problem`` let the launch form show it by its field."""

    def __init__(self, message: str, hint: str, *, input: str, problem: str):
        super().__init__(message, hint)
        self.input = input
        self.problem = problem


def _input_error(entity, name: str, label: str, problem: str) -> InputRefused:
    """``wf: input 'xs' (list[int]): expected a list, got the tuple (1, 2).`` and what to pass instead."""
    end = "" if problem.endswith((".", "!", "?")) else "."
    if label.split("[")[-1].rstrip("]") in ("FlyteFile", "FlyteDirectory"):
        hint = f"Pass a path that exists on this machine, or a remote URL: launch({name}=...)."
    else:
        hint = f"Pass a value of type {label}: launch({name}=...)."
    return InputRefused(f"{entity.name}: input {name!r} ({label}): {problem}{end}", hint, input=name, problem=problem)


def _remote_target(remote, entity):
    """The backend's copy of what to launch: a task, or a launch plan (a workflow's default one)."""
    kind = str(entity.kind).lower().replace("_", " ").replace("launchplan", "launch plan")
    key = (kind, entity.project, entity.domain, entity.name, entity.version)
    with _TARGETS_LOCK:
        cached = _TARGETS.setdefault(remote, {}).get(key)
    if cached is not None:
        return cached
    try:
        if kind == "task":
            target = remote.fetch_task(entity.project, entity.domain, entity.name, entity.version)
        else:  # a workflow runs through its default launch plan, which has the workflow's name
            target = remote.fetch_launch_plan(entity.project, entity.domain, entity.name, entity.version)
    except Exception as exc:
        reraise(exc, f"Finding {kind} {entity.name} version {entity.version}", remote)
    with _TARGETS_LOCK:
        _TARGETS[remote][key] = target
    return target


def forget_targets(remote) -> None:
    """Drop the launch targets fetched through ``remote`` (the backend lost them)."""
    with _TARGETS_LOCK:
        _TARGETS.pop(remote, None)


def _console_from_entity_url(url: str | None) -> str | None:
    if not url or "/projects/" not in url:
        return None
    return url.split("/projects/", 1)[0]
