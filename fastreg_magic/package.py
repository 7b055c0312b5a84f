"""Files -> a reproducible .tar.gz named after its content digest.

    files = files_to_ship(module, root)
    digest_files(files)                  # "3f9c...": cheap, no archive built
    archive = build_archive(files)       # Archive(path=~/.cache/fastreg/archives/fastreg-3f9c....tar.gz, ...)

The digest is a sha256 over the sorted (relative path, executable bit, content) triples, so
the same code gives the same digest on any machine, under any path, at any time, whatever
the compressor. The archive is deterministic too: sorted members, mtime 0, uid/gid 0, no
user or group names, mode 0o644 (0o755 for executables).

Speed. Each file's tar entry (header, content, padding) is compressed on its own as one
gzip member and cached under the hash of (path, mode, content); an archive is those
members concatenated, plus one member holding the end-of-archive blocks. A multi-member
gzip file is a valid .tar.gz (RFC 1952 section 2.2): ``tar -xzf``, ``pyflyte-fast-execute``
(which runs ``tar -xvf``) and ``tarfile.open(path)`` read it. (Only ``tarfile``'s *stream*
mode, ``"r|gz"``, stops after the first member.) So a cold build compresses in parallel
threads (zlib releases the GIL), reading each small file once for both hashing and compressing
(a file over 1 MiB is hashed, then compressed, a chunk at a time: never held whole), and a
re-build after one edit compresses one file and copies the rest. Files whose sizes alone could
never fit the limit are refused from their stat, before any is read. What is remembered
between builds, and for how long, is ``package_cache``'s business.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from fastreg_magic import package_cache as cache
from fastreg_magic.collect import LARGE_FILE_BYTES, FileSet, ShippedFile
from fastreg_magic.errors import PackageError
from fastreg_magic.package_cache import forget

MAX_ARCHIVE_BYTES = 100 * 1024 * 1024  # default limit, configurable per call
# zlib level 4: on a 40 MB source tree about 4x faster than gzip's default 6 for an archive
# about 5% larger (measured with benchmarks/bench_package.py's tree). Changing it changes the
# archive's bytes, not its digest.
COMPRESS_LEVEL = 4
ARCHIVE_PREFIX = "fastreg-"
ARCHIVE_SUFFIX = ".tar.gz"
_FORMAT = b"fastreg-archive-v1\0"  # bump when the digest's meaning changes
_BLOCK = 512  # tar's block size
# A file up to this size is read in one go and kept to compress in the same pass; a bigger one is
# hashed this much at a time and compressed later, so no big file is ever held whole for hashing.
_CHUNK = 1024 * 1024
_WORKERS = min(32, (os.cpu_count() or 1) + 1)
__all__ = ["Archive", "LARGE_FILE_BYTES", "MAX_ARCHIVE_BYTES", "build_archive", "digest_files", "forget", "measure", "Measured"]


@dataclass(frozen=True)
class Archive:
    path: Path  # the .tar.gz on local disk, in a cache dir, named after its digest
    digest: str  # hex sha256 over sorted (relpath, content) pairs
    size: int  # bytes of the .tar.gz
    members: tuple[str, ...]  # member names, sorted


@dataclass(frozen=True)
class _Content:
    """What the digest needs to know about one file."""

    relpath: str
    sha256: bytes
    size: int
    executable: bool
    entry_key: str  # names its cached compressed tar entry


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("fastreg")) / "archives"


def digest_files(files: FileSet, *, cache_dir: Path | None = None, max_bytes: int | None = None) -> str:
    """The archive's digest, without building it: hashes only files changed since last asked
    (by this process, or by an earlier one using the same cache dir)."""
    return measure(files, cache_dir=cache_dir, max_bytes=max_bytes).digest


def read_archive(path: Path) -> tuple[str, tuple[str, ...]]:
    """The digest of what an archive holds, as :func:`measure` computes it for the files it was built
    from (so an archive can be checked against the digest, and version, recorded when it was built),
    and its file members, in one read."""
    contents = []
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                data = tar.extractfile(member).read()
                contents.append(_content(member.name, hashlib.sha256(data).digest(), len(data),
                                         bool(member.mode & 0o111)))
    return _digest(sorted(contents, key=lambda c: c.relpath)), tuple(c.relpath for c in contents)


@dataclass(frozen=True)
class Measured:
    """What :func:`measure` found: the digest, the bytes before compression, and per file what the
    digest was made of (so :func:`build_archive` packs exactly that content)."""

    digest: str
    raw_size: int
    contents: tuple[_Content, ...] = field(repr=False)
    vanished: tuple[str, ...] = ()  # files removed since they were listed: not in the digest, not shipped


def measure(files: FileSet, *, cache_dir: Path | None = None, max_bytes: int | None = None) -> Measured:
    """Digest and size of the files, hashing only those changed since last measured.

    Files whose sizes alone could never fit an archive of ``max_bytes`` (default
    ``MAX_ARCHIVE_BYTES``) are refused before any of them is read.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.load_hash_index(cache_dir)
    contents, vanished = _contents(files.files, MAX_ARCHIVE_BYTES if max_bytes is None else max_bytes)
    cache.save_hash_index(cache_dir)
    return Measured(_digest(contents), sum(c.size for c in contents), tuple(contents), vanished)


