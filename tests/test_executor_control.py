"""Terminate, shutdown and the worker bound: the executor ends whole process trees and reports ABORTED."""

from __future__ import annotations

import time

import pytest

from tests.workflows import basic, control
from tests.workflows.harness import ExecutorHarness, NodePhase, Run, TaskPhase, WorkflowPhase, processes_of


def wait_started(name: str, timeout: float = 30) -> list[int]:
    end = time.monotonic() + timeout
    while not processes_of(name) and time.monotonic() < end:
        time.sleep(0.05)
    return processes_of(name)


def wait_gone(name: str, timeout: float = 30) -> list[int]:
    end = time.monotonic() + timeout
    while processes_of(name) and time.monotonic() < end:
        time.sleep(0.1)
    return processes_of(name)


@pytest.fixture
def harness(tmp_path):
    with ExecutorHarness(tmp_path, max_workers=4) as h:
        yield h


def test_terminate_kills_the_task_tree_and_reports_aborted(harness):
    execution_id = harness.submit(basic.long_running, seconds=300)
    harness.wait_task_running(execution_id)
    assert wait_started(execution_id.name), "the task process should be running"
    harness.executor.terminate(execution_id, "stopped by the test")
    run = Run(harness, basic.long_running, execution_id, harness.sink.wait_end(execution_id.name, timeout=60))
    assert run.phase == WorkflowPhase.ABORTED
    assert "stopped by the test" in run.error
    assert run.node_phases("n0")[-1] == NodePhase.ABORTED
    assert run.task_events("n0")[-1].phase == TaskPhase.ABORTED
    assert wait_gone(execution_id.name) == []


def test_terminate_ends_child_executions_of_launch_plan_nodes(harness):
    execution_id = harness.submit(control.waits_on_child, seconds=300)
    child_name = f"{execution_id.name}-child"
    end = time.monotonic() + 120
    while not processes_of(child_name) and time.monotonic() < end:
        time.sleep(0.1)
    assert processes_of(child_name), "the child's task should be running"
    harness.executor.terminate(execution_id, "parent stopped")
    assert harness.sink.wait_end(execution_id.name, timeout=60).phase == WorkflowPhase.ABORTED
    assert harness.sink.wait_end(child_name, timeout=60).phase == WorkflowPhase.ABORTED
    assert child_name in harness.children.terminated
    assert wait_gone(child_name) == []


def test_shutdown_ends_every_running_task(tmp_path):
    harness = ExecutorHarness(tmp_path, max_workers=4)
    ids = [harness.submit(basic.long_running, seconds=300) for _ in range(2)]
    for execution_id in ids:
        harness.wait_task_running(execution_id)
    harness.executor.shutdown(timeout=10)
    for execution_id in ids:
        assert wait_gone(execution_id.name) == []
        assert harness.sink.final(execution_id.name).phase == WorkflowPhase.ABORTED
    assert harness.executor.running() == []


def test_terminate_of_an_unknown_or_finished_execution_is_harmless(harness):
    run = harness.run(basic.linear, x=1)
    assert run.phase == WorkflowPhase.SUCCEEDED
    harness.executor.terminate(run.id, "too late")
    assert harness.sink.final(run.id.name).phase == WorkflowPhase.SUCCEEDED


def test_worker_bound_runs_one_task_process_at_a_time(tmp_path):
    with ExecutorHarness(tmp_path, max_workers=1) as harness:
        run = harness.run(basic.fan_out_in)
        assert run.outputs() == {"o0": 19}
        # with one worker, every attempt's RUNNING..end interval is disjoint from the others'
        spans = []
        for node in ("n0", "n1", "n2"):
            events = run.task_events(node)
            start = next(e for e in events if e.phase == TaskPhase.RUNNING).occurred_at.ToNanoseconds()
            stop = events[-1].occurred_at.ToNanoseconds()
            spans.append((start, stop))
        spans.sort()
        assert all(a_stop <= b_start for (_, a_stop), (b_start, _) in zip(spans, spans[1:]))
