"""Cell -> module, and module -> the files to ship with it.

The first step of a fast registration: a notebook cell (or a ``.py`` file) becomes a real
module's source, with whatever it borrows from earlier cells written into it; then the
files the container needs are picked under the source root.

    module = module_from_cell(cell, "quickstart", shell.user_ns)
    module.source     # the text of quickstart.py, as shipped and as run in the kernel
    module.lifted     # ("import numpy as np", "def normalize (defined in an earlier cell)")

    files = files_to_ship(module, Path.cwd())           # copy="auto": what it imports
    files.files       # (ShippedFile("mylib/__init__.py", ...), ShippedFile("quickstart.py", data=...))
    files.left_out    # (LeftOut(".env", "secret (never shipped)"),)

No IPython here: the namespace is a plain mapping, so the same code serves the magic,
the API and the ``fastreg serialize`` command.
"""

from __future__ import annotations

import ast
import contextlib
import keyword
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fastreg_magic.errors import CollectError
from fastreg_magic.ignore import SECRET, Found, IgnoreRules, Skipped, classify_file, find_credential, iter_dir_files, walk
from fastreg_magic.lift import has_star_import, lift_free_names, scope_names
from fastreg_magic.local_imports import local_modules
from fastreg_magic.notebook_files import paired_files
from fastreg_magic.package_data import package_data_note

LARGE_FILE_BYTES = 10 * 1024 * 1024
RUNNING_NOTEBOOK = "the notebook this kernel runs: its cells ship as modules, not its file"
PAIRED_NOTEBOOK = "the notebook this kernel runs, as jupytext pairs it: its cells ship as modules, not its file"
COPY_MODES = ("auto", "all")
_LIFTED_HEADER = "# --- carried over from earlier notebook cells ---"
_CELL_HEADER = "# --- the cell ---"


@dataclass(frozen=True)
class ModuleSource:
    name: str  # importable module name, e.g. "quickstart"
    source: str  # full text of <name>.py, as shipped and as executed in the kernel
    lifted: tuple[str, ...]  # one human line per thing taken from the notebook namespace
    tree: ast.Module | None = field(default=None, compare=False, repr=False)  # ``source`` parsed, when at hand
    # Where the cell's own lines are in ``source`` once lifted code is inserted: its first
    # ``head_lines`` lines (docstring, __future__ imports) stay put; from module line ``body_start``
    # on, line ``body_start + k`` is the cell's line ``body_cell_line + k``.
    head_lines: int = field(default=0, compare=False, repr=False)
    body_start: int = field(default=1, compare=False, repr=False)
    body_cell_line: int = field(default=1, compare=False, repr=False)
    first_line: int = field(default=1, compare=False, repr=False)  # the number the user sees on the source's first line
    binds: frozenset[str] = field(default=frozenset(), compare=False, repr=False)  # names the cell binds at its top level

    def cell_line(self, module_line: int) -> int | None:
        """The cell's line at ``module_line`` of the module, as the user's editor numbers it; None
        inside the lifted code."""
        if module_line <= self.head_lines:
            return module_line + self.first_line - 1
        if module_line >= self.body_start:
            return self.body_cell_line + module_line - self.body_start + self.first_line - 1
        return None


@dataclass(frozen=True)
class ShippedFile:
    relpath: str  # posix path inside the archive, e.g. "mylib/features.py"
    path: Path | None = None  # file on disk ...
    data: bytes | None = None  # ... or in-memory content (the generated module)


@dataclass(frozen=True)
class LeftOut:
    relpath: str
    reason: str  # "secret (never shipped)", "ignored by .gitignore", ...


@dataclass(frozen=True)
class FileSet:
    root: Path
    files: tuple[ShippedFile, ...]  # sorted by relpath
    left_out: tuple[LeftOut, ...]
    warnings: tuple[str, ...]  # e.g. "data/big.parquet is 42 MiB (over 10 MiB)"


