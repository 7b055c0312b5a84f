"""Registrable entities as FlyteAdmin protos: the seed's ``.pb`` file format, and hydration.

A :class:`Spec` is one TaskSpec, WorkflowSpec or LaunchPlan proto as flytekit's translator wrote it,
project/domain independent: identifiers carry ``{{ registration.project }}``/``{{ registration.domain }}``
and task commands ``{{ .remote_package_path }}``. :func:`hydrate` fills those in for one place;
:func:`write_specs`/:func:`read_specs` are the numbered ``NN_<name>_<1|2|3>.pb`` files of
``pyflyte serialize``; :func:`dependencies` tells what a spec references, for registration order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from fastreg_magic.errors import RegistrationError

# Placeholders flytekit's translator writes when settings leave them open (see flytekit.configuration
# PROJECT_PLACEHOLDER/... and translator.get_command_prefix_for_fast_execute).
PROJECT_PLACEHOLDER = "{{ registration.project }}"
DOMAIN_PLACEHOLDER = "{{ registration.domain }}"
ARCHIVE_PLACEHOLDER = "{{ .remote_package_path }}"

_IDENTIFIER = "flyteidl.core.Identifier"
_HOLDS_IDENTIFIER: dict[str, bool] = {}  # message type -> whether it can contain an Identifier
_KIND_BY_SUFFIX = {"1": "task", "2": "workflow", "3": "launch_plan"}
_SUFFIX_BY_KIND = {v: k for k, v in _KIND_BY_SUFFIX.items()}


@dataclass(frozen=True)
class Spec:
    """One registrable entity as FlyteAdmin sees it (TaskSpec, WorkflowSpec or LaunchPlan proto)."""

    kind: str  # "task" | "workflow" | "launch_plan"
    name: str
    proto: Any = field(compare=False, repr=False)
    entity: Any = field(default=None, compare=False, repr=False)  # the local flytekit object, when known

    @property
    def identifier(self):
        return self.proto.id if self.kind == "launch_plan" else self.proto.template.id



# ---------------------------------------------------------------- files (the seed's serialize format)


def write_specs(specs: Sequence[Spec], folder: Path) -> list[Path]:
    """Numbered ``NN_<name>_<1|2|3>.pb`` files in registration order, as ``pyflyte serialize`` writes them."""
    width = max(1, len(str(max(len(specs) - 1, 0))))
    written = []
    for index, spec in enumerate(specs):
        path = Path(folder) / f"{str(index).zfill(width)}_{spec.name}_{_SUFFIX_BY_KIND[spec.kind]}.pb"
        path.write_bytes(spec.proto.SerializeToString(deterministic=True))
        written.append(path)
    return written


def read_specs(folder: Path) -> tuple[Spec, ...]:
    """Read back the ``.pb`` files of :func:`write_specs` (or of ``pyflyte serialize``), in file order."""
    from flyteidl.admin import launch_plan_pb2, task_pb2, workflow_pb2

    types = {"task": task_pb2.TaskSpec, "workflow": workflow_pb2.WorkflowSpec, "launch_plan": launch_plan_pb2.LaunchPlan}
    specs = []
    for path in sorted(Path(folder).glob("*.pb")):
        match = re.fullmatch(r"\d+_(.+)_([123])\.pb", path.name)
        if match is None:
            raise RegistrationError(
                f"{path} is not a serialized entity file (expected NN_<name>_<1|2|3>.pb).",
                "Point register-files at the directory written by `fastreg serialize -o DIR`.",
            )
        kind = _KIND_BY_SUFFIX[match.group(2)]
        proto = types[kind]()
        try:
            proto.ParseFromString(path.read_bytes())
        except Exception as exc:
            raise RegistrationError(f"{path} is not a valid {kind} protobuf: {exc}", "Re-run `fastreg serialize`.") from exc
        specs.append(Spec(kind, match.group(1), proto))
    return tuple(specs)


# ---------------------------------------------------------------- hydration


def hydrate(
    spec: Spec,
    *,
    project: str,
    domain: str,
    archive_uri: str | None,
    service_account: str | None = None,
    raw_output_prefix: str | None = None,
) -> Spec:
    """A copy of ``spec`` with the placeholders filled in for one project/domain and archive."""
    proto = type(spec.proto)()
    proto.CopyFrom(spec.proto)
    if spec.identifier.project == PROJECT_PLACEHOLDER or spec.identifier.domain == DOMAIN_PLACEHOLDER:
        _fill_identifiers(proto, project, domain)  # serialized for no place in particular (the seed's files)
    if spec.kind == "task" and archive_uri is not None:
        args = proto.template.container.args
        for index, arg in enumerate(args):
            if arg == ARCHIVE_PLACEHOLDER:
                args[index] = archive_uri
    if spec.kind == "launch_plan":
        if service_account:
            proto.spec.security_context.run_as.k8s_service_account = service_account
            proto.spec.auth_role.kubernetes_service_account = service_account
        if raw_output_prefix:
            proto.spec.raw_output_data_config.output_location_prefix = raw_output_prefix
    return Spec(spec.kind, spec.name, proto, spec.entity)


def _fill_identifiers(message, project: str, domain: str) -> None:
    """Walk every field; each ``flyteidl.core.Identifier`` with a placeholder gets the real value.

    Generic over the message tree so that every place an identifier can hide (task nodes, array nodes,
    branch nodes, sub-workflows, launch-plan references) is covered, not only the common ones.
    """
    if message.DESCRIPTOR.full_name == _IDENTIFIER:
        if message.project in ("", PROJECT_PLACEHOLDER):
            message.project = project
        if message.domain in ("", DOMAIN_PLACEHOLDER):
            message.domain = domain
        return
    for descriptor, value in message.ListFields():
        if descriptor.type != descriptor.TYPE_MESSAGE:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            value_field = descriptor.message_type.fields_by_name["value"]
            holds = value_field.type == value_field.TYPE_MESSAGE and _may_hold_identifier(value_field.message_type)
            children = value.values() if holds else ()
        elif not _may_hold_identifier(descriptor.message_type):
            continue
        elif _repeated(descriptor):
            children = value
        else:
            children = (value,)
        for child in children:
            _fill_identifiers(child, project, domain)


def _repeated(descriptor) -> bool:
    # protobuf 6 deprecates FieldDescriptor.label (and 7 drops it) in favour of is_repeated.
    flag = getattr(descriptor, "is_repeated", None)
    return flag if flag is not None else descriptor.label == descriptor.LABEL_REPEATED



def identity_key(identifier) -> tuple:
    return (identifier.resource_type, identifier.project, identifier.domain, identifier.name, identifier.version)


def dependencies(spec: Spec) -> set:
    """Identifiers this spec references (other than itself)."""
    found: set = set()
    own = identity_key(spec.identifier)

    def walk(message):
        if message.DESCRIPTOR.full_name == _IDENTIFIER:
            key = identity_key(message)
            if key != own:
                found.add(key)
            return
        for descriptor, value in message.ListFields():
            if descriptor.type == descriptor.TYPE_MESSAGE and not descriptor.message_type.GetOptions().map_entry:
                if not _may_hold_identifier(descriptor.message_type):
                    continue  # interfaces, literals, resources...: most of a spec, and never an identifier
                for child in value if _repeated(descriptor) else (value,):
                    walk(child)

    walk(spec.proto)
    return found


def _may_hold_identifier(descriptor) -> bool:
    """Whether a message of this type can contain an Identifier at any depth (from its schema)."""
    known = _HOLDS_IDENTIFIER.get(descriptor.full_name)
    if known is None:
        reachable, pending = {descriptor.full_name}, [descriptor]
        while pending:
            for field_descriptor in pending.pop().fields:
                child = field_descriptor.message_type
                if child is not None and child.full_name not in reachable:
                    reachable.add(child.full_name)
                    pending.append(child)
        known = _HOLDS_IDENTIFIER[descriptor.full_name] = _IDENTIFIER in reachable
    return known
