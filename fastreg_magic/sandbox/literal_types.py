"""The type of a literal value and whether one type may be passed where another is declared.

The sandbox's counterpart of flytepropeller's ``validators.LiteralTypeForLiteral`` and
``AreTypesCastable`` (validators/typing.go), which FlyteAdmin runs on launch inputs and, through
its compiler, on every binding of a registered workflow. The rules, from the declared side:

* a union accepts a union whose every variant it accepts, or a value that fits exactly one of its
  variants; ``None`` fits only ``None``, an ``Optional`` or a structured dataset;
* a list or dict accepts one whose items fit (an empty one fits any);
* a blob accepts any blob whose format agrees (an empty format agrees with all);
* schemas and structured datasets accept one whose columns include theirs, of the same types;
* an enum accepts a string or the same enum, a string accepts an enum;
* a dataclass or pydantic model (a ``STRUCT`` with a JSON schema) accepts a struct of the same
  schema or of a schema with more fields (see ``json_schemas``); any other type only itself,
  whatever its metadata.

    castable(literal_type_of(value), declared)   # as FlyteAdmin checks a launch input
"""

from __future__ import annotations

import re

from flyteidl.core import literals_pb2, types_pb2
from google.protobuf import json_format, text_format

from fastreg_magic.sandbox.json_schemas import schema_castable

MSGPACK_TAG = "msgpack"  # how flytekit marks a binary that holds a dict, dataclass or model

_PRIMITIVE_TYPES = {
    "integer": types_pb2.INTEGER,
    "float_value": types_pb2.FLOAT,
    "string_value": types_pb2.STRING,
    "boolean": types_pb2.BOOLEAN,
    "datetime": types_pb2.DATETIME,
    "duration": types_pb2.DURATION,
}
_SCHEMA_COLUMN_SIMPLE = {
    types_pb2.SchemaType.SchemaColumn.INTEGER: types_pb2.INTEGER,
    types_pb2.SchemaType.SchemaColumn.FLOAT: types_pb2.FLOAT,
    types_pb2.SchemaType.SchemaColumn.STRING: types_pb2.STRING,
    types_pb2.SchemaType.SchemaColumn.BOOLEAN: types_pb2.BOOLEAN,
    types_pb2.SchemaType.SchemaColumn.DATETIME: types_pb2.DATETIME,
    types_pb2.SchemaType.SchemaColumn.DURATION: types_pb2.DURATION,
}
NONE_TYPE = types_pb2.LiteralType(simple=types_pb2.NONE)


# -- the type of a value ---------------------------------------------------------------------


def literal_type_of(literal: literals_pb2.Literal) -> types_pb2.LiteralType | None:
    """The type a literal carries, or None when it cannot be told from the value alone."""
    kind = literal.WhichOneof("value")
    if kind == "scalar":
        return scalar_type_of(literal.scalar)
    if kind == "collection":
        return types_pb2.LiteralType(collection_type=_common_type(list(literal.collection.literals)))
    if kind == "map":
        return types_pb2.LiteralType(map_value_type=_common_type(list(literal.map.literals.values())))
    if kind == "offloaded_metadata":
        return literal.offloaded_metadata.inferred_type
    return None


def scalar_type_of(scalar: literals_pb2.Scalar) -> types_pb2.LiteralType | None:
    """The type of a scalar value (a literal, or a literal bound in a workflow)."""
    kind = scalar.WhichOneof("value")
    if kind == "primitive":
        primitive = scalar.primitive.WhichOneof("value")
        return types_pb2.LiteralType(simple=_PRIMITIVE_TYPES.get(primitive, types_pb2.NONE))
    if kind == "none_type":
        return NONE_TYPE
    if kind == "blob":
        return types_pb2.LiteralType(blob=scalar.blob.metadata.type) if scalar.blob.HasField("metadata") else None
    if kind == "binary":
        tagged = scalar.binary.tag == MSGPACK_TAG
        return types_pb2.LiteralType(simple=types_pb2.STRUCT if tagged else types_pb2.BINARY)
    if kind == "generic":
        return types_pb2.LiteralType(simple=types_pb2.STRUCT)
    if kind == "error":
        return types_pb2.LiteralType(simple=types_pb2.ERROR)
    if kind == "schema":
        return types_pb2.LiteralType(schema=scalar.schema.type)
    if kind == "structured_dataset":
        dataset_type = scalar.structured_dataset.metadata.structured_dataset_type
        return types_pb2.LiteralType(structured_dataset_type=dataset_type)
    if kind == "union":
        # a union value names the variant it holds: a union of that one variant
        return types_pb2.LiteralType(union_type=types_pb2.UnionType(variants=[scalar.union.type]))
    return None