def build_archive(files: FileSet, *, cache_dir: Path | None = None, max_bytes: int = MAX_ARCHIVE_BYTES,
                  measured: Measured | None = None) -> Archive:
    """The .tar.gz of ``files`` in ``cache_dir``, built once per digest and reused after.

    ``measured``: :func:`measure` of these files, taken earlier; the archive then holds exactly the
    content that digest names (a file changed since is refused, not silently packed).
    """
    if not files.files:
        raise PackageError(
            "There is nothing to package: no file is left to ship.",
            "Check --source-root, --copy and your ignore files (.gitignore, .flyteignore, .dockerignore).",
        )
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.load_hash_index(cache_dir)
    entries_dir = cache_dir / "entries"
    if measured is not None and _measured_these(measured, files):
        contents = list(measured.contents)
    else:
        # Files read for hashing are compressed in the same pass when their entry is not cached.
        contents, _ = _contents(files.files, max_bytes, entries_dir)
        cache.save_hash_index(cache_dir)
    digest = _digest(contents)
    members = tuple(c.relpath for c in contents)
    path = cache_dir / f"{ARCHIVE_PREFIX}{digest}{ARCHIVE_SUFFIX}"
    existing = _size_of(path)
    if existing is not None and existing <= max_bytes:
        return Archive(path=path, digest=digest, size=existing, members=members)
    _refuse_hopeless(sum(c.size for c in contents), max_bytes, lambda: [(c.relpath, c.size) for c in contents])
    try:
        entries, written = _entries(entries_dir, files.files, contents, max_bytes)
    except _EntryOverLimit as exc:
        raise _too_large_compressed(exc.relpath, max_bytes, [(c.relpath, c.size) for c in contents]) from None
    total = sum(len(e) for e in entries) + len(_END_MEMBER)
    if total > max_bytes:
        raise _too_large(total, max_bytes, [(c.relpath, len(e)) for c, e in zip(contents, entries)], "compressed")
    cache.write_atomically(path, b"".join(entries) + _END_MEMBER)
    cache.prune(cache_dir, f"{ARCHIVE_PREFIX}*{ARCHIVE_SUFFIX}", entries_dir, written)
    return Archive(path=path, digest=digest, size=total, members=members)


def _measured_these(measured: Measured, files: FileSet) -> bool:
    listed = sorted(f.relpath for f in files.files if f.relpath not in measured.vanished)
    return [c.relpath for c in measured.contents] == listed


# --- hashing -------------------------------------------------------------------------------


class _Vanished(Exception):
    """A listed file that no longer exists (an editor's or SQLite's temporary file)."""


def _contents(files: Iterable[ShippedFile], max_bytes: int,
              entries_dir: Path | None = None) -> tuple[list[_Content], tuple[str, ...]]:
    """What the digest is made of, and the files that were removed since they were listed: those are
    not shipped, as if they had not been there (a folder in use has files that come and go)."""
    ordered = sorted(files, key=lambda f: f.relpath)
    _check_paths(ordered)
    stats = [_stat(f) for f in ordered]
    # A 5 GB file must be refused from its size, not after reading it (a file larger than memory
    # would take the kernel down).
    listed = sum(st.st_size for st in stats if st is not None) + sum(len(f.data) for f in ordered if f.data is not None)
    _refuse_hopeless(listed, max_bytes, lambda: [(f.relpath, _listed_size(f, st)) for f, st in zip(ordered, stats)])
    # Files whose hash is remembered cost the stat just taken: do those here, read the rest in threads.
    found = [_known_content(f, st) for f, st in zip(ordered, stats)]
    missing = [i for i, c in enumerate(found) if c is None]
    made = _in_threads(lambda f: _content_or_vanished(f, entries_dir), [ordered[i] for i in missing])
    for i, content in zip(missing, made):
        found[i] = content
    vanished = tuple(f.relpath for f, c in zip(ordered, found) if c is None)
    return [c for c in found if c is not None], vanished


