"""Launch-form fields from typed interfaces, and what the user types turned back into values."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Optional, Union

import pytest
from flytekit import LaunchPlan, task, workflow
from flytekit.core.interface import Interface

from fastreg_magic.run_inputs import (
    NO_DEFAULT,
    InputError,
    entity_fields,
    form_fields,
    format_value,
    parse_duration,
    parse_input,
    parse_inputs,
)


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclass
class Point:
    x: float
    y: float
    tags: list[str] = field(default_factory=list)


def fields_of(**inputs):
    return {f.name: f for f in form_fields(Interface(inputs=inputs))}


def test_each_type_gets_the_editor_it_needs():
    f = fields_of(
        n=int, rate=float, who=str, flag=bool, when=dt.datetime, span=dt.timedelta, colour=Colour,
        maybe=Optional[int], xs=list[int], d=dict[str, float], p=Point,
    )
    assert {k: v.kind for k, v in f.items()} == {
        "n": "int", "rate": "float", "who": "str", "flag": "bool", "when": "datetime", "span": "timedelta",
        "colour": "enum", "maybe": "int", "xs": "json", "d": "json", "p": "json",
    }
    assert f["maybe"].optional and not f["maybe"].required
    assert f["n"].required and f["n"].default is NO_DEFAULT
    assert f["colour"].choices == ("red", "green")
    assert f["xs"].type_label == "list[int]"
    assert f["maybe"].type_label == "Optional[int]"
    assert f["colour"].type_label == "Colour (enum)"


def test_defaults_are_prefilled_as_text():
    f = fields_of(
        n=(int, 10), rate=(float, 0.5), when=(dt.datetime, dt.datetime(2024, 6, 1, 12)),
        span=(dt.timedelta, dt.timedelta(hours=1, minutes=30)), colour=(Colour, Colour.GREEN),
        xs=(list[int], [1, 2]), p=(Point, Point(1.0, 2.0)),
    )
    assert f["n"].text == "10"
    assert f["rate"].text == "0.5"
    assert f["when"].text == "2024-06-01T12:00:00"
    assert f["span"].text == "1h30m"
    assert f["colour"].text == "green"
    assert f["xs"].text == "[1, 2]"
    assert f["p"].text == '{"x": 1.0, "y": 2.0, "tags": []}'


@pytest.mark.parametrize(
    "py_type, text, expected",
    [
        (int, " 42 ", 42),
        (int, "-7", -7),
        (float, "2.5e3", 2500.0),
        (str, "  spaced  ", "  spaced  "),
        (str, "", ""),
        (bool, "true", True),
        (dt.datetime, "2024-06-01T12:30:00", dt.datetime(2024, 6, 1, 12, 30)),
        # ISO 8601 as Python 3.11 reads it, on every Python
        (dt.datetime, "2024-06-01T12:30:00Z", dt.datetime(2024, 6, 1, 12, 30, tzinfo=dt.timezone.utc)),
        (dt.datetime, "2024-06-01T12:30:00.5", dt.datetime(2024, 6, 1, 12, 30, 0, 500000)),
        (dt.datetime, "20240601T123000", dt.datetime(2024, 6, 1, 12, 30)),
        (dt.timedelta, "1h30m", dt.timedelta(minutes=90)),
        (dt.timedelta, "90", dt.timedelta(seconds=90)),
        (dt.timedelta, "01:00:05", dt.timedelta(hours=1, seconds=5)),
        (Colour, "red", Colour.RED),
        (list[int], "[1, 2, 3]", [1, 2, 3]),
        (dict[str, float], '{"a": 1, "b": 2.5}', {"a": 1.0, "b": 2.5}),
        (Point, '{"x": 1, "y": 2}', Point(1.0, 2.0)),
        (Optional[int], "", None),
        (Optional[list[int]], "null", None),
    ],
)
def test_valid_text_becomes_a_typed_value(py_type, text, expected):
    (f,) = form_fields(Interface(inputs={"v": py_type}))
    assert parse_input(f, text) == expected


@pytest.mark.parametrize(
    "py_type, text, message",
    [
        (int, "twelve", "v: expected a whole number (int), got 'twelve'"),
        (int, "1.5", "v: expected a whole number (int), got '1.5'"),
        (int, "", "v: is required: enter an int"),
        (float, "fast", "v: expected a number (float), got 'fast'"),
        (dt.datetime, "yesterday", "v: expected a date/time in ISO 8601"),
        (dt.timedelta, "soon", "v: expected a duration such as 90s"),
        (Colour, "blue", "v: expected one of red, green, got 'blue'"),
        (list[int], "[1, 2", "v: is not valid JSON"),
        (list[int], "[1, 2.5]", "v: expected a whole number at [1], got 2.5"),
        (list[int], '["1"]', 'v: expected a whole number at [0], got "1"'),
        (dict[str, float], '{"a": "x"}', 'v: expected a number at ["a"], got "x"'),
        (Point, '{"x": 1}', "v: missing field 'y' of Point"),
        (Point, '{"x": 1, "y": 2, "z": 3}', "v: Point has no field 'z'"),
        (Point, '{"x": 1, "y": 2, "tags": [1]}', "v: expected a string at tags[0], got 1"),
        (list[int], "null", "v: expected a list[int], got null"),
    ],
)
def test_invalid_text_names_the_field_and_the_problem(py_type, text, message):
    (f,) = form_fields(Interface(inputs={"v": py_type}))
    with pytest.raises(InputError) as info:
        parse_input(f, text)
    assert str(info.value).startswith(message)


def test_parse_inputs_collects_every_problem_and_keeps_valid_values():
    fields = form_fields(Interface(inputs={"a": int, "b": float, "c": str}))
    values, problems = parse_inputs(fields, {"a": "x", "b": "1.5", "c": "hi"})
    assert values == {"b": 1.5, "c": "hi"}
    assert set(problems) == {"a"}


def test_formatted_defaults_parse_back_to_the_same_value():
    samples = {
        int: 3, float: 0.1, str: "x", dt.datetime: dt.datetime(2020, 1, 2, 3, 4, 5),
        dt.timedelta: dt.timedelta(days=2, seconds=7), Colour: Colour.RED, list[int]: [3, 4],
        Point: Point(0.5, -1.0, ["a"]),
    }
    for py_type, value in samples.items():
        (f,) = form_fields(Interface(inputs={"v": (py_type, value)}))
        assert parse_input(f, format_value(f, value)) == value, py_type


def test_durations():
    assert parse_duration("2d3h") == dt.timedelta(days=2, hours=3)
    assert parse_duration("250ms") == dt.timedelta(milliseconds=250)
    assert parse_duration("1h 30m") == dt.timedelta(minutes=90)
    with pytest.raises(ValueError):
        parse_duration("1 fortnight")


@task
def _square(n: int) -> int:
    return n * n


@workflow
def _pipeline(n: int = 3, label: str = "run", scale: Optional[float] = None) -> int:
    return _square(n=n)


def test_workflow_fields_carry_the_workflow_defaults():
    fields = {f.name: f for f in entity_fields(_pipeline)}
    assert fields["n"].text == "3" and not fields["n"].required
    assert fields["label"].text == "run"
    assert fields["scale"].optional and fields["scale"].text == ""


def test_launch_plan_fixed_inputs_are_read_only_and_never_sent():
    lp = LaunchPlan.get_or_create(_pipeline, name="fixed_label_lp", default_inputs={"n": 5}, fixed_inputs={"label": "nightly"})
    fields = {f.name: f for f in entity_fields(lp)}
    assert fields["label"].fixed and fields["label"].text == "nightly"
    assert fields["n"].text == "5" and not fields["n"].fixed
    values, problems = parse_inputs(list(fields.values()), {"n": "6", "label": "changed", "scale": ""})
    assert values == {"n": 6, "scale": None} and not problems
    with pytest.raises(InputError, match="fixed by the launch plan"):
        parse_input(fields["label"], "x")


class Mode(enum.Enum):
    FAST = "fast"
    SAFE = "safe"


@workflow
def _typed(
    n: int = 2,
    rate: float = 0.5,
    flag: bool = True,
    maybe_flag: Optional[bool] = None,
    mode: Mode = Mode.SAFE,
    when: dt.datetime = dt.datetime(2024, 6, 1),
    p: Point = Point(1.0, 2.0),
    note: Optional[str] = None,
) -> int:
    return _square(n=n)


def test_launch_form_editors_follow_the_types_and_only_valid_input_launches():
    import ipywidgets as widgets

    from fastreg_magic.widget_form import LaunchForm

    ref = type("Ref", (), {"entity": _typed, "name": "tests._typed", "kind": "workflow"})()
    launched = []
    form = LaunchForm(ref, lambda r, values: launched.append(values))
    e = form.editors
    assert isinstance(e["n"], widgets.Text) and e["n"].value == "2" and e["n"].description == "n"
    assert isinstance(e["flag"], widgets.Checkbox) and e["flag"].value is True
    assert isinstance(e["maybe_flag"], widgets.Dropdown) and e["maybe_flag"].value == ""
    assert isinstance(e["mode"], widgets.Dropdown) and e["mode"].value == "safe" and e["mode"].options == (("fast", "fast"), ("safe", "safe"))
    assert isinstance(e["p"], widgets.Textarea) and '"x": 1.0' in e["p"].value
    assert all(editor.description == name for name, editor in e.items())

    e["n"].value = "x"
    e["p"].value = '{"x": "far"}'
    assert form.launch_clicked() is None and not launched
    assert "expected a whole number" in form.problems["n"].value
    assert "expected a number at x" in form.problems["p"].value
    assert "2 inputs to fix" in form.message.value

    e["n"].value = "4"
    e["p"].value = '{"x": 3, "y": 4}'
    e["mode"].value = "fast"
    e["maybe_flag"].value = "false"
    values = form.launch_clicked()
    assert launched == [values]
    assert values["n"] == 4 and values["p"] == Point(3.0, 4.0) and values["mode"] is Mode.FAST
    assert values["maybe_flag"] is False and values["note"] is None and values["flag"] is True
    assert form.problems["n"].value == "" and form.message.value == ""


def test_fixed_inputs_are_shown_read_only():
    from fastreg_magic.widget_form import LaunchForm

    lp = LaunchPlan.get_or_create(_pipeline, name="form_fixed_lp", fixed_inputs={"label": "<b>nightly</b>"})
    ref = type("Ref", (), {"entity": lp, "name": "tests.form_fixed_lp", "kind": "launch_plan"})()
    form = LaunchForm(ref, lambda r, v: None)
    assert form.editors["label"].disabled and form.editors["label"].value == "<b>nightly</b>"
    assert "label" not in form.launch_clicked()


@workflow
def _needs_a(a: int, b: str = "x", c: Optional[int] = None) -> int:
    return _square(n=a)


def test_a_launch_plans_missing_default_leaves_the_input_required():
    # flytekit's default launch plan records "no default" as None in saved_inputs: {"a": None, ...}
    lp = LaunchPlan.get_or_create(_needs_a)
    fields = {f.name: f for f in entity_fields(lp)}
    assert fields["a"].required and fields["a"].default is NO_DEFAULT
    assert not fields["b"].required and fields["b"].text == "x"
    assert fields["c"].optional and not fields["c"].required
    values, problems = parse_inputs(list(fields.values()), {"a": "", "b": "x", "c": ""})
    assert problems == {"a": "is required: enter an int"}
    assert values == {"b": "x", "c": None}


@pytest.mark.parametrize(
    "value, text",
    [
        (dt.timedelta(days=14, seconds=0.5), "14d0.5s"),
        (dt.timedelta(minutes=-5), "-5m"),
        (dt.timedelta(microseconds=250), "0.00025s"),
        (dt.timedelta(hours=1, microseconds=3), "1h0.000003s"),
        (dt.timedelta(seconds=-0.5), "-0.5s"),
        (dt.timedelta(0), "0s"),
        (dt.timedelta.max, "999999999d23h59m59.999999s"),
        (dt.timedelta.min, "-999999999d"),
    ],
)
def test_every_duration_is_shown_as_text_that_reads_back_exactly(value, text):
    (f,) = form_fields(Interface(inputs={"v": (dt.timedelta, value)}))
    assert f.text == text
    assert parse_input(f, f.text) == value


def test_durations_round_trip_exactly_across_their_range():
    import random

    rng = random.Random(7)
    span = fields_of(v=dt.timedelta)["v"]
    for _ in range(2000):
        bound = rng.choice([10**6, 10**12, 8 * 10**19])  # a second, ~11 days, ~900000000 days
        micros = rng.randint(-bound, bound)
        value = dt.timedelta(microseconds=micros)
        assert parse_input(span, format_value(span, value)) == value


@pytest.mark.parametrize(
    "text, expected",
    [
        ("-5m", dt.timedelta(minutes=-5)),
        ("-1h30m", -dt.timedelta(hours=1, minutes=30)),
        ("- 2d 3h", -dt.timedelta(days=2, hours=3)),
        ("-90", dt.timedelta(seconds=-90)),
        ("-01:30:00", -dt.timedelta(hours=1, minutes=30)),
        ("1.5h", dt.timedelta(minutes=90)),
        ("250us", dt.timedelta(microseconds=250)),
        ("0.1", dt.timedelta(milliseconds=100)),
    ],
)
def test_negative_and_fractional_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text, problem",
    [
        ("inf", "'inf' is out of range: a duration must be finite and within ±999999999 days"),
        ("nan", "'nan' is out of range: a duration must be finite and within ±999999999 days"),
        ("1e20", "'1e20' is out of range: a duration must be finite and within ±999999999 days"),
        ("99999999999d", "'99999999999d' is out of range: a duration must be finite and within ±999999999 days"),
        ("1e999999999", "'1e999999999' is out of range: a duration must be finite and within ±999999999 days"),
        ("--5m", "expected a duration such as 90s, 1h30m, -5m or 01:30:00, got '--5m'"),
        ("5 m s", "expected a duration such as 90s, 1h30m, -5m or 01:30:00, got '5 m s'"),
    ],
)
def test_a_bad_duration_is_a_problem_next_to_the_field_never_an_exception(text, problem):
    values, problems = parse_inputs([fields_of(v=dt.timedelta)["v"]], {"v": text})
    assert (values, problems) == ({}, {"v": problem})


def test_a_launch_form_with_unusual_duration_defaults_launches_them_untouched():
    from fastreg_magic.widget_form import LaunchForm

    @workflow
    def spans(
        a: dt.timedelta = dt.timedelta(days=14, seconds=0.5),
        b: dt.timedelta = dt.timedelta(minutes=-5),
        d: dt.timedelta = dt.timedelta(hours=1, microseconds=3),
    ) -> int:
        return _square(n=1)

    ref = type("Ref", (), {"entity": spans, "name": "tests.spans", "kind": "workflow"})()
    launched = []
    form = LaunchForm(ref, lambda r, values: launched.append(values))
    assert {name: e.value for name, e in form.editors.items()} == {"a": "14d0.5s", "b": "-5m", "d": "1h0.000003s"}
    form.launch_clicked()
    assert launched == [
        {"a": dt.timedelta(days=14, seconds=0.5), "b": dt.timedelta(minutes=-5), "d": dt.timedelta(hours=1, microseconds=3)}
    ]
    form.editors["a"].value = "inf"
    assert form.launch_clicked() is None
    assert "must be finite" in form.problems["a"].value


def test_annotated_and_bare_dict_inputs_are_typed_like_their_plain_types():
    from typing import Annotated

    f = fields_of(
        n=Annotated[int, "unit=items"], on=Optional[Annotated[int, "x"]], d=dict, xs=list, s=Annotated[str, "meta"]
    )
    assert {k: (v.kind, v.type_label) for k, v in f.items()} == {
        "n": ("int", "int"),
        "on": ("int", "Optional[int]"),
        "d": ("json", "dict"),
        "xs": ("json", "list"),
        "s": ("str", "str"),
    }
    typed = {"n": "3", "on": "", "d": '{"a": [1, "b"]}', "xs": "[1, null]", "s": "hi"}
    values, problems = parse_inputs(list(f.values()), typed)
    assert problems == {}
    assert values == {"n": 3, "on": None, "d": {"a": [1, "b"]}, "xs": [1, None], "s": "hi"}
    assert parse_inputs([f["d"]], {"d": "[1]"})[1] == {"d": "expected a JSON object, got [1]"}


BEYOND_INT64 = "99999999999999999999999"


@pytest.mark.parametrize(
    "py_type, text, problem",
    [
        (int, BEYOND_INT64, f"{BEYOND_INT64} is out of range: a Flyte int holds whole numbers from "
                            "-9223372036854775808 to 9223372036854775807"),
        (int, str(-(2**63) - 1), "-9223372036854775809 is out of range"),
        (list[int], f"[1, {BEYOND_INT64}]", f"{BEYOND_INT64} at [1] is out of range"),
        (Point, '{"x": 1, "y": 2, "tags": []}', None),
    ],
)
def test_an_int_beyond_64_bits_is_a_problem_next_to_its_field(py_type, text, problem):
    (field_,) = form_fields(Interface(inputs={"n": py_type}))
    values, problems = parse_inputs([field_], {"n": text})
    if problem is None:
        assert problems == {}
    else:
        assert problems["n"].startswith(problem) and values == {}
    assert parse_input(fields_of(n=int)["n"], str(2**63 - 1)) == 2**63 - 1  # the largest one fits


def test_the_form_names_the_fields_to_fix_and_never_talks_about_code():
    from fastreg_magic.widget_form import LaunchForm

    @workflow
    def wide(n: int, xs: list[int], odd: Opaque) -> int:
        return _square(n=n)

    ref = type("Ref", (), {"entity": wide, "name": "tests.wide", "kind": "workflow"})()
    launched = []
    form = LaunchForm(ref, lambda r, values: launched.append(values))
    form.editors["n"].value = BEYOND_INT64
    form.editors["xs"].value = "[1.5]"
    assert form.launch_clicked() is None and launched == []
    assert "out of range" in form.problems["n"].value
    assert "3 inputs to fix (n, xs, odd): nothing launched" in form.message.value
    assert "cannot be typed into the form" in form.problems["odd"].value
    shown = form.message.value + "".join(box.value for box in form.problems.values())
    assert "launch(" not in shown
    form.editors["n"].value = "3"
    form.editors["xs"].value = "[1]"
    form.launch_clicked()
    assert form.problems["n"].layout.display == "none" and form.problems["odd"].layout.display != "none"
    assert "1 input to fix (odd)" in form.message.value


class Opaque:
    """A type the form has no editor for."""


@workflow
def _unions(u: Union[int, str] = "s", g: Optional[Union[int, float]] = None, n: int = 1) -> int:
    return _square(n=n)


def test_a_default_the_form_cannot_edit_is_shown_with_how_to_change_it():
    import html

    from fastreg_magic.widget_form import LaunchForm

    ref = type("Ref", (), {"entity": _unions, "name": "tests._unions", "kind": "workflow"})()
    launched = []
    form = LaunchForm(ref, lambda r, values: launched.append(values))
    u, g = form.editors["u"], form.editors["g"]
    assert (u.value, u.disabled) == ("'s'", True)  # the str 's', as Python writes it: not the int or a name
    assert (g.value, g.disabled) == ("None", True)
    notes = [html.unescape(row.children[1].value) for row in form.children[:3]]
    assert "Union[int, str]: to change it, start the run from a code cell: reg.launch('_unions', u=...)" in notes[0]
    assert "to change it, start the run from a code cell: reg.launch('_unions', g=...)" in notes[1]
    assert "code cell" not in notes[2]  # an input the form edits says only its type
    assert form.launch_clicked() == {"n": 1} and launched == [{"n": 1}]  # the registered defaults apply
