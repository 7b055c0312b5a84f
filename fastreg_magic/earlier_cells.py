"""Where a function or class from an earlier notebook cell is written: its source, found again.

IPython keeps every cell's source in ``linecache`` (terminal IPython under
``<ipython-input-3-abcdef>``, ipykernel under ``/tmp/ipykernel_1234/abcdef.py``), and a
function's code object remembers its file and first line, so a function's source is exact
even after the cell was edited and re-run. ``inspect.getsource`` cannot do classes from a
notebook (it looks for ``__main__.__file__``), so a class is found through its methods'
code objects, or, with no methods, as the newest cell defining it.

A cell run with a cell magic (``%%time``) is not in ``linecache`` as Python: IPython keeps it
as ``get_ipython().run_cell_magic('time', '', BODY)``, and ``%%time`` compiles BODY under the
name ``<timed exec>``. Such a cell counts here by its body.

    definition_source("normalize", normalize, shell.user_ns)   # "def normalize(x):\n    return x + 1\n"
    from_imports("from os.path import join as pjoin\n")       # (("pjoin", "os.path", "join"),)
"""

from __future__ import annotations

import ast
import linecache
import re
import sys
import types
from typing import Any, Mapping

from fastreg_magic.errors import CollectError

# Cell sources IPython keeps in linecache: terminal IPython names them
# "<ipython-input-3-abcdef>", ipykernel writes "/tmp/ipykernel_1234/abcdef.py".
_CELL_FILENAME = re.compile(r"^<ipython-input-\d+-[0-9a-f]+>$|[\\/]ipykernel_\d+[\\/][^\\/]+\.py$")


def definition_source(def_name: str, target: Any, namespace: Mapping[str, Any]) -> str:
    for filename, line in _code_locations(target):
        for lines in _cells_compiled_as(filename, namespace):
            source = _top_level_definition(lines, def_name, line)
            if source is not None:
                return source
    # A class with no methods of its own (a dataclass: its methods are generated, from "<string>")
    # leaves no code object to follow: search the file of its module (a %%flyte_fast cell's), then
    # the cells, newest first, for its definition.
    for cell in _module_file(target) + cells_newest_first(namespace):
        source = _top_level_definition(cell.splitlines(keepends=True), def_name, None)
        if source is not None:
            return source
    raise CollectError(
        f"The source of `{def_name}` from an earlier cell is not available{_why_no_source(target)}.",
        "Define it in this cell, or move it into a module next to the notebook and import it.",
    )


def _module_file(target: Any) -> list[str]:
    """The source of the file ``target``'s module was loaded from, when it has one ([] otherwise)."""
    module = sys.modules.get(getattr(target, "__module__", None) or "")
    filename = getattr(module, "__file__", None)
    lines = linecache.getlines(filename) if isinstance(filename, str) else []
    return ["".join(lines)] if lines else []


def _cells_compiled_as(filename: str, namespace: Mapping[str, Any]) -> list[list[str]]:
    """The lines of the cell compiled under ``filename``; for a name no cell has (``<timed exec>``
    of a ``%%time`` cell), the bodies of the cells run with a cell magic, newest first."""
    lines = linecache.getlines(filename)
    if lines:
        return [lines]
    return [body.splitlines(keepends=True) for body in _cell_magic_bodies(namespace)]


def _why_no_source(target: Any) -> str:
    """Why a definition's source cannot be found, as the end of a sentence ('' when unknown)."""
    code = getattr(target, "__code__", None)
    filename = code.co_filename if code is not None else ""
    if filename.startswith("<timed"):
        return ": it was defined in a `%%time` cell, which is no longer in IPython's input history"
    if filename == "<string>":
        return ": it was made by exec() from a string, which keeps no source"
    return ""


def _code_locations(target: Any) -> list[tuple[str, int]]:
    """(file, line) of code objects belonging to the definition: the function's own, or a class's methods."""
    codes = []
    if isinstance(target, types.FunctionType):
        codes.append(target.__code__)
    elif isinstance(target, type):
        for member in vars(target).values():
            func = getattr(member, "__func__", member)  # classmethod / staticmethod
            func = getattr(func, "fget", func)  # property
            code = getattr(func, "__code__", None)
            if code is not None:
                codes.append(code)
    return [(c.co_filename, c.co_firstlineno) for c in codes]


