"""A run's outputs as the user holds them, and as the widget shows them.

``run.outputs`` is a `RunValues` mapping. Each value is what flytekit itself gives for its type
(a ``FlyteFile`` opens with ``open()`` and downloads from S3 on the way, as with FlyteRemote);
an output that cannot be read in this kernel (its data is gone, its type unknown here) is an
`Unreadable` placeholder, and reading it raises `UnreadableOutput`, which says which output, why,
and what to do. The other outputs are read all the same::

    run.outputs["o0"]        # UnreadableOutput: Output o0 of run abc could not be read: ...
    open(run.outputs["o1"])  # a FlyteFile: the file, downloaded when opened

`shown` is the one place that says how such values read on screen: a file as its path or URI,
a StructuredDataset as where it is, an unreadable output as one line saying why.
"""

from __future__ import annotations

import re

from fastreg_magic.errors import UnreadableOutput, causes


class Unreadable:
    """Stands in for an output that could not be read; using it raises the error that says why.

    ``open(value)`` and ``value.head()`` raise `UnreadableOutput` (not a TypeError about an object
    nobody asked for); dunder and private lookups stay AttributeErrors, so pprint, copy and IPython's
    display hooks treat it as an ordinary object."""

    def __init__(self, name: str, error: UnreadableOutput, reason: str):
        self.name = name
        self.error = error
        self.reason = reason

    def __fspath__(self):
        raise self.error

    def __getattr__(self, attr: str):
        error = self.__dict__.get("error")  # not self.error: that would come back here while unpickling
        if attr.startswith("_") or error is None:
            raise AttributeError(attr)
        raise error

    @property
    def line(self) -> str:
        """The one line the widget shows for it."""
        return f"could not be read: {self.reason}. {self.error.hint}"

    def __repr__(self) -> str:
        return f"<{self.name} could not be read: {self.reason}>"


class RunValues(dict):
    """A run's outputs (or a watched run's inputs) by name; reading an unreadable one raises why."""

    def __getitem__(self, name):
        value = super().__getitem__(name)
        if isinstance(value, Unreadable):
            raise value.error
        return value

    def get(self, name, default=None):
        return self[name] if name in self else default

    def _repr_pretty_(self, printer, cycle):
        # IPython prints a dict by indexing it, which would raise for an unreadable value.
        printer.pretty(dict(self.items()))


def unreadable(name: str, exc: BaseException | None, *, what: str, run_name: str | None, uri: str | None) -> Unreadable:
    """The placeholder for output (or input) ``name``, its error saying why ``exc`` happened and what to do.
    ``exc`` is None when flytekit in this kernel has no Python type for it."""
    run = f" of run {run_name}" if run_name else ""
    reason, hint = _why(exc, uri, run_name)
    error = UnreadableOutput(f"{what.capitalize()} {name}{run} could not be read: {reason}.", hint)
    error.__cause__ = exc  # the whole story, for FlyteFast.show_traceback
    return Unreadable(name, error, reason)


def _why(exc: BaseException | None, uri: str | None, run_name: str | None) -> tuple[str, str]:
    """(reason, hint) for a value flytekit could not read: its data is gone, out of reach, its type
    needs a package this kernel lacks, or flytekit has no type for it at all."""
    where = uri or "its data"
    again = f"%flyte_watch {run_name} reads it again" if run_name else "reading the run again reads it"
    if exc is None:
        return ("flytekit in this kernel has no Python type for it (a type from a plugin not installed here?)",
                f"Install the package that defines its type in this kernel's environment; then {again}.")
    chain = list(causes(exc))
    missing = next((e for e in chain if isinstance(e, ImportError)), None)
    if missing is not None:
        package = getattr(missing, "name", None) or "the package it names"
        return (f"reading it needs {package}, which this kernel cannot import ({_cause_line(missing)})",
                f"Install {package} in this kernel's environment; then {again}.")
    if any(_is_not_found(e) for e in chain):
        return (f"nothing is at {where} ({_cause_line(exc)})",
                "Its data is not where the run wrote it any more (deleted since, or stored where this kernel "
                "does not look): run it again to produce it.")
    if any(_is_out_of_reach(e) for e in chain):
        return (f"this kernel could not reach {where} ({_cause_line(chain[-1])})",
                "Check the storage settings this kernel uses (the Flyte config's storage section, or the "
                f"AWS_*/GOOGLE_*/AZURE_* variables of its environment); then {again}.")
    return (_cause_line(exc), f"The others are read all the same. Fix what the cause names; then {again}.")


_NOT_FOUND_WORDS = ("not found", "does not exist", "is not a file", "is not a directory", "nosuchkey", "no such file")


def _is_not_found(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (isinstance(exc, FileNotFoundError) or type(exc).__name__ in ("FlyteDataNotFoundException", "NoSuchKey")
            or any(word in text for word in _NOT_FOUND_WORDS))


def _is_out_of_reach(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, (ConnectionError, PermissionError, TimeoutError)) or bool(
        names & {"EndpointConnectionError", "ClientConnectorError", "NoCredentialsError", "ClientError",
                 "DefaultCredentialsError"})


# flytekit's conversion errors start with the whole literal ("Cannot convert from scalar { blob { ... } }
# to <class ...>."): a protobuf dump the person in the notebook has no use for.
_LITERAL_DUMP = re.compile(r"Cannot convert from .*? to (?:<[^>]*>|\S+)\.\s*", re.DOTALL)
# ... and flytekit's user errors repeat their kind before the message: "USER:AssertionError: error=...".
_ERROR_KIND = re.compile(r"^(?:USER|SYSTEM):\w+: error=")
_CAUSE_LIMIT = 300


def _cause_line(exc: BaseException) -> str:
    """``Type: message`` on one line, without a literal's dump, cut short."""
    text = _ERROR_KIND.sub("", _LITERAL_DUMP.sub("", str(exc)).strip())
    text = " ".join(text.split())
    if len(text) > _CAUSE_LIMIT:
        text = text[: _CAUSE_LIMIT - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# how values show


class _AsText:
    """Shows as its text, unquoted, inside pprint's rendering of a list or dict."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def shown(value):
    """``value`` as the widget and terminal text show it: a FlyteFile or FlyteDirectory as its URI (or local
    path), a StructuredDataset as where it is (and its shape once read), an unreadable output as its line;
    inside lists and dicts too. Anything else is returned as it is."""
    if isinstance(value, Unreadable):
        return _AsText(value.line)
    text = _file_text(value)
    if text is not None:
        return _AsText(text)
    if isinstance(value, list):
        return [shown(v) for v in value]
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    return value


def _file_text(value) -> str | None:
    if not any(cls.__module__.startswith("flytekit.") for cls in type(value).__mro__):
        return None  # not flytekit's: no need to import it (the widget's drawing runs without it)
    from flytekit.types.directory import FlyteDirectory
    from flytekit.types.file import FlyteFile
    from flytekit.types.structured import StructuredDataset

    if isinstance(value, (FlyteFile, FlyteDirectory)):
        return str(getattr(value, "remote_source", None) or value.path)
    if isinstance(value, StructuredDataset):
        text = f"StructuredDataset at {value.uri or 'an unknown place'}"
        if value.file_format:
            text += f" ({value.file_format})"
        shape = getattr(value.dataframe, "shape", None)  # a DataFrame read already: its size costs nothing
        if shape is not None and len(shape) == 2:
            text += f", {shape[0]} rows × {shape[1]} columns"
        return text
    return None
