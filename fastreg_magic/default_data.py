"""Data an unchanged cell's defaults name: the local files and directories behind its workflows'
``FlyteFile``/``FlyteDirectory`` defaults (and its launch plans' default and fixed inputs).

The kernel's memory of what it registered is keyed by the files a cell ships; data a default names is
not one of them, yet it is stored on the backend as the cell registers. So each registration
remembers a cheap signature of that data (size and mtime; for a directory, of its first files), and
an unchanged re-run whose data changed registers again instead of answering from memory.
"""

from __future__ import annotations

import os
from pathlib import Path


def remember(key, entities) -> None:
    """Sign the data ``entities``' defaults name, for the registration remembered under ``key``."""
    _REMEMBERED[key] = _signed(_paths(entities))


# The local files and directories an unchanged cell's defaults name, each with its signature, by memo
# key: the memo is keyed by the files the cell ships, and data a default names is not one of them.
_REMEMBERED: dict[tuple, tuple] = {}

# A default directory's signature covers at most this many of its files: an unchanged re-run stays
# a few stat calls, not a walk of a data set (an edit past the first files goes unnoticed).
_DIRECTORY_FILES_SIGNED = 1_000


def changed_since(key) -> str | None:
    """One line naming the default file or directory that changed since the cell registered; None if none did."""
    for path, signature in _REMEMBERED.get(key, ()):
        if _signature(path) != signature:
            kind = "directory" if signature is not None and signature[0] == "dir" else "file"
            return (f"the default {kind} {path} changed since this cell last registered: registered the "
                    "cell again with its new content")
    return None


def _signed(paths) -> tuple:
    return tuple((path, _signature(path)) for path in paths)


def _signature(path: Path):
    """Cheap evidence of an edit: size and mtime, for a directory its (bounded) files'. None: missing."""
    try:
        if not path.is_dir():
            stat = path.stat()
            return ("file", stat.st_size, stat.st_mtime_ns)
        files = []
        for root, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                stat = os.stat(os.path.join(root, name))
                files.append((os.path.relpath(os.path.join(root, name), path), stat.st_size, stat.st_mtime_ns))
                if len(files) >= _DIRECTORY_FILES_SIGNED:
                    return ("dir", tuple(files))
        return ("dir", tuple(files))
    except OSError:
        return None


def _paths(entities) -> list[Path]:
    """The local files and directories named by the defaults of the cell's workflows and the
    default/fixed inputs of its launch plans (a FlyteFile/FlyteDirectory, or a path given for one)."""
    from flytekit.core.launch_plan import LaunchPlan
    from flytekit.core.workflow import WorkflowBase

    found: dict[Path, None] = {}
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
            path = _local_data_path(value, types.get(name))
            if path is not None:
                found[path] = None
    return list(found)


def _local_data_path(value, declared) -> Path | None:
    from flytekit.types.directory import FlyteDirectory
    from flytekit.types.file import FlyteFile

    data_types = (FlyteFile, FlyteDirectory)
    if isinstance(value, data_types):
        value = value.path
    elif not (isinstance(declared, type) and issubclass(declared, data_types)):
        return None
    if not isinstance(value, (str, os.PathLike)) or "://" in os.fspath(value):
        return None  # already remote: nothing local to edit
    return Path(value).expanduser().resolve()


def stored_by_content(file_access):
    """A copy of flytekit's ``file_access`` that names each file a type transformer writes (an array's
    ``.npy``, a pickle) ``data`` in its own random folder, where flytekit names the file itself randomly.

    Stored through the backend's DataProxy, a file lands under the md5 of its content and its own name
    (flytekit/remote/remote_fs.py): with a fixed name, the same array is the same object, so an unchanged
    cell registers the same version in a new kernel instead of a new one. Written here because flytekit
    has no setting for it.
    """
    from flytekit.core.data_persistence import FileAccessProvider

    class ContentNamedFiles(FileAccessProvider):
        def get_random_local_path(self, file_path_or_file_name=None) -> str:
            return super().get_random_local_path(file_path_or_file_name or "data")

    return ContentNamedFiles(Path(file_access.local_sandbox_dir).parent, file_access.raw_output_prefix,
                             data_config=file_access.data_config)

