"""Filters, sorting and pagination of the Admin List* RPCs, in FlyteAdmin's request language.

Filters arrive as flytekit sends them: ``eq(version,abc)+value_in(phase,RUNNING;QUEUED)``.
Each field is read from the stored message through a table of getters; fields may carry
an entity prefix (``execution.phase``, ``launch_plan.name``), as FlyteAdmin accepts.
Tokens are offsets, as in FlyteAdmin. The sandbox holds a notebook's worth of rows, so
lists are filtered in Python rather than translated to SQL.

    page, token = list_page(rows, request, GETTERS)    # a List* request's filters, sort_by, limit and token
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Callable, Sequence

from fastreg_magic.sandbox.validation import invalid, parse_token

Getter = Callable[[Any], Any]

_FILTER = re.compile(r"^(eq|ne|gt|gte|lt|lte|contains|value_in|value_not_in)\(([^,]+),(.*)\)$")
# clauses are joined by '+', which may also appear inside a value (a timestamp's "+00:00")
_CLAUSE_SEPARATOR = re.compile(r"\+(?=(?:eq|ne|gt|gte|lt|lte|contains|value_in|value_not_in)\()")
_ENTITY_PREFIXES = ("execution.", "launch_plan.", "workflow.", "task.", "node_execution.", "task_execution.",
                    "project.", "named_entity.", "entities.")


def _field(name: str, getters: dict[str, Getter]) -> Getter:
    if name in getters:
        return getters[name]
    for prefix in _ENTITY_PREFIXES:
        if name.startswith(prefix) and name[len(prefix):] in getters:
            return getters[name[len(prefix):]]
    raise invalid(f"unknown filter field {name!r}; fields that can be filtered on: {', '.join(sorted(getters))}")


def _comparable(value: Any, text: str) -> tuple[Any, Any]:
    if isinstance(value, bool):
        return str(value).lower(), text.lower()
    if isinstance(value, (int, float)):
        try:
            return value, float(text)
        except ValueError:
            pass
        try:  # timestamps are stored as epoch seconds and filtered with RFC 3339 text
            return value, datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return str(value), text
    return str(value), text


def _matches(op: str, value: Any, text: str) -> bool:
    if op in ("value_in", "value_not_in"):
        inside = str(value) in text.split(";")
        return inside if op == "value_in" else not inside
    if op == "contains":
        return text in str(value)
    left, right = _comparable(value, text)
    return {
        "eq": left == right,
        "ne": left != right,
        "gt": left > right,
        "gte": left >= right,
        "lt": left < right,
        "lte": left <= right,
    }[op]


def apply_filters(items: Sequence[Any], filters: str, getters: dict[str, Getter]) -> list[Any]:
    """The items that satisfy every filter of ``filters`` (clauses joined by ``+``)."""
    result = list(items)
    if not filters:
        return result
    for clause in _CLAUSE_SEPARATOR.split(filters):
        match = _FILTER.match(clause.strip())
        if not match:
            raise invalid(f"invalid filter {clause!r}; expected e.g. eq(name,value) or value_in(phase,A;B)")
        op, name, text = match.groups()
        getter = _field(name.strip(), getters)
        result = [item for item in result if _matches(op, getter(item), text)]
    return result


def paginate(items: Sequence[Any], limit: int, token: str, sort_by, getters: dict[str, Getter],
             default_key: str | None = "created_at", descending: bool = True) -> tuple[list[Any], str]:
    """One page of ``items`` in the requested order, and the token of the next page ('' at the end).

    With no ``default_key`` and no ``sort_by``, ``items`` keep the order they come in."""
    offset = parse_token(token)
    key = sort_by.key if sort_by is not None and sort_by.key else default_key
    if sort_by is not None and sort_by.key:
        descending = sort_by.direction == 0  # admin.Sort.DESCENDING is 0
    if key is None:
        ordered = list(items)
    else:
        getter = _field(key, getters)
        ordered = sorted(items, key=lambda item: _sort_value(getter(item)), reverse=descending)
    page = ordered[offset: offset + limit] if limit else ordered[offset:]
    more = limit and offset + limit < len(ordered)
    return page, str(offset + limit) if more else ""


def list_page(items: Sequence[Any], request, getters: dict[str, Getter], default_key: str | None = "created_at",
              descending: bool = True) -> tuple[list[Any], str]:
    """``apply_filters`` then ``paginate``, with what a List* request asks for."""
    items = apply_filters(items, getattr(request, "filters", ""), getters)
    sort_by = request.sort_by if request.HasField("sort_by") else None
    return paginate(items, request.limit, request.token, sort_by, getters, default_key, descending)


def _sort_value(value: Any) -> tuple:
    if isinstance(value, (int, float)):
        return (0, value, "")
    return (1, 0, str(value))


def timestamp_seconds(ts) -> float:
    return ts.seconds + ts.nanos / 1e9
