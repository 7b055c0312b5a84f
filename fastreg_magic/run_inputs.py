"""A workflow's typed inputs as form fields, and the user's text turned back into typed values.

Pure functions (no widgets, no RPC), shared by the launch form and `runs.launch`:

    fields = form_fields(my_workflow.python_interface)
    [f.name for f in fields]                  -> ["n", "when", "colour"]
    parse_input(fields[0], "12")              -> 12
    parse_input(fields[0], "twelve")          -> InputError("n: expected a whole number (int), got 'twelve'")

Scalars (int, float, str, bool, datetime, timedelta, Enum, files) get a field of their own;
lists, dicts and dataclasses are typed as JSON and checked against the declared type before
anything is launched. ``Optional[X]`` fields may be left empty. ``Annotated[X, ...]`` is treated as X.

Values passed from code go through `launch_value` (a dict for a dataclass, at any depth, is checked
and filled in the same way as the form's JSON; a dict for a pydantic model is validated by the model).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import json
import os
import re
import typing
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Mapping

from fastreg_magic.run_inputs_json import (
    check_json,
    int_range_problem,
    int_range_problem_inside,
    json_checkable,
    jsonable,
    parse_iso_datetime,
    strip_annotated,
    type_label,
    unwrap_optional,
)


class InputError(ValueError):
    """One field's text cannot become a value of its declared type. ``str()`` names the field."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()

# What each kind of field needs from the widget: a single-line text, a checkbox, a dropdown, ...
SCALAR_KINDS = ("int", "float", "str", "datetime", "timedelta", "file", "directory")


@dataclass(frozen=True)
class Field:
    """One input of a workflow / launch plan, as the form shows it."""

    name: str
    kind: str  # one of SCALAR_KINDS, "bool", "enum", "json", "unsupported"
    python_type: Any  # the declared type without Optional[...]
    type_label: str  # "int", "Optional[list[int]]", "Colour (enum)"
    optional: bool = False
    default: Any = NO_DEFAULT
    fixed: bool = False  # a launch plan's fixed input: shown, never sent
    choices: tuple[str, ...] = ()  # enum values, in declaration order

    @property
    def required(self) -> bool:
        return self.default is NO_DEFAULT and not self.optional and not self.fixed

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT

    @property
    def text(self) -> str:
        """The default as the form shows it ("" when there is none)."""
        return "" if self.default is NO_DEFAULT else format_value(self, self.default)

    @property
    def placeholder(self) -> str:
        hint = _PLACEHOLDERS.get(self.kind, "")
        if self.optional:
            hint = f"{hint} (empty = None)" if hint else "empty = None"
        return hint


_PLACEHOLDERS = {
    "int": "a whole number",
    "float": "a number",
    "datetime": "ISO 8601, e.g. 2024-06-01T12:00:00",
    "timedelta": "e.g. 90s, 1h30m, 2d, 01:30:00",
    "json": "JSON",
    "file": "a path or URL",
    "directory": "a path or URL",
}


def form_fields(
    interface, *, defaults: Mapping[str, Any] | None = None, fixed: Mapping[str, Any] | None = None
) -> list[Field]:
    """The fields of a flytekit python ``Interface``, in declaration order.

    ``defaults`` overrides the interface's own defaults (a launch plan's ``saved_inputs``);
    ``fixed`` names the launch plan's fixed inputs and their values.
    """
    defaults = dict(defaults or {})
    fixed = dict(fixed or {})
    fields = []
    for name, (py_type, default) in interface.inputs_with_defaults.items():
        inner, optional = unwrap_optional(py_type)
        default = defaults.get(name, default)
        # flytekit (and a launch plan's saved_inputs) record "no default" as None; to a Union holding None
        # (Optional[Union[int, float]]) None is a value, as to Optional[int].
        if default is None and not optional and type(None) not in typing.get_args(inner):
            default = NO_DEFAULT
        if name in fixed:
            default = fixed[name]
        fields.append(_field(name, inner, optional, default, name in fixed))
    return fields


