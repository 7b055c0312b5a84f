"""The phases a run shows while it is aborted or waits for a worker, as FlyteAdmin and flytepropeller report them.

A sandbox with one worker slot (``fastreg sandbox --workers 1``) runs a module fast-registered with
`pyflyte register`; stock FlyteRemote launches, terminates and reads the runs back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from flytekit.models import filters
from flytekit.models.core.execution import NodeExecutionPhase, TaskExecutionPhase, WorkflowExecutionPhase

from tests.workflows.harness import processes_of

FLOWS = """
import os
import signal
import time
from pathlib import Path

from flytekit import task, workflow


@task
def stubborn(ready: str) -> int:
    # ignores SIGTERM, so that ending it takes the sandbox's whole grace period
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(ready).write_text("running")
    time.sleep(600)
    return 0


@workflow
def holds_the_slot(ready: str) -> int:
    return stubborn(ready=ready)


@task
def quick(x: int) -> int:
    return x + 1


@workflow
def waits_for_a_slot(x: int = 1) -> int:
    return quick(x=x)


@task
def dies(signal_number: int) -> int:
    os.kill(os.getpid(), signal_number)
    return 0


@workflow
def killed(signal_number: int) -> int:
    return dies(signal_number=signal_number)
"""

POLL = 0.2
DEADLINE_SECONDS = 300  # how long a run may take on a loaded machine before the test gives up
ABORTING_FOR_SECONDS = 15  # how long a task that ignores SIGTERM keeps its run ABORTING here


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    """A sandbox that runs one task process at a time (``--workers 1``)."""
    from fastreg_magic import sandbox as sandbox_api

    box = sandbox_api.start(tmp_path_factory.mktemp("one-worker"), port=0, max_workers=1)
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture(scope="module")
def remote(one_worker):
    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote

    return FlyteRemote(Config.auto(config_file=str(one_worker.config_file)), default_project="flytesnacks",
                       default_domain="development", interactive_mode_enabled=False)


@pytest.fixture(scope="module")
def flows(one_worker, tmp_path_factory):
    """Fast-register the module with pyflyte; returns (module name, version)."""
    project_dir = tmp_path_factory.mktemp("states")
    module = f"states_{uuid.uuid4().hex[:6]}"
    (project_dir / f"{module}.py").write_text(FLOWS)
    version = f"v-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "pyflyte"), "-c", str(one_worker.config_file), "register",
         "--version", version, f"{module}.py"],
        cwd=project_dir, capture_output=True, text=True, timeout=300, env={**os.environ},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return module, version


def launch(remote, flows, workflow: str, **inputs):
    module, version = flows
    plan = remote.fetch_launch_plan(name=f"{module}.{workflow}", version=version)
    return remote.execute(plan, inputs=inputs, wait=False)


@pytest.fixture
def hold_the_slot(remote, flows, tmp_path):
    """Starts a run whose task takes the only worker slot, returning once its task code runs;
    whatever the test does, that run is ended afterwards so the next test gets the slot."""
    started = []

    def hold():
        ready = tmp_path / f"ready-{uuid.uuid4().hex[:6]}"
        execution = launch(remote, flows, "holds_the_slot", ready=str(ready))
        started.append(execution)
        poll_until(ready.exists, "the stubborn task never started")
        return execution

    yield hold
    for execution in started:
        with contextlib.suppress(Exception):  # it may have ended already
            remote.client.terminate_execution(execution.id, "the test is over")
        remote.wait(execution, timeout=DEADLINE_SECONDS, poll_interval=POLL)


def poll_until(condition, failure: str, within: float = DEADLINE_SECONDS):
    end = time.monotonic() + within
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        time.sleep(POLL)
    raise AssertionError(failure)


def seconds(moment: dt.datetime) -> float:
    """A timestamp flytekit read back (naive means UTC; unset reads as the epoch, 0)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).timestamp()


def phase_listed(remote, execution) -> int:
    """The run's phase as ListExecutions shows it."""
    listed, _ = remote.client.list_executions_paginated("flytesnacks", "development", limit=100)
    return next(e.closure.phase for e in listed if e.id.name == execution.id.name)


def node_n0(remote, execution):
    nodes, _ = remote.client.list_node_executions(execution.id, limit=100)
    return next((n for n in nodes if n.id.node_id == "n0"), None)


def task_attempts(remote, node):
    attempts, _ = remote.client.list_task_executions_paginated(node.id, limit=100)
    return attempts


