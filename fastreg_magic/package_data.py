"""Files beside the shipped modules that ``--copy auto`` leaves behind: a package's data.

A package often reads files kept beside its code (``Path(__file__).parent / "cfg.yaml"``,
``importlib.resources.files("mylib") / "data.txt"``). ``--copy auto`` ships the modules the cell imports,
not those files, so that code would fail in the container with FileNotFoundError. One note names a few
of them and says that ``--copy all`` ships them:

    package_data_note(root, rules, found)
    # ["Not shipped with --copy auto, though beside the shipped modules: nslib/cfg.yaml, nslib/data.txt. ..."]

Files directly in the source root are no package's (a notebook's folder full of CSVs is not worth a note
on every cell), and files the ignore rules leave out are not shipped by ``--copy all`` either, so neither
is named.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Iterator

from fastreg_magic.ignore import Found, IgnoreRules

SHOWN = 3  # files named in the note; the rest are counted
LOOKED_AT_MAX = 2_000  # folder entries looked at per cell: a package holding a dataset is not listed whole
_CODE_SUFFIXES = (".py", ".pyi", ".pyc", ".pyo", ".pyd", ".so")  # shipped when imported, else not data
_MARKERS = frozenset({"py.typed"})  # tells type checkers about the package; no code reads it


def package_data_note(root: Path, rules: IgnoreRules, shipped: list[Found]) -> list[str]:
    """One note naming the files in the shipped modules' folders (and their data subfolders) that are
    not shipped, or none."""
    folders = {item.relpath.rpartition("/")[0] for item in shipped} - {""}
    entries = itertools.chain.from_iterable(_entries(root, folder, rules, folders) for folder in sorted(folders))
    looked_at = list(itertools.islice(entries, LOOKED_AT_MAX + 1))
    data = [relpath for relpath in looked_at[:LOOKED_AT_MAX] if relpath is not None]
    if not data:
        return []
    more = len(data) - SHOWN
    listed = ", ".join(data[:SHOWN])
    if len(looked_at) > LOOKED_AT_MAX:
        listed += " and more files"
    elif more > 0:
        listed += f" and {more} more file{'s' if more > 1 else ''}"
    return [
        f"Not shipped with --copy auto, though beside the shipped modules: {listed}. Code that reads them "
        "(`Path(__file__).parent / ...`, importlib.resources) would not find them in the container; "
        "--copy all ships them."
    ]


def _entries(root: Path, reldir: str, rules: IgnoreRules, own_folders: set[str]) -> Iterator[str | None]:
    """For each entry of the folder (and of its subfolders, but those holding shipped modules, which
    are looked at on their own), its path when it is a data file that is not ignored, else None."""
    try:
        entries = sorted(os.scandir(root / reldir), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        relpath = f"{reldir}/{entry.name}"
        if entry.name.startswith("."):
            yield None  # an ignore file, an editor's or a tool's: not what code reads
        elif entry.is_dir(follow_symlinks=False):
            yield None
            if relpath not in own_folders and rules.dir_reason(relpath, entry.name, Path(entry.path)) is None:
                yield from _entries(root, relpath, rules, own_folders)
        elif _is_data(entry) and rules.file_reason(relpath) is None:
            yield relpath
        else:
            yield None


def _is_data(entry: os.DirEntry) -> bool:
    return entry.is_file() and not entry.name.endswith(_CODE_SUFFIXES) and entry.name not in _MARKERS