# --- cell -> module ------------------------------------------------------------------------


def module_from_cell(cell: str, name: str, namespace: Mapping[str, Any] | None = None, *,
                     first_line: int = 1) -> ModuleSource:
    """The module a cell becomes. Free names are resolved against ``namespace`` (the notebook's
    user namespace); without one, the cell must stand on its own and nothing is lifted.

    ``first_line`` is the number of the cell's first line in messages: 2 for the body of a
    ``%%flyte_fast`` cell, whose line 1, in the editor, is the magic's.
    """
    check_module_name(name)
    tree = _parse_cell(cell, first_line)
    as_is = dict(name=name, source=_with_final_newline(cell), lifted=(), tree=tree, first_line=first_line)
    if namespace is None:
        return ModuleSource(**as_is)
    with compile_warnings_silenced():  # said once already, by _parse_cell, at the cell's line
        binds = scope_names(cell, tree)[1]
        lifted = lift_free_names(cell, namespace, strict=not has_star_import(tree), tree=tree)
    if not lifted.source:
        return ModuleSource(**as_is, binds=binds)
    source, head_lines, body_start, body_cell_line = _insert_lifted(cell, tree, lifted.source)
    return ModuleSource(name=name, source=source, lifted=lifted.lines, head_lines=head_lines, body_start=body_start,
                        body_cell_line=body_cell_line, first_line=first_line, binds=binds)


def module_from_file(path: Path, name: str | None = None) -> ModuleSource:
    """A ``.py`` file as the module to register: ``name`` (``pkg.mod`` for a file inside a package,
    see :func:`file_module`), by default the file's own name."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CollectError(f"{path} cannot be read: {exc}.", "Check the path and the file's encoding.") from exc
    name = name or path.stem
    if "." in name:
        _check_dotted_name(name, path)
    else:
        check_module_name(name, what=f"the file name {path.name}")
    _parse(source, where=str(path))
    return ModuleSource(name=name, source=_with_final_newline(source), lifted=())


def file_module(path: Path, source_root: Path | None = None) -> tuple[str, Path]:
    """The name a module file is imported by, and the source root it ships from.

    With ``source_root``, the file's path under it, dotted (``src/pkg/mod.py`` under ``src``: ``pkg.mod``);
    a file outside it is a top-level module of its own name, as a cell is.
    Without, as ``pyflyte register`` names it: a file in a package (its folder holds ``__init__.py``)
    from the first folder above it that holds none (flytekit's project root); any other file by its
    own name, from its own folder.
    """
    path = Path(path).expanduser().resolve()
    root = Path(source_root).expanduser().resolve() if source_root is not None else _project_root(path)
    if not path.is_relative_to(root):
        return path.stem, root  # shipped beside the source root's files, as a top-level module (as a cell is)
    name = ".".join(path.with_suffix("").relative_to(root).parts)
    if "." in name:
        _check_dotted_name(name, path, root)
    return name, root


def _project_root(path: Path) -> Path:
    """flytekit's project root of a module file: the first folder above it without ``__init__.py``."""
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        folder = folder.parent
    return folder


def _check_dotted_name(name: str, path: Path, root: Path | None = None) -> None:
    """Every part of ``pkg.sub.mod`` must be importable: a folder or file named otherwise cannot be."""
    for part in name.split("."):
        if not part.isidentifier() or keyword.iskeyword(part):
            where = f" under the source root {root}" if root is not None else ""
            raise CollectError(
                f"{path}{where} would be the module `{name}`, but `{part}` is not a valid Python module name, "
                "so the container could not import it.",
                "Rename that folder or file with letters, digits and underscores (not starting with a digit), "
                "or pass --source-root the folder the import name starts from.",
            )


def check_module_name(name: str, what: str | None = None) -> None:
    """The generated module must be importable by that name, and must not hide the stdlib."""
    what = what or f"The module name `{name}`"
    if not name.isidentifier() or keyword.iskeyword(name):
        raise CollectError(
            f"{what} is not a valid Python module name.",
            "Pass --module NAME with letters, digits and underscores, not starting with a digit.",
        )
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        raise CollectError(
            f"{what} would hide the standard library module `{name}`.",
            "Pass --module OTHER with another name.",
        )


def _parse_cell(cell: str, first_line: int = 1) -> ast.Module:
    """Parse and compile the cell (compiling finds `return` outside a function, a misplaced
    `from __future__`, ...); IPython syntax (%magic, !shell) gets its own message, since it
    cannot run remotely."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tree = ast.parse(cell, filename="<cell>")
        with compile_warnings_silenced():  # the parse's warnings, again
            compile(tree, "<cell>", "exec", dont_inherit=True)
        _warn_at_cell_lines(caught, first_line)
        return tree
    except SyntaxError as exc:
        lines = cell.splitlines()
        line = lines[exc.lineno - 1] if exc.lineno and 0 < exc.lineno <= len(lines) else ""
        shown = exc.lineno + first_line - 1 if exc.lineno else exc.lineno
        if line.lstrip().startswith(("%", "!")):
            raise CollectError(
                f"Line {shown} of the cell is IPython syntax, not Python: `{line.strip()}`.",
                "Magics and shell commands cannot run in a task; move them to another cell.",
            ) from None
        raise _syntax_error(exc, "the cell", line, shown) from None


@contextlib.contextmanager
def compile_warnings_silenced():
    """No compile-time warnings (``invalid escape sequence``: a SyntaxWarning from Python 3.12, a
    DeprecationWarning before) for code whose parse has already said them where it was written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _warn_at_cell_lines(caught: list, first_line: int) -> None:
    """The parse's warnings (``invalid escape sequence``), once each, numbered as the editor numbers the
    cell's lines; the same code compiled again later (analysis, the generated module) stays quiet."""
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, "<cell>", warning.lineno + first_line - 1)


