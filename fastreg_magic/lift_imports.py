"""How a value from the notebook namespace is written back as an import line, when it can be.

    import_statement("np", numpy)                  -> "import numpy as np"
    import_statement("task", flytekit.task)        -> "from flytekit import task"
    import_statement("normalize", <cell function>) -> None: lift its source instead

A name an earlier cell from-imported is written as that cell wrote it when it still holds
that value (``from os import getcwd``, not ``from posix import getcwd`` where ``getcwd`` is
defined); otherwise from where its value is defined, in the shortest public path.

Used by `fastreg_magic.lift`; kept apart so that module reads as the resolution of free names.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
from typing import Any, Mapping

from fastreg_magic.earlier_cells import earlier_from_imports
from fastreg_magic.errors import CollectError


def import_statement(name: str, value: Any, namespace: Mapping[str, Any] | None = None) -> str | None:
    """The import line binding ``name`` to ``value``, if there is one; ``namespace``: the notebook's,
    whose input history may hold the line the user wrote."""
    if isinstance(value, types.ModuleType):
        return _module_import(name, value)
    origin = _import_written_earlier(name, value, namespace) or _importable_origin(name, value)
    if origin is None:
        return None
    module, attr = origin
    return f"from {module} import {attr}" if attr == name else f"from {module} import {attr} as {name}"


def _module_import(name: str, module: types.ModuleType) -> str:
    spec = getattr(module, "__spec__", None)
    full = spec.name if spec is not None and spec.name != "__main__" else module.__name__
    if module is os.path:
        full = "os.path"  # posixpath or ntpath depending on the notebook's OS; not the container's
    if hasattr(module, GENERATED_MARK):
        raise CollectError(
            f"`{name}` is the module of another %%flyte_fast cell, which is not shipped with this one.",
            f"Use its names directly (e.g. `{name}.x` -> `x`): functions and classes are carried over; "
            "or put both in one cell.",
        )
    if full == "__main__":
        raise CollectError(
            f"`{name}` is the notebook's own namespace module and cannot be shipped.",
            "Refer to the names you need directly.",
        )
    return f"import {full}" if full == name else f"import {full} as {name}"


def _import_written_earlier(name: str, value: Any, namespace: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(module, attribute) of the newest from-import in the notebook's cells that bound ``name``
    to this very value (``from os.path import *`` binds ``basename``), from a module a container
    can import too."""
    if namespace is None:
        return None
    for bound, module_name, attr in earlier_from_imports(namespace):
        if bound not in (name, "*") or module_name == "__main__" or not is_importable_module(module_name):
            continue
        attr = name if bound == "*" else attr
        if getattr(sys.modules[module_name], attr, None) is value:
            return module_name, attr
    return None


def _importable_origin(name: str, value: Any) -> tuple[str, str] | None:
    """(module, attribute) that an import statement gives ``value`` back from: a function or
    class, or any object a module exports under that name (``typing.List``). The shortest
    public path wins, so ``task`` becomes ``from flytekit import task``."""
    target = wrapped_function(value) or value
    module_name = getattr(target, "__module__", None)
    if not isinstance(module_name, str) or module_name == "__main__" or not is_importable_module(module_name):
        return None  # defined in the kernel: lift its source instead
    attrs = [getattr(target, "__name__", None), getattr(target, "_name", None), name]
    for candidate in _modules_to_import_from(module_name):
        module = sys.modules.get(candidate)
        for attr in attrs:
            if isinstance(attr, str) and module is not None and getattr(module, attr, None) is value:
                return candidate, attr
    return None


# `os.path` is one of these depending on the notebook's OS; the container's may differ.
_OS_PATH_MODULES = frozenset({"posixpath", "ntpath"})


def _modules_to_import_from(module_name: str) -> list[str]:
    """The modules an import of something defined in ``module_name`` may name, preferred first:
    the public module users import (`join` is defined in posixpath but imported from os.path,
    `reduce` in _functools but imported from functools), then each package on the way down."""
    parts = module_name.split(".")
    public = []
    if module_name in _OS_PATH_MODULES:
        public.append("os.path")
    if parts[0].startswith("_") and not parts[0].startswith("__"):
        public.append(parts[0].lstrip("_"))
    return public + [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


# Set on the modules the magic generates from cells (see api.load_module): their file is a
# temporary one of this kernel, shipped by nobody, so what they define is lifted like cell code.
GENERATED_MARK = "__fastreg_fingerprint__"


def is_importable_module(module_name: str) -> bool:
    """Whether a container can import ``module_name`` by name, as the notebook did: a module
    with a file, or one built into Python (time, itertools) or frozen into it (os, posixpath),
    which have none. Not a module generated from a cell, nor one made in the kernel."""
    module = sys.modules.get(module_name)
    if module is None or hasattr(module, GENERATED_MARK):
        return False
    spec = getattr(module, "__spec__", None)
    if spec is None or not spec.origin:
        return False
    return spec.has_location or spec.origin in ("built-in", "frozen")


def is_named_definition(value: Any) -> bool:
    return isinstance(value, (types.FunctionType, type))


def wrapped_function(value: Any) -> Any:
    """The user's function behind a decorated object: a flytekit task or workflow (`@task def f`
    is an object), or anything `functools.wraps` made (`@lru_cache`)."""
    for attr in ("task_function", "_workflow_function"):
        inner = getattr(value, attr, None)
        if isinstance(inner, types.FunctionType):
            return inner
    if not isinstance(value, types.FunctionType) and hasattr(value, "__wrapped__"):
        try:
            inner = inspect.unwrap(value)
        except ValueError:  # a cycle of __wrapped__
            return None
        return inner if isinstance(inner, types.FunctionType) else None
    return None