def _common_type(items: list[literals_pb2.Literal]) -> types_pb2.LiteralType | None:
    """The item type of a list or dict: NONE when empty (fits any), a union when the items differ."""
    types, nested_empty = [], None
    for item in items:
        item_type = literal_type_of(item)
        if item_type is None:
            return None
        if item.WhichOneof("value") == "collection" and not item.collection.literals:
            nested_empty = item_type
        elif item_type not in types:
            types.append(item_type)
    if not types:
        return nested_empty or NONE_TYPE
    if len(types) == 1:
        return types[0]
    return types_pb2.LiteralType(union_type=types_pb2.UnionType(variants=types))


# -- castability -----------------------------------------------------------------------------


def castable(actual: types_pb2.LiteralType | None, declared: types_pb2.LiteralType) -> bool:
    """Whether a value of type ``actual`` may be passed where ``declared`` is expected (None: unknown, fits)."""
    if actual is None:
        return True
    variants = actual.union_type.variants if actual.HasField("union_type") else ()
    if len(variants) == 1 and _casts_from(declared, variants[0]):
        return True
    return _casts_from(declared, actual)


def _casts_from(declared: types_pb2.LiteralType, actual: types_pb2.LiteralType) -> bool:
    kind = declared.WhichOneof("type")
    if kind == "collection_type":
        return _is_none(actual.collection_type) or (
            actual.HasField("collection_type") and _casts_from(declared.collection_type, actual.collection_type)
        )
    if kind == "map_value_type":
        return _is_none(actual.map_value_type) or (
            actual.HasField("map_value_type") and _casts_from(declared.map_value_type, actual.map_value_type)
        )
    if kind == "blob":
        return actual.HasField("blob") and _formats_agree(actual.blob.format, declared.blob.format)
    if kind == "union_type":
        return _union_casts_from(declared.union_type, actual)
    if kind == "schema":
        return _schema_casts_from(declared.schema, actual)
    if kind == "structured_dataset_type":
        return _is_none(actual) or _dataset_casts_from(declared.structured_dataset_type, actual)
    if _is_none(declared):
        return _is_none(actual)
    return _same_type(declared, actual)


def _union_casts_from(declared: types_pb2.UnionType, actual: types_pb2.LiteralType) -> bool:
    if actual.HasField("union_type"):
        # every variant the value may hold must fit some declared variant
        return all(any(castable(u, d) for d in declared.variants) for u in actual.union_type.variants)
    return sum(1 for d in declared.variants if castable(actual, d)) == 1  # the variant must be unambiguous


def _same_type(declared: types_pb2.LiteralType, actual: types_pb2.LiteralType) -> bool:
    """FlyteAdmin's trivial check: enums and strings mix; otherwise the same type, metadata aside."""
    if actual.HasField("enum_type") and declared.simple == types_pb2.STRING and declared.WhichOneof("type") == "simple":
        return True
    if declared.HasField("enum_type") and actual.WhichOneof("type") == "simple" and actual.simple == types_pb2.STRING:
        return True
    if actual.structure.tag and declared.structure.tag != actual.structure.tag:
        return False  # a union variant's tag must match
    if _is_struct(actual) and _is_struct(declared):
        if not actual.HasField("metadata") or not declared.HasField("metadata"):
            return True  # a struct without a schema (a dict, or a value) fits any struct
        return schema_castable(json_format.MessageToDict(actual.metadata), json_format.MessageToDict(declared.metadata))
    return _bare(actual) == _bare(declared)


