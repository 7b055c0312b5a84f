"""The errors `fastreg_magic` raises, each written for the person in the notebook.

Every error carries a ``message`` (what went wrong, naming the value involved) and a
``hint`` (what to try next). The API raises them and never prints; the magic is the one
boundary that turns them into a one-line ``UsageError``. Anything else is a bug and keeps
its traceback.

    FastRegError
     ├── CollectError        the cell or its local modules cannot be turned into a module
     ├── PackageError        the archive would be empty, too large, or unreadable
     ├── UploadError         the archive could not be stored (refused, interrupted)
     ├── BackendError        Flyte could not be reached, or refused who we are
     ├── RegistrationError   Flyte refused an entity (unknown project, version conflict, ...)
     │    └── VersionConflict    that version exists with a different structure
     ├── RunError            launching, watching or terminating a run failed
     │    └── UnreadableOutput   one output of a run cannot be read here (data gone, unknown type, ...)
     ├── SandboxError        the embedded sandbox could not start or serve
     ├── NotYetSupported     a capability that is not built yet
     └── NotebookRunError    a notebook run headless stopped at a failing cell

    Interrupted (a KeyboardInterrupt)   Ctrl-C or the notebook's stop button: what stopped, and the state left
"""

from __future__ import annotations

# Whether one of these errors raised in a notebook cell shows its whole traceback
# (``%config FlyteFast.show_traceback = True``) rather than one line.
SHOW_TRACEBACKS = False


class _ToldInOneLine:
    """What every error meant for the user has: ``message`` (what went wrong), ``hint`` (what to do),
    ``str(err)`` both, and one line in a notebook cell."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message

    def _one_line(self) -> str:
        return f"{type(self).__name__}: {self}"

    @property
    def _render_traceback_(self):
        """IPython's hook for how an exception shows in a cell: an error the API raises there
        (``reg.launch(n="x")``, ``run.wait()``) is one line too, not a wall of our frames. With
        ``FlyteFast.show_traceback`` the hook is absent, and IPython shows the whole traceback."""
        if SHOW_TRACEBACKS:
            raise AttributeError("_render_traceback_")
        return lambda: [self._one_line()]


class FastRegError(_ToldInOneLine, Exception):
    """Base of every error meant for the user. ``str(err)`` is message plus hint."""


class CollectError(FastRegError):
    """The cell, or a module it imports, cannot become a shippable module."""


class PackageError(FastRegError):
    """The archive would be empty, too large, or a file cannot be read."""


class UploadError(FastRegError):
    """The archive could not be stored where the backend can read it."""


class BackendError(FastRegError):
    """The Flyte backend is unreachable or refused the credentials."""


class RegistrationError(FastRegError):
    """The backend refused an entity: unknown project/domain, version conflict, ..."""


class VersionConflict(RegistrationError):
    """The version is registered already, with a different structure (versions are immutable)."""


def causes(exc: BaseException | None):
    """``exc`` and the exceptions behind it, outermost first (libraries wrap the error that matters:
    flytekit a gRPC error, storage clients a socket's), each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


class RunError(FastRegError):
    """Launching, watching or terminating a run failed."""


class UnreadableOutput(RunError):
    """One output of a finished run (or one input of a watched run) cannot become a Python value in
    this kernel: ``run.outputs[name]`` raises it, and the widget shows it on that output's line."""


class SandboxError(FastRegError):
    """The embedded sandbox could not start (busy port, unwritable data dir, ...)."""


class NotYetSupported(FastRegError):
    """A capability that is not built yet. Says so plainly rather than pretending."""


class NotebookRunError(FastRegError):
    """A notebook run headless (``fastreg quickstart``) stopped at a failing cell."""

    def __init__(self, message: str, hint: str | None = None, traceback: str = ""):
        super().__init__(message, hint)
        self.traceback = traceback


class Interrupted(_ToldInOneLine, KeyboardInterrupt):
    """Ctrl-C (or the notebook's stop button) stopped something: ``message`` says what, and the state it
    left (what was registered or started); ``hint`` what to do. A KeyboardInterrupt still, so code that
    catches ``Exception`` does not swallow the user's wish to stop."""

    def _one_line(self) -> str:
        return str(self)  # the message itself says it was interrupted