def _top_level_definition(lines: list[str], def_name: str, line: int | None) -> str | None:
    """The source of the top-level ``def``/``class def_name`` (with decorators) in a cell,
    the one containing ``line`` when given, else the last one."""
    if not lines:
        return None
    try:
        tree = ast.parse("".join(lines))
    except SyntaxError:
        return None
    found = None
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or node.name != def_name:
            continue
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        if line is None or start <= line <= node.end_lineno:
            found = (start, node.end_lineno)
    if found is None:
        return None
    return "".join(lines[found[0] - 1 : found[1]]).rstrip() + "\n"


def cells_newest_first(namespace: Mapping[str, Any]) -> list[str]:
    """The Python source of the notebook's cells, newest first; a cell run with a cell magic
    (``%%time``) by its body."""
    ordered = [_python_of(c) for c in _input_history(namespace)]
    cached = [_python_of("".join(linecache.getlines(f))) for f in list(linecache.cache) if _CELL_FILENAME.search(str(f))]
    # The input history is in execution order; linecache only roughly so: history first.
    return list(reversed(ordered)) + list(reversed(cached))


def _input_history(namespace: Mapping[str, Any]) -> list[str]:
    """The cells as IPython ran them (``_ih``), oldest first."""
    history = namespace.get("_ih")
    return [c for c in history if isinstance(c, str)] if isinstance(history, list) else []


def _cell_magic_bodies(namespace: Mapping[str, Any]) -> list[str]:
    return [body for body in map(_cell_magic_body, reversed(_input_history(namespace))) if body is not None]


def _python_of(cell: str) -> str:
    body = _cell_magic_body(cell)
    return cell if body is None else body


_MAGIC_CALL = "get_ipython().run_cell_magic("
_CELL_MAGIC_BODIES: dict[str, str | None] = {}
_CACHE_MAX = 4096


def _cell_magic_body(cell: str) -> str | None:
    """BODY of a cell IPython ran as ``get_ipython().run_cell_magic(NAME, LINE, BODY)``, else None.
    Remembered per cell: every lift reads the whole history."""
    if not cell.startswith(_MAGIC_CALL):
        return None
    if cell not in _CELL_MAGIC_BODIES:
        if len(_CELL_MAGIC_BODIES) >= _CACHE_MAX:
            _CELL_MAGIC_BODIES.clear()
        _CELL_MAGIC_BODIES[cell] = _magic_call_body(cell)
    return _CELL_MAGIC_BODIES[cell]


def _magic_call_body(cell: str) -> str | None:
    try:
        tree = ast.parse(cell)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    call = tree.body[0].value
    if not isinstance(call, ast.Call) or len(call.args) != 3:
        return None
    body = call.args[2]
    return body.value if isinstance(body, ast.Constant) and isinstance(body.value, str) else None


_FROM_IMPORTS: dict[str, tuple[tuple[str, str, str], ...]] = {}


def from_imports(cell: str) -> tuple[tuple[str, str, str], ...]:
    """``(bound name, module, attribute)`` for each absolute ``from M import a as b`` at the top
    level of a cell (``("*", M, "*")`` for a star import). Remembered per cell."""
    known = _FROM_IMPORTS.get(cell)
    if known is None:
        if len(_FROM_IMPORTS) >= _CACHE_MAX:
            _FROM_IMPORTS.clear()
        known = _FROM_IMPORTS[cell] = tuple(_from_imports(cell)) if "import" in cell else ()
    return known


def _from_imports(cell: str):
    try:
        tree = ast.parse(cell)
    except SyntaxError:
        return
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                yield alias.asname or alias.name, node.module, alias.name


def earlier_from_imports(namespace: Mapping[str, Any]):
    """``(bound name, module, attribute)`` of every from-import in the input history, newest first."""
    for cell in reversed(_input_history(namespace)):
        yield from reversed(from_imports(_python_of(cell)))
