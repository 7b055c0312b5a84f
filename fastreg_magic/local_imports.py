"""Which local modules a cell's module needs: its imports, followed transitively under a source root.

A module counts as local when Python, started in the source root, would import it from a
file there (what the container does after unpacking the archive into its working
directory). Everything else — stdlib, site-packages, flytekit — is the image's business.

    needed = local_modules(module_source, "quickstart", Path("~/proj").expanduser())
    needed.files       # {"mylib/__init__.py": Path(...), "mylib/features.py": Path(...)}
    needed.warnings    # ("`otherlib` is imported from /opt/otherlib, outside the source root: ...",)

Finding uses ``importlib.machinery.PathFinder`` restricted to the root, so packages,
namespace packages, ``.py`` files and extension modules resolve exactly as Python would.
Only import statements are followed: modules loaded by name at run time
(``importlib.import_module(f"plugins.{name}")``) and data files the code opens are not
seen (the cell's notes name them: see cell_errors and package_data); ``--copy all`` ships those.
"""

from __future__ import annotations

import ast
import collections
import importlib
import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from pathlib import Path

from fastreg_magic.errors import CollectError
from fastreg_magic.lift_imports import GENERATED_MARK
from fastreg_magic.outside_root import outside_root_note


@dataclass(frozen=True)
class Import:
    """One module an import statement may load; ``required`` when failure would break the module
    at import time (a plain top-level statement, not inside try/if/def)."""

    name: str
    required: bool
    maybe_attribute: bool = False  # `from pkg import x`: x may be a submodule or just a name
    line: int = 0
    guarded: bool = False  # inside a `try`: the code expects it may fail


@dataclass
class LocalModules:
    files: dict[str, Path] = field(default_factory=dict)  # root-relative posix path -> file
    warnings: list[str] = field(default_factory=list)
    # the files reached through imports none of which is inside a `try`: leaving one out breaks the code
    # when that import runs (as the module is imported, or in a task calling the function holding it)
    unguarded: set[str] = field(default_factory=set)


def local_modules(source: str, name: str, root: Path, tree: ast.Module | None = None) -> LocalModules:
    """The files under ``root`` that the module ``name`` (given as source, and ``tree`` when already
    parsed) imports, transitively."""
    _forget_listings_under(root)  # files may have appeared since the last look
    result = LocalModules()
    resolved: dict[str, ModuleSpec | None] = {}
    queue: list[tuple[str, list[Import]]] = [(name, _parent_packages(name) + imports_of(source, name, False, tree))]
    parsed = {name}
    outside: dict[str, ModuleSpec | None] = {}
    edges: dict[str, set[tuple[str, bool]]] = collections.defaultdict(set)  # module -> (imported, required)
    files_of: dict[str, list[str]] = collections.defaultdict(list)  # module -> the relpaths it brought
    while queue:
        module, imports = queue.pop(0)
        for imp in imports:
            if imp.name == name or imp.name.startswith(name + "."):
                continue  # the module itself (a package's __init__ importing it back): shipped as generated
            for dotted in _prefixes(imp.name):
                if dotted not in resolved:
                    resolved[dotted] = _find_under_root(dotted, root, resolved)
                spec = resolved[dotted]
                if spec is None:
                    if dotted == imp.name and imp.maybe_attribute:
                        break  # `from pkg import name`: a plain attribute, not a submodule
                    who = "this cell" if module == name else f"`{module}`"
                    _not_local(dotted, imp, who, root, result, outside)
                    break
                edges[module].add((spec.name, not imp.guarded))
                if spec.name in parsed:
                    continue  # its files are taken already
                for relpath, path in _spec_files(spec, root):
                    if relpath in result.files:
                        continue
                    result.files[relpath] = path
                    files_of[spec.name].append(relpath)
                    if path.suffix == ".py" and spec.name not in parsed:
                        parsed.add(spec.name)
                        is_package = spec.submodule_search_locations is not None
                        queue.append((spec.name, _file_imports(path, relpath, spec.name, is_package)))
    result.unguarded = {relpath for module in _unguarded_modules(name, edges) for relpath in files_of[module]}
    return result