def _content_or_vanished(file: ShippedFile, entries_dir: Path | None) -> _Content | None:
    try:
        return _content_of(file, entries_dir)
    except _Vanished:
        return None


def _in_threads(fn, items: list) -> list:
    """``map`` on a thread pool (zlib and hashlib release the GIL); inline for a couple of
    items, where starting threads costs more than it saves."""
    if len(items) <= 2:
        return [fn(item) for item in items]
    return list(_pool().map(fn, items))


_POOL = None
_POOL_LOCK = threading.Lock()


def _pool():
    """One pool for the process: a kernel packages on every cell, and starting threads each time costs more
    than hashing a few changed files."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(_WORKERS, thread_name_prefix="fastreg-package")
        return _POOL


def _check_paths(ordered: list[ShippedFile]) -> None:
    for a, b in zip(ordered, ordered[1:]):
        if a.relpath == b.relpath:
            raise PackageError(f"{a.relpath} is listed twice in the file set.", "Ship each path once.")
    for file in ordered:
        if any(part in ("", ".", "..") for part in file.relpath.split("/")):  # "" catches "/abs", "a//b"
            raise PackageError(
                f"{file.relpath!r} is not a plain relative path inside the archive.",
                "Use posix paths relative to the source root, without '..'.",
            )


def _stat(file: ShippedFile) -> os.stat_result | None:
    """The file's stat, or None for data in memory and for a file that cannot be stat'ed (reported
    when it is read)."""
    if file.data is None and file.path is not None:
        try:
            return os.stat(file.path)
        except OSError:
            pass
    return None


def _listed_size(file: ShippedFile, st: os.stat_result | None) -> int:
    if file.data is not None:
        return len(file.data)
    return st.st_size if st is not None else 0


def _known_content(file: ShippedFile, st: os.stat_result | None) -> _Content | None:
    if st is None:
        return None
    sha = cache.known_hash(str(file.path), st)
    return None if sha is None else _content(file.relpath, sha, st.st_size, bool(st.st_mode & 0o100))


def _content_of(file: ShippedFile, entries_dir: Path | None = None) -> _Content:
    """Hash one file (reading it); with ``entries_dir``, also compress its entry if not cached."""
    if file.data is not None:
        data, st = file.data, None
        sha, size = hashlib.sha256(data).digest(), len(data)
    elif file.path is not None:
        sha, size, data, st = _read_for_hash(file)
    else:
        raise PackageError(f"{file.relpath} has neither a path nor data.", "Give every ShippedFile one of them.")
    executable = st is not None and bool(st.st_mode & 0o100)
    content = _content(file.relpath, sha, size, executable)
    if st is not None:
        # The stat taken before reading: if the file changed since, the next look sees it.
        cache.remember_hash(str(file.path), st, content.sha256)
    # A big file's content was not kept: its entry is compressed when the archive is built.
    if entries_dir is not None and data is not None and cache.remembered_entry(content.entry_key) is None:
        _store_entry(entries_dir, content, data)
    return content


def _read_for_hash(file: ShippedFile) -> tuple[bytes, int, bytes | None, os.stat_result]:
    """(sha256, size, the content if the file is small, the stat taken before reading)."""
    try:
        st = os.stat(file.path)
        with open(file.path, "rb") as handle:
            return (*_hash_stream(handle, st.st_size), st)
    except FileNotFoundError as exc:
        if not os.path.islink(file.path):  # a link to nothing is the user's to fix
            raise _Vanished(file.relpath) from exc
        raise _unreadable(file, exc) from exc
    except OSError as exc:
        raise _unreadable(file, exc) from exc


def _hash_stream(handle, expected_size: int) -> tuple[bytes, int, bytes | None]:
    """Hash an open file: a small one in one read (kept, to compress in the same pass), a big one
    ``_CHUNK`` at a time (not kept). Reading one byte past the expected size notices a file that
    grew since its stat."""
    whole = min(expected_size, _CHUNK)
    first = handle.read(whole + 1)
    if len(first) <= whole:
        return hashlib.sha256(first).digest(), len(first), first
    hasher, size = hashlib.sha256(first), len(first)
    while chunk := handle.read(_CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    return hasher.digest(), size, None


def _content(relpath: str, sha: bytes, size: int, executable: bool) -> _Content:
    mode = 0o755 if executable else 0o644
    key = hashlib.sha256(_FORMAT + _name_bytes(relpath) + f"\0{mode:o}\0{COMPRESS_LEVEL}\0".encode() + sha).hexdigest()
    return _Content(relpath, sha, size, executable, key)


def _name_bytes(relpath: str) -> bytes:
    """A path's bytes as the file system has them: a name that is not valid UTF-8 (``caf\\xe9.txt``
    from a Latin-1 system) comes out of ``os.scandir`` with surrogates, which go back to the same
    bytes here and in the tar header (both use surrogateescape), so digest and archive agree."""
    return relpath.encode("utf-8", "surrogateescape")


def _digest(contents: list[_Content]) -> str:
    hasher = hashlib.sha256(_FORMAT)
    for c in contents:
        hasher.update(_name_bytes(c.relpath) + f"\0{'x' if c.executable else '-'}\0".encode())
        hasher.update(c.sha256)
    return hasher.hexdigest()


# --- entries -------------------------------------------------------------------------------


def _entries(entries_dir: Path, files: tuple[ShippedFile, ...], contents: list[_Content],
             max_bytes: int) -> tuple[list[bytes], int]:
    """Each file's compressed tar entry: from memory, from the disk cache, or compressed now (in
    threads); and how many were not in memory."""
    found = [cache.remembered_entry(c.entry_key) for c in contents]
    not_in_memory = [i for i, e in enumerate(found) if e is None]
    for i in not_in_memory:  # small reads from the page cache: faster here than through threads
        found[i] = cache.entry_from_disk(entries_dir, contents[i].entry_key)
    to_compress = [i for i in not_in_memory if found[i] is None]
    by_relpath = {f.relpath: f for f in files}
    made = _in_threads(lambda c: _fresh_entry(entries_dir, by_relpath[c.relpath], c, max_bytes), [contents[i] for i in to_compress])
    for i, entry in zip(to_compress, made):
        found[i] = entry
    return found, len(not_in_memory)


def _fresh_entry(entries_dir: Path, file: ShippedFile, content: _Content, max_bytes: int) -> bytes:
    """Compress an entry whose file was hashed earlier (its hash remembered): read it again,
    and make sure it is still the content the digest names."""
    if file.data is not None:
        data = file.data
    elif content.size > _CHUNK:
        return _streamed_entry(entries_dir, file, content, max_bytes)
    else:
        try:
            data = Path(file.path).read_bytes()
        except FileNotFoundError as exc:  # hashed a moment ago, so it is in the version: it cannot just go
            raise PackageError(f"{file.relpath} was removed while it was being packaged.",
                               "Run again; nothing was registered.") from exc
        except OSError as exc:
            raise _unreadable(file, exc) from exc
    if hashlib.sha256(data).digest() != content.sha256:
        raise PackageError(f"{file.relpath} changed while it was being packaged.", "Run again once the file stops changing.")
    return _store_entry(entries_dir, content, data)


class _EntryOverLimit(Exception):
    """One file's compressed entry alone passed the archive's limit."""

    def __init__(self, relpath: str):
        super().__init__(relpath)
        self.relpath = relpath


def _streamed_entry(entries_dir: Path, file: ShippedFile, content: _Content, max_bytes: int) -> bytes:
    """A big file's entry, compressed as it is read a chunk at a time (never held whole), given up
    as soon as it alone passes ``max_bytes``; checked against the content the digest names."""
    compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 31)
    parts = [compressor.compress(_tar_header(content, content.size))]
    hasher, size, compressed = hashlib.sha256(), 0, len(parts[0])
    try:
        with open(file.path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
                parts.append(compressor.compress(chunk))
                compressed += len(parts[-1])
                if compressed > max_bytes:
                    raise _EntryOverLimit(file.relpath)
    except FileNotFoundError as exc:
        raise PackageError(f"{file.relpath} was removed while it was being packaged.",
                           "Run again; nothing was registered.") from exc
    except OSError as exc:
        raise _unreadable(file, exc) from exc
    if size != content.size or hasher.digest() != content.sha256:
        raise PackageError(f"{file.relpath} changed while it was being packaged.", "Run again once the file stops changing.")
    parts.append(compressor.compress(b"\0" * ((-size) % _BLOCK)))
    parts.append(compressor.flush())
    entry = b"".join(parts)
    cache.write_atomically(cache.entry_path(entries_dir, content.entry_key), entry)
    cache.remember_entry(content.entry_key, entry)
    return entry


def _store_entry(entries_dir: Path, content: _Content, data: bytes) -> bytes:
    """One file's compressed entry into both caches (compressed unless the disk has it)."""
    entry = cache.entry_from_disk(entries_dir, content.entry_key)
    if entry is None:
        entry = _gzip_member(_tar_entry(content, data))
        cache.write_atomically(cache.entry_path(entries_dir, content.entry_key), entry)
        cache.remember_entry(content.entry_key, entry)
    return entry