def _parse(source: str, where: str) -> ast.Module:
    try:
        return ast.parse(source, filename=where)
    except SyntaxError as exc:
        lines = source.splitlines()
        line = lines[exc.lineno - 1] if exc.lineno and 0 < exc.lineno <= len(lines) else ""
        raise _syntax_error(exc, where, line) from None


def _syntax_error(exc: SyntaxError, where: str, line: str, shown_line: int | None = None) -> CollectError:
    return CollectError(
        f"Syntax error on line {shown_line or exc.lineno} of {where}: {exc.msg}: `{line.strip()}`.",
        "Fix the line and run the cell again.",
    )


def _insert_lifted(cell: str, tree: ast.Module, lifted_source: str) -> tuple[str, int, int, int]:
    """Lifted code goes after the cell's docstring and ``from __future__`` imports, which must stay first.

    Returns the module's source and where the cell's lines are in it (see ``ModuleSource.cell_line``).
    """
    split = 0
    for index, node in enumerate(tree.body):
        is_docstring = index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        if is_docstring or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            split = node.end_lineno
        else:
            break
    lines = cell.splitlines(keepends=True)
    head, body = "".join(lines[:split]), "".join(lines[split:])
    stripped_body = body.lstrip("\n")
    before_body = (head.rstrip("\n") + "\n" if head else "") + f"{_LIFTED_HEADER}\n{lifted_source.rstrip()}\n\n{_CELL_HEADER}\n"
    body_cell_line = split + len(body) - len(stripped_body) + 1
    return _with_final_newline(before_body + stripped_body), split, before_body.count("\n") + 1, body_cell_line


def _with_final_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


# --- module -> files -----------------------------------------------------------------------


