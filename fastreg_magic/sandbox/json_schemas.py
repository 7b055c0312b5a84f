"""Whether one dataclass (or pydantic model) may be passed where another is declared, by their JSON schemas.

flytekit declares a dataclass or ``BaseModel`` as a ``STRUCT`` whose metadata is the class's JSON
schema. FlyteAdmin accepts the same schema, or a schema that is a *supertype* of the declared one:
one that has every field the declared class has, each of a type that fits, maybe more (a child
class where its parent is declared). Class names and descriptions do not matter.

    schema_castable({"properties": {"a": {"type": "integer"}, "b": {...}}},   # child (a, b)
                    {"properties": {"a": {"type": "integer"}}})                 # parent (a): True

Keywords this does not know are not compared, so an unusual schema is accepted rather than refused.
"""

from __future__ import annotations

_COMBINATIONS = ("anyOf", "oneOf")


def schema_castable(actual: dict, declared: dict) -> bool:
    """Whether a value of schema ``actual`` fits schema ``declared``."""
    if actual == declared:
        return True
    return _covers(actual, declared, _Refs(actual), _Refs(declared))


class _Refs:
    """Resolves ``$ref: "#/$defs/Name"`` (pydantic's nested models) against the schema's root."""

    def __init__(self, root: dict):
        self.root = root

    def resolve(self, schema):
        seen = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 32:
            target = self.root
            for part in schema["$ref"].lstrip("#/").split("/"):
                target = target.get(part) if isinstance(target, dict) else None
            if not isinstance(target, dict):
                return schema
            schema, seen = target, seen + 1
        return schema


def _covers(actual, declared, actual_refs: _Refs, declared_refs: _Refs, depth: int = 0) -> bool:
    actual, declared = actual_refs.resolve(actual), declared_refs.resolve(declared)
    if not isinstance(actual, dict) or not isinstance(declared, dict) or depth > 32:
        return True
    if any(key in declared for key in _COMBINATIONS):
        return _fits_some_variant(actual, declared, actual_refs, declared_refs, depth)
    if any(key in actual for key in _COMBINATIONS):
        variants = [v for key in _COMBINATIONS for v in actual.get(key, [])]
        return all(_covers(v, declared, actual_refs, declared_refs, depth + 1) for v in variants)
    if not _types_agree(actual.get("type"), declared.get("type")):
        return False
    if "enum" in declared and "enum" in actual and not set(map(repr, actual["enum"])) <= set(map(repr, declared["enum"])):
        return False
    return _properties_covered(actual, declared, actual_refs, declared_refs, depth) and all(
        _covers(actual[key], declared[key], actual_refs, declared_refs, depth + 1)
        for key in ("items", "additionalProperties")
        if isinstance(actual.get(key), dict) and isinstance(declared.get(key), dict)
    )


def _properties_covered(actual, declared, actual_refs, declared_refs, depth) -> bool:
    """Every declared field exists in the actual schema, with a type that fits."""
    declared_fields = declared.get("properties")
    if not isinstance(declared_fields, dict):
        return True
    actual_fields = actual.get("properties") if isinstance(actual.get("properties"), dict) else {}
    return all(
        name in actual_fields and _covers(actual_fields[name], schema, actual_refs, declared_refs, depth + 1)
        for name, schema in declared_fields.items()
    )


def _fits_some_variant(actual, declared, actual_refs, declared_refs, depth) -> bool:
    variants = [v for key in _COMBINATIONS for v in declared.get(key, [])]
    actual_variants = [v for key in _COMBINATIONS for v in actual.get(key, [])] or [actual]
    return all(
        any(_covers(a, d, actual_refs, declared_refs, depth + 1) for d in variants) for a in actual_variants
    )


def _types_agree(actual, declared) -> bool:
    if actual is None or declared is None:
        return True
    actual_types = set(actual) if isinstance(actual, list) else {actual}
    declared_types = set(declared) if isinstance(declared, list) else {declared}
    if "number" in declared_types:
        declared_types.add("integer")  # every integer is a number
    return actual_types <= declared_types
