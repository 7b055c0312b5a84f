"""A launch plan another %%flyte_fast cell declared, called from this cell: written as a reference.

Cell A declares ``a_lp = LaunchPlan.get_or_create(a_wf, name="nightly")`` and registers it; cell B's
workflow calls ``a_lp(n=n)``. A's module is not shipped with B, and declaring the launch plan again in
B's module would register a second launch plan named ``nightly`` for B's copy of the workflow. So B
calls the one A registered, as a child launch plan, at the version A registered::

    a_lp = ReferenceLaunchPlan("flytesnacks", "development", "nightly", "<A's version>",
                               inputs={"n": int}, outputs={"o0": int})

Re-running A after an edit registers a new version; re-running B then calls that one. The interface
is written from A's workflow; its types become names the lift carries over (imports, or classes by
their source). A cell whose launch plan the kernel has no registered version of, or whose types
cannot be written as source, is refused with the ``@reference_launch_plan`` to declare instead.

An input the launch plan has a default for (its own, or its workflow's) may be left out of B's call,
whatever its type: as for a launch plan flytekit fetches from FlyteAdmin, the node then binds nothing
for it and FlyteAdmin starts the child with the plan's default. The reference is then of a small
class written with it, whose ``compile`` leaves those inputs out of the node's interface.

The cell that declared the launch plan is the one whose module holds it: the module of its workflow,
or a cell that declared a launch plan for a workflow it imported from a local module.
"""

from __future__ import annotations

import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping

from fastreg_magic.errors import CollectError
from fastreg_magic.lift_imports import GENERATED_MARK, import_statement, wrapped_function


@dataclass(frozen=True)
class LaunchPlanReference:
    """The source binding the name to the reference, the names that source reads (types, and
    ``ReferenceLaunchPlan`` itself) with their values, and its line for the user."""

    source: str
    names: Mapping[str, Any]
    shown: str


@dataclass(frozen=True)
class _Registered:
    project: str
    domain: str
    version: str


class _Unwritable(Exception):
    """A type of the interface that cannot be written as source here."""


def launch_plan_reference(name: str, value: Any) -> LaunchPlanReference | None:
    """``value`` as a reference to its registered version, when it is a launch plan another
    %%flyte_fast cell declared; None for any other value. Raises ``CollectError`` when that cell
    has no registered version of it in this kernel, or its interface cannot be written."""
    cell = _declaring_cell(value)
    if cell is None:
        return None
    registered = _registered_version(value)
    if registered is None:
        raise _not_registered(name, value, cell)
    from flytekit.core.launch_plan import ReferenceLaunchPlan

    names: dict[str, Any] = {"ReferenceLaunchPlan": ReferenceLaunchPlan}
    try:
        inputs = _inputs_source(value, names)
        outputs = _outputs_source(value, names)
    except _Unwritable as unwritable:
        raise _not_writable(name, value, cell, registered, unwritable.args[0]) from None
    source = _reference_source(name, value, registered, inputs, outputs, names)
    shown = f"launch plan {value.name} of the cell {cell}, version {registered.version} (as a reference: {name})"
    return LaunchPlanReference(source=source, names=names, shown=shown)


def _declaring_cell(value: Any) -> str | None:
    """The module of the %%flyte_fast cell that declared ``value``, if it is a launch plan (not
    already a reference) of a cell: the cell defining its workflow, or the cell holding a plan it
    declared for a workflow imported from a local module (see ``register.module_entities``)."""
    launch_plan = sys.modules.get("flytekit.core.launch_plan")
    reference_entity = sys.modules.get("flytekit.core.reference_entity")
    if launch_plan is None or not isinstance(value, launch_plan.LaunchPlan):
        return None
    if reference_entity is not None and isinstance(value, reference_entity.ReferenceEntity):
        return None
    function = wrapped_function(value.workflow)
    module_name = getattr(function, "__module__", None) if function is not None else None
    if isinstance(module_name, str) and _is_cell(sys.modules.get(module_name)):
        return module_name
    from fastreg_magic.register import _held_by_its_workflows_module

    if _held_by_its_workflows_module(value):
        return None  # imported with its workflow: its module is shipped and imports it
    return _cell_holding(value)