def _parent_packages(name: str) -> list[Import]:
    """``pkg.mod`` is imported through its package: Python runs ``pkg/__init__.py`` first, here and in
    the container, so the package ships with it, with what it imports."""
    parts = name.split(".")[:-1]
    return [Import(".".join(parts[: i + 1]), True) for i in range(len(parts))]


def _unguarded_modules(start: str, edges: dict[str, set[tuple[str, bool]]]) -> set[str]:
    """The modules ``start`` reaches through imports none of which is inside a `try`."""
    reached, pending = {start}, [start]
    while pending:
        for imported, unguarded in edges.get(pending.pop(), ()):
            if unguarded and imported not in reached:
                reached.add(imported)
                pending.append(imported)
    return reached


def _forget_listings_under(root: Path) -> None:
    """Make the import system list the source root's directories again before we search them.

    ``importlib.invalidate_caches()`` would do it for every directory on sys.path, so the next import
    of anything (flytekit imports lazily) lists site-packages again; only the root's listings can be stale.
    """
    prefix = str(root)
    for entry, finder in list(sys.path_importer_cache.items()):
        if finder is not None and entry.startswith(prefix) and hasattr(finder, "invalidate_caches"):
            finder.invalidate_caches()


def imports_of(source: str, module: str, is_package: bool, tree: ast.Module | None = None) -> list[Import]:
    """Every module the source's import statements name, absolute, in source order."""
    tree = tree if tree is not None else ast.parse(source)
    top_level = {id(node) for node in tree.body}
    guarded = _in_try(tree)
    found: list[Import] = []
    for node in _statements(tree):
        required = id(node) in top_level
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, required, line=node.lineno, guarded=id(node) in guarded) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = _absolute_base(node, module, is_package)
            if node.module or node.level:
                found.append(Import(base, required, line=node.lineno, guarded=id(node) in guarded))
            found.extend(
                Import(f"{base}.{a.name}", required, maybe_attribute=True, line=node.lineno, guarded=id(node) in guarded)
                for a in node.names
                if a.name != "*"
            )
    return found


def _in_try(tree: ast.Module) -> set[int]:
    """ids of the statements inside the body of a ``try`` (at any depth)."""
    inside: set[int] = set()
    for node in _statements(tree):
        if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            pending = list(node.body)
            while pending:
                statement = pending.pop()
                inside.add(id(statement))
                for name in _STATEMENT_FIELDS:
                    pending.extend(getattr(statement, name, None) or ())
    return inside


# The fields that hold statements (or handlers/cases holding them), in the order ast.walk visits them.
_STATEMENT_FIELDS = ("body", "handlers", "orelse", "finalbody", "cases")


def _statements(tree: ast.Module):
    """Every statement, breadth first as ``ast.walk`` yields them, without descending into
    expressions: imports are statements, and a cell's expressions are most of its nodes."""
    pending = collections.deque(tree.body)
    while pending:
        node = pending.popleft()
        yield node
        for name in _STATEMENT_FIELDS:
            children = getattr(node, name, None)
            if children:
                pending.extend(children)


def _absolute_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    parts = package.split(".") if package else []
    if node.level - 1 > len(parts) or not parts:
        dots = "." * node.level
        raise CollectError(
            f"`from {dots}{node.module or ''} import ...` (line {node.lineno} of {module}) is a relative "
            "import outside any package.",
            "A cell is a top-level module, and so is a file right under the source root: import by the full "
            "name (e.g. `from mypkg import x`), or give `fastreg serialize` the folder above its package as "
            "--source-root.",
        )
    base_parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(base_parts + ([node.module] if node.module else []))


