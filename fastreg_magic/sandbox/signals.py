"""Signals: what ``wait_for_input`` and ``approve`` gates wait for, and flyteidl's SignalService.

A gate node creates its signal when the run reaches it (FlyteAdmin's ``GetOrCreateSignal``: a
signal that exists is returned as it is) and waits for a value; ``SetSignal`` gives it one, checked
against the signal's type, and wakes the gate. Signals are rows of the sandbox's database, so
``ListSignals`` still shows them (and the values they got) after a restart; the runs that were
waiting do not resume (see ``recovery``), as no run does.

    board = SignalBoard(store)
    board.get_or_create(signal_id, literal_type)            # the gate, when its node starts
    value = board.wait_for_value(signal_id, cancel, 60.0)   # None: cancelled or out of time
    SignalService(board)                                    # SetSignal / ListSignals for flytekit
"""

from __future__ import annotations

import threading
import time

from flyteidl.admin import signal_pb2
from flyteidl.core import identifier_pb2, literals_pb2, types_pb2
from flyteidl.service import signal_pb2_grpc

from fastreg_magic.sandbox.guard import guarded
from fastreg_magic.sandbox.listing import list_page
from fastreg_magic.sandbox.literal_types import castable, literal_type_of, type_text
from fastreg_magic.sandbox.store import Store
from fastreg_magic.sandbox.validation import check_limit, check_named_id, id_text, invalid, require

SCHEMA = """
CREATE TABLE IF NOT EXISTS signals (
    project TEXT, domain TEXT, execution TEXT, signal_id TEXT,
    created_at REAL NOT NULL, type BLOB NOT NULL, value BLOB,
    PRIMARY KEY (project, domain, execution, signal_id));
"""
# How often a waiting gate looks again even when nobody set a signal (to notice a cancel).
WAIT_SLICE_SECONDS = 0.2

def signal_key(signal_id: identifier_pb2.SignalIdentifier) -> tuple[str, str, str, str]:
    exe = signal_id.execution_id
    return (exe.project, exe.domain, exe.name, signal_id.signal_id)


def show_signal(signal_id: identifier_pb2.SignalIdentifier) -> str:
    return f"signal {signal_id.signal_id!r} of execution {id_text(signal_id.execution_id)}"


