"""A workflow's typed inputs as form fields, and the user's text turned back into typed values.

Pure functions (no widgets, no RPC), shared by the launch form and `runs.launch`:

    fields = form_fields(my_workflow.python_interface)
    [f.name for f in fields]                  -> ["n", "when", "colour"]
    parse_input(fields[0], "12")              -> 12
    parse_input(fields[0], "twelve")          -> InputError("n: expected a whole number (int), got 'twelve'")

Scalars (int, float, str, bool, datetime, timedelta, Enum, files) get a field of their own;
lists, dicts and dataclasses are typed as JSON and checked against the declared type before
anything is launched. ``Optional[X]`` fields may be left empty.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
import typing
from dataclasses import dataclass
from typing import Any, Mapping

from fastreg_magic.run_inputs_json import check_json, json_checkable, jsonable, type_label, unwrap_optional


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
        if name in defaults:
            default = defaults[name]
        elif default is None and not optional:
            default = NO_DEFAULT  # flytekit records "no default" as None
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
    if not text.strip() and field.kind != "str":
        if field.optional:
            return None
        if field.has_default:
            return field.default
        raise InputError(field.name, f"is required: enter {_article(field)}")
    if field.kind == "str":
        return None if (field.optional and text == "") else text
    parser = _PARSERS.get(field.kind)
    if parser is None:
        raise InputError(
            field.name,
            f"a {field.type_label} cannot be typed into the form; launch from code: "
            f"reg.launch(..., {field.name}=value)",
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
    return values, problems


def _article(field: Field) -> str:
    label = field.type_label
    return f"an {label}" if label[:1].lower() in "aeiou" else f"a {label}"


def _parse_int(field: Field, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(field.name, f"expected a whole number (int), got {text!r}") from None


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
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(field.name, f"expected a date/time in ISO 8601 (2024-06-01T12:00:00), got {text!r}") from None
    if field.python_type is dt.date:
        return value.date()
    return value


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|d|h|m|s)", re.IGNORECASE)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> dt.timedelta:
    """``"90"`` (seconds), ``"1h30m"``, ``"2d 3h"``, ``"250ms"``, ``"01:30:00"``; ValueError otherwise."""
    text = text.strip()
    try:
        return dt.timedelta(seconds=float(text))
    except ValueError:
        pass
    if re.fullmatch(r"-?\d+:\d{1,2}(:\d{1,2}(\.\d+)?)?", text):
        sign = -1 if text.startswith("-") else 1
        parts = [float(p) for p in text.lstrip("-").split(":")]
        hours, minutes, secs = (parts + [0.0])[:3]
        return sign * dt.timedelta(hours=hours, minutes=minutes, seconds=secs)
    compact = text.replace(" ", "")
    if compact and _DURATION.sub("", compact) == "":
        total = sum(float(n) * _UNIT_SECONDS[u.lower()] for n, u in _DURATION.findall(compact))
        return dt.timedelta(seconds=total)
    raise ValueError(text)


def _parse_timedelta(field: Field, text: str) -> dt.timedelta:
    try:
        return parse_duration(text)
    except ValueError:
        raise InputError(field.name, f"expected a duration such as 90s, 1h30m or 01:30:00, got {text!r}") from None


def _parse_path(field: Field, text: str):
    from flytekit.types.directory import FlyteDirectory
    from flytekit.types.file import FlyteFile

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
    total = value.total_seconds()
    if total < 0 or total != int(total):
        return f"{total:g}s"
    total = int(total)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size or (unit == "s" and not parts):
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts)