def _is_cell(module: Any) -> bool:
    return module is not None and hasattr(module, GENERATED_MARK)


def _cell_holding(value: Any) -> str | None:
    """The cell module whose globals hold ``value`` itself (a cell's latest load replaces the last)."""
    for module_name, module in list(sys.modules.items()):
        if _is_cell(module) and any(held is value for held in list(vars(module).values())):
            return module_name
    return None


def _registered_version(value: Any) -> _Registered | None:
    """Where and at which version the kernel registered this very launch plan object: a cell's
    registration keeps its entities, pointed at the objects of the cell's current load."""
    from fastreg_magic import api

    found = None
    for registration in list(api._memo.values()):
        if not registration.registered:
            continue
        for ref in registration.entities:
            if ref.kind == "launch_plan" and ref.entity is value:
                found = _Registered(ref.project, ref.domain, ref.version)
    return found


def _inputs_source(value: Any, names: dict[str, Any]) -> str:
    """``{"n": int, "k": int}``: the inputs a caller may give (not the fixed ones)."""
    fixed = set(value.fixed_inputs.literals)
    items = [
        f"{input_name!r}: {type_source(kind, names)}"
        for input_name, kind in value.python_interface.inputs.items()
        if input_name not in fixed
    ]
    return "{" + ", ".join(items) + "}"


def _defaulted_inputs(value: Any) -> list[str]:
    """The inputs the launch plan has a default for (its own or its workflow's): a call may leave
    them out. Fixed inputs are not among its parameters."""
    parameters = value.parameters.parameters
    return [input_name for input_name, parameter in parameters.items() if not parameter.required]


def _reference_source(name: str, value: Any, registered: _Registered, inputs: str, outputs: str,
                      names: dict[str, Any]) -> str:
    """``name = ReferenceLaunchPlan(...)``; when the plan has defaults, of a class written before it
    that leaves out of a call's node the defaulted inputs the call does not give."""
    arguments = (
        f"    {registered.project!r}, {registered.domain!r}, {value.name!r}, {registered.version!r},\n"
        f"    inputs={inputs},\n"
        f"    outputs={outputs},\n"
    )
    defaulted = _defaulted_inputs(value)
    if not defaulted:
        return f"{name} = ReferenceLaunchPlan(\n{arguments})\n"
    from flytekit.core.interface import Interface
    from flytekit.core.promise import create_and_link_node

    names.update(Interface=Interface, create_and_link_node=create_and_link_node)
    kind = f"_{name}_reference"
    optional = " or ".join(sorted(defaulted))
    return (
        f"class {kind}(ReferenceLaunchPlan):\n"
        f'    """The launch plan {value.name}: a call may leave out {optional}, as it has defaults."""\n'
        "\n"
        "    def compile(self, ctx, *args, **kwargs):\n"
        "        # No binding for a defaulted input the call leaves out: FlyteAdmin uses the plan's default.\n"
        "        given = {k: t for k, t in self.python_interface.inputs.items()\n"
        f"                 if k in kwargs or k not in {tuple(sorted(defaulted))!r}}}\n"
        "        interface = Interface(given, self.python_interface.outputs)\n"
        "        return create_and_link_node(ctx, entity=self, overridden_interface=interface, **kwargs)\n"
        "\n\n"
        f"{name} = {kind}(\n{arguments})\n"
    )


def _outputs_source(value: Any, names: dict[str, Any]) -> str:
    items = [f"{output!r}: {type_source(kind, names)}" for output, kind in value.python_interface.outputs.items()]
    return "{" + ", ".join(items) + "}"


# Generic types written with the builtin's name (``list[int]``), as flytekit reads them either way.
_BUILTIN_GENERICS = {list: "list", dict: "dict", tuple: "tuple", set: "set", frozenset: "frozenset"}