def _prefixes(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _find_under_root(dotted: str, root: Path, resolved: dict[str, ModuleSpec | None]) -> ModuleSpec | None:
    parent, _, _ = dotted.rpartition(".")
    if not parent:
        spec = importlib.machinery.PathFinder.find_spec(dotted, [str(root)])
        if spec is not None and spec.origin is None and _is_regular_elsewhere(dotted):
            # Python prefers a regular package anywhere on sys.path to a namespace directory:
            # a local `requests/` folder without __init__.py does not hide the installed one.
            return None
        return spec
    else:
        parent_spec = resolved.get(parent)
        if parent_spec is None or parent_spec.submodule_search_locations is None:
            return None
        search = list(parent_spec.submodule_search_locations)
    return importlib.machinery.PathFinder.find_spec(dotted, search)


def _is_regular_elsewhere(top: str) -> bool:
    spec = _find_outside_root(top)
    return spec is not None and (spec.origin is not None or top in sys.stdlib_module_names)


def _spec_files(spec: ModuleSpec, root: Path) -> list[tuple[str, Path]]:
    """The file a found module loads from (a package's ``__init__``), as (relpath, path);
    nothing for a namespace package, which is just a directory."""
    if not spec.has_location or not spec.origin:
        return []
    path = Path(spec.origin)
    try:
        relpath = path.relative_to(root).as_posix()
    except ValueError:
        return []
    return [(relpath, path)]


# (file, size, mtime, module, is_package) -> its imports: an unchanged re-run parses nothing.
_FILE_IMPORTS: dict[tuple, list[Import]] = {}
_FILE_IMPORTS_MAX = 20_000


def _file_imports(path: Path, relpath: str, module: str, is_package: bool) -> list[Import]:
    try:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, module, is_package)
        if key in _FILE_IMPORTS:
            return _FILE_IMPORTS[key]
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CollectError(f"{relpath} cannot be read: {exc}.", "Check the file's permissions and encoding.") from exc
    try:
        imports = imports_of(source, module, is_package)
    except SyntaxError as exc:
        raise CollectError(
            f"{relpath} has a syntax error on line {exc.lineno}: {exc.msg}.", "Fix it; the cell imports it."
        ) from None
    if len(_FILE_IMPORTS) >= _FILE_IMPORTS_MAX:
        _FILE_IMPORTS.clear()
    _FILE_IMPORTS[key] = imports
    return imports


def _not_local(
    dotted: str, imp: Import, who: str, root: Path, result: LocalModules, outside: dict[str, ModuleSpec | None]
) -> None:
    """``dotted`` is not under the root: fine if Python finds it elsewhere, else an error or a warning."""
    if "." in dotted:
        # Its package was found under the root (else the search stopped there): a missing
        # submodule of a local package.
        if imp.required:
            package, _, sub = dotted.rpartition(".")
            raise CollectError(
                f"`{dotted}` is imported by {who} but the local package `{package}` has no module `{sub}` under {root}.",
                "Check the module name.",
            )
        return
    if hasattr(sys.modules.get(dotted), GENERATED_MARK):
        raise CollectError(
            f"`{dotted}` is imported by {who} but is the module of another %%flyte_fast cell, which is not shipped with it.",
            "Drop the import and use its names directly (functions and classes from other cells are carried "
            "over), or put both in one cell.",
        )
    if dotted not in outside:
        outside[dotted] = _find_outside_root(dotted)
    spec = outside[dotted]
    gone = _gone_location(spec)
    if gone is not None:
        if imp.required:  # Python would not import it again: the kernel holds it from before its files went
            raise CollectError(
                f"`{dotted}` is imported by {who}, but {gone} no longer exists; the kernel still holds the "
                "module from before.",
                f"Restore it under {root}, or drop the import.",
            )
        return
    if spec is None:
        if imp.required:
            raise CollectError(
                f"`{dotted}` is imported by {who} but was not found under {root}, nor installed in this kernel.",
                "If it is your own code, start Jupyter in the project root or pass --source-root; if it is a "
                "package, install it (`%pip install ...`): the image must have it too.",
            )
        return
    warning = outside_root_note(dotted, spec, root)
    if warning and warning not in result.warnings:
        result.warnings.append(warning)


def _gone_location(spec: ModuleSpec | None) -> str | None:
    """What a module the kernel imported earlier was loaded from, when that is gone from disk: its file,
    or the folders of a namespace package (which has no file)."""
    if spec is None:
        return None
    if spec.has_location and spec.origin:
        return None if Path(spec.origin).exists() else f"its file {spec.origin}"
    folders = list(spec.submodule_search_locations or [])
    if folders and not any(Path(folder).exists() for folder in folders):
        return f"its folder {folders[0]}"
    return None


def _find_outside_root(top: str) -> ModuleSpec | None:
    if top in sys.builtin_module_names or top in sys.stdlib_module_names:
        return ModuleSpec(top, None)
    try:
        return importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
