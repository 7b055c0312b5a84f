"""Request checks of the sandbox's Admin service, with FlyteAdmin's rules and wording.

Every check raises :class:`AdminError` (a gRPC status code + message); the service turns
it into the RPC's status. Messages follow FlyteAdmin's (``missing project``, ``version
[v/1] must be url safe ...``, ``invalid input x``) so a user who knows Flyte recognises
them, and each names the value at fault.

    check_identifier(request.id, ResourceType.TASK)   # raises AdminError(INVALID_ARGUMENT, ...)
"""

from __future__ import annotations

import re
import urllib.parse

import grpc
from flyteidl.core import identifier_pb2, interface_pb2, literals_pb2, types_pb2

from fastreg_magic.sandbox.literal_types import castable, literal_type_of

# FlyteAdmin (execution_validator.go): a name the caller gives is at most 63 chars (a Kubernetes label
# value), lower-case alnum and '-', starting with a letter; names it makes up itself have 20 chars
# (common.ExecutionIDLength). flytekit's eager workflows name their sub-executions with up to 63.
EXECUTION_NAME_MAX = 63
GENERATED_NAME_LENGTH = 20
EXECUTION_NAME_PATTERN = re.compile(r"^[a-z][a-z\-0-9]*$")
URI_RESERVED_CHARS = "!*'();:@&=+$,/?#[]"
DOMAINS = ("development", "staging", "production")

RESOURCE_NAMES = {
    identifier_pb2.TASK: "task",
    identifier_pb2.WORKFLOW: "workflow",
    identifier_pb2.LAUNCH_PLAN: "launch_plan",
    identifier_pb2.DATASET: "dataset",
    identifier_pb2.UNSPECIFIED: "unspecified",
}