def type_source(kind: Any, names: dict[str, Any]) -> str:
    """Python source for the type ``kind``, recording in ``names`` the names it reads; raises
    ``_Unwritable`` for a type the lift could not carry over by name."""
    if kind is None or kind is type(None):
        return "None"
    origin = typing.get_origin(kind)
    if origin is None:
        return _class_name(kind, names)
    if origin in (typing.Union, types.UnionType):  # Optional[int], int | None
        names["typing"] = typing
        head = "typing.Union"
    elif origin in _BUILTIN_GENERICS:
        head = _BUILTIN_GENERICS[origin]
    else:  # Annotated (its metadata is any object), Literal, ...
        raise _Unwritable(kind)
    return f"{head}[{', '.join(type_source(arg, names) for arg in typing.get_args(kind))}]"


def _class_name(kind: Any, names: dict[str, Any]) -> str:
    """A class's name, when that name gives it back: a builtin, a class a module exports, or a
    top-level class of a cell (the lift carries it over by its source)."""
    if not isinstance(kind, type) or kind.__qualname__ != kind.__name__:
        raise _Unwritable(kind)
    name = kind.__name__
    if kind.__module__ == "builtins":
        return name
    from_a_cell = kind.__module__ == "__main__" or hasattr(sys.modules.get(kind.__module__), GENERATED_MARK)
    if names.get(name, kind) is not kind or not (from_a_cell or import_statement(name, kind) is not None):
        raise _Unwritable(kind)  # two classes of one name, or one no import gives back (FlyteFile["csv"])
    names[name] = kind
    return name


# --- what to write instead -----------------------------------------------------------------


def _not_registered(name: str, value: Any, cell: str) -> CollectError:
    return CollectError(
        f"`{name}` is the launch plan {value.name} of the %%flyte_fast cell {cell}, which has no registered "
        "version in this kernel (it ran with --dry-run or --serialize-to, or its backend was reset): this "
        "cell calls another cell's launch plan at the version that cell registered.",
        f"Run the cell {cell} without --dry-run or --serialize-to, then this one; or declare it in this cell "
        f"by reference: {_declaration(name, value, None)}",
    )


def _not_writable(name: str, value: Any, cell: str, registered: _Registered, kind: Any) -> CollectError:
    return CollectError(
        f"`{name}` is the launch plan {value.name} of the %%flyte_fast cell {cell} (version "
        f"{registered.version}), whose interface has a type that cannot be written here as source: {kind!r}.",
        f"Declare it in this cell by reference, with its types imported: {_declaration(name, value, registered)}",
    )


def _declaration(name: str, value: Any, registered: _Registered | None) -> str:
    """The ``@reference_launch_plan`` that declares the launch plan in the calling cell."""
    project, domain = (registered.project, registered.domain) if registered is not None else _likely_place()
    version = registered.version if registered is not None else "<its version>"
    fixed = set(value.fixed_inputs.literals)
    inputs = ", ".join(
        f"{n}: {_shown_type(t)}" for n, t in value.python_interface.inputs.items() if n not in fixed
    )
    return (
        "`from flytekit import reference_launch_plan`, then "
        f'`@reference_launch_plan(project="{project}", domain="{domain}", name="{value.name}", version="{version}")` '
        f"over `def {name}({inputs}) -> {_shown_outputs(value.python_interface.outputs)}: ...`."
    )


def _likely_place() -> tuple[str, str]:
    """The project and domain the kernel last registered anything in, as the likely ones (the
    defaults when it registered nothing)."""
    from fastreg_magic import api

    for registration in reversed(list(api._memo.values())):
        if registration.registered:
            return registration.project, registration.domain
    return api.DEFAULT_PROJECT, api.DEFAULT_DOMAIN


def _shown_outputs(outputs: Mapping[str, Any]) -> str:
    kinds = [_shown_type(kind) for kind in outputs.values()]
    if not kinds:
        return "None"
    if len(kinds) == 1:
        return kinds[0]
    if list(outputs) == [f"o{i}" for i in range(len(kinds))]:
        return f"typing.Tuple[{', '.join(kinds)}]"
    fields = ", ".join(f"{n}={_shown_type(k)}" for n, k in outputs.items())
    return f'typing.NamedTuple("Outputs", {fields})'


def _shown_type(kind: Any) -> str:
    try:
        return type_source(kind, {})
    except _Unwritable:
        return kind.__name__ if isinstance(kind, type) else repr(kind)  # typing's repr is its source