def files_to_ship(module: ModuleSource, source_root: Path, copy: str = "auto", notebook: Path | None = None) -> FileSet:
    """The generated module plus the local files it needs (``auto``) or everything (``all``),
    minus ignored files, junk and secrets.

    ``notebook`` is the notebook the cell comes from: ``all`` leaves its file out, since every save
    (outputs, execution counts) would change it, and so the version, of an unchanged cell.
    """
    root = _check_root(source_root)
    if copy not in COPY_MODES:
        raise CollectError(f"--copy {copy!r} is not a copy mode.", "Use --copy auto or --copy all.")
    _check_no_credentials(module)
    _check_clash(module, root, notebook)
    rules = IgnoreRules(root)
    found, skipped, warnings = _auto_files(module, root, rules)
    if copy == "all":
        found, skipped = _everything(root, rules, found, skipped)
        found, skipped = _without_notebook(found, skipped, root, notebook)
    else:
        warnings += package_data_note(root, rules, found)
    generated = ShippedFile(relpath=module_relpath(module.name), data=module.source.encode("utf-8"))
    found = [f for f in found if f.relpath != generated.relpath]
    _check_stdlib_shadows(found)
    files = sorted([ShippedFile(f.relpath, path=f.path) for f in found] + [generated], key=lambda f: f.relpath)
    warnings += _size_warnings(found, generated)
    left_out = tuple(LeftOut(s.relpath, s.reason) for s in sorted(set(skipped), key=lambda s: s.relpath))
    return FileSet(root=root, files=tuple(files), left_out=left_out, warnings=tuple(warnings))


def module_relpath(name: str) -> str:
    """Where module ``name`` sits in the archive: ``pkg.mod`` at ``pkg/mod.py``, as Python looks for it."""
    return name.replace(".", "/") + ".py"


def _check_root(source_root: Path) -> Path:
    root = Path(source_root).expanduser().resolve()
    if not root.is_dir():
        raise CollectError(f"The source root {root} is not a directory.", "Pass --source-root with an existing directory.")
    return root


def _check_no_credentials(module: ModuleSource) -> None:
    """The generated module is read as any shipped module is (`ignore.find_credential`): one holding a
    secret value, written in the cell or carried over from an earlier one, is refused, naming the line
    or the variable, never the value."""
    data = module.source.encode("utf-8", "surrogateescape")
    found = find_credential(data, is_code=True)
    if found is None:
        return
    module_line = data.count(b"\n", 0, found.start) + 1
    cell_line = module.cell_line(module_line)
    if cell_line is not None:
        from_cell = module.tree is not None or bool(module.lifted)  # a module file's ModuleSource has neither
        where = "the cell" if from_cell else module_relpath(module.name)
        what = f"Line {cell_line} of {where} holds {found.kind}"
    else:
        what = f"{_lifted_name(module.source, module_line)}, carried over from an earlier cell, holds {found.kind}"
    raise CollectError(
        f"{what}: shipped in the module `{module.name}`, it would be readable by anyone who can read its code "
        "archive, so nothing was registered.",
        "Keep credentials out of the code: have the task request a Flyte secret "
        "(`@task(secret_requests=[Secret(group=..., key=...)])`, read with `current_context().secrets.get(...)`) "
        "or read an environment variable at run time, then run the cell again.",
    )


def _lifted_name(source: str, line: int) -> str:
    """The name the top-level statement at ``line`` of the module binds: `TOKEN` or `def helper`."""
    for node in _parse(source, where="the module").body:
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                return f"`{'class' if isinstance(node, ast.ClassDef) else 'def'} {node.name}`"
            names = [t.id for n in ast.walk(node) if isinstance(n, (ast.Assign, ast.AnnAssign))
                     for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)]
            if names:
                return f"`{names[0]}`"
    return "Code"