class AdminError(Exception):
    """A refusal with its gRPC status code; the service reports it as the RPC's status."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> AdminError:
    return AdminError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> AdminError:
    return AdminError(grpc.StatusCode.NOT_FOUND, message)


def id_text(identifier) -> str:
    """A readable identifier: ``project/domain/name[/version]`` (version omitted when absent)."""
    parts = [identifier.project, identifier.domain, identifier.name]
    version = getattr(identifier, "version", "")
    return "/".join(parts + ([version] if version else []))


def require(value: str, field: str) -> None:
    if not value:
        raise invalid(f"missing {field}")


def check_named_id(identifier, *, with_name: bool = True) -> None:
    """Project, domain (and name) are set."""
    require(identifier.project, "project")
    require(identifier.domain, "domain")
    if with_name:
        require(identifier.name, "name")


def check_identifier(identifier: identifier_pb2.Identifier, kind: int, *, has_field: bool = True) -> None:
    """A complete id of the expected resource type, with a URL-safe version."""
    if not has_field:
        raise invalid("missing id")
    if identifier.resource_type != kind:
        raise invalid(
            f"unexpected resource type {RESOURCE_NAMES.get(identifier.resource_type, identifier.resource_type)} "
            f"for identifier [{id_text(identifier)}], expected {RESOURCE_NAMES[kind]} instead"
        )
    check_named_id(identifier)
    check_version(identifier.version)


def check_version(version: str) -> None:
    require(version, "version")
    if urllib.parse.quote_plus(version).lower() != version.lower():
        raise invalid(f"version [{version}] must be url safe, cannot contains chars [{URI_RESERVED_CHARS}]")


def check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise invalid(f"domain [{domain}] is unrecognized by system; known domains: {', '.join(DOMAINS)}")


def check_limit(limit: int) -> None:
    if limit == 0:
        raise invalid("invalid value for limit: it must be greater than 0")


def parse_token(token: str) -> int:
    """Pagination tokens are offsets, as in FlyteAdmin."""
    if not token:
        return 0
    try:
        offset = int(token)
    except ValueError:
        raise invalid(f"invalid pagination token: {token}") from None
    if offset < 0:
        raise invalid(f"Invalid token value: {token}")
    return offset


def check_execution_name(name: str) -> None:
    if not name:
        return
    if len(name) > EXECUTION_NAME_MAX:
        raise invalid(f"size of name exceeded length {EXECUTION_NAME_MAX} : {name}")
    if not EXECUTION_NAME_PATTERN.match(name.lower()):
        raise invalid(
            f"invalid name format: {name} (execution names start with a letter and contain only "
            "lower-case letters, digits and '-')"
        )


def check_labels(labels) -> None:
    """A run's labels, as FlyteAdmin's validateLabels checks them (validation.go): at most 16, each key a
    Kubernetes qualified name and each value a label value."""
    from fastreg_magic.launch_options import MAX_LABELS, is_label_value, qualified_name_problem

    values = labels.values
    if len(values) > MAX_LABELS:
        raise invalid(f"labels map cannot exceed {MAX_LABELS} entries")
    for key, value in values.items():
        problem = qualified_name_problem(key)
        if problem:
            raise invalid(f"invalid label key [{key}]: {problem}")
        if not is_label_value(value):
            raise invalid(f"invalid label value [{value}]: a label value is empty or at most 63 letters, digits, "
                          "'-', '_' or '.', starting and ending with a letter or digit")


def check_literal_map(literals: literals_pb2.LiteralMap, field: str) -> None:
    for name, literal in literals.literals.items():
        if not name:
            raise invalid(f"missing key in {field}")
        if literal.WhichOneof("value") is None:
            raise invalid(f"missing valid literal in {field} {name}")


def check_parameter_map(parameters, field: str) -> None:
    """Launch-plan default inputs: each typed, each either required or defaulted, defaults of its type."""
    for name, parameter in parameters.parameters.items():
        if not name:
            raise invalid(f"missing key in {field}")
        if not parameter.HasField("var") or not parameter.var.HasField("type"):
            raise invalid(f"The Variable component of the Parameter {name} in {field} either is missing, or has a missing Type")
        if not parameter.HasField("default") and not parameter.required and not parameter.HasField("artifact_query"):
            raise invalid(
                f"Invalid variable {name} in {field} - variable has neither default, nor is required. One must be specified"
            )
        if parameter.HasField("default") and not castable(literal_type_of(parameter.default), parameter.var.type):
            raise invalid(
                f"Type mismatch for Parameter {name} in {field} has type {_type_text(parameter.var.type)}, "
                f"expected {_type_text(literal_type_of(parameter.default))}"
            )


def resolve_inputs(
    user_inputs: literals_pb2.LiteralMap,
    fixed_inputs: literals_pb2.LiteralMap,
    expected: interface_pb2.ParameterMap,
) -> literals_pb2.LiteralMap:
    """The execution's full inputs: user values checked against the launch plan, defaults, fixed inputs."""
    resolved: dict[str, literals_pb2.Literal] = {}
    for name, value in user_inputs.literals.items():
        if name in fixed_inputs.literals:
            raise invalid(f"fixed_inputs {name} cannot be overridden (the launch plan fixes it)")
        if name not in expected.parameters:
            known = ", ".join(sorted(expected.parameters)) or "none"
            raise invalid(f"invalid input {name} (the launch plan's inputs are: {known})")
        resolved[name] = value
    for name, parameter in expected.parameters.items():
        if name not in resolved:
            if parameter.required:
                raise invalid(f"expected_inputs {name} missing")
            if parameter.HasField("default"):
                resolved[name] = parameter.default
        elif not castable(literal_type_of(resolved[name]), parameter.var.type):
            raise invalid(
                f"invalid {name} input wrong type: expected {_type_text(parameter.var.type)}, "
                f"got {_type_text(literal_type_of(resolved[name]))}"
            )
    for name, value in fixed_inputs.literals.items():
        resolved[name] = value
    return literals_pb2.LiteralMap(literals=resolved)


def _type_text(literal_type: types_pb2.LiteralType | None) -> str:
    if literal_type is None:
        return "unknown"
    kind = literal_type.WhichOneof("type")
    if kind == "simple":
        return types_pb2.SimpleType.Name(literal_type.simple).lower()
    if kind == "collection_type":
        return f"list[{_type_text(literal_type.collection_type)}]"
    if kind == "map_value_type":
        return f"dict[str, {_type_text(literal_type.map_value_type)}]"
    if kind == "union_type":
        return "union[" + ", ".join(_type_text(v) for v in literal_type.union_type.variants) + "]"
    return kind or "none"
