"""Follow runs in the background and tell a callback what changed, without blocking the caller.

    handle = watch(run, on_update)     # returns at once
    ...                                # on_update(RunUpdate) is called from a worker thread
    handle.stop()                      # or it stops by itself when the run ends

Each execution has one poller however many views follow it (a cell's widget, the widget of the cell
re-run, `%flyte_watch` re-run): they share its polls, and it stops when the last of them stops.
An execution is known by its project, domain and name on its backend, so a `Run` built again for it
(each `%flyte_watch` builds one) joins the poller already there, and is kept up to date with what
that poller learns (`Run.take_in`). A run that has ended is not polled at all once its nodes were
read after it ended; nodes read while it ran are never taken for what it ended with, even when another
thread (the user's `run.wait()`) saw it end in the middle of a poll.

One scheduler thread keeps every watched run in a queue ordered by when it is next due, and
a few worker threads make the calls, so twenty runs cost twenty small RPCs now and then,
not twenty sleeping threads. Each poll of a run is one GetExecution; the node table (one
ListNodeExecutions, plus one per running parent node: see `runs_tree`) is read at most once a
second, whenever the run's phase changes, and at the end. Polls start every 0.1 s and back off (see `runs.poll_intervals`). A backend that
stops answering is reported as ``connection="reconnecting…"`` and polled with a longer
backoff; after a few failures the run opens a fresh connection. A backend that answers but
no longer has the run (`runs.RunLost`) ends the watch: polling it again could never succeed.

Callbacks run inside a copy of the `contextvars` context that was current when `watch` was
called: on ipykernel 7 that carries the parent message of the cell (or button click) that
started the watch, so widget updates sent from the worker are attributed to it.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable

from fastreg_magic.runs import Run, RunLost, is_loopback, poll_intervals
from fastreg_magic.runs_data import NodeStatus

log = logging.getLogger(__name__)

NODE_TABLE_EVERY_S = 1.0  # the node table needs more RPCs: read it at most this often (and on phase changes)
RECONNECT_AFTER = 3  # consecutive failed polls before opening a fresh connection
FAILURE_BACKOFF_MAX_S = 5.0
WORKERS = 4
IDLE_EXIT_S = 30.0  # the scheduler thread ends after this long with nothing to watch


@dataclass(frozen=True)
class RunUpdate:
    """What a poll learnt. ``nodes`` is None when the node table was not read this time."""

    run: Run
    nodes: list[NodeStatus] | None
    connection: str | None  # None while the backend answers; else what is wrong ("reconnecting…")
    final: bool  # the run has ended (or is lost) and this is the last update


@dataclass(frozen=True)
class SeenNodes:
    """A run's node table as last read, and whether it was read after the run ended (what it ended with)."""

    nodes: list[NodeStatus]
    after_end: bool


class Watch:
    """The one poller of a run, shared by everything that follows it (every view of the run)."""

    def __init__(self, run: Run):
        self.run = run
        self._followers: list[Follower] = []
        self._lock = threading.Lock()
        self._intervals = poll_intervals(is_loopback(run._remote))
        self._last_phase: str | None = None
        self._last_nodes = 0.0
        self._failures = 0
        self.polls = 0
        self.stopped = threading.Event()

    def follow(self, run: Run, on_update: Callable[[RunUpdate], None],
               context: contextvars.Context) -> "Follower | None":
        """A new follower, told of ``run`` (this execution, maybe another `Run` of it); None when this
        poller has just stopped (its last follower left), so the caller starts another."""
        follower = Follower(self, on_update, context, run)
        with self._lock:
            if self.stopped.is_set():
                return None
            self._followers.append(follower)
        return follower

    def unfollow(self, follower: "Follower") -> None:
        """``follower`` wants no more updates; with nobody left, the run is not polled any more."""
        with self._lock:
            if follower in self._followers:
                self._followers.remove(follower)
            nobody = not self._followers
            if nobody:  # under the lock: `follow` then refuses, rather than join a poller about to end
                self.stopped.set()
        if nobody:
            self.stop()

    def stop(self) -> None:
        self.stopped.set()
        _forget(self)

    @property
    def active(self) -> bool:
        return not self.stopped.is_set()

    @property
    def followers(self) -> int:
        with self._lock:
            return len(self._followers)

    def poll(self) -> float | None:
        """One poll: seconds until the next one, or None when there is nothing more to follow."""
        self.polls += 1
        try:
            self.run.refresh()
            # Read once, before the nodes: another thread (the user's `run.wait()`) may refresh the run
            # while they are read, and nodes read while it ran must not be taken for what it ended with.
            phase, done = self.run.phase, self.run.done
            nodes = None
            now = time.monotonic()
            if done or phase != self._last_phase or now - self._last_nodes >= NODE_TABLE_EVERY_S:
                nodes = self.run.nodes()
                self._last_nodes = now
        except RunLost:  # the run says so itself (run.lost, run.error): the last update
            self._end(RunUpdate(self.run, None, None, True))
            return None
        except Exception as exc:  # shown in the view, never raised in a background thread
            return self._failed(exc)
        self._failures = 0
        self._last_phase = phase
        if nodes is not None:
            _last_nodes[self.run] = SeenNodes(nodes, after_end=done)
        update = RunUpdate(self.run, nodes, None, done)
        if update.final:
            self._end(update)
            return None
        self._emit(update)
        return next(self._intervals)

    def _end(self, update: RunUpdate) -> None:
        self.stop()
        self._emit(update)

    def _failed(self, exc: Exception) -> float:
        self._failures += 1
        if self._failures >= RECONNECT_AFTER:
            try:
                self.run.reconnect()
            except Exception:  # the next poll reports the failure again
                log.debug("reconnect failed", exc_info=True)
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        self._emit(RunUpdate(self.run, None, f"reconnecting… ({reason})", False))
        self._intervals = poll_intervals(is_loopback(self.run._remote))  # fast again once it answers
        return min(FAILURE_BACKOFF_MAX_S, 0.25 * 2 ** min(self._failures, 5))

    def _emit(self, update: RunUpdate) -> None:
        with self._lock:
            followers = list(self._followers)
        for follower in followers:
            follower.tell(update)


