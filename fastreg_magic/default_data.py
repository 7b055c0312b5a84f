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


def stored_by_content(remote):
    """A copy of ``remote``'s flytekit file access for storing data on its backend, with differences
    written here because flytekit has no setting for them:

    - each file a type transformer writes (an array's ``.npy``, a pickle) is named ``data`` in its own
      random folder, where flytekit names the file itself randomly. Through the backend's DataProxy a file
      lands under the md5 of its content and its own name (flytekit/remote/remote_fs.py): with a fixed
      name, the same array is the same object, so an unchanged cell registers the same version in a new
      kernel instead of a new one;
    - a directory keeps its layout and its names (`_store_directory`).
    """
    from flytekit.core.data_persistence import FileAccessProvider

    class ContentNamedFiles(FileAccessProvider):
        def get_random_local_path(self, file_path_or_file_name=None) -> str:
            return super().get_random_local_path(file_path_or_file_name or "data")

        async def async_put_data(self, local_path, remote_path: str, is_multipart: bool = False, **kwargs) -> str:
            if is_multipart and str(remote_path).startswith("flyte://"):
                stored = _store_directory(remote, Path(local_path))
                if stored is not None:
                    return stored
            return await super().async_put_data(local_path, remote_path, is_multipart=is_multipart, **kwargs)

    file_access = remote.file_access
    return ContentNamedFiles(Path(file_access.local_sandbox_dir).parent, file_access.raw_output_prefix,
                             data_config=file_access.data_config)


# Files of one directory stored at once (each a CreateUploadLocation and a PUT).
_DIRECTORY_UPLOADS = 8


def _store_directory(remote, local: Path) -> str | None:
    """Store the directory ``local`` through ``remote``'s DataProxy; its URI, or None for flytekit to
    store it (not a directory, or no file in it).

    flytekit (``FlyteFS._put``) stores every file of a directory flat, by its name alone, in a folder
    named by the files' contents alone: ``train/data.csv`` and ``val/data.csv`` are refused as one file
    stored twice, nested folders are flattened, a directory of one file is stored as that file, and two
    directories holding the same bytes under other names share one folder. Here the folder is named by
    the files' relative paths and contents, and each file is stored at its relative path inside it.
    Symbolic links are left out, as flytekit leaves them out.
    """
    import base64
    import concurrent.futures
    import hashlib

    from flytekit.tools.script_mode import hash_file

    if not local.is_dir():
        return None
    files = _files_in(local)
    if not files:
        return None
    named = hashlib.sha256()
    for relative, path in files:
        named.update(relative.encode() + b"\0" + hash_file(path)[0])
    root = base64.b32encode(named.digest()[:20]).decode()

    def store(item) -> str:
        relative, path = item
        folder = "/".join([root, *relative.split("/")[:-1]])
        return remote.upload_file(path, filename_root=folder)[1]

    with concurrent.futures.ThreadPoolExecutor(min(_DIRECTORY_UPLOADS, len(files))) as pool:
        stored = list(pool.map(store, files))
    relative, _ = files[0]
    return stored[0][: -len(relative) - 1]


def _files_in(local: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of the regular files under ``local``, symbolic links left out."""
    found = []
    for root, dirs, names in os.walk(local):
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(root, d)))
        for name in sorted(names):
            path = Path(root, name)
            if not path.is_symlink() and path.is_file():
                found.append((path.relative_to(local).as_posix(), path))
    return found