def _schema_casts_from(declared: types_pb2.SchemaType, actual: types_pb2.LiteralType) -> bool:
    if actual.HasField("schema"):
        return _columns_included(
            {c.name: c.type for c in actual.schema.columns}, [(c.name, c.type) for c in declared.columns]
        )
    if not actual.HasField("structured_dataset_type"):
        return False
    dataset = actual.structured_dataset_type
    if dataset.format and dataset.format.lower() != "parquet":
        return False  # a FlyteSchema is always parquet
    return _columns_included(
        {c.name: c.literal_type.simple for c in dataset.columns},
        [(c.name, _SCHEMA_COLUMN_SIMPLE.get(c.type)) for c in declared.columns],
    )


def _dataset_casts_from(declared: types_pb2.StructuredDatasetType, actual: types_pb2.LiteralType) -> bool:
    if actual.HasField("schema"):
        if declared.format and declared.format.lower() != "parquet":
            return False
        return _columns_included(
            {c.name: _SCHEMA_COLUMN_SIMPLE.get(c.type) for c in actual.schema.columns},
            [(c.name, c.literal_type.simple) for c in declared.columns],
        )
    if not actual.HasField("structured_dataset_type"):
        return False
    dataset = actual.structured_dataset_type
    if dataset.format and declared.format and dataset.format.lower() != declared.format.lower():
        return False
    if not dataset.columns or not declared.columns:
        return True
    columns = {c.name: c.literal_type for c in dataset.columns}
    return all(c.name in columns and _casts_from(c.literal_type, columns[c.name]) for c in declared.columns)


def _columns_included(actual: dict, declared: list[tuple]) -> bool:
    """Declared columns are a subset of the actual ones, of the same types (no columns: any)."""
    if not actual or not declared:
        return True
    return all(name in actual and actual[name] == kind for name, kind in declared)


def _formats_agree(actual: str, declared: str) -> bool:
    return not actual or not declared or actual == declared


def _is_none(literal_type: types_pb2.LiteralType) -> bool:
    return literal_type.WhichOneof("type") == "simple" and literal_type.simple == types_pb2.NONE


def _is_struct(literal_type: types_pb2.LiteralType) -> bool:
    return literal_type.WhichOneof("type") == "simple" and literal_type.simple == types_pb2.STRUCT


def _bare(literal_type: types_pb2.LiteralType) -> bytes:
    """The type without its metadata, annotation and structure, which FlyteAdmin ignores when comparing."""
    bare = types_pb2.LiteralType()
    bare.CopyFrom(literal_type)
    for field in ("metadata", "annotation", "structure"):
        bare.ClearField(field)
    return bare.SerializeToString(deterministic=True)


# -- how a type is shown ---------------------------------------------------------------------


def type_text(literal_type: types_pb2.LiteralType | None) -> str:
    """A type as FlyteAdmin shows it (``simple:INTEGER``), without the JSON schema of dataclasses."""
    if literal_type is None:
        return "None"
    bare = _without_metadata(literal_type)
    text = text_format.MessageToString(bare, as_one_line=True)
    text = re.sub(r"(\w+) \{ ", r"\1:{", text).replace(" }", "}").replace(": ", ":")  # Go's compact form
    title = _schema_title(literal_type)
    return f"{text} ({title})" if title else text


def _without_metadata(literal_type: types_pb2.LiteralType) -> types_pb2.LiteralType:
    bare = types_pb2.LiteralType()
    bare.CopyFrom(literal_type)
    _strip(bare)
    return bare


def _strip(literal_type: types_pb2.LiteralType) -> None:
    for field in ("metadata", "annotation", "structure"):
        literal_type.ClearField(field)
    kind = literal_type.WhichOneof("type")
    if kind == "collection_type":
        _strip(literal_type.collection_type)
    elif kind == "map_value_type":
        _strip(literal_type.map_value_type)
    elif kind == "union_type":
        for variant in literal_type.union_type.variants:
            _strip(variant)


def _schema_title(literal_type: types_pb2.LiteralType) -> str:
    if not _is_struct(literal_type) or "title" not in literal_type.metadata.fields:
        return ""
    return literal_type.metadata.fields["title"].string_value
