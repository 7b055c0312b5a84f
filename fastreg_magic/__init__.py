"""fastreg_magic: fast-register Flyte workflows from a notebook cell.

    %load_ext fastreg_magic

    %%flyte_fast -p flytesnacks -d development
    from flytekit import task, workflow
    ...

The same pipeline is a plain Python API, usable without IPython::

    from fastreg_magic import fast_register
    reg = fast_register(source, module="pipeline")
    run = reg.launch(n=3).wait()

Every failure meant for the user is a :class:`FastRegError` (``fastreg_magic.errors`` draws the tree),
importable from here, as is ``RunLost`` (a run its backend no longer has) and ``Interrupted``
(Ctrl-C, a ``KeyboardInterrupt``)::

    from fastreg_magic import BackendError, FastRegError

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
    "RunLost": "fastreg_magic.runs",
    "LaunchOptions": "fastreg_magic.launch_options",
    # The errors a caller catches: what the README names.
    **{name: "fastreg_magic.errors" for name in (
        "FastRegError", "CollectError", "PackageError", "UploadError", "BackendError", "RegistrationError",
        "VersionConflict", "RunError", "SandboxError", "NotYetSupported", "NotebookRunError", "Interrupted",
    )},
}

__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastreg_magic' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def load_ipython_extension(ipython) -> None:
    from fastreg_magic.magic import load_into

    load_into(ipython)


def unload_ipython_extension(ipython) -> None:
    from fastreg_magic.magic import unload_from

    unload_from(ipython)
