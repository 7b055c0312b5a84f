"""Refuse code archives that would write outside the task's directory, before the task runs.

``pyflyte-fast-execute`` unpacks the ``--additional-distribution`` archive with the system
``tar`` into ``--dest-dir``. GNU tar already drops ``..`` members and leading ``/``, but it
will happily create a symlink that points anywhere, and other tar implementations differ; the
sandbox runs user archives on the user's own machine, so it checks every member itself first:
no absolute names, no ``..``, no links (symbolic or hard) that lead outside the destination,
no member written through a link, and no device or FIFO members.

The verdict is cached per archive (path, size, modification time) so a workflow with many
tasks reads each archive once. An archive that is not a local file (``s3://...``) is first
fetched with fsspec into the execution's directory; the task is then pointed at that checked
copy, so what runs is exactly what was inspected. Tasks that start together ask for the same
archive at the same moment: the first fetches it, the others wait for that fetch and use its copy
(a lock per archive; every task is prepared by a thread of the one sandbox process that holds the
data dir). Each fetch writes its own temporary file and renames it into place, so a copy that is
there is always whole, even if something else fetched beside it.

An archive that is not there (deleted from a ``file://`` distribution dir, from the sandbox's
own uploads, or from a bucket) fails the task with one line saying to re-run the cell, which
stores it again, instead of flytekit's page-long "task execution code was not found".
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

# Distributions flytekit unpacks with tar; anything else (a pickled interactive task) is not an archive.
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class ArchiveGuard:
    """Checks distribution archives; ``problem(path)`` is None when the archive is safe to unpack."""

    def __init__(self):
        self._lock = threading.Lock()
        self._verdicts: dict[tuple, str | None] = {}
        self._fetching: dict[Path, tuple[threading.Lock, int]] = {}  # copy -> (its lock, threads using it)

    def prepare(self, archive: str, cache_dir: Path) -> tuple[str, str | None]:
        """The distribution to hand the task (a local copy for remote URIs) and the problem, if any."""
        if not archive.endswith(ARCHIVE_SUFFIXES):
            return archive, None
        if "://" not in archive or archive.startswith("file://"):
            return archive, self.problem(archive)
        target = cache_dir / hashlib.sha256(archive.encode()).hexdigest()[:16] / archive.rsplit("/", 1)[-1]
        problem = self._fetch_once(archive, target)
        if problem:
            return archive, problem
        return str(target), self.problem(str(target))

    def _fetch_once(self, archive: str, target: Path) -> str | None:
        """Fetch ``archive`` to ``target`` unless it is there already; None once the copy is in place."""
        with self._one_at_a_time(target):
            if target.exists():
                return None
            try:
                _fetch(archive, target)
            except ArchiveMissing:
                return missing_archive(archive)
            except Exception as exc:  # any fsspec backend error: unreachable, no credentials
                return (
                    f"The code archive {archive} could not be fetched to check it before the task ran: "
                    f"{type(exc).__name__}: {exc}. The sandbox reads it with its own environment's settings, "
                    "flytekit's way (FLYTE_AWS_ENDPOINT, FLYTE_AWS_ACCESS_KEY_ID, FLYTE_AWS_SECRET_ACCESS_KEY, or "
                    "AWS_* and AWS_ENDPOINT_URL): start `fastreg sandbox` with them set."
                )
        return None

    @contextmanager
    def _one_at_a_time(self, target: Path) -> Iterator[None]:
        """Hold the lock of ``target``'s copy; the lock is forgotten once no thread uses it, so a
        long-lived sandbox keeps none for the archives of runs that are over."""
        with self._lock:
            lock, users = self._fetching.get(target, (threading.Lock(), 0))
            self._fetching[target] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, users = self._fetching[target]
                if users == 1:
                    del self._fetching[target]
                else:
                    self._fetching[target] = (lock, users - 1)

    def problem(self, archive: str) -> str | None:
        path = Path(local_path(archive))
        if not path.name.endswith(ARCHIVE_SUFFIXES):
            return None
        try:
            stat = path.stat()
        except FileNotFoundError:
            return missing_archive(archive)
        except OSError:
            # not readable from here: flytekit's own download will report it inside the task
            return None
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._verdicts:
                return self._verdicts[key]
        verdict = _inspect(path)
        with self._lock:
            self._verdicts[key] = verdict
        return verdict


def missing_archive(archive: str) -> str:
    """The task's error when its code archive is not where it was registered. Re-running the cell is
    enough: the kernel then finds the archive gone (it looks on this machine's disk each time, and in
    a remote store once a run failed this way) and uploads it again under the same name."""
    return (f"The code archive {archive} does not exist (any more): it was deleted from where it was stored; "
            "re-run the %%flyte_fast cell, which uploads it again, then launch again.")


class ArchiveMissing(Exception):
    """The store answered that the archive is not there (as opposed to not answering at all)."""


def _fetch(uri: str, target: Path) -> None:
    """Copy ``uri`` to ``target`` with the storage settings flytekit's own download in the task would
    use (``FLYTE_AWS_*``, ``FLYTE_GCP_*``, ``FLYTE_AZURE_*`` from the environment).

    The bytes go to a temporary file of this fetch alone, renamed onto ``target`` once complete, so
    ``target`` never holds part of an archive; a fetch that fails leaves nothing behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as sink:
            _copy(uri, sink)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _copy(uri: str, sink: BinaryIO) -> None:
    import fsspec.core  # only for remote distributions
    import fsspec.utils
    from flytekit.configuration import DataConfig
    from flytekit.core.data_persistence import get_fsspec_storage_options

    options = get_fsspec_storage_options(fsspec.utils.get_protocol(uri), DataConfig.auto())
    options["skip_instance_cache"] = True  # settings or endpoints changed since the last fetch count
    store, path = fsspec.core.url_to_fs(uri, **options)
    try:
        source = store.open(path, "rb")
    except FileNotFoundError as exc:  # only the store's answer; a local write failing is something else
        raise ArchiveMissing(uri) from exc
    with source:
        while chunk := source.read(1 << 20):
            sink.write(chunk)


