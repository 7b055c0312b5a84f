"""Values passed to ``launch(...)`` from code, and outputs read back: without a backend, and (dicts
for dataclasses and pydantic models inside containers) launched on the session's sandbox."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional

import pytest
from flyteidl.core import literals_pb2
from flytekit.core.interface import Interface

from fastreg_magic.run_inputs import InputError, form_fields, launch_value
from fastreg_magic.runs_errors import conversion_problem
from fastreg_magic.runs_outputs import output_order, to_python_values


@dataclass
class Settings:
    x: int
    y: float = 0.5
    tags: list[str] = field(default_factory=list)


def field_of(py_type):
    (f,) = form_fields(Interface(inputs={"v": py_type}))
    return f


def test_a_dict_for_a_dataclass_input_becomes_the_dataclass_with_its_defaults():
    assert launch_value(field_of(Settings), {"x": 1}) == Settings(1, 0.5, [])
    assert launch_value(field_of(Optional[Settings]), {"x": 2, "tags": ["a"]}) == Settings(2, 0.5, ["a"])
    same = Settings(3)
    assert launch_value(field_of(Settings), same) is same


@dataclass
class Event:
    when: dt.datetime
    later: List[dt.datetime] = field(default_factory=list)


def test_iso_date_times_in_a_dict_for_a_dataclass_read_as_the_form_reads_them():
    """ "…Z" is ISO 8601 the form accepts on every Python; mashumaro's own reading refuses it before 3.11."""
    utc = dt.timezone.utc
    event = launch_value(field_of(Event), {"when": "2024-06-01T12:00:00Z", "later": ["20240601T120000"]})
    assert event == Event(dt.datetime(2024, 6, 1, 12, tzinfo=utc), [dt.datetime(2024, 6, 1, 12)])


@pytest.mark.parametrize(
    "value, message",
    [
        ({"y": 1.0}, "v: missing field 'x' of Settings"),
        ({"x": 1, "z": 2}, "v: Settings has no field 'z'"),
        ({"x": "one"}, 'v: expected a whole number at x, got "one"'),
    ],
)
def test_a_dict_that_does_not_fit_the_dataclass_says_why(value, message):
    with pytest.raises(InputError) as info:
        launch_value(field_of(Settings), value)
    assert str(info.value).startswith(message)


@dataclass
class Point:
    a: int
    b: float = 1.0


@pytest.mark.parametrize(
    "py_type, value, expected",
    [
        (List[Point], [{"a": 3}], [Point(3, 1.0)]),
        (List[Optional[Point]], [{"a": 3, "b": 2.0}, None], [Point(3, 2.0), None]),
        (Dict[str, Point], {"left": {"a": 1}}, {"left": Point(1, 1.0)}),
        (Optional[Dict[str, List[Point]]], {"row": [{"a": 2}]}, {"row": [Point(2, 1.0)]}),
        (List[Point], [Point(4), {"a": 5}], [Point(4), Point(5)]),
    ],
)
def test_dicts_for_dataclasses_inside_lists_and_dicts_become_the_dataclasses(py_type, value, expected):
    assert launch_value(field_of(py_type), value) == expected


def test_a_dict_inside_a_list_that_does_not_fit_says_where():
    with pytest.raises(InputError) as info:
        launch_value(field_of(List[Point]), [{"a": 1}, {"b": 2.0}])
    assert str(info.value) == "v: missing field 'a' of Point at [1]"
    with pytest.raises(InputError) as info:
        launch_value(field_of(Dict[str, Point]), {"left": {"a": "one"}})
    assert str(info.value) == 'v: expected a whole number at ["left"].a, got "one"'


def test_a_dict_for_a_pydantic_model_is_validated_by_the_model():
    pydantic = pytest.importorskip("pydantic")

    class Optimiser(pydantic.BaseModel):
        lr: float = 0.1
        layers: List[int] = [1]

    assert launch_value(field_of(Optimiser), {"lr": 0.25}) == Optimiser(lr=0.25)
    assert launch_value(field_of(List[Optimiser]), [{"layers": [2, 3]}]) == [Optimiser(layers=[2, 3])]
    with pytest.raises(InputError) as info:
        launch_value(field_of(List[Optimiser]), [{}, {"lr": "fast"}])
    assert str(info.value).startswith("v: not a valid Optimiser at [1] (lr: Input should be a valid number")


def test_none_and_tuples_are_refused_in_words():
    with pytest.raises(InputError) as info:
        launch_value(field_of(str), None)
    assert str(info.value) == "v: needs a str, got None"
    assert launch_value(field_of(Optional[str]), None) is None
    with pytest.raises(InputError) as info:
        launch_value(field_of(List[int]), (1, 2))
    assert str(info.value) == "v: expected a list, got the tuple (1, 2)"
    assert launch_value(field_of(List[int]), [1, 2]) == [1, 2]


def test_flytekit_conversion_messages_lose_their_prefixes_and_type_dumps():
    from flytekit.core.type_engine import TypeTransformerFailedError
    from flytekit.exceptions.user import FlyteAssertion

    dump = "Python value cannot be None, expected <class 'str'>/Flyte Serialized object (LiteralType):\n  simple: 3"
    assert conversion_problem(TypeTransformerFailedError(dump)) == "Python value cannot be None, expected <class 'str'>"
    missing = FlyteAssertion("File /data/missing.txt does not exist")
    assert conversion_problem(missing) == "File /data/missing.txt does not exist"
    assert conversion_problem(AssertionError()) == "AssertionError"


