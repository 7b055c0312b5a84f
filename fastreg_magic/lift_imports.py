"""How a value from the notebook namespace is written back as an import line, when it can be.

    import_statement("np", numpy)                  -> "import numpy as np"
    import_statement("task", flytekit.task)        -> "from flytekit import task"
    import_statement("normalize", <cell function>) -> None: lift its source instead

Used by `fastreg_magic.lift`; kept apart so that module reads as the resolution of free names.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
from typing import Any

from fastreg_magic.errors import CollectError


def import_statement(name: str, value: Any) -> str | None:
    if isinstance(value, types.ModuleType):
        return _module_import(name, value)
    origin = _importable_origin(name, value)
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


def _importable_origin(name: str, value: Any) -> tuple[str, str] | None:
    """(module, attribute) that an import statement gives ``value`` back from: a function or
    class, or any object a module exports under that name (``typing.List``). The shortest
    public path wins, so ``task`` becomes ``from flytekit import task``."""
    target = wrapped_function(value) or value
    module_name = getattr(target, "__module__", None)
    if not isinstance(module_name, str) or module_name == "__main__" or not module_has_file(module_name):
        return None  # defined in the kernel: lift its source instead
    attrs = [getattr(target, "__name__", None), getattr(target, "_name", None), name]
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        module = sys.modules.get(".".join(parts[:i]))
        for attr in attrs:
            if isinstance(attr, str) and module is not None and getattr(module, attr, None) is value:
                return ".".join(parts[:i]), attr
    return None


# Set on the modules the magic generates from cells (see api.load_module): their file is a
# temporary one of this kernel, shipped by nobody, so what they define is lifted like cell code.
GENERATED_MARK = "__fastreg_fingerprint__"


def module_has_file(module_name: str) -> bool:
    module = sys.modules.get(module_name)
    if module is None or hasattr(module, GENERATED_MARK):
        return False
    spec = getattr(module, "__spec__", None)
    return bool(spec is not None and spec.origin and spec.has_location)


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
