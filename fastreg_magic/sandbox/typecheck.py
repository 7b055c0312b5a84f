"""The binding checks FlyteAdmin's compiler runs on a workflow before it accepts it.

Every node input, every workflow output, the nodes inside branches and the failure node is
checked the way flytepropeller's ``validators.ValidateBindings`` checks them: the variable
exists on the node, each input is bound once, required inputs are bound, a promise names a
node and an output that exist (down its attribute path, into lists, dicts and dataclass
fields), and the bound value's type is castable to the declared one (``literal_types``); a
branch's conditions compare operands of one type (``validators.ValidateBooleanExpression``:
no ``str`` against ``1``, no ``float`` against ``0``).
A workflow that fails them would fail at run time, or worse succeed with a value of the wrong
type, so it is refused at registration, with FlyteAdmin's wording:

    errors = binding_errors(template, interface_of)   # [] when everything type-checks
    if errors:
        raise invalid(failure_message(template.id, errors))

``interface_of(node)`` gives the interface of a task or workflow node's target (a launch plan
node exposes its required inputs and those the node sets); branch, gate and array node
interfaces are derived here, as FlyteAdmin derives them.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Callable

from flyteidl.core import interface_pb2, literals_pb2, types_pb2, workflow_pb2

from fastreg_magic.sandbox.literal_types import castable, scalar_type_of, type_text
from fastreg_magic.sandbox.validation import id_text

START_NODE = "start-node"
END_NODE = "end-node"
InterfaceOf = Callable[[workflow_pb2.Node], "interface_pb2.TypedInterface | None"]
# a promise's variable, optionally indexed into a list: "o0" or "[2].o0" (validators' ParseVarName)
_VAR_NAME = re.compile(r"^(?:\[(\d+)\]\.)?(\w+)$")


@dataclass(frozen=True)
class CompileError:
    """One problem, as FlyteAdmin reports it: an error code, the node at fault and what is wrong."""

    code: str
    node_id: str
    description: str

    def __str__(self) -> str:
        return f"Code: {self.code}, Node Id: {self.node_id}, Description: {self.description}"


def failure_message(workflow_id, errors: list[CompileError]) -> str:
    """FlyteAdmin's refusal of a workflow that does not compile."""
    listed = "".join(f"\n\tError {i}: {error}" for i, error in enumerate(errors))
    return f"failed to compile workflow for [{id_text(workflow_id)}] with err: Collected Errors: {len(errors)}{listed}"


def binding_errors(template: workflow_pb2.WorkflowTemplate, interface_of: InterfaceOf) -> list[CompileError]:
    """Everything wrong with the bindings of one workflow (not its sub-workflows, checked on their own)."""
    return _Checker(template, interface_of).run()


