"""Evaluate a branch node's conditions (``conditional().if_(...).elif_(...).else_()``) on its inputs.

Operands are primitives, ``None`` (for ``is_none()`` checks) or variables, which name inputs of
the branch node (flytekit binds each compared output as an input of the branch node). Comparisons
are EQ/NEQ/GT/GTE/LT/LTE on primitives; conjunctions are AND/OR, evaluated left to right.

As in flytepropeller, both sides must be the same kind of primitive (an ``int`` is never compared
with a ``float`` or a ``str``), booleans are only equal or not, and ``None`` is only equal or not.
"""

from __future__ import annotations

import operator

from flyteidl.core import condition_pb2, literals_pb2, workflow_pb2

_Cmp = condition_pb2.ComparisonExpression
_OPERATORS = {
    _Cmp.EQ: operator.eq,
    _Cmp.NEQ: operator.ne,
    _Cmp.GT: operator.gt,
    _Cmp.GTE: operator.ge,
    _Cmp.LT: operator.lt,
    _Cmp.LTE: operator.le,
}


class ConditionError(Exception):
    """A condition cannot be evaluated (unknown variable, values that cannot be compared)."""


def choose(block: workflow_pb2.IfElseBlock, inputs: literals_pb2.LiteralMap) -> workflow_pb2.Node | None:
    """The node to run, or None when the else branch is an error (``.else_().fail(...)``)."""
    for case in [block.case, *block.other]:
        if evaluate(case.condition, inputs):
            return case.then_node
    if block.HasField("else_node"):
        return block.else_node
    return None


def evaluate(expr: condition_pb2.BooleanExpression, inputs: literals_pb2.LiteralMap) -> bool:
    if expr.HasField("conjunction"):
        conj = expr.conjunction
        left = evaluate(conj.left_expression, inputs)
        if conj.operator == condition_pb2.ConjunctionExpression.AND:
            return left and evaluate(conj.right_expression, inputs)
        return left or evaluate(conj.right_expression, inputs)
    cmp = expr.comparison
    (left_kind, left), (right_kind, right) = _value(cmp.left_value, inputs), _value(cmp.right_value, inputs)
    operator_name = _Cmp.Operator.Name(cmp.operator)
    if left_kind is not None and right_kind is not None and left_kind != right_kind:
        raise ConditionError(
            f"Comparison between different primitives types. lVal[{left_kind}]:rVal[{right_kind}] "
            f"({left!r} {operator_name} {right!r}); compare values of one type, e.g. convert one side in a task."
        )
    if cmp.operator not in (_Cmp.EQ, _Cmp.NEQ) and "boolean" in (left_kind, right_kind):
        raise ConditionError(f"[{operator_name}] not defined for boolean operands.")
    try:
        return bool(_OPERATORS[cmp.operator](left, right))
    except TypeError:
        raise ConditionError(f"Cannot compare {left!r} with {right!r} using {operator_name}.") from None


def _value(operand: condition_pb2.Operand, inputs: literals_pb2.LiteralMap) -> tuple[str | None, object]:
    """An operand's kind of primitive (``integer``, ``string_value``...; None for ``None``) and value."""
    kind = operand.WhichOneof("val")
    if kind == "primitive":
        return _primitive(operand.primitive)
    if kind == "scalar":
        return _scalar(operand.scalar)
    if kind == "var":
        if operand.var not in inputs.literals:
            raise ConditionError(f"The condition refers to {operand.var!r}, which is not an input of the branch.")
        return _literal(inputs.literals[operand.var], operand.var)
    raise ConditionError("A condition operand has no value.")


def _literal(literal: literals_pb2.Literal, name: str):
    if not literal.HasField("scalar"):
        raise ConditionError(f"{name!r} is not a primitive value, so it cannot be compared.")
    return _scalar(literal.scalar)


def _scalar(scalar: literals_pb2.Scalar):
    if scalar.HasField("union"):
        return _literal(scalar.union.value, "union")
    if scalar.HasField("none_type"):
        return None, None
    if scalar.HasField("primitive"):
        return _primitive(scalar.primitive)
    raise ConditionError("Only primitives and None can be compared in a condition.")


def _primitive(primitive: literals_pb2.Primitive):
    kind = primitive.WhichOneof("value")
    return kind, _primitive_value(primitive, kind)


def _primitive_value(primitive: literals_pb2.Primitive, kind: str):
    if kind == "datetime":
        return primitive.datetime.ToDatetime()
    if kind == "duration":
        return primitive.duration.ToTimedelta()
    return getattr(primitive, kind)
