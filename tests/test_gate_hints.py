"""The hint a waiting signal gate shows in the run's node table runs as written with stock flytekit: given
``config`` and ``value`` (and ``typing`` and the cell's classes), it sets the signal and the run goes on; the
gate names the signal's type as the workflow declared it (``Optional[int]``, the dataclass's name)."""

from __future__ import annotations

import textwrap
import time
import typing
import uuid

import pytest

pytestmark = pytest.mark.slow

CELL = textwrap.dedent(
    """
    import typing
    from dataclasses import dataclass
    from datetime import timedelta
    from flytekit import task, wait_for_input, workflow

    @dataclass
    class Params:
        lr: float
        name: str

    @task
    def show(p: Params) -> str:
        return f"{p.name}:{p.lr}"

    @workflow
    def one_params() -> str:
        return show(p=wait_for_input("params", timeout=timedelta(minutes=10), expected_type=Params))

    @workflow
    def maybe_int() -> typing.Optional[int]:
        return wait_for_input("o", timeout=timedelta(minutes=10), expected_type=typing.Optional[int])

    @workflow
    def many_params() -> typing.List[Params]:
        return wait_for_input("many", timeout=timedelta(minutes=10), expected_type=typing.List[Params])
    """
)


@pytest.fixture(scope="module")
def reg(sandbox_shell):
    return sandbox_shell.run_cell_magic("flyte_fast", f"-m gate_hints_{uuid.uuid4().hex[:8]}", CELL)


def waiting_gate(run, timeout: float = 240):
    """The run's gate row once it waits (its hint shown)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gates = [row for row in run.nodes() if row.gate_hint]
        if gates:
            return gates[0]
        assert not run.refresh().done, f"the gate never waited: run {run.phase}, {run.error}"
        time.sleep(0.2)
    raise AssertionError("the gate never waited")


def run_hint_as_written(hint: str, sandbox, value, **names) -> None:
    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote

    exec(hint, {"FlyteRemote": FlyteRemote, "config": Config.auto(config_file=str(sandbox.config_file)),
                "value": value, "typing": typing, **names})


@pytest.mark.parametrize(
    ("workflow", "gate", "typed", "value", "expected"),
    [
        ("maybe_int", "waiting for signal o (Optional[int])", ", python_type=typing.Optional[int])", 4, 4),
        ("one_params", "waiting for signal params (Params)", ")", "Params(lr=0.5, name='a')", "a:0.5"),
        ("many_params", "waiting for signal many (List[Params])", ", python_type=typing.List[Params])",
         "[Params(lr=0.25, name='b')]", "[Params(lr=0.25, name='b')]"),
    ],
    ids=["optional", "dataclass", "list-of-dataclass"],
)
def test_a_signal_gates_hint_names_its_type_and_runs_as_written(reg, sandbox, sandbox_shell, workflow, gate, typed,
                                                                  value, expected):
    params = sandbox_shell.user_ns["Params"]
    if isinstance(value, str):  # built from the cell's own class, as the user would
        value = eval(value, {"Params": params})
    run = reg.launch(workflow)
    try:
        row = waiting_gate(run)
        assert row.gate == gate
        assert row.gate_hint.endswith(f'.set_signal("{row.gate.split()[3]}", "{run.name}", value{typed}')
        run_hint_as_written(row.gate_hint, sandbox, value, Params=params)
        run.wait(timeout=240)
    finally:
        run.refresh()
        if not run.done:
            run.terminate()
    assert run.phase == "SUCCEEDED", run.error
    output = run.outputs["o0"]
    assert (repr(output) if isinstance(output, list) else output) == expected


@pytest.mark.parametrize(
    ("declared", "text"),
    [
        (typing.Dict[str, typing.List[int]], "Dict[str, List[int]]"),
        (typing.Optional[typing.List[float]], "Optional[List[float]]"),
        (typing.Union[int, str], "Union[int, str]"),
    ],
)
def test_a_nested_types_hint_spells_every_level_as_code(declared, text):
    """``python_type=`` is Python that evaluates to the declared type, at every level of nesting."""
    from flyteidl.core import workflow_pb2
    from flytekit.core.type_engine import TypeEngine

    from fastreg_magic.runs_tree import gate_hint, gate_text

    gate = workflow_pb2.GateNode(signal=workflow_pb2.SignalCondition(
        signal_id="s", type=TypeEngine.to_literal_type(declared).to_flyte_idl()))
    assert gate_text(gate, False) == f"signal s ({text})"
    source = gate_hint(gate, "r1", "p", "d").split("python_type=", 1)[1][:-1]
    assert eval(source, {"typing": typing}) == declared
