"""Resolve a node's input bindings into literals, as flytepropeller does before a node starts.

A binding is a scalar, a collection or map of bindings, or a promise — another node's output,
possibly narrowed by an attribute path (``t1().o0.field[2]["key"]``). Attribute paths work on
collections and maps, on ``Struct`` (JSON) scalars and on msgpack-encoded binaries (how
flytekit stores dataclasses and dicts); like propeller, a value picked out of a binary is sent
on as a msgpack binary, which flytekit's transformers accept for every type, except a string,
number or boolean, which becomes a primitive literal so that a condition can compare it
(``conditional(...).if_(cfg.a > 3)``).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgpack
from flyteidl.core import literals_pb2, types_pb2
from google.protobuf import json_format, struct_pb2

START_NODE = "start-node"
MSGPACK_TAG = "msgpack"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # a primitive integer's range (bool is an int too)


class BindingError(Exception):
    """A binding could not be resolved; the message names the node, variable and path."""


def resolve_inputs(
    bindings, outputs: Mapping[str, literals_pb2.LiteralMap]
) -> literals_pb2.LiteralMap:
    """The LiteralMap a node receives: ``outputs`` maps node ids (and "start-node") to their outputs."""
    resolved = literals_pb2.LiteralMap()
    for binding in bindings:
        resolved.literals[binding.var].CopyFrom(resolve(binding.binding, outputs))
    return resolved


def resolve(data: literals_pb2.BindingData, outputs: Mapping[str, literals_pb2.LiteralMap]) -> literals_pb2.Literal:
    kind = data.WhichOneof("value")
    if kind == "scalar":
        literal = literals_pb2.Literal(scalar=data.scalar)
    elif kind == "collection":
        literal = literals_pb2.Literal()
        literal.collection.SetInParent()
        for item in data.collection.bindings:
            literal.collection.literals.add().CopyFrom(resolve(item, outputs))
    elif kind == "map":
        literal = literals_pb2.Literal()
        literal.map.SetInParent()
        for key, item in data.map.bindings.items():
            literal.map.literals[key].CopyFrom(resolve(item, outputs))
    elif kind == "promise":
        literal = _promise(data.promise, outputs)
    elif kind == "offloaded_metadata":
        literal = literals_pb2.Literal(offloaded_metadata=data.offloaded_metadata)
    else:
        raise BindingError("A binding has no value.")
    if data.HasField("union") and not literal.scalar.HasField("union"):
        wrapped = literals_pb2.Literal()
        wrapped.scalar.union.value.CopyFrom(literal)
        wrapped.scalar.union.type.CopyFrom(data.union.targetType)
        return wrapped
    return literal


def promise_nodes(bindings) -> set[str]:
    """The node ids a list of bindings reads from (its data dependencies)."""
    found: set[str] = set()
    for binding in bindings:
        _collect(binding.binding, found)
    return found


def _collect(data: literals_pb2.BindingData, found: set[str]) -> None:
    kind = data.WhichOneof("value")
    if kind == "promise":
        found.add(data.promise.node_id or START_NODE)
    elif kind == "collection":
        for item in data.collection.bindings:
            _collect(item, found)
    elif kind == "map":
        for item in data.map.bindings.values():
            _collect(item, found)


def _promise(ref: types_pb2.OutputReference, outputs: Mapping[str, literals_pb2.LiteralMap]) -> literals_pb2.Literal:
    # flytekit names workflow inputs with node id "" (the compiler rewrites it, dynamic specs may not)
    produced = outputs.get(ref.node_id or START_NODE)
    if produced is None:
        raise BindingError(f"Node {ref.node_id!r} has not produced outputs, but its output {ref.var!r} is needed.")
    if ref.var not in produced.literals:
        raise BindingError(
            f"Node {ref.node_id!r} did not produce an output named {ref.var!r} "
            f"(it produced: {', '.join(sorted(produced.literals)) or 'nothing'})."
        )
    literal = produced.literals[ref.var]
    if ref.attr_path:
        literal = follow_attr_path(literal, list(ref.attr_path), f"{ref.node_id}.{ref.var}")
    return literal


def follow_attr_path(literal: literals_pb2.Literal, path: list, where: str) -> literals_pb2.Literal:
    """Walk ``path`` (PromiseAttribute list) into a literal."""
    for depth, attr in enumerate(path):
        key = attr.string_value if attr.WhichOneof("value") == "string_value" else attr.int_value
        shown = where + "".join(_show(a) for a in path[: depth + 1])
        if literal.scalar.HasField("union"):
            literal = literal.scalar.union.value
        if literal.HasField("collection"):
            items = literal.collection.literals
            if not isinstance(key, int) or not -len(items) <= key < len(items):
                raise BindingError(f"{shown}: index out of range for a list of {len(items)} items.")
            literal = items[key]
        elif literal.HasField("map"):
            if key not in literal.map.literals:
                raise BindingError(f"{shown}: key {key!r} not found.")
            literal = literal.map.literals[key]
        elif literal.scalar.HasField("binary"):
            # the rest of the path is inside one msgpack document
            value = msgpack.unpackb(literal.scalar.binary.value, strict_map_key=False)
            return _binary_literal(_walk_python(value, path[depth:], where, path[:depth]))
        elif literal.scalar.HasField("generic"):
            value = json_format.MessageToDict(literal.scalar.generic)
            return _python_to_generic_literal(_walk_python(value, path[depth:], where, path[:depth]))
        else:
            raise BindingError(f"{shown}: the value has no attributes to select from.")
    return literal


def _walk_python(value, path: list, where: str, done: list):
    for depth, attr in enumerate(path):
        key = attr.string_value if attr.WhichOneof("value") == "string_value" else attr.int_value
        shown = where + "".join(_show(a) for a in done + path[: depth + 1])
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            raise BindingError(f"{shown}: no such attribute, key or index in the output.") from None
    return value


def _show(attr) -> str:
    return f".{attr.string_value}" if attr.WhichOneof("value") == "string_value" else f"[{attr.int_value}]"


def _binary_literal(value) -> literals_pb2.Literal:
    literal = literals_pb2.Literal()
    if isinstance(value, (str, float)) or (isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX):
        literal.scalar.primitive.CopyFrom(_primitive(value))
        return literal
    literal.scalar.binary.value = msgpack.packb(value)
    literal.scalar.binary.tag = MSGPACK_TAG
    return literal


def _python_to_generic_literal(value) -> literals_pb2.Literal:
    literal = literals_pb2.Literal()
    if isinstance(value, dict):
        struct = struct_pb2.Struct()
        struct.update(value)
        literal.scalar.generic.CopyFrom(struct)
    elif isinstance(value, bool):
        literal.scalar.primitive.boolean = value
    elif isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        literal.scalar.primitive.integer = int(value)
    elif isinstance(value, float):
        literal.scalar.primitive.float_value = value
    elif isinstance(value, str):
        literal.scalar.primitive.string_value = value
    elif isinstance(value, list):
        literal.collection.SetInParent()
        for item in value:
            literal.collection.literals.add().CopyFrom(_python_to_generic_literal(item))
    elif value is None:
        literal.scalar.none_type.SetInParent()
    return literal


def _primitive(value: str | int | float | bool) -> literals_pb2.Primitive:
    """A string, number or boolean read from msgpack as the primitive it is (msgpack keeps int and float apart)."""
    if isinstance(value, bool):
        return literals_pb2.Primitive(boolean=value)
    if isinstance(value, int):
        return literals_pb2.Primitive(integer=value)
    if isinstance(value, float):
        return literals_pb2.Primitive(float_value=value)
    return literals_pb2.Primitive(string_value=value)
