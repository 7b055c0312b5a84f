"""Where a function or class from an earlier notebook cell is written: its source, found again.

IPython keeps every cell's source in ``linecache`` (terminal IPython under
``<ipython-input-3-abcdef>``, ipykernel under ``/tmp/ipykernel_1234/abcdef.py``), and a
function's code object remembers its file and first line, so a function's source is exact
even after the cell was edited and re-run. ``inspect.getsource`` cannot do classes from a
notebook (it looks for ``__main__.__file__``), so a class is found through its methods'
code objects, or, with no methods, as the newest cell defining it.

    definition_source("normalize", normalize, shell.user_ns)   # "def normalize(x):\n    return x + 1\n"
"""

from __future__ import annotations

import ast
import linecache
import re
import types
from typing import Any, Mapping

from fastreg_magic.errors import CollectError

# Cell sources IPython keeps in linecache: terminal IPython names them
# "<ipython-input-3-abcdef>", ipykernel writes "/tmp/ipykernel_1234/abcdef.py".
_CELL_FILENAME = re.compile(r"^<ipython-input-\d+-[0-9a-f]+>$|[\\/]ipykernel_\d+[\\/][^\\/]+\.py$")


def definition_source(def_name: str, target: Any, namespace: Mapping[str, Any]) -> str:
    for filename, line in _code_locations(target):
        source = _top_level_definition(linecache.getlines(filename), def_name, line)
        if source is not None:
            return source
    # A class with no methods of its own leaves no code object to follow: search the cells,
    # newest first, for its definition.
    for cell in _cells_newest_first(namespace):
        source = _top_level_definition(cell.splitlines(keepends=True), def_name, None)
        if source is not None:
            return source
    raise CollectError(
        f"The source of `{def_name}` from an earlier cell is not available.",
        "Define it in this cell, or move it into a module next to the notebook and import it.",
    )


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


def _cells_newest_first(namespace: Mapping[str, Any]) -> list[str]:
    history = namespace.get("_ih")
    ordered = [c for c in history if isinstance(c, str)] if isinstance(history, list) else []
    cached = ["".join(linecache.getlines(f)) for f in list(linecache.cache) if _CELL_FILENAME.search(str(f))]
    # The input history is in execution order; linecache only roughly so: history first.
    return list(reversed(ordered)) + list(reversed(cached))