class SignalBoard:
    """The signals of every execution, kept in the store; wakes the gates waiting on them."""

    def __init__(self, store: Store):
        self.store = store
        self.store.execute(SCHEMA)
        self._changed = threading.Condition()

    def get_or_create(self, signal_id: identifier_pb2.SignalIdentifier,
                      literal_type: types_pb2.LiteralType) -> signal_pb2.Signal:
        """The signal, created with ``literal_type`` unless it exists (then as it was created)."""
        with self.store.transaction():
            self.store.execute(
                "INSERT OR IGNORE INTO signals (project, domain, execution, signal_id, created_at, type) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (*signal_key(signal_id), time.time(), literal_type.SerializeToString()),
            )
            return self.get(signal_id)

    def get(self, signal_id: identifier_pb2.SignalIdentifier) -> signal_pb2.Signal | None:
        rows = self.store.query(
            "SELECT type, value FROM signals WHERE project=? AND domain=? AND execution=? AND signal_id=?",
            signal_key(signal_id),
        )
        return _signal(signal_id, *rows[0]) if rows else None

    def of_execution(self, execution_id: identifier_pb2.WorkflowExecutionIdentifier) -> list[signal_pb2.Signal]:
        """The execution's signals, oldest first."""
        rows = self.store.query(
            "SELECT signal_id, type, value FROM signals WHERE project=? AND domain=? AND execution=? "
            "ORDER BY created_at",
            (execution_id.project, execution_id.domain, execution_id.name),
        )
        return [
            _signal(identifier_pb2.SignalIdentifier(signal_id=name, execution_id=execution_id), type_bytes, value)
            for name, type_bytes, value in rows
        ]

    def set(self, signal_id: identifier_pb2.SignalIdentifier, value: literals_pb2.Literal) -> None:
        """Give the signal its value (a value set before is replaced, as in FlyteAdmin); refuses
        a signal nobody waits for and a value of another type."""
        signal = self.get(signal_id)
        if signal is None:
            raise invalid(_no_such_signal(signal_id, self.of_execution(signal_id.execution_id)))
        value_type = literal_type_of(value)
        if value_type is None or not castable(value_type, signal.type):
            raise invalid(
                f"requested signal value is not castable to existing signal type: {show_signal(signal_id)} "
                f"expects [{type_text(signal.type)}], the value given is [{type_text(value_type)}]. "
                "Set it again with a value of that type (FlyteRemote.set_signal(..., python_type=...))."
            )
        self.store.execute(
            "UPDATE signals SET value=? WHERE project=? AND domain=? AND execution=? AND signal_id=?",
            (value.SerializeToString(), *signal_key(signal_id)),
        )
        with self._changed:
            self._changed.notify_all()

    def wait_for_value(self, signal_id: identifier_pb2.SignalIdentifier, cancel: threading.Event,
                       timeout: float | None) -> literals_pb2.Literal | None:
        """The signal's value once it has one; None when ``cancel`` is set or ``timeout`` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not cancel.is_set():
            signal = self.get(signal_id)
            if signal is not None and signal.HasField("value"):
                return signal.value
            left = WAIT_SLICE_SECONDS if deadline is None else min(WAIT_SLICE_SECONDS, deadline - time.monotonic())
            if left <= 0:
                return None
            with self._changed:
                self._changed.wait(left)
        return None


def _signal(signal_id: identifier_pb2.SignalIdentifier, type_bytes: bytes, value_bytes: bytes | None):
    signal = signal_pb2.Signal(id=signal_id, type=types_pb2.LiteralType.FromString(type_bytes))
    if value_bytes is not None:
        signal.value.CopyFrom(literals_pb2.Literal.FromString(value_bytes))
    return signal


def _no_such_signal(signal_id: identifier_pb2.SignalIdentifier, known: list[signal_pb2.Signal]) -> str:
    waiting = ", ".join(repr(s.id.signal_id) for s in known) or "none yet"
    return (
        f"failed to validate that {show_signal(signal_id)} exists: the execution has no such signal "
        f"(its signals: {waiting}). A signal exists once the run reaches its wait_for_input/approve gate; "
        "check the name and the execution, or list them with FlyteRemote.list_signals."
    )


def _check_signal_id(signal_id: identifier_pb2.SignalIdentifier, has_id: bool) -> None:
    """FlyteAdmin's ``ValidateSignalIdentifier``."""
    if not has_id:
        raise invalid("missing id")
    if not signal_id.HasField("execution_id"):
        raise invalid("missing execution_id")
    require(signal_id.signal_id, "signal_id")
    check_named_id(signal_id.execution_id)


@guarded
class SignalService(signal_pb2_grpc.SignalServiceServicer):
    """flyteidl's SignalService, as FlyteAdmin serves it (``signal_manager.go``)."""

    def __init__(self, board: SignalBoard):
        self.board = board

    def GetOrCreateSignal(self, request, context):
        _check_signal_id(request.id, request.HasField("id"))
        if not request.HasField("type"):
            raise invalid("missing type")
        return self.board.get_or_create(request.id, request.type)

    def ListSignals(self, request, context):
        if not request.HasField("workflow_execution_id"):
            raise invalid("missing execution_id")
        check_named_id(request.workflow_execution_id)
        check_limit(request.limit)
        ordered = list(enumerate(self.board.of_execution(request.workflow_execution_id)))
        page, token = list_page(
            ordered, request, {"signal_id": lambda s: s[1].id.signal_id, "created_at": lambda s: s[0]},
            default_key="created_at", descending=False,
        )
        return signal_pb2.SignalList(signals=[signal for _, signal in page], token=token)

    def SetSignal(self, request, context):
        _check_signal_id(request.id, request.HasField("id"))
        if not request.HasField("value"):
            raise invalid("missing value")
        self.board.set(request.id, request.value)
        return signal_pb2.SignalSetResponse()
