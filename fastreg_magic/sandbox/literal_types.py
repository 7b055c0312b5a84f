"""The type of a literal value and whether it fits a declared type, as FlyteAdmin checks inputs.

A small counterpart of flytepropeller's ``validators.LiteralTypeForLiteral`` and
``AreTypesCastable``: enough to refuse an ``int`` where a ``str`` is declared or a list
where a scalar is, without refusing anything flytekit legitimately sends. Where the type
of a value cannot be told (``None`` from :func:`literal_type_of`), it is accepted.
"""

from __future__ import annotations

from flyteidl.core import literals_pb2, types_pb2

_PRIMITIVE_TYPES = {
    "integer": types_pb2.INTEGER,
    "float_value": types_pb2.FLOAT,
    "string_value": types_pb2.STRING,
    "boolean": types_pb2.BOOLEAN,
    "datetime": types_pb2.DATETIME,
    "duration": types_pb2.DURATION,
}


def literal_type_of(literal: literals_pb2.Literal) -> types_pb2.LiteralType | None:
    """The type a literal carries, or None when it cannot be told from the value alone."""
    kind = literal.WhichOneof("value")
    if kind == "scalar":
        return _scalar_type(literal.scalar)
    if kind == "collection":
        items = [literal_type_of(item) for item in literal.collection.literals]
        item_type = _common_type(items)
        return None if item_type is None else types_pb2.LiteralType(collection_type=item_type)
    if kind == "map":
        values = [literal_type_of(item) for item in literal.map.literals.values()]
        value_type = _common_type(values)
        return None if value_type is None else types_pb2.LiteralType(map_value_type=value_type)
    if kind == "offloaded_metadata":
        return literal.offloaded_metadata.inferred_type
    return None


def _scalar_type(scalar: literals_pb2.Scalar) -> types_pb2.LiteralType | None:
    kind = scalar.WhichOneof("value")
    if kind == "primitive":
        return types_pb2.LiteralType(simple=_PRIMITIVE_TYPES[scalar.primitive.WhichOneof("value")])
    if kind == "none_type":
        return types_pb2.LiteralType(simple=types_pb2.NONE)
    if kind == "blob":
        return types_pb2.LiteralType(blob=scalar.blob.metadata.type)
    if kind == "generic":
        return types_pb2.LiteralType(simple=types_pb2.STRUCT)
    if kind == "error":
        return types_pb2.LiteralType(simple=types_pb2.ERROR)
    if kind == "union":
        return scalar.union.type if scalar.union.HasField("type") else None
    return None  # binary (msgpack), schema, structured dataset: accepted as declared


def _common_type(types: list[types_pb2.LiteralType | None]) -> types_pb2.LiteralType | None:
    """The item type of a collection when every item agrees; None (unknown) otherwise or when empty."""
    known = [t for t in types if t is not None]
    if not known or len(known) != len(types):
        return None
    first = known[0]
    if all(t == first for t in known):
        return first
    return None


def castable(actual: types_pb2.LiteralType | None, declared: types_pb2.LiteralType) -> bool:
    """Whether a value of type ``actual`` may be passed where ``declared`` is expected."""
    if actual is None:
        return True
    declared_kind = declared.WhichOneof("type")
    actual_kind = actual.WhichOneof("type")
    if declared_kind == "union_type":
        return actual == declared or any(castable(actual, v) for v in declared.union_type.variants)
    if actual_kind == "simple" and actual.simple == types_pb2.NONE:
        return declared_kind == "simple" and declared.simple == types_pb2.NONE
    if declared_kind == "simple":
        if declared.simple in (types_pb2.STRUCT, types_pb2.BINARY):
            # dataclasses and pydantic models travel as generic structs or msgpack binaries
            return actual_kind == "simple" and actual.simple in (types_pb2.STRUCT, types_pb2.BINARY)
        return actual_kind == "simple" and actual.simple == declared.simple
    if declared_kind == "enum_type":
        return actual_kind == "simple" and actual.simple == types_pb2.STRING
    if declared_kind == "collection_type":
        return actual_kind == "collection_type" and castable(actual.collection_type, declared.collection_type)
    if declared_kind == "map_value_type":
        return actual_kind == "map_value_type" and castable(actual.map_value_type, declared.map_value_type)
    if declared_kind == "blob":
        return actual_kind == "blob" and (
            actual.blob.dimensionality == declared.blob.dimensionality
        )
    return True  # schema, structured dataset, others: not checked here