def entity_fields(entity) -> list[Field]:
    """Fields for a flytekit task, workflow or launch plan (local objects, not remote ones)."""
    fixed_literals = getattr(getattr(entity, "fixed_inputs", None), "literals", None) or {}
    if fixed_literals:
        raw = {**getattr(entity, "saved_inputs", {}), **getattr(entity, "raw_fixed_inputs", {})}
        fixed = {name: raw.get(name, NO_DEFAULT) for name in fixed_literals}
        saved = {k: v for k, v in getattr(entity, "saved_inputs", {}).items() if k not in fixed}
        return form_fields(entity.python_interface, defaults=saved, fixed=fixed)
    saved = getattr(entity, "saved_inputs", None) or {}
    return form_fields(entity.python_interface, defaults=saved)


def _field(name: str, py_type, optional: bool, default, fixed: bool) -> Field:
    kind = _kind_of(py_type)
    choices = tuple(str(m.value) for m in py_type) if kind == "enum" else ()
    label = type_label(py_type)
    if kind == "enum":
        label = f"{py_type.__name__} (enum)"
    if optional:
        label = f"Optional[{label}]"
    return Field(name, kind, py_type, label, optional, default, fixed, choices)


def _kind_of(py_type) -> str:
    py_type = strip_annotated(py_type)
    if py_type is bool:
        return "bool"
    if py_type in (int, float, str):
        return py_type.__name__
    if py_type is dt.datetime or py_type is dt.date:
        return "datetime"
    if py_type is dt.timedelta:
        return "timedelta"
    if isinstance(py_type, type) and issubclass(py_type, enum.Enum):
        return "enum"
    file_kind = _file_kind(py_type)
    if file_kind:
        return file_kind
    if json_checkable(py_type):
        return "json"
    return "unsupported"


def _file_kind(py_type) -> str | None:
    base = typing.get_origin(py_type) or py_type
    if typing.get_origin(py_type) is typing.Annotated:
        base = typing.get_args(py_type)[0]
    name = getattr(base, "__name__", "")
    module = getattr(base, "__module__", "")
    if module.startswith("flytekit") and name == "FlyteFile":
        return "file"
    if module.startswith("flytekit") and name == "FlyteDirectory":
        return "directory"
    return None


# ---------------------------------------------------------------------------------------------
# text -> value


def parse_input(field: Field, raw: Any) -> Any:
    """The typed value for what the user entered in ``field`` (text, a checkbox's bool, a choice)."""
    if field.fixed:
        raise InputError(field.name, "is fixed by the launch plan and cannot be changed")
    if field.kind == "bool":
        return _parse_bool(field, raw)
    if field.kind == "enum":
        return _parse_enum(field, raw)
    text = "" if raw is None else str(raw)
    parser = _PARSERS.get(field.kind)
    if not text.strip() and field.kind != "str":
        if field.optional:
            return None
        if field.has_default:
            return field.default
        if parser is not None:
            raise InputError(field.name, f"is required: enter {_article(field)}")
    if field.kind == "str":
        return None if (field.optional and text == "") else text
    if parser is None:
        raise InputError(
            field.name,
            f"is required, and {_article(field)} cannot be typed into the form: start this run from a code "
            "cell, passing the value as a Python object",
        )
    return parser(field, text.strip())


