"""Gates inside a dynamic workflow, in a run's node table: what each is and, while it waits, how to let it pass.

A dynamic task's nodes are in no registered workflow; the workflow it generated is read from its node
execution's data, as FlyteAdmin keeps it. Launched from a ``%%flyte_fast`` cell on the sandbox, the
signal set with stock flytekit (``FlyteRemote.set_signal``) following the hint the table shows.
"""

from __future__ import annotations

import os
import textwrap
import time
import uuid

import pytest

pytestmark = pytest.mark.slow

CELL = textwrap.dedent(
    """
    from datetime import timedelta
    from flytekit import dynamic, sleep, task, wait_for_input, workflow

    @task
    def double(x: int) -> int:
        return x * 2

    @task
    def add(a: int, b: int) -> int:
        return a + b

    @dynamic
    def asks_inside(x: int) -> int:
        nap = sleep(timedelta(seconds=1))
        extra = wait_for_input("extra", timeout=timedelta(minutes=10), expected_type=int)
        y = double(x=x)
        nap >> y
        return add(a=y, b=extra)

    @workflow
    def dyn_asks(x: int) -> int:
        return asks_inside(x=x)

    @workflow
    def plain(x: int) -> int:
        return double(x=x)
    """
)


def wait_until(predicate, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    return predicate()


@pytest.fixture(scope="module")
def reg(sandbox_shell, tmp_path_factory):
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("dyngates"))
    try:
        yield sandbox_shell.run_cell_magic("flyte_fast", f"-m dyngates_{uuid.uuid4().hex[:8]}", CELL)
    finally:
        os.chdir(cwd)


def inner_rows(run) -> dict:
    """{path: row} of the rows under the run's dynamic node."""
    from fastreg_magic.runs_tree import flatten

    return {row.label: row for depth, row in flatten(run.nodes()) if depth == 1}


def waiting_gate(run):
    """The dynamic workflow's row that waits for a signal, once it does (None if the run ended first)."""
    def ready():
        if run.refresh().done:
            return "ended"
        waiting = [row for row in inner_rows(run).values() if row.gate.startswith("waiting for")]
        return waiting[0] if waiting else None

    found = wait_until(ready)
    assert found not in (None, "ended"), f"the gate never waited: run {run.phase}, {run.error}"
    return found


def count_calls(run, names) -> dict:
    """Count the RPCs the run's own gRPC stub sends (the calls still go to the sandbox)."""
    calls = dict.fromkeys(names, 0)
    for name in names:
        real = getattr(run._client._stub, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        setattr(run._client._stub, name, counted)
    return calls


def test_a_gate_in_a_dynamic_workflow_says_what_it_waits_for_and_how_to_give_it(reg, remote, sandbox):
    from html import escape

    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote

    from fastreg_magic.widget_run import RunView
    from fastreg_magic.widget_text import run_text

    run = reg.launch("dyn_asks", x=10)
    view = RunView(run)
    hint = (f'FlyteRemote(config, default_project="flytesnacks", default_domain="development")'
            f'.set_signal("extra", "{run.name}", value)')
    try:
        gate = waiting_gate(run)
        assert (gate.gate, gate.gate_hint) == ("waiting for signal extra (int)", hint)
        rows = inner_rows(run)
        assert {row.gate for row in rows.values()} >= {"sleep 1s", "waiting for signal extra (int)"}
        # the tasks the dynamic generated keep their rows; those not started yet are listed too
        assert {(row.task or "").rsplit(".", 1)[-1] for row in rows.values()} >= {"double", "add"}
        (add,) = [row for row in rows.values() if (row.task or "").endswith(".add")]
        assert add.phase == "NOT_STARTED"

        # the node table and the text the notebook saves say it
        assert wait_until(lambda: "waiting for signal extra (int)" in view.node_table.value), view.node_table.value
        assert escape(hint, quote=True) in view.node_table.value
        text = run_text(run, run.nodes())
        assert "waiting for signal extra (int)" in text and f"to go on: {hint}" in text

        # polling a run whose dynamic workflow is known reads it no more
        calls = count_calls(run, ("GetNodeExecutionData",))
        run.nodes()
        run.nodes()
        assert calls == {"GetNodeExecutionData": 0}

        # the hint, followed as written
        eval(hint, {"FlyteRemote": FlyteRemote, "config": Config.auto(config_file=str(sandbox.config_file)), "value": 5})
        run.wait(timeout=240)
    finally:
        view.close()
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": 25}
    rows = inner_rows(run)
    (gate,) = [row for row in rows.values() if row.gate.startswith("signal")]
    assert (gate.gate, gate.gate_hint, gate.phase) == ("signal extra (int)", "", "SUCCEEDED")  # no longer waiting
    assert all(row.phase == "SUCCEEDED" for row in rows.values())

    # a run with no dynamic node never asks for node data, however often it is polled
    plain = reg.launch("plain", x=2)
    calls = count_calls(plain, ("GetNodeExecutionData",))
    while not plain.refresh().done:
        plain.nodes()
        time.sleep(0.2)
    plain.nodes()
    assert plain.phase == "SUCCEEDED", plain.error
    assert calls == {"GetNodeExecutionData": 0}

