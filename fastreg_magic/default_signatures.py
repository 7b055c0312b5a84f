"""Noticing that the data behind an unchanged cell's defaults changed since it registered.

The kernel's memory of what it registered is keyed by the files a cell ships; the data its workflows'
defaults (and its launch plans' default and fixed inputs) hold is not one of them, yet it is stored on
the backend as the cell registers. So each registration remembers a signature of that data, and an
unchanged re-run whose data changed registers again instead of answering from memory:

- a local file or directory a default names (a ``FlyteFile``/``FlyteDirectory``, a path given for one,
  ``Optional`` too, also inside a list, a dict, a dataclass or a Pydantic model): where the path leads
  now (a relative path from the kernel's working directory, a symbolic link re-pointed) and its size and
  mtime; for a directory, every folder's mtime (a file added or removed anywhere) and the size and mtime
  of its first files;
- data the module computes as it runs (a DataFrame read from a CSV, an array): a digest of its values,
  compared once the unchanged re-run has run the module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class _NamedPath:
    given: str  # as the default names it: relative paths are read from the kernel's working directory
    led_to: Path  # where it led when the cell registered
    signature: tuple | None


@dataclasses.dataclass(frozen=True)
class _Signed:
    paths: tuple[_NamedPath, ...]
    values: str | None  # digest of the computed data (DataFrames, arrays) in the defaults; None: there is none


# What an unchanged cell's defaults held when it registered, by memo key.
_REMEMBERED: dict[tuple, _Signed] = {}

# A default directory's signature covers the size and mtime of at most this many of its files (and the
# mtime of every folder, which a file added or removed changes): an unchanged re-run stays a few stat
# calls per thousand files, not a read of a data set. An edit in place past the first files goes unnoticed.
DIRECTORY_FILES_SIGNED = 10_000


def remember(key, entities) -> None:
    """Sign the data ``entities``' defaults hold, for the registration remembered under ``key``."""
    values = list(_default_values(entities))
    paths = {}
    for value, declared in values:
        for given in named_paths(value, declared):
            led_to = _leads_to(given)
            paths.setdefault((given, led_to), _NamedPath(given, led_to, _signature(led_to)))
    _REMEMBERED[key] = _Signed(tuple(paths.values()), _digest_of_computed(values))


def forget() -> None:
    _REMEMBERED.clear()


def has_computed(key) -> bool:
    """Whether the cell registered under ``key`` holds data it computes in a default (a DataFrame, an array):
    an unchanged re-run of it runs the cell again, to compare that data (`values_changed_since`). Other
    cells are not run again, as ``import`` does not run a module twice."""
    signed = _REMEMBERED.get(key)
    return signed is not None and signed.values is not None


def paths_changed_since(key) -> str | None:
    """One line naming the default file or directory that changed since the cell registered under
    ``key`` (checked before the module runs again); None if none did."""
    signed = _REMEMBERED.get(key)
    for named in signed.paths if signed is not None else ():
        led_to = _leads_to(named.given)
        if led_to != named.led_to:
            return (f"the default path {named.given} now leads to {led_to}, not {named.led_to}: registered the "
                    "cell again with its data")
        if _signature(led_to) != named.signature:
            kind = "directory" if named.signature is not None and named.signature[0] == "dir" else "file"
            return (f"the default {kind} {led_to} changed since this cell last registered: registered the "
                    "cell again with its new content")
    return None


def values_changed_since(key, entities) -> str | None:
    """One line saying that data the module computed for a default (a DataFrame, an array) differs from
    what the cell registered under ``key`` (checked once the module ran again); None if it does not."""
    signed = _REMEMBERED.get(key)
    if signed is None or signed.values is None or _digest_of_computed(list(_default_values(entities))) == signed.values:
        return None
    return ("data a default holds (a DataFrame or an array the cell computes) changed since this cell last "
            "registered: registered the cell again with it")


# ---------------------------------------------------------------- what the defaults hold


def _default_values(entities):
    """(value, declared Python type) of the defaults of the cell's workflows and the default/fixed inputs
    of its launch plans."""
    from flytekit.core.launch_plan import LaunchPlan
    from flytekit.core.workflow import WorkflowBase

    for entity in entities:
        if isinstance(entity, LaunchPlan):
            interface = getattr(entity.workflow, "python_interface", None)
            values = entity.saved_inputs
        elif isinstance(entity, WorkflowBase):
            interface = entity.python_interface
            values = interface.default_inputs_as_kwargs
        else:
            continue
        types = interface.inputs if interface is not None else {}
        for name, value in values.items():
            yield value, types.get(name)


