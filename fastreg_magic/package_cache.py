"""What packaging remembers between builds, so an unchanged file costs a stat and no compression.

    file hashes    path -> (size, mtime, inode, ctime, sha256), as git's index does; in memory,
                   and in ``<cache dir>/file-hashes.json`` for the next process (the CLI
                   starts cold every time). A file changed in the last two seconds is never
                   remembered (git's "racy clean" rule): it could change again within the
                   same timestamp tick, unseen.
    entries        entry key -> one file's compressed tar entry; in memory (bounded) and on
                   disk under ``<cache dir>/entries/``.
    upkeep         the newest archives are kept, the entry cache stays under its size cap.

Everything here is a speed-up: losing any of it costs time, never correctness.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

RACY_SECONDS = 2.0
KEEP_ARCHIVES = 32  # newest archives kept in the cache dir
MAX_ENTRY_CACHE_BYTES = 2 * 1024 * 1024 * 1024  # on disk
MAX_MEMORY_ENTRY_BYTES = 256 * 1024 * 1024
_INDEX_NAME = "file-hashes.json"
_INDEX_FORMAT = "fastreg-file-hashes-v1"
_INDEX_MAX_FILES = 50_000
_PRUNE_EVERY = 1000

_lock = threading.Lock()
Signature = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns

# --- file hashes ---------------------------------------------------------------------------

_hashes: dict[str, tuple[Signature, bytes]] = {}
_hashes_changed: set[str] = set()
_hashes_used: set[str] = set()  # paths hashed or looked up by this process
_index_loaded: set[Path] = set()


def signature(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def known_hash(path: str, st: os.stat_result) -> bytes | None:
    """The remembered sha256 of ``path``, if the file is unchanged since."""
    known = _hashes.get(path)
    if known is None or known[0] != signature(st):
        return None
    _hashes_used.add(path)
    return known[1]


def remember_hash(path: str, st: os.stat_result, sha: bytes) -> None:
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) <= RACY_SECONDS * 1e9:
        return
    with _lock:
        _hashes[path] = (signature(st), sha)
        _hashes_changed.add(path)
        _hashes_used.add(path)


def load_hash_index(cache_dir: Path) -> None:
    """Take in the hashes a previous process remembered (once per cache dir and process)."""
    if cache_dir in _index_loaded:
        return
    _index_loaded.add(cache_dir)
    try:
        stored = json.loads((cache_dir / _INDEX_NAME).read_text())
        if stored.get("format") != _INDEX_FORMAT:
            return
        loaded = {path: (tuple(sig), bytes.fromhex(sha)) for path, (sig, sha) in stored["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # missing or unreadable: hash again
    with _lock:
        for path, known in loaded.items():
            _hashes.setdefault(path, known)


def save_hash_index(cache_dir: Path) -> None:
    if not _hashes_changed:
        return
    with _lock:
        if len(_hashes) > _INDEX_MAX_FILES:
            for path in set(_hashes) - _hashes_used:  # files of long-gone trees drop out
                del _hashes[path]
        files = {path: [list(sig), sha.hex()] for path, (sig, sha) in _hashes.items()}
        _hashes_changed.clear()
    try:
        write_atomically(cache_dir / _INDEX_NAME, json.dumps({"format": _INDEX_FORMAT, "files": files}).encode())
    except OSError:
        pass  # the next process hashes again


# --- compressed entries --------------------------------------------------------------------

_entries: OrderedDict[str, bytes] = OrderedDict()  # newest last
_entries_bytes = 0


def remembered_entry(key: str) -> bytes | None:
    with _lock:
        entry = _entries.get(key)
        if entry is not None:
            _entries.move_to_end(key)
        return entry


def remember_entry(key: str, entry: bytes) -> None:
    global _entries_bytes
    with _lock:
        if key in _entries:
            return
        _entries[key] = entry
        _entries_bytes += len(entry)
        while _entries_bytes > MAX_MEMORY_ENTRY_BYTES and _entries:
            _, dropped = _entries.popitem(last=False)
            _entries_bytes -= len(dropped)


def entry_path(entries_dir: Path, key: str) -> Path:
    return entries_dir / key[:2] / f"{key}.gz"


def entry_from_disk(entries_dir: Path, key: str) -> bytes | None:
    try:
        entry = entry_path(entries_dir, key).read_bytes()
    except OSError:
        return None
    remember_entry(key, entry)
    return entry


def forget() -> None:
    """Drop what this process remembers: the next build is as cold as in a new process, apart
    from the on-disk caches."""
    global _entries_bytes
    with _lock:
        _hashes.clear()
        _hashes_changed.clear()
        _hashes_used.clear()
        _index_loaded.clear()
        _entries.clear()
        _archives_since_prune.clear()
        _entries_bytes = 0


# --- files and upkeep ----------------------------------------------------------------------


def write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_written_since_prune: dict[Path, int] = {}
_archives_since_prune: dict[Path, int] = {}
_PRUNE_ARCHIVES_EVERY = 8


def prune(cache_dir: Path, archive_glob: str, entries_dir: Path, written: int) -> None:
    """Keep the newest archives, and the entry cache under its size cap (oldest dropped first).

    Listing the archives takes a stat each, so it happens on a process's first build and then
    every few builds (the cache holds at most ``KEEP_ARCHIVES`` + that many); measuring the entry
    cache takes a stat per entry, so it happens on the first build and every thousand new entries.
    """
    built = _archives_since_prune.get(cache_dir)
    if built is None or built + 1 >= _PRUNE_ARCHIVES_EVERY:
        _archives_since_prune[cache_dir] = 0
        archives = sorted(cache_dir.glob(archive_glob), key=_mtime, reverse=True)
        for old in archives[KEEP_ARCHIVES:]:
            old.unlink(missing_ok=True)
    else:
        _archives_since_prune[cache_dir] = built + 1
    since = _written_since_prune.get(cache_dir)
    if since is not None and since + written < _PRUNE_EVERY:
        _written_since_prune[cache_dir] = since + written
        return
    _written_since_prune[cache_dir] = 0
    entries = [(p, p.stat()) for p in entries_dir.glob("*/*.gz")]
    total = sum(st.st_size for _, st in entries)
    if total <= MAX_ENTRY_CACHE_BYTES:
        return
    for path, st in sorted(entries, key=lambda item: item[1].st_mtime):
        path.unlink(missing_ok=True)
        total -= st.st_size
        if total <= MAX_ENTRY_CACHE_BYTES // 2:
            break


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