def _tar_entry(content: _Content, data: bytes) -> bytes:
    padding = (-len(data)) % _BLOCK
    return b"".join((_tar_header(content, len(data)), data, b"\0" * padding))


def _tar_header(content: _Content, size: int) -> bytes:
    info = tarfile.TarInfo(content.relpath)
    info.size = size
    info.mode = 0o755 if content.executable else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _gzip_member(raw: bytes) -> bytes:
    # wbits=31: a gzip wrapper with mtime 0 and no file name, so equal input gives equal bytes.
    compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(raw) + compressor.flush()


_END_MEMBER = _gzip_member(b"\0" * (2 * _BLOCK))  # tar's end-of-archive marker


# --- limits and errors ---------------------------------------------------------------------


def _too_large_compressed(relpath: str, max_bytes: int, sizes: list[tuple[str, int]]) -> PackageError:
    """Said when one big file, compressed as it was read, passed the limit on its own (compressing
    the rest of it would only tell by how much)."""
    return _over_limit(f"The archive would be over the {_mib(max_bytes)} limit: {relpath} alone compresses to more.",
                       sizes)


def _refuse_hopeless(total: int, max_bytes: int, sizes: Callable[[], list[tuple[str, int]]]) -> None:
    """Refuse before reading or compressing gigabytes: code does not compress 20-fold.

    The compressed size cannot be known without compressing. Deflate can shrink a file of zeros
    about 1000-fold, so this is a judgement, not a proof: source code and real data compress 2- to
    10-fold, and anything more than 20 times the limit is data that belongs outside the code
    archive. The same rule runs on the files' sizes before any is read and on what was read.
    """
    if total > 20 * max_bytes:
        raise _too_large(total, max_bytes, sizes(), "uncompressed")


