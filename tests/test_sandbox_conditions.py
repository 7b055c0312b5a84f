"""``conditional()`` through ``%%flyte_fast`` on the real sandbox: what FlyteAdmin compiles, how
flytepropeller picks the branch.

FlyteAdmin 1.x refuses a comparison between values of different types when the workflow is
registered ("Variable [RightValue] (type [...]) doesn't match expected type [...]"), so a cell
comparing a ``str`` with ``1`` fails and registers no workflow. It types a dataclass's field read in
a condition as the whole dataclass, and compiles no ``is_none()``: both are refused too, as a
cluster would refuse them, rather than run here and fail there. Propeller compares booleans only
for (in)equality.
"""

from __future__ import annotations

import datetime
import textwrap
import uuid

import pytest
from IPython.core.error import UsageError
from sandbox_support import counting_admin_calls

from fastreg_magic import config

HEADER = """
import datetime
import typing
from dataclasses import dataclass
from flytekit import conditional, task, workflow

@dataclass
class Cfg:
    a: int
    name: str = "cfg"

@task
def yes() -> str:
    return "yes"

@task
def no() -> str:
    return "no"

@task
def make(a: int) -> Cfg:
    return Cfg(a=a)

@task
def maybe(x: int) -> typing.Optional[int]:
    return x if x > 0 else None
"""


@pytest.fixture(scope="module")
def shell(sandbox_shell):
    return sandbox_shell


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def counter(sandbox):
    with counting_admin_calls(config.resolve_backend(config_file=str(sandbox.config_file))) as counter:
        yield counter


def cell(body: str) -> str:
    return HEADER + textwrap.dedent(body)


def register(shell, source: str):
    return shell.run_cell_magic("flyte_fast", f"-m cond_{uuid.uuid4().hex[:8]}", source)


def outputs(registration, workflow: str, **inputs) -> dict:
    run = registration.launch(workflow, **inputs).wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    return run.outputs


@pytest.mark.parametrize("signature, condition, right, left", [
    ("code: str = '1'", "code == 1", "simple:INTEGER", "simple:STRING"),
    ("score: float = 0.5", "score > 0", "simple:INTEGER", "simple:FLOAT"),
    ("n: int = 1", "n < 2.5", "simple:FLOAT", "simple:INTEGER"),
    ("c: Cfg = Cfg(a=5)", "c.a > 3", "simple:INTEGER", "simple:STRUCT"),
    ("n: int = 1, code: str = '1'", "(n == 1) & (code == n)", "simple:INTEGER", "simple:STRING"),
])
def test_comparing_different_types_is_refused_and_registers_no_workflow(
        shell, workdir, counter, signature, condition, right, left):
    source = cell(f"""
        @workflow
        def picks({signature}) -> str:
            return conditional("c").if_({condition}).then(yes()).else_().then(no())
        """)
    with pytest.raises(UsageError) as refused:
        register(shell, source)
    message = str(refused.value)
    assert "failed to compile workflow" in message
    assert f"Code: MismatchingTypes, Node Id: n0, Description: Variable [RightValue] (type [{right}]) " \
           f"doesn't match expected type [{left}" in message
    assert "compare with a value of the input's own type" in message
    assert "CreateLaunchPlan" not in counter.creates()  # the workflow was refused, so nothing launches it


def test_comparisons_of_one_type_register_and_pick_their_branch(shell, workdir):
    registration = register(shell, cell("""
        @workflow
        def on_time(when: datetime.datetime, span: datetime.timedelta) -> str:
            return (conditional("t")
                    .if_((when > datetime.datetime(2024, 1, 1)) & (span <= datetime.timedelta(hours=1)))
                    .then(yes()).else_().then(no()))

        @workflow
        def on_flags(flag: bool, code: str, n: int) -> str:
            return (conditional("f")
                    .if_(flag.is_true() | ((code == "1") & (n != 0)))
                    .then(yes()).else_().then(no()))
        """))
    day = datetime.datetime(2024, 6, 1, tzinfo=datetime.timezone.utc)
    assert outputs(registration, "on_time", when=day, span=datetime.timedelta(minutes=5)) == {"o0": "yes"}
    assert outputs(registration, "on_time", when=day, span=datetime.timedelta(hours=2)) == {"o0": "no"}
    assert outputs(registration, "on_flags", flag=False, code="1", n=3) == {"o0": "yes"}
    assert outputs(registration, "on_flags", flag=False, code="2", n=3) == {"o0": "no"}


def test_is_none_in_a_condition_is_refused_as_flyteadmin_refuses_it(shell, workdir, counter):
    with pytest.raises(UsageError) as refused:
        register(shell, cell("""
            @workflow
            def on_none(x: int) -> str:
                m = maybe(x=x)
                return conditional("none").if_(m.is_none()).then(yes()).else_().then(no())
            """))
    message = str(refused.value)
    assert "Code: ValueRequired, Node Id: n1, Description: Value required [RightValue.Val]." in message
    assert "branch on a task that returns a bool" in message
    assert "CreateLaunchPlan" not in counter.creates()


def test_a_dataclass_field_reaches_tasks_and_outputs_as_the_primitive_it_is(shell, workdir):
    registration = register(shell, cell("""
        @task
        def big(n: int) -> bool:
            return n > 3

        @workflow
        def on_output(a: int) -> str:
            c = make(a=a)
            is_big = big(n=c.a)
            return conditional("attr").if_(is_big.is_true()).then(yes()).else_().then(no())

        @workflow
        def passes_on(a: int) -> int:
            return make(a=a).a
        """))
    assert outputs(registration, "on_output", a=7) == {"o0": "yes"}
    assert outputs(registration, "on_output", a=2) == {"o0": "no"}
    assert outputs(registration, "passes_on", a=9) == {"o0": 9}  # a task output's field as a workflow output


def test_a_boolean_is_only_equal_or_not_when_the_run_picks_its_branch(shell, workdir):
    """FlyteAdmin registers ``flag > False`` (both sides are booleans); propeller fails the run."""
    registration = register(shell, cell("""
        @workflow
        def ordered(flag: bool = True) -> str:
            return conditional("b").if_(flag > False).then(yes()).else_().then(no())
        """))
    run = registration.launch("ordered", flag=True).wait(timeout=300)
    assert run.phase == "FAILED"
    assert "[GT] not defined for boolean operands." in run.error

