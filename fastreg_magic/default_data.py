"""Data in a cell's defaults (its workflows' defaults, its launch plans' default and fixed inputs: a
``FlyteFile``, a directory, an array, a DataFrame), stored on the backend as the cell registers, so that
a run elsewhere can read it (`stored_by_content`), named by its content so that the same cell is the
same version from any kernel. A DataFrame is written by its encoder through flytekit's ``flyte://`` file
system, which `flyte_fs_by_content` replaces for this. `default_signatures` notices when it changed.

A default that looks like credentials (`secret_looking_defaults`: ``~/.ssh/id_rsa``) is stored all the
same, with one line saying so.

``fastreg serialize`` has no backend to store that data on: it keeps it in the release folder instead
(`staged_in`, `keep_staged`), named by content so the release is the same bytes on every machine, and
``register-files`` stores it where the magic would (`store_kept`, `point_at`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import weakref
from pathlib import Path


def stored_by_content(remote):
    """A copy of ``remote``'s flytekit file access for storing data on its backend, with differences
    written here because flytekit has no setting for them:

    - each file a type transformer writes (an array's ``.npy``, a pickle) is named ``data`` in its own
      random folder, where flytekit names the file itself randomly. Through the backend's DataProxy a file
      lands under the md5 of its content and its own name (flytekit/remote/remote_fs.py): with a fixed
      name, the same array is the same object, so an unchanged cell registers the same version in a new
      kernel instead of a new one;
    - a directory keeps its layout and its names (`_store_directory`);
    - a file given by a symbolic link is stored as the file it leads to (flytekit refuses a link: "is a
      symlink, can't upload").
    """
    stored = _STORED_BY_CONTENT.get(remote)
    if stored is None:  # one per backend: building it costs a fraction of a millisecond, each changed cell twice
        file_access = remote.file_access
        stored = _STORED_BY_CONTENT[remote] = _content_named(
            Path(file_access.local_sandbox_dir).parent, file_access.raw_output_prefix, file_access.data_config, remote)
    return stored


_STORED_BY_CONTENT: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _content_named(local_sandbox_dir: Path, raw_output_prefix: str, data_config, remote=None):
    """flytekit's file access with the naming of `stored_by_content`; ``remote`` stores directories."""
    from flytekit.core.data_persistence import FileAccessProvider

    class ContentNamedFiles(FileAccessProvider):
        def get_random_local_path(self, file_path_or_file_name=None) -> str:
            return super().get_random_local_path(file_path_or_file_name or "data")

        async def async_put_data(self, local_path, remote_path: str, is_multipart: bool = False, **kwargs) -> str:
            if remote is not None and is_multipart and str(remote_path).startswith("flyte://"):
                stored = _store_directory(remote, Path(local_path))
                if stored is not None:
                    return stored
            return await super().async_put_data(_unlinked(local_path), remote_path, is_multipart=is_multipart,
                                                **kwargs)

        async def async_put_raw_data(self, lpath, *args, **kwargs) -> str:
            return await super().async_put_raw_data(_unlinked(lpath), *args, **kwargs)

    return ContentNamedFiles(str(local_sandbox_dir), raw_output_prefix, data_config=data_config)


def _unlinked(path):
    """``path``, or the file it leads to when it is a symbolic link to a file."""
    if isinstance(path, (str, os.PathLike)) and os.path.islink(path) and os.path.isfile(path):
        return str(Path(path).resolve())
    return path


# Files of a default directory whose names are read for `secret_looking_defaults` (their contents are not).
_DIRECTORY_NAMES_READ = 10_000


def secret_looking_defaults(entities) -> tuple[str, ...]:
    """One line per local file or directory the cell's defaults name (stored on the backend as it
    registers) that looks like credentials: named as a credentials file is, or holding a secret value
    (`ignore`'s rules, which keep such files out of the code archive). It is stored all the same, as
    ``pyflyte register`` stores it: a default is data the user named on purpose, and a data file may
    look like one by chance; the line says who can read it and what to use for a secret instead."""
    from fastreg_magic.default_signatures import _default_values, named_paths

    lines = []
    for value, declared in _default_values(entities):
        for given in dict.fromkeys(named_paths(value, declared)):
            why = _why_secret_looking(Path(given).expanduser().resolve())
            if why is not None:
                lines.append(f"the default {given} looks like credentials ({why}): registering stores it on the "
                             "backend as data, which anyone who can read this project's data can read; for a secret a "
                             "task needs, use `@task(secret_requests=[Secret(...)])` instead")
    return tuple(lines)


def _why_secret_looking(path: Path) -> str | None:
    from fastreg_magic.ignore import file_holds_credentials, is_secret_name

    if path.is_dir():
        if is_secret_name(path.as_posix().lstrip("/") + "/"):
            return "by its name"
        read = 0
        for folder, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                if is_secret_name(Path(folder, name).as_posix().lstrip("/")):
                    return f"{Path(folder, name).relative_to(path).as_posix()} in it, by its name"
                read += 1
            if read >= _DIRECTORY_NAMES_READ:
                break
        return None
    if is_secret_name(path.as_posix().lstrip("/")):
        return "by its name"
    return "it holds a key or a token" if file_holds_credentials(path) else None


def flyte_fs_by_content(remote):
    """flytekit's ``flyte://`` file system for ``remote`` (``get_flyte_fs``), whose written files are
    stored by content: what a DataFrame default is written through.

    flytekit's StructuredDataset encoders (pandas, pyarrow, polars) write a frame as the file
    ``<raw output prefix>/<random>/00000``; through ``flyte://`` that is an ``HttpFileWriter``
    (flytekit/remote/remote_fs.py), which asks the DataProxy for a location with no content digest, so
    the backend names it randomly: the same frame would be a new object, and the cell a new version, in
    every kernel. Here the file is written to a local folder, which is then stored as a default
    directory is (`_store_directory`): the literal names a folder named by its files' names and
    contents, the same folder ``fastreg register-files`` stores a serialized release's frame in. A parquet
    file pandas or pyarrow writes is the same bytes for the same frame with the same library versions.
    """
    import tempfile

    import fsspec.spec
    from flytekit.remote.remote_fs import FlytePathResolver, get_flyte_fs

    class WrittenByContent(fsspec.spec.AbstractBufferedFile):
        """A file written under a ``flyte://`` folder, the one the literal names: written to a local
        file as it comes, then its folder is stored by content and flytekit told where
        (``FlytePathResolver``, as its ``HttpFileWriter`` does), so the literal names the stored folder.

        Each stock encoder writes one file per frame. Should one write several into a folder, the folder
        stored holds the last alone, as flytekit's own writer maps the folder to its last file."""

        def __init__(self, path: str, **kwargs):
            folder, name = path.rstrip("/").rsplit("/", 1)
            super().__init__(path=folder, **kwargs)
            self._staged = Path(tempfile.mkdtemp(prefix="fastreg-frame-"))
            self._local = open(self._staged / name, "wb")  # noqa: SIM115 - closed by the final chunk or discard

        def _initiate_upload(self) -> None:
            pass

        def _upload_chunk(self, final: bool = False) -> bool:
            self._local.write(self.buffer.getvalue())
            if final:
                try:
                    self._local.close()
                    FlytePathResolver.add_mapping(self.path, _store_directory(remote, self._staged))
                finally:
                    shutil.rmtree(self._staged, ignore_errors=True)
            return True

        def discard(self) -> None:
            self._local.close()
            shutil.rmtree(self._staged, ignore_errors=True)

    class FlyteFSByContent(get_flyte_fs(remote)):
        def _open(self, path, mode="wb", block_size=None, autocommit=None, cache_type=None, cache_options=None,
                  size=None, **kwargs):
            if mode != "wb":
                raise ValueError("Only wb mode is supported")  # as flytekit's: flyte:// is written, never read
            return WrittenByContent(path, fs=self, mode=mode, block_size=block_size, cache_type=cache_type,
                                    cache_options=cache_options, size=size, **kwargs)

    return FlyteFSByContent


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


# ---------------------------------------------------------------- data kept in a serialized release
#
# A literal of a serialized release names its data by a path relative to the release folder,
# `data/<sha256>/<name>` for a file and `data/<sha256>` for a directory, which the manifest lists:
# no temporary path of the machine that serialized, so another machine (CI) can store it.

DATA_FOLDER = "data"
_DATA_MESSAGES = ("flyteidl.core.Blob", "flyteidl.core.StructuredDataset")  # the literals that name data


@contextlib.contextmanager
def staged_in(folder: Path):
    """flytekit's context in which data converted to a literal (a default file, an array, a DataFrame) is
    written under ``folder``, named as `stored_by_content` names it; yields where it lands."""
    from flytekit.core.context_manager import FlyteContextManager

    local, raw = Path(folder) / "local", Path(folder) / "raw"
    local.mkdir(parents=True, exist_ok=True)
    raw.mkdir(parents=True, exist_ok=True)
    context = FlyteContextManager.current_context().new_builder().with_file_access(
        _content_named(local, str(raw), None))
    with FlyteContextManager.with_context(context):
        yield raw


def keep_staged(specs, raw: Path, release: Path) -> tuple[tuple, dict]:
    """``specs`` whose literals naming data under ``raw`` name a copy of it in ``release`` instead, by
    its relative path; and those paths, each with its kind and sha256, for the manifest."""
    raw = Path(raw).resolve()
    entries = {}

    def kept(uri: str) -> str | None:
        local = _under(uri, raw)
        if local is None:
            return None
        relative, entry = _keep(local, Path(release))
        entries[relative] = entry
        return relative

    return _with_data_uris(specs, kept), dict(sorted(entries.items()))


def _with_data_uris(specs, new_uri) -> tuple:
    """``specs`` (copies) whose data literals' URIs are ``new_uri(uri)``, where that is not None."""
    changed = []
    for spec in specs:
        proto = type(spec.proto)()
        proto.CopyFrom(spec.proto)
        for message in data_literals(proto):
            uri = new_uri(message.uri)
            if uri is not None:
                message.uri = uri
        changed.append(dataclasses.replace(spec, proto=proto))
    return tuple(changed)


def data_literals(message):
    """Every Blob and StructuredDataset message in ``message``, however deep (defaults, fixed inputs)."""
    if message.DESCRIPTOR.full_name in _DATA_MESSAGES:
        yield message
        return
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].type == field.TYPE_MESSAGE:
                for item in value.values():
                    yield from data_literals(item)
        elif _is_repeated(field):
            for item in value:
                yield from data_literals(item)
        else:
            yield from data_literals(value)


def _is_repeated(field) -> bool:
    # protobuf 6 deprecates FieldDescriptor.label (and 7 drops it) in favour of is_repeated.
    flag = getattr(field, "is_repeated", None)
    return flag if flag is not None else field.label == field.LABEL_REPEATED


def _under(uri: str, raw: Path) -> Path | None:
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    if not path or "://" in path:
        return None
    path = Path(path).resolve()
    return path if path.is_relative_to(raw) and path.exists() else None


def _keep(local: Path, release: Path) -> tuple[str, dict]:
    """Copy ``local`` into ``release``'s data folder; its relative path, and its manifest entry."""
    kind = "directory" if local.is_dir() else "file"
    digest = content_sha256(local, kind)
    relative = f"{DATA_FOLDER}/{digest}" if kind == "directory" else f"{DATA_FOLDER}/{digest}/{local.name}"
    target = release / relative
    if kind == "directory":
        for inner, path in _files_in(local):
            (target / inner).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / inner)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)
    return relative, {"kind": kind, "sha256": digest}