def local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _inspect(path: Path) -> str | None:
    try:
        with tarfile.open(path, "r:*") as archive:
            members = archive.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        return f"The code archive {path} cannot be read as a tar archive ({exc})."
    links: set[str] = set()
    for member in members:
        reason = _member_problem(member, links)
        if reason:
            return (
                f"The code archive {path} was refused: member {member.name!r} {reason}. "
                "Nothing was unpacked and the task was not run; rebuild the archive from the project directory."
            )
        if member.issym() or member.islnk():
            links.add(_normalized(member.name))
    return None


def _normalized(name: str) -> str:
    normalized = posixpath.normpath(name)
    return "" if normalized == "." else normalized


def _member_problem(member: tarfile.TarInfo, links: set[str]) -> str | None:
    name = member.name
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        return "has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "contains '..'"
    if member.ischr() or member.isblk() or member.isfifo():
        return "is a device or FIFO"
    parts = PurePosixPath(_normalized(name)).parts
    for depth in range(1, len(parts)):
        if "/".join(parts[:depth]) in links:
            return f"would be written through the link {'/'.join(parts[:depth])!r}"
    if member.issym():
        target = posixpath.join(posixpath.dirname(_normalized(name)), member.linkname)
        if member.linkname.startswith("/") or _escapes(target):
            return f"is a symlink to {member.linkname!r}, outside the task's directory"
    if member.islnk():
        if member.linkname.startswith("/") or _escapes(member.linkname):
            return f"is a hard link to {member.linkname!r}, outside the task's directory"
    return None


def _escapes(relative: str) -> bool:
    normalized = posixpath.normpath(relative)
    return normalized == ".." or normalized.startswith("../") or normalized.startswith("/")