class Follower:
    """A handle on one follower of a run (what `watch` returns): ``stop()`` ends its updates only."""

    def __init__(self, watch: Watch | None, on_update: Callable[[RunUpdate], None], context: contextvars.Context,
                 run: Run | None = None):
        self.run = run if run is not None else (watch.run if watch is not None else None)
        self._watch = watch
        self._on_update = on_update
        self._context = context
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()
        if self._watch is not None:
            self._watch.unfollow(self)

    @property
    def active(self) -> bool:
        return not self.stopped.is_set() and self._watch is not None and self._watch.active

    @property
    def polls(self) -> int:
        """How many times the run was polled while followed (shared with its other followers)."""
        return self._watch.polls if self._watch is not None else 0

    def tell(self, update: RunUpdate) -> None:
        if self.stopped.is_set() and not update.final:
            return
        if self.run is not None and update.run is not self.run:
            # Another Run of the same execution was polled: this one learns the same, and is the one drawn.
            self.run.take_in(update.run)
            if update.nodes is not None:
                _last_nodes[self.run] = SeenNodes(update.nodes, after_end=update.final)
            update = replace(update, run=self.run)
        try:
            self._context.run(self._on_update, update)
        except Exception:  # a drawing bug must not stop the other runs from updating
            log.exception("updating the view of run %s failed", update.run.name)


class _Scheduler:
    """Runs each watch's next poll when it is due, on a small pool of workers."""

    def __init__(self) -> None:
        self._queue: list[tuple[float, int, Watch]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def add(self, w: Watch, delay: float = 0.0) -> None:
        with self._cv:
            heapq.heappush(self._queue, (time.monotonic() + delay, next(self._seq), w))
            if self._thread is None or not self._thread.is_alive():
                self._pool = self._pool or ThreadPoolExecutor(WORKERS, thread_name_prefix="fastreg-watch")
                self._thread = threading.Thread(target=self._loop, name="fastreg-watch-scheduler", daemon=True)
                self._thread.start()
            self._cv.notify()

    def _loop(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._cv:
                if not self._queue:
                    if time.monotonic() - idle_since > IDLE_EXIT_S:
                        self._thread = None
                        return
                    self._cv.wait(timeout=IDLE_EXIT_S)
                    continue
                due, _, w = self._queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cv.wait(timeout=wait)
                    continue
                heapq.heappop(self._queue)
                idle_since = time.monotonic()
            if w.active and not self._submit(w):
                return

    def _submit(self, w: Watch) -> bool:
        """Hand ``w``'s poll to a worker; False when the interpreter is exiting (its workers are gone):
        the scheduler then ends quietly instead of printing a traceback as the process exits."""
        try:
            self._pool.submit(self._run_poll, w)
        except RuntimeError:  # "cannot schedule new futures after (interpreter) shutdown"
            with self._cv:
                self._queue.clear()
                self._thread = None
            return False
        return True

    def _run_poll(self, w: Watch) -> None:
        delay = w.poll()
        if delay is not None and w.active:
            self.add(w, delay)


_scheduler = _Scheduler()
_watches: dict[tuple, Watch] = {}  # execution_key(run) -> its poller, while it is polled
_watches_lock = threading.Lock()
# The node table a run had when it was last read, so a view opened after it ended draws it without polling.
_last_nodes: "weakref.WeakKeyDictionary[Run, SeenNodes]" = weakref.WeakKeyDictionary()


def ended_with(run: Run, nodes: list[NodeStatus]) -> None:
    """``nodes``, read after ``run`` ended (by the cell that waited for it), are what it ended with: a view
    opened later draws them without polling, as it would after a poll that saw the end."""
    _last_nodes[run] = SeenNodes(nodes, after_end=True)


def watch(run: Run, on_update: Callable[[RunUpdate], None]) -> Follower:
    """Follow ``run`` in the background until it ends (or ``stop()``), calling ``on_update``.

    Every follower of the same run shares one poller. A run that has ended is not polled once its node
    table has been read after it ended: ``on_update`` is called once, at once, with what is known of it.
    One that ended before anything read its nodes (and logs) since is polled once."""
    context = contextvars.copy_context()
    seen = _last_nodes.get(run)
    if run.lost or (run.done and seen is not None and seen.after_end):
        follower = Follower(None, on_update, context)
        follower.tell(RunUpdate(run, seen.nodes if seen is not None else None, None, True))
        follower.stopped.set()
        return follower
    key = execution_key(run)
    with _watches_lock:
        poller = _watches.get(key)
        follower = poller.follow(run, on_update, context) if poller is not None else None
        new = follower is None
        if new:
            poller = _watches[key] = Watch(run)
            follower = poller.follow(run, on_update, context)
    if new:
        _scheduler.add(poller)
    return follower


def execution_key(run: Run) -> tuple[str, str, str, str]:
    """What identifies an execution, whichever `Run` stands for it: its backend, project, domain and name."""
    return (run.endpoint, run.project, run.domain, run.name)


def _forget(poller: Watch) -> None:
    key = execution_key(poller.run)
    with _watches_lock:
        if _watches.get(key) is poller:
            del _watches[key]


def watching() -> int:
    """How many runs are being polled right now (one poller per execution, however many views show it)."""
    with _watches_lock:
        return sum(1 for poller in _watches.values() if poller.active)
