"""The sandbox's store under the load of many executions at once: no lost, torn or refused writes."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from flyteidl.admin import execution_pb2, node_execution_pb2
from flyteidl.core import execution_pb2 as core_execution_pb2
from flyteidl.core import identifier_pb2, literals_pb2
from flyteidl.event import event_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from fastreg_magic.sandbox.events import EventRecorder
from fastreg_magic.sandbox.store import Store

EXECUTIONS = 24
NODES = 5
NODE = core_execution_pb2.NodeExecution
WF = core_execution_pb2.WorkflowExecution


def stamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=1_700_000_000 + seconds)


def execution_id(i: int) -> identifier_pb2.WorkflowExecutionIdentifier:
    return identifier_pb2.WorkflowExecutionIdentifier(project="flytesnacks", domain="development", name=f"e{i}")


def add_execution(store: Store, i: int) -> None:
    record = execution_pb2.Execution(id=execution_id(i))
    record.closure.phase = WF.QUEUED
    record.closure.created_at.CopyFrom(stamp(0))
    store.add_execution(("flytesnacks", "development", f"e{i}"), record, literals_pb2.LiteralMap())


def run_events(recorder: EventRecorder, i: int) -> None:
    """What the executor reports for one execution of NODES sequential nodes."""
    exe = execution_id(i)
    recorder.on_workflow_event(event_pb2.WorkflowExecutionEvent(execution_id=exe, phase=WF.RUNNING,
                                                                occurred_at=stamp(1)))
    for n in range(NODES):
        node = identifier_pb2.NodeExecutionIdentifier(node_id=f"n{n}", execution_id=exe)
        for offset, phase in enumerate((NODE.QUEUED, NODE.RUNNING, NODE.SUCCEEDED)):
            recorder.on_node_event(event_pb2.NodeExecutionEvent(id=node, phase=phase,
                                                                occurred_at=stamp(2 + 3 * n + offset)))
    recorder.on_workflow_event(event_pb2.WorkflowExecutionEvent(execution_id=exe, phase=WF.SUCCEEDED,
                                                                occurred_at=stamp(100)))


def test_events_of_many_concurrent_executions_all_land_while_others_read(tmp_path):
    store = Store(tmp_path)
    recorder = EventRecorder(store)
    for i in range(EXECUTIONS):
        add_execution(store, i)
    failures: list[BaseException] = []
    writing = threading.Event()

    def guarded(target, *args):
        try:
            target(*args)
        except BaseException as err:  # noqa: BLE001 - collected and shown by the assertion below
            failures.append(err)

    def read_while_writing():
        while not writing.is_set():
            store.list_executions("flytesnacks", "development", execution_pb2.Execution)
            store.list_node_executions(("flytesnacks", "development", "e0"), None, node_execution_pb2.NodeExecution)

    writers = [threading.Thread(target=guarded, args=(run_events, recorder, i)) for i in range(EXECUTIONS)]
    readers = [threading.Thread(target=guarded, args=(read_while_writing,)) for _ in range(4)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    writing.set()
    for thread in readers:
        thread.join()

    assert failures == []
    executions = store.list_executions("flytesnacks", "development", execution_pb2.Execution)
    assert sorted(e.closure.phase for e in executions) == [WF.SUCCEEDED] * EXECUTIONS
    for i in range(EXECUTIONS):
        nodes = store.all_node_executions(("flytesnacks", "development", f"e{i}"), node_execution_pb2.NodeExecution)
        assert sorted(n.id.node_id for n in nodes) == [f"n{n}" for n in range(NODES)]
        assert all(n.closure.phase == NODE.SUCCEEDED and n.closure.duration.seconds == 1 for n in nodes)
    store.close()


def test_a_failed_transaction_rolls_back_and_lets_others_write(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.transaction():
            add_execution(store, 1)
            raise RuntimeError("refused half-way")
    assert store.get_execution(("flytesnacks", "development", "e1"), execution_pb2.Execution) is None

    other = threading.Thread(target=add_execution, args=(store, 2))  # would block forever on a leaked lock
    other.start()
    other.join(timeout=600)
    assert not other.is_alive()
    assert store.get_execution(("flytesnacks", "development", "e2"), execution_pb2.Execution) is not None
    store.close()


def test_what_was_written_is_there_after_reopening_and_a_second_connection_can_read(tmp_path):
    store = Store(tmp_path)
    for i in range(3):
        add_execution(store, i)
    with sqlite3.connect(tmp_path / "sandbox.db") as outside:  # e.g. someone's sqlite3 shell
        assert outside.execute("SELECT count(*) FROM executions").fetchone()[0] == 3
        assert outside.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    reopened = Store(tmp_path)
    names = sorted(e.id.name for e in reopened.all_executions(execution_pb2.Execution))
    assert names == ["e0", "e1", "e2"]
    reopened.close()


def test_a_restart_ends_a_run_being_aborted_aborted_and_others_failed(tmp_path):
    from fastreg_magic.sandbox.recovery import RESTARTED_CODE, end_interrupted_executions

    store = Store(tmp_path)
    for i in range(2):
        add_execution(store, i)

    def aborting(record):
        record.closure.phase = WF.ABORTING
        record.closure.abort_metadata.cause = "stopped by the user"

    store.update_execution(("flytesnacks", "development", "e0"), execution_pb2.Execution, aborting)
    end_interrupted_executions(store)
    aborted = store.get_execution(("flytesnacks", "development", "e0"), execution_pb2.Execution)
    assert aborted.closure.phase == WF.ABORTED
    assert aborted.closure.abort_metadata.cause == "stopped by the user"
    failed = store.get_execution(("flytesnacks", "development", "e1"), execution_pb2.Execution)
    assert failed.closure.phase == WF.FAILED and failed.closure.error.code == RESTARTED_CODE


def test_a_run_being_aborted_takes_only_its_final_phase(tmp_path):
    store = Store(tmp_path)
    recorder = EventRecorder(store)
    add_execution(store, 0)
    key = ("flytesnacks", "development", "e0")

    def aborting(record):
        record.closure.phase = WF.ABORTING
        record.closure.abort_metadata.cause = "stopped by the user"

    store.update_execution(key, execution_pb2.Execution, aborting)
    # its executor thread started just as it was terminated: FlyteAdmin refuses ABORTING -> RUNNING
    recorder.on_workflow_event(event_pb2.WorkflowExecutionEvent(execution_id=execution_id(0), phase=WF.RUNNING,
                                                                occurred_at=stamp(1)))
    assert store.get_execution(key, execution_pb2.Execution).closure.phase == WF.ABORTING
    recorder.on_workflow_event(event_pb2.WorkflowExecutionEvent(execution_id=execution_id(0), phase=WF.ABORTED,
                                                                occurred_at=stamp(2)))
    ended = store.get_execution(key, execution_pb2.Execution)
    assert ended.closure.phase == WF.ABORTED and ended.closure.abort_metadata.cause == "stopped by the user"