class _Remote:
    """The one thing `to_python_values` needs from a FlyteRemote."""

    @contextlib.contextmanager
    def remote_context(self):
        from flytekit.core.context_manager import FlyteContextManager

        yield FlyteContextManager.current_context()


def _int_map(**values: int) -> literals_pb2.LiteralMap:
    literal_map = literals_pb2.LiteralMap()
    for name, value in values.items():
        literal_map.literals[name].scalar.primitive.integer = value
    return literal_map


def test_outputs_come_back_in_declared_order():
    Stats = NamedTuple("Stats", [("count", int), ("mean", int), ("label", int), ("ok", int)])
    declared = dict(Stats.__annotations__)
    values = to_python_values(_Remote(), _int_map(ok=4, label=3, count=1, mean=2), declared)
    assert list(values.items()) == [("count", 1), ("mean", 2), ("label", 3), ("ok", 4)]

    outputs = {f"o{i}": int for i in range(12)}
    values = to_python_values(_Remote(), _int_map(**{f"o{i}": i for i in range(12)}), outputs)
    assert list(values) == [f"o{i}" for i in range(12)]


def test_outputs_without_a_declared_order_come_in_natural_order():
    assert output_order(["o10", "o2", "o0", "o1"], {}) == ["o0", "o1", "o2", "o10"]
    assert output_order(["b", "a", "extra"], {"b": int, "a": int}) == ["b", "a", "extra"]


def test_a_local_file_that_is_not_there_is_refused_before_any_upload(tmp_path):
    from flytekit.types.directory import FlyteDirectory
    from flytekit.types.file import FlyteFile

    missing = tmp_path / "missing.txt"
    for value in (str(missing), missing, FlyteFile(str(missing))):
        with pytest.raises(InputError) as info:
            launch_value(field_of(Optional[FlyteFile]), value)
        assert str(info.value) == f"v: File {missing} does not exist"
    with pytest.raises(InputError, match=f"v: Directory {tmp_path / 'nodir'} does not exist"):
        launch_value(field_of(FlyteDirectory), FlyteDirectory(str(tmp_path / "nodir")))
    missing.write_text("here now")
    assert launch_value(field_of(FlyteFile), str(missing)) == str(missing)
    assert launch_value(field_of(FlyteFile), "s3://bucket/key.txt") == "s3://bucket/key.txt"


def test_a_refused_input_shown_in_the_widget_points_at_the_form_not_at_code():
    from types import SimpleNamespace

    from fastreg_magic.runs import _input_error
    from fastreg_magic.widget_run import describe_failure

    err = _input_error(SimpleNamespace(name="wf"), "n", "int", "too big")
    assert str(err).endswith("Pass a value of type int: launch(n=...).")  # what reg.launch(n=...) says
    shown = describe_failure(err)  # what a run view started from the form says
    assert shown == "wf: input 'n' (int): too big. Correct it in the launch form and launch again."


# --- on the sandbox: what the form accepts, launch(...) accepts ----------------------------

CONTAINERS_CELL = """
from dataclasses import dataclass
from typing import Dict, List

from flytekit import task


@dataclass
class P:
    a: int
    b: float = 1.0


@task
def many(ps: List[P], named: Dict[str, P]) -> float:
    return sum(p.a * p.b for p in ps) + sum(p.a * p.b for p in named.values())
"""

PYDANTIC_CELL = """
from typing import List

from pydantic import BaseModel
from flytekit import task


class Rate(BaseModel):
    lr: float = 0.1


@task
def rate(r: Rate, more: List[Rate]) -> float:
    return r.lr + sum(m.lr for m in more)
"""


def test_dicts_for_dataclasses_inside_containers_launch_on_the_sandbox(sandbox_shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reg = sandbox_shell.run_cell_magic("flyte_fast", "-m launch_containers", CONTAINERS_CELL)
    run = reg.launch("many", ps=[{"a": 3}, {"a": 1, "b": 2.0}], named={"x": {"a": 4}}).wait(timeout=300)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 9.0}), run.error


def test_dicts_for_pydantic_models_launch_on_the_sandbox(sandbox_shell, tmp_path, monkeypatch):
    pytest.importorskip("pydantic")
    monkeypatch.chdir(tmp_path)
    reg = sandbox_shell.run_cell_magic("flyte_fast", "-m launch_models", PYDANTIC_CELL)
    run = reg.launch("rate", r={"lr": 0.25}, more=[{}, {"lr": 0.5}]).wait(timeout=300)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 0.85}), run.error


def test_the_notebooks_own_dataclass_launches_a_task_of_the_cell_that_carried_it_over(sandbox_shell, tmp_path,
                                                                                       monkeypatch):
    """`Cfg` defined in a plain cell is carried over into the cell's module as a copy of the class: an
    object of the notebook's `Cfg` is what the user has in hand, and it launches."""
    monkeypatch.chdir(tmp_path)
    sandbox_shell.run_cell(
        "from dataclasses import dataclass, field\n\n"
        "@dataclass\nclass Cfg:\n    a: int\n    tags: list[str] = field(default_factory=list)\n"
    )
    reg = sandbox_shell.run_cell_magic("flyte_fast", "-m launch_carried_class", (
        "from flytekit import task\n\n"
        "@task\ndef count(c: Cfg) -> str:\n    return f'{c.a}:{len(c.tags)}'\n"
    ))
    run = reg.launch("count", c=sandbox_shell.user_ns["Cfg"](a=2, tags=["x"])).wait(timeout=300)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": "2:1"}), run.error
