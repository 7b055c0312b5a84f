"""JSON typed into the launch form, checked strictly against the input's declared type.

    check_json([1, 2.5], list[int])        -> "expected a whole number at [1], got 2.5"
    check_json({"x": 1}, Point)            -> "missing field 'y' of Point"

Written here because the decoders flytekit relies on (mashumaro) coerce rather than check:
they turn ``1.5`` into ``1`` and ``"1"`` into ``1`` silently, and a launched run with a value
the user did not mean is worse than a refusal next to the field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import types
import typing
from typing import Any


def strip_annotated(py_type):
    """``Annotated[int, "unit=items"]`` -> ``int``: the metadata does not change what a value is."""
    while typing.get_origin(py_type) is typing.Annotated:
        py_type = typing.get_args(py_type)[0]
    return py_type


def unwrap_optional(py_type) -> tuple[Any, bool]:
    """``Optional[X]`` -> ``(X, True)``; anything else -> ``(itself, False)``. Annotated is looked through."""
    py_type = strip_annotated(py_type)
    if typing.get_origin(py_type) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(py_type) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(py_type)) == 2:
            return strip_annotated(args[0]), True
    return py_type, False


def type_label(py_type) -> str:
    """A short, readable name for a type: ``list[int]``, ``dict[str, float]``, ``Point``."""
    py_type = strip_annotated(py_type)
    origin = typing.get_origin(py_type)
    if origin is None:
        return getattr(py_type, "__name__", str(py_type))
    inner, optional = unwrap_optional(py_type)
    if optional:
        return f"Optional[{type_label(inner)}]"
    args = ", ".join(type_label(a) for a in typing.get_args(py_type))
    return f"{getattr(origin, '__name__', str(origin))}[{args}]"


def json_checkable(py_type) -> bool:
    """Whether `check_json` knows every type inside ``py_type``."""
    inner, _ = unwrap_optional(py_type)
    origin = typing.get_origin(inner)
    if inner in (int, float, str, bool, dt.datetime, dt.timedelta, list, dict) or inner is Any:
        return True
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return True
    if dataclasses.is_dataclass(inner):
        hints = typing.get_type_hints(inner)
        return all(json_checkable(hints[f.name]) for f in dataclasses.fields(inner))
    if origin in (list, typing.List):
        return json_checkable(typing.get_args(inner)[0]) if typing.get_args(inner) else True
    if origin in (dict, typing.Dict):
        args = typing.get_args(inner)
        return not args or (args[0] is str and json_checkable(args[1]))
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_iso_datetime(value: Any) -> bool:
    try:
        parse_iso_datetime(value)
    except (TypeError, ValueError):
        return False
    return True


def parse_iso_datetime(text: str) -> dt.datetime:
    """An ISO 8601 date/time, as Python 3.11's ``fromisoformat`` reads it (``Z``, ``20240601T120000``,
    any fraction of a second) on every Python: before 3.11 it read only its own output's format."""
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        from dateutil.parser import isoparse  # python-dateutil: a dependency of jupyter_client and flytekit's

        value = isoparse(text)
        if value.tzinfo is not None and value.utcoffset() == dt.timedelta(0):
            value = value.replace(tzinfo=dt.timezone.utc)  # as fromisoformat gives "Z" from 3.11 on
        return value


# A Flyte integer is a 64-bit signed one (flyteidl's Primitive.integer is an int64).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def int_range_problem(value: int, where: str = "") -> str | None:
    """Why ``value`` cannot travel as a Flyte int (too big for 64 bits), or None."""
    if INT64_MIN <= value <= INT64_MAX:
        return None
    return f"{value}{where} is out of range: a Flyte int holds whole numbers from {INT64_MIN} to {INT64_MAX}"


def int_range_problem_inside(value: Any, path: str = "") -> str | None:
    """The first int beyond 64 bits inside lists, dicts and dataclasses passed from code, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int_range_problem(value, f" at {path}" if path else "")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f"{path}.{f.name}" if path else f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, dict):
        items = ((f"{path}[{json.dumps(k) if isinstance(k, str) else k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    problems = (int_range_problem_inside(v, p) for p, v in items)
    return next((p for p in problems if p), None)


# Scalar types: (accepts the decoded JSON value, what was expected, in the user's words).
_SCALARS: dict[Any, tuple[typing.Callable[[Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "true/false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    float: (_is_number, "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
    dt.datetime: (_is_iso_datetime, "an ISO 8601 date/time string"),
    dt.timedelta: (_is_number, "a duration in seconds"),
}


def check_json(value: Any, py_type, path: str = "") -> str | None:
    """Why a decoded JSON ``value`` is not a ``py_type`` (naming where inside it), or None."""
    where = f" at {path}" if path else ""
    inner, optional = unwrap_optional(py_type)
    if value is None:
        return None if (optional or inner is Any or not path) else f"null is not allowed{where}"
    if inner is Any:
        return None
    if inner in _SCALARS:
        accepts, expected = _SCALARS[inner]
        if not accepts(value):
            return f"expected {expected}{where}, got {json.dumps(value)}"
        return int_range_problem(value, where) if inner is int else None
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        allowed = [m.value for m in inner]
        return None if value in allowed else f"expected one of {allowed}{where}, got {json.dumps(value)}"
    origin = typing.get_origin(inner)
    if inner is list or origin in (list, typing.List):
        return _check_list(value, inner, path, where)
    if inner is dict or origin in (dict, typing.Dict):
        return _check_dict(value, inner, path, where)
    if dataclasses.is_dataclass(inner):
        return _check_dataclass(value, inner, path, where)
    return f"{type_label(inner)}{where} cannot be checked"


def _check_list(value: Any, list_type, path: str, where: str) -> str | None:
    if not isinstance(value, list):
        return f"expected a JSON list{where}, got {json.dumps(value)[:60]}"
    (item_type,) = typing.get_args(list_type) or (Any,)
    problems = (check_json(item, item_type, f"{path}[{i}]") for i, item in enumerate(value))
    return next((p for p in problems if p), None)


def _check_dict(value: Any, dict_type, path: str, where: str) -> str | None:
    if not isinstance(value, dict):
        return f"expected a JSON object{where}, got {json.dumps(value)[:60]}"
    _, item_type = typing.get_args(dict_type) or (str, Any)
    problems = (check_json(item, item_type, f"{path}[{json.dumps(key)}]") for key, item in value.items())
    return next((p for p in problems if p), None)


def _check_dataclass(value: Any, cls, path: str, where: str) -> str | None:
    if not isinstance(value, dict):
        return f"expected a JSON object with the fields of {cls.__name__}{where}, got {json.dumps(value)[:60]}"
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        return f"{cls.__name__} has no field {unknown[0]!r}{where} (fields: {', '.join(sorted(names))})"
    for f in dataclasses.fields(cls):
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if f.name not in value:
            if has_default:
                continue
            return f"missing field {f.name!r} of {cls.__name__}{where}"
        problem = check_json(value[f.name], hints[f.name], f"{path}.{f.name}" if path else f.name)
        if problem:
            return problem
    return None


def jsonable(value: Any) -> Any:
    """A value as plain JSON data (dataclasses, enums, dates and durations included)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        from mashumaro.codecs.basic import BasicEncoder

        return BasicEncoder(type(value)).encode(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value
