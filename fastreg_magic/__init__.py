"""fastreg_magic: fast-register Flyte workflows from a notebook cell.

    %load_ext fastreg_magic

    %%flyte_fast -p flytesnacks -d development
    from flytekit import task, workflow
    ...

The same pipeline is a plain Python API, usable without IPython::

    from fastreg_magic import fast_register
    reg = fast_register(source, module="pipeline")
    run = reg.launch(n=3).wait()

Importing this package is cheap: flytekit (about a second to import) is loaded on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Public names and the module each lives in; imported on first access (PEP 562) so that
# `%load_ext fastreg_magic` stays fast.
_LAZY = {
    "fast_register": "fastreg_magic.api",
    "Registration": "fastreg_magic.api",
    "EntityRef": "fastreg_magic.api",
    "Run": "fastreg_magic.runs",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastreg_magic' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    from fastreg_magic.magic import load_into

    load_into(ipython)


def unload_ipython_extension(ipython) -> None:
    from fastreg_magic.magic import unload_from

    unload_from(ipython)