@pytest.fixture
def slow_to_end(monkeypatch):
    """A longer wait between SIGTERM and SIGKILL (the sandbox runs in this process), so that a
    task which ignores SIGTERM stays ABORTING for a while even on a busy machine."""
    from fastreg_magic.sandbox import taskrun

    monkeypatch.setattr(taskrun, "TERMINATE_GRACE_S", ABORTING_FOR_SECONDS)


def test_terminate_shows_aborting_until_the_task_processes_are_gone(remote, flows, hold_the_slot, slow_to_end):
    execution = hold_the_slot()
    remote.terminate(execution, cause="stopped by the test")
    # at once, as FlyteAdmin's TerminateExecution: ABORTING, with the cause, everywhere a user looks
    at_once = remote.client.get_execution(execution.id)
    assert at_once.closure.phase == WorkflowExecutionPhase.ABORTING
    assert at_once.closure.abort_metadata.cause == "stopped by the test"
    assert phase_listed(remote, execution) == WorkflowExecutionPhase.ABORTING
    assert processes_of(execution.id.name), "the task ignores SIGTERM: its processes are still there"
    assert not remote.fetch_execution(name=execution.id.name).is_done  # flytekit keeps waiting
    ended = remote.wait(execution, timeout=DEADLINE_SECONDS, poll_interval=POLL)
    assert ended.closure.phase == WorkflowExecutionPhase.ABORTED
    assert ended.closure.abort_metadata.cause == "stopped by the test"
    assert processes_of(execution.id.name) == []


def test_a_run_terminated_while_it_waits_for_a_worker_ends_aborted(remote, flows, hold_the_slot):
    hold_the_slot()
    waiting = launch(remote, flows, "waits_for_a_slot", x=1)
    poll_until(lambda: node_n0(remote, waiting), "the waiting run's node never appeared")
    remote.terminate(waiting, cause="not needed")
    assert remote.client.get_execution(waiting.id).closure.phase in (WorkflowExecutionPhase.ABORTING,
                                                                     WorkflowExecutionPhase.ABORTED)
    ended = remote.wait(waiting, timeout=DEADLINE_SECONDS, poll_interval=POLL)
    assert ended.closure.phase == WorkflowExecutionPhase.ABORTED
    assert node_n0(remote, waiting).closure.phase == NodeExecutionPhase.ABORTED


def test_a_node_waiting_for_a_worker_is_queued_and_timed_from_its_start(remote, flows, hold_the_slot):
    holder = hold_the_slot()
    waiting = launch(remote, flows, "waits_for_a_slot", x=1)
    node = poll_until(lambda: node_n0(remote, waiting), "the waiting run's node never appeared")
    attempts = poll_until(lambda: task_attempts(remote, node_n0(remote, waiting)),
                          "the waiting task's attempt was not reported while it waited for a worker", within=60)
    node = node_n0(remote, waiting)
    assert node.closure.phase == NodeExecutionPhase.QUEUED and seconds(node.closure.started_at) == 0
    assert [a.closure.phase for a in attempts] == [TaskExecutionPhase.QUEUED]

    freed_at = time.time()  # the only slot cannot be free before its holder is terminated
    remote.terminate(holder, cause="make room")
    ended = remote.wait(waiting, timeout=DEADLINE_SECONDS, poll_interval=POLL)
    assert ended.closure.phase == WorkflowExecutionPhase.SUCCEEDED
    node = node_n0(remote, waiting)
    assert seconds(node.closure.started_at) >= freed_at
    assert seconds(node.closure.created_at) < freed_at
    (attempt,) = task_attempts(remote, node)
    assert attempt.closure.phase == TaskExecutionPhase.SUCCEEDED
    assert seconds(attempt.closure.started_at) >= freed_at


@pytest.mark.parametrize("signal_number, says", [
    (9, "killed by signal 9 (SIGKILL) without writing a result, likely by the out-of-memory killer"),
    (11, "killed by signal 11 (SIGSEGV) without writing a result"),
])
def test_a_task_killed_by_a_signal_says_which(remote, flows, signal_number, says):
    execution = launch(remote, flows, "killed", signal_number=signal_number)
    ended = remote.wait(execution, timeout=DEADLINE_SECONDS, poll_interval=POLL)
    assert ended.closure.phase == WorkflowExecutionPhase.FAILED
    assert says in ended.closure.error.message
    assert "exited with code" not in ended.closure.error.message


def test_list_executions_filters_by_the_aborting_phase(remote, flows, hold_the_slot, slow_to_end):
    execution = hold_the_slot()
    remote.terminate(execution, cause="filtered")
    listed, _ = remote.client.list_executions_paginated(
        "flytesnacks", "development", limit=100, filters=[filters.Equal("phase", "ABORTING")])
    assert execution.id.name in [e.id.name for e in listed]