def _check_clash(module: ModuleSource, root: Path, notebook: Path | None = None) -> None:
    """A local `<name>.py` or package `<name>/` would be shadowed by (or shadow) the generated
    module. A plain folder of that name is no clash: Python prefers a module to a namespace, nor is
    the notebook's own jupytext file (`pipeline.py` paired with `pipeline.ipynb`): it is the notebook,
    which no cell imports and which is never shipped."""
    place = root / module_relpath(module.name)
    for candidate in (place, place.with_suffix("") / "__init__.py"):
        if not candidate.is_file():
            continue
        if candidate.name != "__init__.py" and _same_text(candidate, module.source):
            continue  # the module written out earlier from this very cell
        if candidate.resolve() in paired_files(notebook):
            continue
        kind = "package" if candidate.name == "__init__.py" else "module"
        candidate = candidate.parent if kind == "package" else candidate
        raise CollectError(
            f"The cell's module `{module.name}` clashes with the local {kind} {candidate}.",
            f"Name the cell's module differently with -m/--module on its %%flyte_fast line "
            f"(e.g. -m {module.name}_flow).",
        )


def _check_stdlib_shadows(found: list[Found]) -> None:
    """A shipped top-level module named like a standard-library one this kernel has loaded
    (``random.py``) would replace it in the container, where flytekit imports it too. One the kernel
    never loaded (``test.py``) shadows nothing anybody uses."""
    for item in found:
        top, _, rest = item.relpath.partition("/")
        name = top[: -len(".py")] if not rest and top.endswith(".py") else top if rest == "__init__.py" else None
        if name in sys.stdlib_module_names and _loaded_from_elsewhere(name, item.path):
            raise CollectError(
                f"{item.relpath} in the source root has the name of Python's standard-library module "
                f"`{name}`: shipped, it would replace that module in the container (flytekit imports it too).",
                f"Rename it (e.g. my_{name}) and the imports that use it.",
            )


def _loaded_from_elsewhere(name: str, path: Path | None) -> bool:
    loaded = sys.modules.get(name)
    if loaded is None:
        return False
    file = getattr(loaded, "__file__", None)
    return file is None or path is None or Path(file).resolve() != Path(path).resolve()


def _same_text(path: Path, text: str) -> bool:
    """Whether ``path`` holds ``text``, a module's source as read from it (ended with a newline if it had none)."""
    try:
        return _with_final_newline(path.read_text(encoding="utf-8")) == text
    except (OSError, UnicodeDecodeError):
        return False


def _auto_files(module: ModuleSource, root: Path, rules: IgnoreRules) -> tuple[list[Found], list[Skipped], list[str]]:
    needed = local_modules(module.source, module.name, root, tree=module.tree)
    found: list[Found] = []
    skipped: list[Skipped] = []
    warnings = list(needed.warnings)
    for relpath, path in sorted(needed.files.items()):
        item = classify_file(path, relpath, rules, imported=True)
        if isinstance(item, Found):
            found.append(item)
        elif relpath in needed.unguarded:
            raise _imported_but_left_out(relpath, item, rules)
        elif item is not None:  # imported only inside a `try`: the code expects the import may fail
            skipped.append(item)
            warnings.append(f"{relpath} is imported inside a `try` but {item.reason}: it is not shipped.")
    # Secrets are reported wherever something is shipped from, so a `.env` beside the
    # notebook is mentioned even though auto mode would not have picked it up.
    for reldir in sorted({f.relpath.rpartition("/")[0] for f in found} | {""}):
        for relpath in iter_dir_files(root, reldir):
            if rules.is_secret(relpath):
                skipped.append(Skipped(relpath, SECRET))
    return found, skipped, warnings


def _imported_but_left_out(relpath: str, item: Skipped | None, rules: IgnoreRules) -> CollectError:
    """The container could not import a module the cell needs: refuse now rather than register a
    release whose runs fail with ModuleNotFoundError."""
    module = relpath.split(".", 1)[0].removesuffix("/__init__").replace("/", ".")  # package folders hold no dots
    why, what_to_do = _why_left_out(relpath, item, rules)
    return CollectError(
        f"{relpath} is imported by the cell (or a local module it imports) but is never shipped: {why}. "
        f"In the container `import {module}` would fail, so nothing was registered.",
        what_to_do,
    )