def _too_large(total: int, max_bytes: int, sizes: list[tuple[str, int]], kind: str) -> PackageError:
    return _over_limit(f"The archive would be {_mib(total)} ({kind}), over the {_mib(max_bytes)} limit.", sizes)


def _over_limit(what: str, sizes: list[tuple[str, int]]) -> PackageError:
    return PackageError(
        f"{what} {_largest(sizes, sum(size for _, size in sizes))}.",
        "Leave data out of the code archive (.flyteignore, or --copy auto), or raise the limit: "
        "`%config FlyteFast.max_archive_mib = N` in the notebook, `fastreg serialize --max-archive-mib N`, "
        "or fast_register(max_archive_bytes=...).",
    )


_SHOWN_LARGEST = 5


def _largest(sizes: list[tuple[str, int]], total: int) -> str:
    """The few files that make up most of the size, biggest first: the ones worth leaving out.
    A file that would show as 0.0 MiB is never one of them; when no file stands out, say so."""
    largest = []
    for relpath, size in sorted(sizes, key=lambda item: (-item[1], item[0]))[:_SHOWN_LARGEST]:
        if _mib(size) == _mib(0) or sum(s for _, s in largest) >= 0.9 * total:
            break
        largest.append((relpath, size))
    if not largest:
        return f"It is {len(sizes):,} files, each under 0.1 MiB"
    return "Largest: " + ", ".join(f"{relpath} ({_mib(size)})" for relpath, size in largest)


def _unreadable(file: ShippedFile, exc: OSError) -> PackageError:
    return PackageError(f"{file.relpath} cannot be read: {exc.strerror or exc}.", f"Check {file.path} exists and is readable.")


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def _size_of(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