def content_sha256(path: Path, kind: str) -> str:
    """A file's sha256; a directory's, over its files' relative paths and sha256s."""
    import hashlib

    from fastreg_magic.hashing import file_digest

    if kind == "file":
        return file_digest(path, "sha256").hexdigest()
    digest = hashlib.sha256()
    for relative, inner in _files_in(path):
        digest.update(f"{relative}\0{file_digest(inner, 'sha256').hexdigest()}\n".encode())
    return digest.hexdigest()


def store_kept(remote, release: Path, entries: dict) -> dict[str, str]:
    """Store a release's kept data on ``remote``'s backend as the magic stores a default's data (so a
    file lands where the magic's would, and the same cell has the same structure from both); returns
    each relative path's URI there. Raises ``RegistrationError`` naming the file that could not be stored."""
    from urllib.parse import unquote

    from flytekit.core.context_manager import FlyteContextManager
    from flytekit.utils.asyn import loop_manager

    from fastreg_magic.errors import RegistrationError
    from fastreg_magic.pipeline import _data_stored_by

    stored = {}
    with _data_stored_by(remote):
        file_access = FlyteContextManager.current_context().file_access
        for relative, entry in entries.items():
            local = Path(release) / relative
            try:
                if entry["kind"] == "directory":  # `put_data` would skip ContentNamedFiles' own async_put_data
                    uri = loop_manager.run_sync(file_access.async_put_data, str(local),
                                                file_access.get_random_remote_directory(), is_multipart=True)
                else:
                    uri = unquote(str(file_access.put_raw_data(str(local))))
            except Exception as err:  # noqa: BLE001 - any failure to store is this file's, said in one line
                reason = " ".join(str(err).split()) or type(err).__name__
                raise RegistrationError(
                    f"cannot store the data {local} on the backend ({reason}); nothing was registered.",
                    "Check the connection to the backend and its storage, then re-run `fastreg register-files`.",
                ) from err
            stored[relative] = uri
    return stored


def point_at(specs, stored: dict[str, str]) -> tuple:
    """``specs`` whose literals naming kept data (a relative path in ``stored``) name where it was stored."""
    return _with_data_uris(specs, stored.get)


def forget_flytekit_conversions() -> None:
    """Forget what flytekit remembers of local data for the life of the process, so that a file edited
    since the kernel last stored it (a default, a launch input) is stored anew: ``TypeEngine.to_literal`` caches each
    literal by the pickled value (a ``FlyteFile``'s path, not its content: flytekit/core/type_engine.py
    ``_LITERAL_CACHE``), and the uploader names a file after its md5, cached by path (``hash_file``'s
    ``lru_cache``, flytekit/tools/script_mode.py)."""
    from flytekit.core.type_engine import TypeEngine
    from flytekit.tools.script_mode import hash_file

    literals = getattr(TypeEngine, "_LITERAL_CACHE", None)
    if literals is not None:
        literals.clear()
    hash_file.cache_clear()