def _why_left_out(relpath: str, item: Skipped | None, rules: IgnoreRules) -> tuple[str, str]:
    if item is None:
        return ("it is in a folder or of a kind that is never shipped (caches, virtualenvs, compiled files)",
                "Move the module's source (.py) into your project's own folders.")
    if item.reason == SECRET and not rules.is_secret(relpath):
        return ("it holds credentials (a private key, or an AWS secret key's value)",
                "Take the credentials out of it and read them at run time (from the environment, or a Flyte "
                "secret: @task(secret_requests=[Secret(...)])), then run the cell again.")
    if item.reason == SECRET:
        return ("its name or target is that of a credentials file",
                "Rename it (or the file it links to) to a plain module name, then run the cell again.")
    if item.reason.startswith("ignored by "):
        ignore_file = item.reason.removeprefix("ignored by ")
        return (f"it is {item.reason}",
                f"Change {ignore_file} so it no longer matches {relpath}, or stop importing it.")
    return (f"it is a {item.reason}" if "link" in item.reason else f"it is {item.reason}",
            f"Make {relpath} a readable file, then run the cell again.")


def _everything(root: Path, rules: IgnoreRules, imported: list[Found],
                skipped: list[Skipped]) -> tuple[list[Found], list[Skipped]]:
    """``--copy all``: every file under the root, and at least what ``--copy auto`` ships (a package
    reached through a symbolic link to a directory, which the walk does not follow)."""
    found, left_out = walk(root, rules)
    shipped = {f.relpath: f for f in found}
    for item in imported:
        shipped.setdefault(item.relpath, item)
    # A folder the walk left out (a link to a directory) whose imported modules ship is not left out,
    # nor an imported module reached through a link leading out of the root.
    kept = [s for s in left_out + skipped if s.relpath not in shipped
            and not any(item.relpath.startswith(s.relpath.rstrip("/") + "/") for item in imported)]
    return sorted(shipped.values(), key=lambda f: f.relpath), kept


def _without_notebook(found: list[Found], skipped: list[Skipped], root: Path,
                      notebook: Path | None) -> tuple[list[Found], list[Skipped]]:
    """The running notebook, and the files jupytext pairs with it, are left out (and said so); other
    notebooks ship, as data a task may read."""
    relpaths = set()
    for path in paired_files(notebook):
        with contextlib.suppress(ValueError):  # outside the source root: never among the files
            relpaths.add(path.relative_to(root).as_posix())
    own = Path(notebook).expanduser().resolve() if notebook is not None else None
    kept = [item for item in found if item.relpath not in relpaths]
    left = [item for item in found if item.relpath in relpaths]
    return kept, skipped + [Skipped(item.relpath, RUNNING_NOTEBOOK if Path(item.path).resolve() == own
                                    else PAIRED_NOTEBOOK) for item in left]


def _size_warnings(found: list[Found], generated: ShippedFile) -> list[str]:
    sizes = [(f.relpath, f.size) for f in found] + [(generated.relpath, len(generated.data or b""))]
    return [
        f"{relpath} is {_size(size)} (over {_mib(LARGE_FILE_BYTES)})"
        for relpath, size in sorted(sizes)
        if size > LARGE_FILE_BYTES
    ]


def _size(size: int) -> str:
    """A size over the limit, never shown as the limit itself (10.001 MiB is not "10 MiB")."""
    shown = _mib(size)
    return shown if shown != _mib(LARGE_FILE_BYTES) else f"{size:,} bytes"


def _mib(size: int) -> str:
    """``10.5 MiB``, ``42 MiB``: one decimal, none when it is 0."""
    return f"{size / (1024 * 1024):.1f}".removesuffix(".0") + " MiB"
