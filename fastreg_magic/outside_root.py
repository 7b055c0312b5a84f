"""What to tell about a module the kernel imports from outside the source root: it is not shipped.

Whether that matters is decided by the file the kernel imported, not by the module's name. A file pip
installed (under site-packages, or listed in the RECORD of a distribution installed beside it) is the
image's business: nothing to say. Any other file is code the user can edit — a checkout on sys.path
that hides an installed copy of the same name, an editable install, a helper beside the notebook — and
the runs would not see those edits, so the note says so and what to do. The folder the cells' own
modules are written to and loaded from (``api.module_dir``, a temporary folder) is never one: each of
those modules ships as its cell's, whatever folder the source root is.

    outside_root_note("mylib", spec, Path("/proj/notebooks"))
    # "`mylib` is an editable install (pip install -e) whose code is in /proj/src, outside the source
    #  root /proj/notebooks: ... Pass --source-root /proj/src to ship it."
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

_INSTALL_FOLDERS = frozenset({"site-packages", "dist-packages"})  # where pip (and Debian's python) install


def outside_root_note(top: str, spec: ModuleSpec, root: Path) -> str | None:
    """The note for the top-level module ``top`` the kernel imports from ``spec``'s file, which is not
    under the (resolved) source root ``root``; None when the image is expected to have it."""
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return None
    path = imported_path(spec)
    if path is None:
        return None
    folder = search_folder(path)
    if _installed_by_pip(path, folder) or is_generated_modules_folder(folder):
        return None
    entry = folder.resolve()  # `sys.path.insert(0, "..")` makes it `/proj/notebooks/..`: say /proj
    if entry.is_relative_to(root):
        return subfolder_note(top, entry)
    distribution = _distribution(top)
    if distribution is not None and _is_editable(distribution):
        return (
            f"`{top}` is an editable install (pip install -e) whose code is in {entry}, outside the source root "
            f"{root}: it is not shipped, so your edits there do not reach the runs, which use the image's copy. "
            f"Pass --source-root {entry} to ship it."
        )
    installed = _installed_copy(distribution, top) if distribution is not None else None
    if installed is not None and installed != entry:
        return (
            f"`{top}` is imported from {entry}, outside the source root {root}, not from its installed copy in "
            f"{installed}: it is not shipped, so the runs use the image's installed copy, not this code. "
            f"Pass --source-root {entry} to ship it."
        )
    if entry == _working_directory():
        return (
            f"`{top}` is imported from {entry}, the kernel's working directory, outside the source root "
            f"{root}: it is not shipped, so the runs would not find it. Move it under {root} (into a package "
            "there, say) to ship it."
        )
    return (
        f"`{top}` is imported from {entry}, outside the source root {root}: it is not shipped, so the runs "
        f"use the image's copy, if it has one, not this code. Pass --source-root {entry} to ship it, or move "
        f"it under {root}."
    )


def subfolder_note(top: str, entry: Path) -> str | None:
    """The note for a module Python finds in ``entry``, a folder under the source root on sys.path (the
    notebook's folder under a parent source root): shipped, it would sit below where the container looks.
    None for the folder of the cells' own modules (under a source root such as /tmp, the temporary folder)."""
    if is_generated_modules_folder(entry):
        return None
    return (
        f"`{top}` is imported from {entry}, a subfolder of the source root that Python searches "
        f"through sys.path; in the container it would not be importable, so it is not shipped. "
        f"Pass --source-root {entry} to ship it."
    )


def is_generated_modules_folder(folder: Path) -> bool:
    """Whether ``folder`` is this process's folder of the modules the cells become (``api.module_dir``):
    each is shipped as its cell's module, so that folder is no code left behind."""
    generated = sys.modules.get("fastreg_magic.api")  # not loaded yet: no cell has made a module
    made = getattr(generated, "_module_dir", None)
    return made is not None and Path(folder).resolve() == Path(made).resolve()


def imported_path(spec: ModuleSpec) -> Path | None:
    """The module's file (a package's ``__init__``), or a namespace package's first folder."""
    if spec.has_location and spec.origin:
        return Path(spec.origin)
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]) if locations else None


def search_folder(path: Path) -> Path:
    """The folder on sys.path a top-level module's ``path`` was found in: the one holding the module,
    or the package (whose ``__init__`` the path is)."""
    return path.parent.parent if path.name.startswith("__init__.") else path.parent


def _installed_by_pip(path: Path, folder: Path) -> bool:
    """Whether pip put the file there: it is under site-packages, or a distribution installed in the same
    folder (``pip install --target DIR``) lists it in its RECORD."""
    if _INSTALL_FOLDERS & set(path.parts) or _INSTALL_FOLDERS & set(path.resolve().parts):
        return True
    relpath = path.relative_to(folder).as_posix()
    return any(relpath in _recorded_files(d) for d in importlib.metadata.distributions(path=[str(folder)]))


def _recorded_files(distribution: importlib.metadata.Distribution) -> set[str]:
    """The files a wheel install wrote, as its RECORD lists them (relative to the folder holding the
    dist-info). An ``.egg-info`` in a checkout (``src/mylib.egg-info``) has none: its SOURCES.txt lists
    the checkout's files, which pip did not install."""
    record = distribution.read_text("RECORD")
    return {row[0] for row in csv.reader(record.splitlines()) if row} if record else set()


def _distribution(top: str) -> importlib.metadata.Distribution | None:
    """The installed distribution named like the module (``featlib`` for ``import featlib``), if any."""
    try:
        return importlib.metadata.distribution(top)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def _is_editable(distribution: importlib.metadata.Distribution) -> bool:
    """Whether pip installed it with ``-e`` (PEP 610's direct_url.json says so)."""
    try:
        said = json.loads(distribution.read_text("direct_url.json") or "{}")
    except ValueError:
        return False
    return bool(isinstance(said, dict) and (said.get("dir_info") or {}).get("editable"))


def _installed_copy(distribution: importlib.metadata.Distribution, top: str) -> Path | None:
    """The folder an installed copy of module ``top`` is in (site-packages), when the distribution has one."""
    recorded = _recorded_files(distribution)
    for relpath in (f"{top}/__init__.py", f"{top}.py"):
        if relpath in recorded:
            installed = Path(distribution.locate_file(relpath))
            return search_folder(installed).resolve() if installed.exists() else None
    return None


def _working_directory() -> Path | None:
    try:
        return Path(os.getcwd()).resolve()
    except OSError:  # the folder was deleted under the kernel
        return None