def named_paths(value, declared) -> list[str]:
    """The local paths a default names: a FlyteFile/FlyteDirectory, a path given for one (declared plainly,
    ``Optional[...]``, in a ``Union`` or ``Annotated``), and those in a list, tuple or dict of them and in the
    fields of a dataclass or a Pydantic model (nested too)."""
    from flytekit.types.directory import FlyteDirectory
    from flytekit.types.file import FlyteFile

    data_types = (FlyteFile, FlyteDirectory)
    variants = _variants(declared)
    if isinstance(value, data_types):
        value = value.path
    elif isinstance(value, (list, tuple)):
        inner = _inner_types(variants, (list, tuple))
        return [p for item in value for p in named_paths(item, inner[0] if inner else None)]
    elif isinstance(value, dict):
        inner = _inner_types(variants, (dict,))
        return [p for item in value.values() for p in named_paths(item, inner[-1] if inner else None)]
    elif (fields := _fields_of(value)) is not None:
        return [p for item, field_type in fields for p in named_paths(item, field_type)]
    elif type(value) in variants or not any(isinstance(v, type) and issubclass(v, data_types) for v in variants):
        return []  # not for a file (in ``Union[str, FlyteFile]``, flytekit keeps a str a str)
    if not isinstance(value, (str, os.PathLike)) or "://" in os.fspath(value):
        return []  # already remote: nothing local to edit
    return [os.fspath(value)]


def _variants(declared) -> list:
    """The types a value declared ``declared`` may be: ``Optional[FlyteFile]`` -> [FlyteFile];
    ``Annotated[T, ...]`` -> T's; ``Union[A, B]`` -> [A, B]; None for an undeclared value -> []."""
    import types
    import typing

    origin = typing.get_origin(declared)
    if origin is typing.Annotated:
        return _variants(typing.get_args(declared)[0])
    if origin in (typing.Union, types.UnionType):  # Optional[FlyteFile], FlyteFile | None
        return [v for arg in typing.get_args(declared) if arg is not type(None) for v in _variants(arg)]
    return [] if declared is None else [declared]


def _inner_types(variants, containers) -> tuple:
    """The item types (for a dict: key and value types) of the first of ``variants`` that is one of
    ``containers`` (``List[FlyteFile]`` -> (FlyteFile,)); () when none says."""
    import typing

    for variant in variants:
        origin = typing.get_origin(variant) or variant
        if isinstance(origin, type) and issubclass(origin, containers) and typing.get_args(variant):
            return typing.get_args(variant)
    return ()


def _fields_of(value) -> list[tuple] | None:
    """(value, declared type) of each field of a dataclass instance or a Pydantic model, which flytekit
    converts field by field (so a file in one is uploaded as the default registers); None for other values."""
    import sys
    import typing

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:  # string annotations (``from __future__ import annotations``) resolved as flytekit resolves them
            hints = typing.get_type_hints(type(value), include_extras=True)
        except Exception:  # a name the annotations use that does not resolve: those given as types still say
            hints = {f.name: f.type for f in dataclasses.fields(value) if not isinstance(f.type, str)}
        return [(getattr(value, f.name, None), hints.get(f.name)) for f in dataclasses.fields(value)]
    pydantic = sys.modules.get("pydantic")  # no Pydantic model without pydantic imported
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return [(getattr(value, name, None), field.annotation) for name, field in type(value).model_fields.items()]
    return None


def _leads_to(given: str) -> Path:
    """Where a default's path leads now: from the kernel's working directory, through symbolic links."""
    return Path(given).expanduser().resolve()


def _signature(path: Path):
    """Cheap evidence of an edit: size and mtime; for a directory, every folder's mtime and its first
    files' size and mtime. None: missing."""
    try:
        if not path.is_dir():
            stat = path.stat()
            return ("file", stat.st_size, stat.st_mtime_ns)
        folders, files = [], []
        for root, dirs, names in os.walk(path):
            dirs.sort()
            folders.append((os.path.relpath(root, path), os.stat(root).st_mtime_ns))
            for name in sorted(names):
                if len(files) < DIRECTORY_FILES_SIGNED:
                    stat = os.stat(os.path.join(root, name))
                    files.append((os.path.relpath(os.path.join(root, name), path), stat.st_size, stat.st_mtime_ns))
        return ("dir", tuple(folders), tuple(files))
    except OSError:
        return None


def _digest_of_computed(values) -> str | None:
    """A digest of the DataFrames and arrays among the defaults (in lists and dicts too), by content;
    None when there are none."""
    digest = hashlib.sha256()
    found = sum(_add_computed(digest, value) for value, _ in values)
    return digest.hexdigest() if found else None


def _add_computed(digest, value) -> int:
    """Add ``value``'s DataFrames and arrays to ``digest``; how many there were."""
    if isinstance(value, (list, tuple)):
        return sum(_add_computed(digest, item) for item in value)
    if isinstance(value, dict):
        return sum(_add_computed(digest, value[key]) for key in value)
    if type(value).__module__.startswith("flytekit") and getattr(value, "dataframe", None) is not None:
        return _add_computed(digest, value.dataframe)  # a StructuredDataset wrapping a DataFrame
    if type(value).__module__.startswith("pandas") and hasattr(value, "columns"):
        import pandas

        digest.update(repr((list(value.columns), [str(t) for t in value.dtypes])).encode())
        try:
            digest.update(pandas.util.hash_pandas_object(value, index=True).values.tobytes())
        except (TypeError, ValueError):  # cells pandas cannot hash (lists, dicts): their text
            digest.update(value.to_csv().encode())
        return 1
    if type(value).__module__ == "numpy" and hasattr(value, "tobytes") and hasattr(value, "dtype"):
        digest.update(repr((str(value.dtype), value.shape)).encode())
        # an object array's bytes are addresses, new on every run: its items' text instead
        digest.update(repr(value.tolist()).encode() if value.dtype.hasobject else value.tobytes())
        return 1
    return 0