def parse_inputs(fields: list[Field], raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Values for every non-fixed field present in ``raw``, and the problems keyed by field name."""
    values, problems = {}, {}
    for field in fields:
        if field.fixed or field.name not in raw:
            continue
        if field.kind == "unsupported" and field.has_default:
            continue  # the backend applies the registered default
        try:
            values[field.name] = parse_input(field, raw[field.name])
        except InputError as err:
            problems[field.name] = err.problem
        except (ValueError, TypeError, ArithmeticError) as err:  # a value no parser foresaw: shown, never raised
            problems[field.name] = f"cannot be read as {_article(field)}: {err}"
    return values, problems


# ---------------------------------------------------------------------------------------------
# values passed from code -> values flytekit converts


def launch_value(field: Field, value: Any) -> Any:
    """A value passed to ``launch(...)`` from code, ready for flytekit; InputError says what is wrong.

    A dict for a dataclass becomes the dataclass, its missing fields taking their defaults, exactly
    as JSON typed into the form does; a dict for a pydantic model becomes the model, as ``Model(**d)``
    would. At any depth the declared type reaches: ``List[P]``, ``Dict[str, P]``, ``Optional[P]``.
    """
    if value is None:
        if field.optional or field.python_type is Any:
            return None
        raise InputError(field.name, f"needs {_article(field)}, got None")
    container = typing.get_origin(field.python_type) or field.python_type
    if isinstance(value, tuple) and container in (list, typing.List):
        raise InputError(field.name, f"expected a list, got the tuple {value!r}")
    value = _objects_for_dicts(field, value, field.python_type)
    if field.kind in ("file", "directory"):
        _check_local_path(field, value)
    if field.kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        _check_int_range(field, value)
    if field.kind == "json":
        problem = int_range_problem_inside(value)
        if problem:
            raise InputError(field.name, problem)
    return value


def _objects_for_dicts(field: Field, value: Any, py_type, path: str = "") -> Any:
    """``value`` with each dict that stands for a dataclass or a pydantic model made into one, looking
    into lists and dicts as far as ``py_type`` declares them (flytekit converts only objects)."""
    py_type, _ = unwrap_optional(py_type)
    value = _as_dict_if_a_copy(value, py_type)
    if isinstance(value, Mapping) and dataclasses.is_dataclass(py_type):
        return _dataclass_from_dict(field, value, py_type, path)
    if isinstance(value, Mapping) and _is_pydantic_model(py_type):
        return _model_from_dict(field, value, py_type, path)
    origin, args = typing.get_origin(py_type), typing.get_args(py_type)
    if origin is list and args and isinstance(value, list):
        return [_objects_for_dicts(field, item, args[0], f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {key: _objects_for_dicts(field, item, args[1], f"{path}[{_shown_key(key)}]") for key, item in value.items()}
    return value


def _as_dict_if_a_copy(value: Any, py_type) -> Any:
    """An object of another class of the same name as ``py_type`` as a dict, which then becomes a
    ``py_type``: the notebook's own ``Cfg`` passed for the cell module's copy of it (carried over from
    the earlier cell that defined it). flytekit accepts only its own class."""
    if not isinstance(py_type, type) or type(value) is py_type or isinstance(value, type):
        return value
    if getattr(type(value), "__qualname__", None) != py_type.__qualname__:
        return value
    if dataclasses.is_dataclass(py_type) and dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if _is_pydantic_model(py_type) and hasattr(value, "model_dump"):
        return value.model_dump()
    return value


def _shown_key(key: Any) -> str:
    """A dict key as the form's JSON paths show it: ``["left"]``, ``[3]``."""
    return json.dumps(key) if isinstance(key, str) else repr(key)


def _is_pydantic_model(py_type) -> bool:
    """Whether ``py_type`` is a pydantic (v2) model class; pydantic is imported only by a notebook using it."""
    return isinstance(py_type, type) and any(
        base.__name__ == "BaseModel" and base.__module__.startswith("pydantic") for base in py_type.__mro__
    ) and hasattr(py_type, "model_validate")


def _check_local_path(field: Field, value: Any) -> None:
    """A local file or directory that is not there (flytekit would say so only inside an Optional's
    "Cannot convert" message, or not at all)."""
    from flytekit.types.directory import FlyteDirectory
    from flytekit.types.file import FlyteFile

    if not isinstance(value, (str, os.PathLike, FlyteFile, FlyteDirectory)):
        return
    path = str(getattr(value, "path", value))
    if getattr(value, "remote_source", None) or "://" in path:
        return
    what = "File" if field.kind == "file" else "Directory"
    if not os.path.exists(path):
        raise InputError(field.name, f"{what} {path} does not exist")


def _dataclass_from_dict(field: Field, value: Mapping, cls, path: str) -> Any:
    where = f" at {path}" if path else ""
    if not json_checkable(cls):
        raise InputError(field.name, f"pass a {cls.__name__}(...) object{where}: a dict cannot be checked against its fields")
    data = jsonable(dict(value))
    problem = check_json(data, cls, path)
    if problem:
        raise InputError(field.name, problem)
    from mashumaro.codecs.basic import BasicDecoder

    try:
        return BasicDecoder(cls, default_dialect=_iso_dates_dialect()).decode(data)
    except Exception as exc:  # mashumaro's InvalidFieldValue and the like: check_json let through what it cannot read
        raise InputError(field.name, f"not a valid {cls.__name__}{where} ({' '.join(str(exc).split())})") from None


@functools.lru_cache(maxsize=None)
def _iso_dates_dialect():
    """mashumaro reads a dataclass's date/times with ``fromisoformat``, which before Python 3.11 refuses
    ISO 8601 that the form and check_json accept ("...Z"): read them as they do."""
    from mashumaro.dialect import Dialect

    class IsoDates(Dialect):
        serialization_strategy = {dt.datetime: {"deserialize": parse_iso_datetime}}

    return IsoDates


def _model_from_dict(field: Field, value: Mapping, model, path: str) -> Any:
    """The pydantic model for ``value``, validated by the model itself (as ``Model(**value)``)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(dict(value))
    except ValidationError as err:
        where = f" at {path}" if path else ""
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'value'}: {e['msg']}" for e in err.errors()
        )
        raise InputError(field.name, f"not a valid {model.__name__}{where} ({problems})") from None


def _article(field: Field) -> str:
    label = field.type_label
    return f"an {label}" if label[:1].lower() in "aeiou" else f"a {label}"


def _parse_int(field: Field, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InputError(field.name, f"expected a whole number (int), got {text!r}") from None
    _check_int_range(field, value)
    return value


def _check_int_range(field: Field, value: int) -> None:
    """Flyte carries an int as 64 bits: a bigger one would only fail inside the launch request."""
    problem = int_range_problem(value)
    if problem:
        raise InputError(field.name, problem)


def _parse_float(field: Field, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(field.name, f"expected a number (float), got {text!r}") from None


def _parse_bool(field: Field, raw: Any) -> bool | None:
    if isinstance(raw, bool):
        return raw
    text = "" if raw is None else str(raw).strip().lower()
    if text in ("", "none") and field.optional:
        return None
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise InputError(field.name, f"expected true or false, got {raw!r}")


def _parse_enum(field: Field, raw: Any) -> Any:
    if isinstance(raw, field.python_type):
        return raw
    text = "" if raw is None else str(raw)
    if text == "" and field.optional:
        return None
    for member in field.python_type:
        if str(member.value) == text or member.name == text:
            return member
    raise InputError(field.name, f"expected one of {', '.join(field.choices)}, got {text!r}")


def _parse_datetime(field: Field, text: str) -> dt.datetime:
    try:
        value = parse_iso_datetime(text)
    except (TypeError, ValueError):
        raise InputError(field.name, f"expected a date/time in ISO 8601 (2024-06-01T12:00:00), got {text!r}") from None
    if field.python_type is dt.date:
        return value.date()
    return value


# A duration is read exactly, in whole microseconds (what a timedelta holds): no float rounding.
_US_PER_UNIT = {"d": 86_400_000_000, "h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000, "ms": 1_000, "us": 1, "µs": 1}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*(ms|us|µs|d|h|m|s)\s*", re.IGNORECASE)
_CLOCK = re.compile(r"(\d+):(\d{1,2})(?::(\d{1,2}(?:\.\d+)?))?")
_MIN_US = dt.timedelta.min // dt.timedelta(microseconds=1)
_MAX_US = dt.timedelta.max // dt.timedelta(microseconds=1)


class DurationRangeError(ValueError):
    """Text that is a duration, but not one a ``timedelta`` can hold (infinite, or beyond ±999999999 days)."""


def parse_duration(text: str) -> dt.timedelta:
    """``"90"`` (seconds), ``"1h30m"``, ``"2d 3h"``, ``"250ms"``, ``"-5m"``, ``"01:30:00"``; ValueError otherwise.

    Exact to the microsecond: ``parse_duration(format_duration(td)) == td`` for every timedelta.
    """
    text = text.strip()
    negative = text.startswith("-")
    body = text[1:].strip() if text[:1] in "+-" else text
    try:
        micros = _plain_seconds(body)
        if micros is None:
            micros = _clock_micros(body)
        if micros is None:
            micros = _unit_micros(body)
    except ArithmeticError:  # an exponent beyond what decimal arithmetic holds
        raise DurationRangeError(f"too long a duration: {text!r}") from None
    if micros is None:
        raise ValueError(f"not a duration: {text!r}")
    return _timedelta_of(-micros if negative else micros)


def _plain_seconds(body: str) -> Decimal | None:
    if body[:1] in ("+", "-") or not re.fullmatch(r"[\w.+-]+", body):
        return None  # Decimal would accept a second sign, or spaces inside
    try:
        seconds = Decimal(body)
    except InvalidOperation:
        return None
    if not seconds.is_finite():
        raise DurationRangeError(f"not a finite duration: {body!r}")
    return seconds * _US_PER_UNIT["s"]


def _clock_micros(body: str) -> Decimal | None:
    match = _CLOCK.fullmatch(body)
    if match is None:
        return None
    hours, minutes, seconds = match.group(1), match.group(2), match.group(3) or "0"
    return int(hours) * _US_PER_UNIT["h"] + int(minutes) * _US_PER_UNIT["m"] + Decimal(seconds) * _US_PER_UNIT["s"]


def _unit_micros(body: str) -> Decimal | None:
    if not body or _DURATION_PART.sub("", body):
        return None
    return sum(Decimal(n) * _US_PER_UNIT[unit.lower()] for n, unit in _DURATION_PART.findall(body))


def _timedelta_of(micros: Decimal) -> dt.timedelta:
    whole = int(Decimal(micros).to_integral_value(rounding=ROUND_HALF_EVEN))  # timedelta rounds the same way
    if not _MIN_US <= whole <= _MAX_US:
        raise DurationRangeError("longer than a timedelta can hold (at most 999999999 days either way)")
    return dt.timedelta(microseconds=whole)


def _parse_timedelta(field: Field, text: str) -> dt.timedelta:
    try:
        return parse_duration(text)
    except DurationRangeError:
        problem = f"{text!r} is out of range: a duration must be finite and within ±999999999 days"
        raise InputError(field.name, problem) from None
    except (ValueError, ArithmeticError):
        raise InputError(field.name, f"expected a duration such as 90s, 1h30m, -5m or 01:30:00, got {text!r}") from None


def _parse_path(field: Field, text: str):
    from flytekit.types.directory import FlyteDirectory
    from flytekit.types.file import FlyteFile

    _check_local_path(field, text)  # said next to the field, not after a launch that cannot work
    return FlyteFile(text) if field.kind == "file" else FlyteDirectory(text)


def _parse_json(field: Field, text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(field.name, f"is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    problem = check_json(value, field.python_type)
    if problem:
        raise InputError(field.name, problem)
    if value is None:
        if field.optional:
            return None
        raise InputError(field.name, f"expected {_article(field)}, got null")
    from mashumaro.codecs.basic import BasicDecoder

    # The value has been checked strictly above; mashumaro only builds the objects.
    return BasicDecoder(field.python_type).decode(value)


_PARSERS = {
    "int": _parse_int,
    "float": _parse_float,
    "datetime": _parse_datetime,
    "timedelta": _parse_timedelta,
    "file": _parse_path,
    "directory": _parse_path,
    "json": _parse_json,
}


# ---------------------------------------------------------------------------------------------
# value -> text


def format_value(field: Field, value: Any) -> str:
    """A value as the form shows it; `parse_input` reads the result back to the same value."""
    if value is None or value is NO_DEFAULT:
        return ""
    if field.kind == "datetime":
        return value.isoformat()
    if field.kind == "timedelta":
        return format_duration(value)
    if field.kind == "enum":
        return str(value.value) if isinstance(value, enum.Enum) else str(value)
    if field.kind in ("file", "directory"):
        return str(getattr(value, "remote_source", None) or getattr(value, "path", value))
    if field.kind == "json":
        return json.dumps(jsonable(value))
    return str(value) if field.kind != "float" else repr(float(value))


def format_duration(value: dt.timedelta) -> str:
    """``1h30m``, ``14d0.5s``, ``-5m``, ``0.000003s``: exact, and read back by `parse_duration`."""
    micros = value // dt.timedelta(microseconds=1)
    sign, micros = ("-" if micros < 0 else ""), abs(micros)
    parts = []
    for unit in ("d", "h", "m"):
        count, micros = divmod(micros, _US_PER_UNIT[unit])
        if count:
            parts.append(f"{count}{unit}")
    seconds, fraction = divmod(micros, _US_PER_UNIT["s"])
    if micros or not parts:
        decimals = f".{fraction:06d}".rstrip("0") if fraction else ""
        parts.append(f"{seconds}{decimals}s")
    return sign + "".join(parts)