class _Checker:
    def __init__(self, template: workflow_pb2.WorkflowTemplate, interface_of: InterfaceOf):
        self.template = template
        self.target_interface = interface_of
        self.nodes = {node.id: node for node in template.nodes}
        self.errors: list[CompileError] = []

    def run(self) -> list[CompileError]:
        for node in self.template.nodes:
            self.check_node(node, node.id)
        if self.template.HasField("failure_node"):
            self.check_node(self.template.failure_node, self.template.failure_node.id)
        end = workflow_pb2.Node(id=END_NODE)
        self.check_bindings(end, END_NODE, self.template.outputs, self.template.interface.outputs.variables)
        return self.errors

    # -- nodes -----------------------------------------------------------------------------

    def check_node(self, node: workflow_pb2.Node, shown_id: str) -> None:
        interface = self.interface(node, shown_id, self.errors)
        kind = node.WhichOneof("target")
        if kind == "branch_node":
            self.check_bindings(node, shown_id, node.inputs, None)
            self.check_conditions(node, shown_id)
            for case in _branch_cases(node):
                self.check_node(case, f"{shown_id}-{case.id}")
        elif kind == "gate_node" and node.gate_node.HasField("approve"):
            self.check_bindings(node, shown_id, node.inputs, None)  # an approval passes on what it is given
        elif interface is not None:
            self.check_bindings(node, shown_id, node.inputs, interface.inputs.variables)

    def interface(self, node, shown_id: str, errors: list) -> interface_pb2.TypedInterface | None:
        """The node's effective interface (FlyteAdmin's ``ValidateUnderlyingInterface``)."""
        kind = node.WhichOneof("target")
        if kind == "branch_node":
            return self.branch_interface(node, shown_id, errors)
        if kind == "array_node":
            return self.array_interface(node.array_node, shown_id, errors)
        if kind == "gate_node":
            return self.gate_interface(node)
        return self.target_interface(node)

    def branch_interface(self, node, shown_id: str, errors: list) -> interface_pb2.TypedInterface:
        """A branch's outputs are those every case has; a case may not change their types."""
        outputs: dict[str, interface_pb2.Variable] | None = None
        for case in _branch_cases(node):
            case_id = f"{shown_id}-{case.id}"
            case_interface = self.interface(case, case_id, errors)
            if case_interface is None:
                continue
            case_outputs = dict(case_interface.outputs.variables)
            if outputs is None:
                outputs = case_outputs
                continue
            outputs = {name: var for name, var in outputs.items() if name in case_outputs}
            for name, var in outputs.items():
                if var.type != case_outputs[name].type:
                    errors.append(_mismatching_types(case_id, name, case_outputs[name].type, var.type))
        return interface_pb2.TypedInterface(outputs=interface_pb2.VariableMap(variables=outputs or {}))

    def array_interface(self, array: workflow_pb2.ArrayNode, shown_id: str, errors: list):
        """An array node has its inner node's interface, which flytekit writes as lists for map tasks;
        mapping a launch plan keeps the plan's own interface, so the mapped inputs and outputs are lists."""
        inner = self.interface(array.node, shown_id, errors)
        if inner is None or not array.is_original_sub_node_interface.value:
            return inner
        bound = set(array.bound_inputs)
        listed = interface_pb2.TypedInterface()
        for name, var in inner.inputs.variables.items():
            listed.inputs.variables[name].CopyFrom(var if name in bound else _as_list(var))
        for name, var in inner.outputs.variables.items():
            listed.outputs.variables[name].CopyFrom(_as_list(var))
        return listed

    def gate_interface(self, node) -> interface_pb2.TypedInterface:
        gate = node.gate_node
        interface = interface_pb2.TypedInterface()
        if gate.HasField("signal"):
            interface.outputs.variables[gate.signal.output_variable_name].type.CopyFrom(gate.signal.type)
        elif gate.HasField("approve"):
            for binding in node.inputs:  # an approval's outputs are its inputs, as they came
                ok, bound_type = self.binding_type(node, node.id, binding.var, binding.binding, None, [])
                if ok and bound_type is not None:
                    interface.outputs.variables[binding.var].type.CopyFrom(bound_type)
        return interface

    def outputs_of(self, node_id: str) -> dict[str, interface_pb2.Variable] | None:
        """A node's outputs under their aliases; None when there is no such node."""
        if node_id in ("", START_NODE):
            return dict(self.template.interface.inputs.variables)
        node = self.nodes.get(node_id)
        if node is None:
            return None
        interface = self.interface(node, node_id, [])
        outputs = dict(interface.outputs.variables) if interface is not None else {}
        for alias in node.output_aliases:
            if alias.var in outputs:
                outputs[alias.alias] = outputs.pop(alias.var)
        return outputs

    # -- conditions ------------------------------------------------------------------------

    def check_conditions(self, node, shown_id: str) -> None:
        """Each ``if_``/``elif_`` compares operands of one type (validators' ``ValidateBooleanExpression``):
        FlyteAdmin does not widen ``int`` to ``float`` nor read ``"1"`` as ``1``."""
        block = node.branch_node.if_else
        for case in [block.case, *block.other]:
            if not case.HasField("condition"):
                self.errors.append(CompileError(
                    "BranchNodeHasNoCondition", shown_id, "One of the branches on the node doesn't have a condition."))
                continue
            self.check_expression(node, shown_id, case.condition)

    def check_expression(self, node, shown_id: str, expr) -> None:
        if expr.HasField("conjunction"):
            self.check_expression(node, shown_id, expr.conjunction.left_expression)
            self.check_expression(node, shown_id, expr.conjunction.right_expression)
        elif expr.HasField("comparison"):
            right = self.operand_type(node, shown_id, expr.comparison.right_value, "RightValue")
            left = self.operand_type(node, shown_id, expr.comparison.left_value, "LeftValue")
            if right is not None and left is not None and right != left:
                refused = _mismatching_types(shown_id, "RightValue", right, left)
                self.errors.append(dataclasses.replace(refused, description=refused.description + _COMPARE_HINT))
        else:
            self.errors.append(CompileError("ValueRequired", shown_id, "Value required [Expr]."))

    def operand_type(self, node, shown_id: str, operand, side: str) -> types_pb2.LiteralType | None:
        """The type an operand compares as; None when it has none to compare (``None`` of ``is_none()``,
        or a problem already reported)."""
        kind = operand.WhichOneof("val")
        if kind == "primitive":
            return scalar_type_of(literals_pb2.Scalar(primitive=operand.primitive))
        if kind != "var":  # FlyteAdmin 1.x compiles no other operand: ``is_none()``'s None among them
            hint = _IS_NONE_HINT if kind == "scalar" and operand.scalar.HasField("none_type") else ""
            self.errors.append(CompileError("ValueRequired", shown_id, f"Value required [{side}.Val].{hint}"))
            return None
        bound = {binding.var: binding.binding for binding in node.inputs}
        if operand.var not in bound:
            self.errors.append(CompileError(
                "VariableNameNotFound", shown_id, f"Variable [{operand.var}] not found on node [{shown_id}]."))
            return None
        return self.compared_type(node, shown_id, operand.var, bound[operand.var])

    def compared_type(self, node, shown_id: str, var: str, data) -> types_pb2.LiteralType | None:
        """The type FlyteAdmin gives the value a condition reads: the type of the output it is bound to,
        whole. Down an attribute path too (``cfg.a > 3`` compares ``cfg``'s type with ``3``'s and is
        refused: validators/bindings.go returns the output's type, not the field's), although
        flytepropeller would resolve the field when the run reads it."""
        ok, bound_type = self.binding_type(node, shown_id, var, data, None, [])  # its errors: check_bindings'
        return bound_type if ok else None

    # -- bindings --------------------------------------------------------------------------

    def check_bindings(self, node, shown_id: str, bindings, variables) -> None:
        """``variables`` None: the node takes whatever it is given (a branch, an approval)."""
        bound: set[str] = set()
        for binding in bindings:
            if variables is not None and binding.var not in variables:
                self.errors.append(CompileError(
                    "VariableNameNotFound", shown_id, f"Variable [{binding.var}] not found on node [{shown_id}]."))
            elif not binding.HasField("binding"):
                self.errors.append(CompileError("ValueRequired", shown_id, "Value required [Binding]."))
            elif binding.var in bound:
                self.errors.append(CompileError(
                    "ParameterBoundMoreThanOnce", shown_id, f"Input [{binding.var}] is bound more than once."))
            else:
                bound.add(binding.var)
                expected = variables[binding.var].type if variables is not None else None
                self.binding_type(node, shown_id, binding.var, binding.binding, expected, self.errors)
        for name, variable in (variables or {}).items():
            if name not in bound and not _is_optional(variable.type):
                self.errors.append(CompileError("ParameterNotBound", shown_id, f"Parameter not bound [{name}]."))

    def binding_type(self, node, shown_id, param, data, expected, errors) -> tuple[bool, types_pb2.LiteralType | None]:
        """Whether a binding fits ``expected`` (None: anything), and the type it binds."""
        kind = data.WhichOneof("value")
        if expected is not None and expected.HasField("union_type") and kind not in ("scalar", "promise"):
            return self.union_binding_type(node, shown_id, param, data, expected, errors)
        if kind in ("collection", "map"):
            return self.nested_binding_type(node, shown_id, param, data, expected, errors)
        if kind == "promise":
            return self.promise_type(node, shown_id, param, data.promise, expected, errors)
        if kind == "scalar":
            return self.scalar_type(shown_id, param, data.scalar, expected, errors)
        if kind == "offloaded_metadata":
            found = data.offloaded_metadata.inferred_type
            if expected is not None and not castable(found, expected):
                errors.append(_mismatching_types(shown_id, param, found, expected))
                return False, None
            return True, found
        errors.append(CompileError("ParameterNotBound", shown_id, f"Parameter not bound [{param}]."))
        return False, None

    def union_binding_type(self, node, shown_id, param, data, expected, errors):
        """A list or dict bound to a union input must fit exactly one of its variants."""
        matches = []
        for variant in expected.union_type.variants:
            ok, found = self.binding_type(node, shown_id, param, data, variant, [])
            if ok:
                matches.append((variant, found))
        if len(matches) == 1:
            return True, matches[0][1]
        if matches:
            errors.append(CompileError(
                "AmbiguousBindingUnionValue", shown_id,
                f"Input [{param}] on node [{shown_id}] expects bindings of union type [{type_text(expected)}].  "
                f"Received a value which is ambiguous as both variants [{type_text(matches[0][0])}] and "
                f"[{type_text(matches[1][0])}] match."))
        else:
            errors.append(CompileError(
                "IncompatibleBindingUnionValue", shown_id,
                f"Input [{param}] on node [{shown_id}] expects bindings of union type [{type_text(expected)}].  "
                f"Received a {data.WhichOneof('value')} which does not match any of the variants."))
        return False, None

    def nested_binding_type(self, node, shown_id, param, data, expected, errors):
        """A list (or dict) of bindings: each item must fit the declared item type."""
        is_list = data.WhichOneof("value") == "collection"
        field = "collection_type" if is_list else "map_value_type"
        if expected is not None and not expected.HasField(field):
            received = "a list of bindings" if is_list else "a dict of bindings"
            errors.append(CompileError(
                "MismatchingBindings", shown_id,
                f"Input [{param}] on node [{shown_id}] expects bindings of type [{type_text(expected)}].  "
                f"Received [{received}]"))
            return False, None
        items = data.collection.bindings if is_list else data.map.bindings.values()
        item_expected = getattr(expected, field) if expected is not None else None
        ok, item_type = True, None
        for item in items:
            item_ok, found = self.binding_type(node, shown_id, param, item, item_expected, errors)
            ok = ok and item_ok
            item_type = found if item_ok and found is not None else item_type
        nested = types_pb2.LiteralType(**{field: item_type or types_pb2.LiteralType(simple=types_pb2.NONE)})
        return ok, nested

    def promise_type(self, node, shown_id, param, promise, expected, errors):
        """Another node's output (or a workflow input), narrowed by its index and attribute path."""
        upstream_id = promise.node_id or START_NODE
        outputs = self.outputs_of(upstream_id)
        if outputs is None:
            errors.append(CompileError("NodeReferenceNotFound", shown_id, f"Referenced node [{upstream_id}] not found."))
            return False, None
        parsed = _VAR_NAME.match(promise.var)
        if parsed is None:
            errors.append(CompileError("SyntaxError", shown_id, f"Failed to parse variable name [{promise.var}]."))
            return False, None
        index, name = parsed.groups()
        if name not in outputs:
            errors.append(CompileError(
                "VariableNameNotFound", shown_id, f"Variable [{name}] not found on node [{upstream_id}]."))
            return False, None
        declared = outputs[name].type
        output_var, input_var = _qualified(self.nodes.get(upstream_id), promise.var), _qualified(node, param)
        source = declared
        if index is not None:
            if not declared.HasField("collection_type"):
                errors.append(_mismatching_variables(shown_id, output_var, declared, input_var, expected))
                return False, None
            source = declared.collection_type
        source = self.attribute_type(shown_id, promise, source, errors)
        if source is None:
            return False, None
        if expected is not None and not castable(source, expected):
            errors.append(_mismatching_variables(shown_id, output_var, source, input_var, expected))
            return False, None
        return True, declared

    def attribute_type(self, shown_id, promise, source, errors):
        """The type at the end of an attribute path (``o0.field[1]``): list items, dict values, fields."""
        for attribute in promise.attr_path:
            if source.HasField("collection_type"):
                source = source.collection_type
            elif source.HasField("map_value_type"):
                source = source.map_value_type
            elif source.structure.dataclass_type:
                field = attribute.string_value
                if field not in source.structure.dataclass_type:
                    errors.append(CompileError(
                        "FieldNotFoundError", shown_id,
                        f"Variable [{promise.var}] (type [{type_text(source)}]) doesn't have field [{field}]."))
                    return None
                source = source.structure.dataclass_type[field]
        return source

    def scalar_type(self, shown_id, param, scalar, expected, errors):
        """A value written into the workflow: of the declared type, and one of an enum's values."""
        found = scalar_type_of(scalar)
        if found is None:
            errors.append(CompileError(
                "UnrecognizedValue", shown_id, f"Unrecognized value type [{scalar.WhichOneof('value')}]."))
            return False, None
        ok = True
        if expected is not None and not castable(found, expected):
            errors.append(CompileError(
                "MismatchingTypes", shown_id,
                f"Variable [{param}] (type [{type_text(found)}]) doesn't match expected type [{type_text(expected)}]."))
            ok = False
        if expected is not None and expected.HasField("enum_type"):
            value = scalar.primitive.string_value
            if value not in expected.enum_type.values:
                errors.append(CompileError(
                    "IllegalEnumValue", shown_id,
                    f"Input [{param}] on node [{shown_id}] is an Enum and expects value to be one of "
                    f"[{' '.join(expected.enum_type.values)}].  Received [{value}]"))
                ok = False
        return ok, found


