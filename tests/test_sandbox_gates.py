"""Gate nodes on the sandbox: ``sleep``, ``wait_for_input`` and ``approve`` in a ``%%flyte_fast`` cell,
launched with ``reg.launch(...)``, their signals listed and set with stock flytekit
(``FlyteRemote.list_signals``, ``set_signal``, ``approve``, ``reject``), as against FlyteAdmin.
"""

from __future__ import annotations

import os
import textwrap
import time
import uuid

import grpc
import pytest
from flyteidl.admin import signal_pb2
from flyteidl.core import identifier_pb2, literals_pb2, types_pb2
from flyteidl.service import signal_pb2_grpc
from sandbox_support import grpc_code, grpc_details, sandbox_channel

pytestmark = pytest.mark.slow

CELL = textwrap.dedent(
    """
    from datetime import timedelta
    from flytekit import approve, sleep, task, wait_for_input, workflow

    @task
    def double(x: int) -> int:
        return x * 2

    @task
    def add(a: int, b: int) -> int:
        return a + b

    @workflow
    def napping(x: int) -> int:
        nap = sleep(timedelta(seconds=2))
        y = double(x=x)
        nap >> y
        return y

    @workflow
    def long_nap() -> int:
        nap = sleep(timedelta(minutes=30))
        y = double(x=1)
        nap >> y
        return y

    @workflow
    def asks(x: int) -> int:
        extra = wait_for_input("extra", timeout=timedelta(minutes=10), expected_type=int)
        return add(a=double(x=x), b=extra)

    @workflow
    def reviewed(x: int) -> int:
        checked = approve(double(x=x), "review", timeout=timedelta(minutes=10))
        return add(a=checked, b=1)

    @workflow
    def impatient() -> int:
        return wait_for_input("never", timeout=timedelta(seconds=1), expected_type=int)
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
    os.chdir(tmp_path_factory.mktemp("gates"))
    try:
        yield sandbox_shell.run_cell_magic("flyte_fast", f"-m gates_{uuid.uuid4().hex[:8]}", CELL)
    finally:
        os.chdir(cwd)


def gate_phase(run) -> str | None:
    """The phase of the run's (only) gate node, as the run's node table shows it."""
    gates = {node.id for node in run.graph().nodes if node.kind == "gate"}
    phases = [row.phase for row in run.nodes() if row.node in gates]
    return phases[0] if phases else None


def signals_of(remote, run) -> dict:
    """{signal id: Signal} of the run, from stock ``FlyteRemote.list_signals``."""
    listed = remote.list_signals(run.name, project=run.project, domain=run.domain)
    return {signal.id.signal_id: signal for signal in listed}


def waiting_for(remote, run, signal_id: str):
    """The run's signal once its gate waits for it (the gate node RUNNING), or None if the run ended."""
    def ready():
        run.refresh()
        if run.done:
            return "ended"
        signal = signals_of(remote, run).get(signal_id)
        return signal if signal is not None and gate_phase(run) == "RUNNING" else None

    found = wait_until(ready)
    assert found not in (None, "ended"), f"the gate never waited: run {run.phase}, {run.error}"
    return found


# -- sleep ----------------------------------------------------------------------------------------


def test_a_sleep_gate_waits_then_the_workflow_goes_on(reg):
    run = reg.launch("napping", x=4).wait(timeout=240)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": 8}
    assert gate_phase(run) == "SUCCEEDED"


def test_a_run_terminated_during_a_sleep_ends_aborted(reg):
    from fastreg_magic.widget_run import RunView

    run = reg.launch("long_nap")
    view = RunView(run)
    try:
        assert wait_until(lambda: run.refresh().done or gate_phase(run) == "RUNNING"), run.phase
        assert gate_phase(run) == "RUNNING", run.error
        assert wait_until(lambda: "data-phase='RUNNING'" in view.node_table.value), view.node_table.value
        (gate,) = [row for row in run.nodes() if row.gate]
        assert (gate.gate, gate.gate_hint) == ("sleep 30m", "")  # a sleep ends by itself: nothing to give
        assert "sleep 30m" in view.node_table.value
        run.terminate("no more sleeping")
        run.wait(timeout=60)  # thirty minutes of sleep left: only the terminate ends it this soon
    finally:
        view.close()
    assert run.phase == "ABORTED"
    assert gate_phase(run) == "ABORTED"


# -- wait_for_input -----------------------------------------------------------------------------------


def test_wait_for_input_creates_its_signal_and_its_value_becomes_the_nodes_output(reg, remote):
    run = reg.launch("asks", x=10)
    signal = waiting_for(remote, run, "extra")
    assert signal.type == types_pb2.LiteralType(simple=types_pb2.INTEGER)
    assert not signal.HasField("value")
    with pytest.raises(Exception) as refused:
        remote.set_signal("extra", run.name, "five", project=run.project, domain=run.domain)
    assert grpc_code(refused.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert "expects [simple:INTEGER]" in grpc_details(refused.value)
    assert "[simple:STRING]" in grpc_details(refused.value)
    remote.set_signal("extra", run.name, 5, project=run.project, domain=run.domain)
    run.wait(timeout=240)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": 25}
    assert signals_of(remote, run)["extra"].value.scalar.primitive.integer == 5


def test_a_waiting_gate_says_what_it_waits_for_and_how_to_give_it(reg, remote, sandbox):
    from html import escape

    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote

    from fastreg_magic.widget_run import RunView
    from fastreg_magic.widget_text import run_text

    run = reg.launch("asks", x=10)
    view = RunView(run)
    hint = (f'FlyteRemote(config, default_project="flytesnacks", default_domain="development")'
            f'.set_signal("extra", "{run.name}", value)')
    try:
        waiting_for(remote, run, "extra")
        (gate,) = [row for row in run.nodes() if row.gate]
        assert (gate.gate, gate.gate_hint) == ("waiting for signal extra (int)", hint)
        # the node table, the graph and the text the notebook saves all say it
        assert wait_until(lambda: "waiting for signal extra (int)" in view.node_table.value), view.node_table.value
        assert escape(hint, quote=True) in view.node_table.value
        assert wait_until(lambda: "waiting for signal extra (int)" in view.graph.value), view.graph.value
        text = run_text(run, run.nodes())
        assert "waiting for signal extra (int)" in text and f"to go on: {hint}" in text
        # the hint, followed as written
        eval(hint, {"FlyteRemote": FlyteRemote, "config": Config.auto(config_file=str(sandbox.config_file)), "value": 5})
        run.wait(timeout=240)
    finally:
        view.close()
    assert run.phase == "SUCCEEDED", run.error
    (gate,) = [row for row in run.nodes() if row.gate]
    assert (gate.gate, gate.gate_hint) == ("signal extra (int)", "")  # no longer waiting


def test_a_signal_the_execution_does_not_have_is_refused_saying_which_it_has(reg, remote):
    run = reg.launch("asks", x=1)
    waiting_for(remote, run, "extra")
    try:
        with pytest.raises(Exception) as refused:
            remote.set_signal("extr", run.name, 5, project=run.project, domain=run.domain)
        assert grpc_code(refused.value) == grpc.StatusCode.INVALID_ARGUMENT
        assert "signal 'extr'" in grpc_details(refused.value) and "'extra'" in grpc_details(refused.value)
    finally:
        run.terminate()


def test_a_signal_not_set_before_the_gates_timeout_fails_the_node(reg):
    run = reg.launch("impatient").wait(timeout=240)
    assert run.phase == "FAILED"
    assert gate_phase(run) == "FAILED"
    assert "task execution timeout [1s] expired" in run.backend_error
    assert "signal 'never' was not set in time" in run.backend_error


# -- approve --------------------------------------------------------------------------------------


def test_an_approved_gate_passes_its_upstream_value_on(reg, remote):
    run = reg.launch("reviewed", x=3)
    signal = waiting_for(remote, run, "review")
    assert signal.type == types_pb2.LiteralType(simple=types_pb2.BOOLEAN)
    remote.approve("review", run.name, project=run.project, domain=run.domain)
    run.wait(timeout=240)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": 7}


def test_a_rejected_gate_fails_the_run(reg, remote):
    run = reg.launch("reviewed", x=3)
    waiting_for(remote, run, "review")
    (gate,) = [row for row in run.nodes() if row.gate]
    assert gate.gate == "waiting for approval review"
    assert gate.gate_hint == (f'FlyteRemote(config, default_project="flytesnacks", default_domain="development")'
                              f'.approve("review", "{run.name}") (or .reject(...))')
    remote.reject("review", run.name, project=run.project, domain=run.domain)
    run.wait(timeout=240)
    assert run.phase == "FAILED"
    assert "received a reject signal" in run.backend_error


# -- signals outlive the sandbox's process -------------------------------------------------------------


def test_signals_and_their_values_are_listed_after_a_restart(tmp_path):
    """As propeller does, a gate creates its signal through the SignalService; after a restart stock
    flytekit still lists it with the value it was given."""
    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote

    from fastreg_magic import sandbox as sandbox_api

    execution = identifier_pb2.WorkflowExecutionIdentifier(project="flytesnacks", domain="development", name="a1")
    signal_id = identifier_pb2.SignalIdentifier(execution_id=execution, signal_id="go")
    with sandbox_api.start(data_dir=tmp_path, port=0) as first:
        with sandbox_channel(first) as channel:
            service = signal_pb2_grpc.SignalServiceStub(channel)
            service.GetOrCreateSignal(signal_pb2.SignalGetOrCreateRequest(
                id=signal_id, type=types_pb2.LiteralType(simple=types_pb2.BOOLEAN)))
            service.SetSignal(signal_pb2.SignalSetRequest(
                id=signal_id, value=literals_pb2.Literal(scalar=literals_pb2.Scalar(
                    primitive=literals_pb2.Primitive(boolean=True)))))
    with sandbox_api.start(data_dir=tmp_path, port=0) as second:
        remote = FlyteRemote(Config.auto(config_file=str(second.config_file)), default_project="flytesnacks",
                             default_domain="development", interactive_mode_enabled=False)
        listed = remote.list_signals("a1")
    assert [s.id.signal_id for s in listed] == ["go"]
    assert listed[0].value.scalar.primitive.boolean is True


def test_the_hint_for_a_list_signal_gives_flytekit_its_python_type():
    """flytekit cannot guess a list's Python type from the value ("Type of Generic List type is not supported")."""
    from flyteidl.core import workflow_pb2

    gate = workflow_pb2.GateNode(signal=workflow_pb2.SignalCondition(
        signal_id="nums", type=types_pb2.LiteralType(collection_type=types_pb2.LiteralType(simple=types_pb2.INTEGER))))
    from fastreg_magic.runs_tree import gate_hint, gate_text

    assert gate_text(gate, True) == "waiting for signal nums (List[int])"
    assert gate_hint(gate, "r1", "p", "d").endswith('.set_signal("nums", "r1", value, python_type=typing.List[int])')
