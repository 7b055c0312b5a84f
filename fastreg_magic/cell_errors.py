"""Where the user's code went wrong, in the user's terms: the cell's line as the editor numbers it, a
local module's path under the source root.

Used by the pipeline (the magic's messages) and by ``fastreg serialize`` (its one-line errors), which
words them each for its own reader.
"""

from __future__ import annotations

import ast
import linecache
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastreg_magic import api
from fastreg_magic.errors import CollectError
from fastreg_magic.lift_imports import GENERATED_MARK
from fastreg_magic.outside_root import outside_root_note, subfolder_note


def is_users_file(filename: str, root: str) -> bool:
    """Whether ``filename`` is the user's own code under the source root ``root``: not a package
    installed there (a virtualenv in the project) nor a hidden folder's."""
    inside = filename[len(root):]
    return filename.startswith(root + os.sep) and "site-packages" not in inside and f"{os.sep}." not in inside


def imported_but_not_shipped(names: set[str], shipped: dict[str, Path], source_root: Path,
                             noted: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Modules from the source root that the module imported as it ran yet that are not shipped: loaded
    by name (``importlib.import_module(f"plugins.{name}")``), which reading its imports cannot see.
    In the container they would not be found.

    A module Python found in a subfolder of the root on sys.path (the notebook's folder under a parent
    source root) is told once per package, as the fix it needs (``--source-root`` that folder), and not
    at all when ``noted`` (the notes collecting gave) already says so: the cell does import it. One
    loaded by name from outside the root (a checkout on sys.path) gets the note an import statement's would.
    """
    root = str(source_root.resolve())
    found: list[str] = []
    told = set(noted)
    for name in sorted(names - set(shipped)):
        module = sys.modules.get(name)
        filename = _resolved(getattr(module, "__file__", None))
        if is_users_file(filename, root):
            note = _loaded_by_name_note(name, filename, root)
        elif "." not in name and filename:
            note = _outside_root(name, module, Path(root))
        else:
            continue
        if note is not None and note not in told:
            told.add(note)
            found.append(note)
    return tuple(found)


def launch_plan_files_tasks_cannot_read(entities, fileset) -> tuple[str, ...]:
    """A note for each local file a launch plan the module declares holds in its inputs (its own, or its
    workflow's defaults it takes on) that a task's container will not have.

    flytekit converts a launch plan's inputs as ``LaunchPlan.get_or_create`` runs, and a task's container
    imports the cell's module, so it converts them again there: where the file is not, the import fails,
    and with it every task of the cell. A relative path to a shipped file is there (the archive is
    unpacked in the task's working directory); an absolute path is there only on this machine.
    """
    from flytekit.core.launch_plan import LaunchPlan

    from fastreg_magic.default_signatures import named_paths

    shipped = {f.relpath for f in fileset.files}
    notes = []
    for plan in entities:
        if not isinstance(plan, LaunchPlan):
            continue
        interface = getattr(plan.workflow, "python_interface", None)
        types = getattr(interface, "inputs", {})
        defaults = getattr(interface, "default_inputs_as_kwargs", {})  # the plan takes them on, converted too
        held = {**defaults, **plan.saved_inputs, **getattr(plan, "raw_fixed_inputs", {})}
        for name, value in held.items():
            for path in named_paths(value, types.get(name)):
                relative = Path(path).as_posix()
                if Path(path).is_absolute() or not (relative in shipped or any(
                        f.startswith(relative + "/") for f in shipped)):  # a file, or a folder of files, shipped
                    notes.append(
                        f"launch plan {plan.name} holds the local file {path} (input {name}): each task of this cell "
                        "imports the cell's module in its container, where flytekit reads that file again, and "
                        "fails where it is not (absolute: any other machine; not shipped: anywhere). Give it as a "
                        "URI the tasks can read (s3://...), or as a path relative to the source root of a file "
                        "the cell ships (--copy all)")
    return tuple(notes)


def _loaded_by_name_note(name: str, filename: str, root: str) -> str:
    """A module under the root that no import statement names; or, found through a subfolder of the
    root on sys.path, its package, as the fix it needs."""
    entry = _import_folder(name, Path(filename))
    if entry is not None and str(entry) != root:
        return subfolder_note(name.partition(".")[0], entry)
    return (
        f"`{name}` ({Path(filename).relative_to(root).as_posix()}) was imported as the cell ran but is not "
        "shipped: an import by name at run time is not seen, so the container would not find it. "
        "Import it in the cell or a local module, or pass --copy all."
    )


def _outside_root(name: str, module, root: Path) -> str | None:
    """A top-level module imported by name from outside the source root: told as an import statement's
    would be (nothing for what pip installed); never the module of a %%flyte_fast cell."""
    spec = getattr(module, "__spec__", None)
    if spec is None or hasattr(module, GENERATED_MARK):
        return None
    return outside_root_note(name, spec, root)


def _resolved(filename: str | None) -> str:
    """A module's file with its folder resolved as the source root is (``sys.path.insert(0, "..")`` leaves
    `/proj/notebooks/..` in it); the file's own name is kept, even when it is a link. "" when it has none."""
    return str(Path(filename).parent.resolve() / Path(filename).name) if filename else ""


def _import_folder(name: str, filename: Path) -> Path | None:
    """The folder on sys.path module ``name`` was imported from (``a/b/__init__.py`` as ``b``: ``a``);
    None when its file's place does not follow its dotted name."""
    folders = name.split(".")
    stem = filename.name.split(".", 1)[0]  # `features.py`, `fast.cpython-311-x86_64-linux-gnu.so`
    place = filename.parent if stem == "__init__" else filename.parent / stem
    for part in reversed(folders):
        if place.name != part:
            return None
        place = place.parent
    return place


@dataclass(frozen=True)
class RaisedByTheCell:
    """Where the cell's own code failed as its module ran: the traceback from the module's first
    frame on (without the frames that ran it), and the line, numbered as the user's editor does."""

    traceback: Any
    place: str  # "raised at line 6 of the cell", "raised in code carried over from an earlier cell, called at ..."


RAISED_BY_THE_CELL = "_fastreg_raised_by_the_cell"  # the exception's attribute holding a RaisedByTheCell


def mark_raised_by_the_cell(exc: BaseException, module_source, where: str) -> None:
    """Note on ``exc`` (as RAISED_BY_THE_CELL) where the cell's module raised it, for the magic to show."""
    generated = str(api.module_dir() / f"{module_source.name}.py")
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != generated:
        tb = tb.tb_next
    if tb is None:
        return  # raised before the module ran any of its lines
    lines = [module_source.cell_line(n) for frame, n in traceback.walk_tb(tb) if frame.f_code.co_filename == generated]
    cell_lines = [line for line in lines if line is not None]
    place = f"raised at line {cell_lines[-1]} of {where}" if cell_lines else "raised in code carried over from an earlier cell"
    if cell_lines and lines[-1] is None:
        place = f"raised in code carried over from an earlier cell, called at line {cell_lines[-1]} of {where}"
    try:
        setattr(exc, RAISED_BY_THE_CELL, RaisedByTheCell(tb, place))
    except AttributeError:  # an exception type without instance attributes: shown as Python shows it
        pass


def refused_definition(exc: Exception, module_source, where: str, source_root: Path) -> CollectError | None:
    """flytekit refusing one of the definitions (a missing return, a missing type hint) as one line
    naming the line; None for anything else, which keeps its traceback."""
    import flytekit
    from flytekit.exceptions.user import FlyteUserException

    if not isinstance(exc, (FlyteUserException, TypeError, ValueError, AssertionError)):
        return None
    flytekit_dir = str(Path(flytekit.__file__).parent)
    frames = [(frame.f_code.co_filename, lineno) for frame, lineno in traceback.walk_tb(exc.__traceback__)]
    if not frames or not frames[-1][0].startswith(flytekit_dir):
        return None  # raised by the cell's own code, not by flytekit
    # The innermost line of user code: in the module (the cell, or code carried over), or in a local
    # module it imports. Named by where it is, not by what it is not: between it and flytekit there
    # may be other code (the `__init__` dataclasses generates, whose file is "<string>").
    generated = str(api.module_dir() / f"{module_source.name}.py")
    root = str(Path(source_root).resolve())
    user = [(f, n) for f, n in frames if f == generated or is_users_file(f, root)]
    if not user:
        return None
    filename, lineno = user[-1]
    lineno = _decorator_line(filename, lineno)
    if filename == generated:
        line = module_source.cell_line(lineno)
        place = f"Line {line} of {where}" if line is not None else "A definition carried over from an earlier cell"
    else:
        place = f"Line {lineno} of {shown_path(filename, source_root)}"
    said = str(exc).strip()
    said = said if said.endswith((".", "!", "?")) else f"{said}."  # the hint follows as the next sentence
    return CollectError(f"{place}: {said}",
                        "Fix the definition and try again; nothing was registered.")


def _decorator_line(filename: str, lineno: int) -> int:
    """Python 3.10 numbers a decorator that raised by its function's ``def`` line, 3.11 on by the
    decorator's own (``@task``): the decorator's, on every Python. The first decorator, the outermost,
    is where flytekit's usually is."""
    if sys.version_info >= (3, 11):
        return lineno
    try:
        tree = ast.parse("".join(linecache.getlines(filename)))
    except (SyntaxError, ValueError):
        return lineno
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.lineno == lineno \
                and node.decorator_list:
            return node.decorator_list[0].lineno
    return lineno


def shown_path(filename: str, source_root: Path | str) -> str:
    """``filename`` relative to the source root when it is under it, else as it is."""
    try:
        return Path(filename).relative_to(source_root).as_posix()
    except ValueError:
        return filename