def _branch_cases(node) -> list[workflow_pb2.Node]:
    block = node.branch_node.if_else
    cases = [block.case.then_node] if block.HasField("case") else []
    cases += [other.then_node for other in block.other if other.HasField("then_node")]
    if block.HasField("else_node"):
        cases.append(block.else_node)
    return cases


def _as_list(variable: interface_pb2.Variable) -> interface_pb2.Variable:
    listed = interface_pb2.Variable()
    listed.CopyFrom(variable)
    listed.type.Clear()
    listed.type.collection_type.CopyFrom(variable.type)
    return listed


# What to do with a condition whose two sides FlyteAdmin types differently.
_COMPARE_HINT = (" (FlyteAdmin compares the two sides of a condition only when they have one type, with no "
                 "conversion: compare with a value of the input's own type, e.g. `score > 0.0` for a float, "
                 "`code == \"1\"` for a str; for a field of a dataclass or an Optional, branch on a task that "
                 "returns the bool, e.g. `big = is_big(c=c)`, then `.if_(big.is_true())`.)")

# What to do instead of ``is_none()`` in a condition, which FlyteAdmin 1.x does not compile.
_IS_NONE_HINT = (" (FlyteAdmin 1.x compiles no `is_none()` in a condition: branch on a task that returns a bool, "
                 "e.g. `missing = is_missing(x=v)`, then `conditional(...).if_(missing.is_true())`.)")



def _is_optional(literal_type: types_pb2.LiteralType) -> bool:
    """An input that may stay unbound: a union with None among its variants."""
    return any(v.WhichOneof("type") == "simple" and v.simple == types_pb2.NONE for v in literal_type.union_type.variants)


def _qualified(node, var: str) -> str:
    """``name.var`` as FlyteAdmin names a node's variable (the node's name, e.g. the task's function)."""
    if node is None or not node.HasField("metadata"):
        return var
    return f"{node.metadata.name}.{var}"


def _mismatching_variables(node_id, output_var, output_type, input_var, input_type) -> CompileError:
    return CompileError(
        "MismatchingTypes", node_id,
        f"The output variable '{output_var}' has type [{type_text(output_type)}], but it's assigned to the "
        f"input variable '{input_var}' which has type [{type_text(input_type)}].")


def _mismatching_types(node_id, var, found, expected) -> CompileError:
    return CompileError(
        "MismatchingTypes", node_id,
        f"Variable [{var}] (type [{type_text(found)}]) doesn't match expected type [{type_text(expected)}].")
