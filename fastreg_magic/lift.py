"""Lifting: what a cell borrows from earlier cells, written out as module source.

A notebook cell may use names it does not define: ``np`` imported three cells up, a
``normalize`` function from the previous cell, ``N = 3`` from the first one. In the kernel
that works because every cell shares one namespace; in a container the cell's module
stands alone. This module finds those free names and turns each into source:

    imported module            ->  import numpy as np
    function/class from a cell ->  its source, lifted (and what *it* uses, recursively)
    function/class of a module ->  from mylib.features import clean
    literal constant           ->  N = 3 (shown as `TOKEN = …` in the notes when it looks like a credential)
    anything else              ->  CollectError naming the variable and the fix

Example::

    lifted = lift_free_names(cell_source, namespace)
    lifted.source      # "import numpy as np\\nN = 3\\n\\ndef normalize(x): ...\\n"
    lifted.lines       # ("import numpy as np", "N = 3", "def normalize (defined in an earlier cell)")
"""

from __future__ import annotations

import ast
import builtins
import collections
import io
import math
import re
import symtable
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Mapping

from fastreg_magic.cell_launch_plans import launch_plan_reference
from fastreg_magic.earlier_cells import definition_source
from fastreg_magic.errors import CollectError
from fastreg_magic.ignore import find_credential
from fastreg_magic.lift_imports import (
    import_statement,
    is_named_definition,
    is_importable_module,
    wrapped_function,
)

# Names every module has without defining them.
_MODULE_DUNDERS = frozenset(
    {"__name__", "__file__", "__doc__", "__spec__", "__loader__", "__package__", "__builtins__",
     "__annotations__", "__path__", "__cached__"}
)  # fmt: skip
# Names IPython adds to builtins while a cell runs: they do not exist in a task.
_IPYTHON_ONLY = frozenset({"display", "get_ipython", "__IPYTHON__"})
_BUILTINS = (frozenset(dir(builtins)) - _IPYTHON_ONLY) | _MODULE_DUNDERS
# A constant longer than this is data, not code: it belongs in a file or a task input.
MAX_CONSTANT_CHARS = 1024 * 1024
_SHOWN_CONSTANT_CHARS = 60
# A constant named so is not shown in the notes about what was carried over (`_shown_constant`).
_SECRET_NAME = re.compile(r"token|secret|passw(?:or)?d|pwd|api_?key|access_?key|private_?key|credential|(?:^|_)key$",
                          re.IGNORECASE)


@dataclass(frozen=True)
class Lifted:
    """What a cell borrows: the source to put above it, and one line per thing for the user."""

    source: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class _Definition:
    name: str
    source: str
    uses: frozenset[str]
    # where the names it uses are looked up: its own module's globals first
    scope: Mapping[str, Any] = field(compare=False, repr=False)
    shown: str = ""  # its line for the user, when not "def NAME (defined in an earlier cell)"


def free_names(source: str) -> set[str]:
    """Names the code reads from its module's globals without ever binding them there."""
    reads, binds = scope_names(source)
    return set(reads - binds - _BUILTINS)


def scope_names(source: str, tree: ast.Module | None = None) -> tuple[frozenset[str], frozenset[str]]:
    """``(names read from module globals, names bound at module level)`` for module source.

    Analysed one top-level statement at a time and remembered per statement: which names a
    statement reads or binds at module level depends on that statement alone, so after a
    one-line edit only the edited statement is analysed again. ``tree``: ``source`` already parsed.
    """
    tree = tree if tree is not None else ast.parse(source)
    if any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body):
        return _statement_names(source)  # future flags apply to the whole module: analyse it whole
    reads: set[str] = set()
    binds: set[str] = set()
    try:
        for segment in _statement_segments(source, tree):
            segment_reads, segment_binds = _statement_names(segment)
            reads |= segment_reads
            binds |= segment_binds
    except SyntaxError:  # a statement that does not stand alone after all: analyse the module whole
        return _statement_names(source)
    return frozenset(reads), frozenset(binds)


def _statement_segments(source: str, tree: ast.Module) -> list[str]:
    """The source of each top-level statement (decorators included); statements sharing a line
    (``a = 1; b = 2``) stay together, so every segment compiles on its own."""
    lines = io.StringIO(source, newline=None).readlines()  # the line breaks the parser counts, no others
    spans: list[list[int]] = []
    for node in tree.body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", ())])
        last = node.end_lineno or node.lineno
        if spans and first <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], last)
        else:
            spans.append([first, last])
    return ["".join(lines[first - 1 : last]) for first, last in spans]


_STATEMENT_NAMES: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
_STATEMENT_NAMES_MAX = 4096


def _statement_names(source: str) -> tuple[frozenset[str], frozenset[str]]:
    known = _STATEMENT_NAMES.get(source)
    if known is None:
        top = symtable.symtable(source, "<cell>", "exec")
        bound = _module_bindings(top) | (_walrus_targets(ast.parse(source)) if ":=" in source else set())
        known = (frozenset(_global_reads(top)), frozenset(bound))
        if len(_STATEMENT_NAMES) >= _STATEMENT_NAMES_MAX:
            _STATEMENT_NAMES.clear()
        _STATEMENT_NAMES[source] = known
    return known


def annotation_names(source: str, tree: ast.AST | None = None) -> frozenset[str]:
    """Names read by the annotations, string annotations (``"List[int]"``) included.

    symtable does not see the names inside strings, nor any annotation under ``from __future__ import
    annotations``; flytekit evaluates them all in the module's globals (``typing.get_type_hints``), so
    they are carried over when the notebook has them. Only when it has them: a string in an annotation
    may be no name at all (``Literal["a"]``, ``Annotated[int, "metres"]``).
    """
    known = _ANNOTATION_NAMES.get(source)
    if known is None:
        known = frozenset(_annotation_names(tree if tree is not None else ast.parse(source)))
        if len(_ANNOTATION_NAMES) >= _STATEMENT_NAMES_MAX:
            _ANNOTATION_NAMES.clear()
        _ANNOTATION_NAMES[source] = known
    return known


_ANNOTATION_NAMES: dict[str, frozenset[str]] = {}


def _annotation_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for annotation in _annotations(tree):
        _names_in_type(annotation, names)
    return names


def _names_in_type(node: ast.AST, names: set[str]) -> None:
    """The names a type expression reads, looking inside strings; not the values of ``Literal[...]``
    nor the metadata of ``Annotated[T, ...]``, which are no types."""
    if isinstance(node, ast.Name):
        names.add(node.id)
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            _names_in_type(ast.parse(node.value.strip(), mode="eval").body, names)
        except SyntaxError:
            pass  # not a type expression
    elif isinstance(node, ast.Subscript):
        _names_in_type(node.value, names)
        base = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", None)
        if base == "Literal":
            return
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        for arg in args[:1] if base == "Annotated" else args:
            _names_in_type(arg, names)
    else:
        for child in ast.iter_child_nodes(node):
            _names_in_type(child, names)


def _annotations(tree: ast.AST):
    """Every annotation, visiting statements only: annotations hang off definitions and annotated
    assignments, and a cell's expressions are most of its nodes."""
    pending = list(getattr(tree, "body", []))
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg, arguments.kwarg):
                if arg is not None and arg.annotation is not None:
                    yield arg.annotation
            if node.returns is not None:
                yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation
        for field_name in ("body", "orelse", "finalbody", "handlers", "cases"):
            pending.extend(getattr(node, field_name, ()) or ())


def _global_reads(top: symtable.SymbolTable) -> set[str]:
    used: set[str] = set()
    stack = [top]
    while stack:
        table = stack.pop()
        stack.extend(table.get_children())
        for symbol in table.get_symbols():
            if symbol.is_referenced() and (table is top or _reads_a_global(symbol)):
                used.add(symbol.get_name())
    return used


def _reads_a_global(symbol: symtable.Symbol) -> bool:
    """Whether a name inside a function or class body is looked up in the module's globals.

    Not ``is_global()`` alone: since bpo-41840 (python/cpython#22391) a name bound in the module
    says ``is_global()``, and symtable tells the module's table by its name, "top", so in ``def
    top(k)`` or ``class top`` (nested too) every name bound there (``k``) says so as well (3.10 to
    3.13). Such a name says ``is_local()`` too, which a real global never does unless declared.
    """
    return symbol.is_declared_global() or (symbol.is_global() and not symbol.is_local())


def _module_bindings(top: symtable.SymbolTable) -> set[str]:
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    stack = list(top.get_children())
    while stack:  # `global x; x = 1` inside a function also binds x at module level
        table = stack.pop()
        stack.extend(table.get_children())
        bound |= {
            s.get_name() for s in table.get_symbols() if s.is_declared_global() and s.is_assigned()
        }
    return bound


def _walrus_targets(tree: ast.AST) -> set[str]:
    """Names ``:=`` binds in the module, in a comprehension too (``[(last := x) for x in xs]``).

    symtable reports those of a comprehension through its own table on 3.11, but from 3.12 on it
    inlines comprehensions (PEP 709) and the name shows as declared global, never assigned.
    Function, lambda and class bodies are skipped: a ``:=`` there binds in them.
    """
    found: set[str] = set()
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
            found.add(node.target.id)
        pending.extend(ast.iter_child_nodes(node))
    return found


def has_star_import(tree: ast.AST) -> bool:
    """Whether the module does ``from x import *`` (only legal at module level, so function and class
    bodies and expressions are not searched: this runs on every cell)."""
    pending = list(getattr(tree, "body", []))
    while pending:
        node = pending.pop()
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if not isinstance(node, (ast.stmt, ast.excepthandler, ast.match_case)):
            continue
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            pending.extend(getattr(node, name, ()))
    return False


def lift_free_names(source: str, namespace: Mapping[str, Any], *, strict: bool = True,
                    tree: ast.Module | None = None) -> Lifted:
    """Resolve the free names of ``source`` against ``namespace`` (a notebook's user namespace).

    ``strict``: a free name missing from the namespace is an error (turn it off when the code
    star-imports, since the name may come from there).
    """
    found = _Found({}, {}, {})
    reads, cell_binds = scope_names(source, tree)
    optional = set(annotation_names(source, tree) - reads)  # carried over only when the notebook has them
    # (name, where to look it up): the cell's names in the notebook's namespace, a lifted
    # definition's names in its own module first (a task from another %%flyte_fast cell reads its
    # `task` and helpers from that cell's module, not from the notebook's namespace).
    pending: list[tuple[str, Mapping[str, Any]]] = [
        (n, namespace) for n in sorted((reads | optional) - cell_binds - _BUILTINS)
    ]
    # What the cell binds itself is there when its code runs, but lifted definitions come
    # first: a name they use that the cell binds is lifted only as an import (`@task` over a
    # lifted function needs `task` before the cell's own `from flytekit import task`).
    seen: set[str] = set()
    while pending:
        name, scope = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        if name in cell_binds:
            found.add_import_of(name, scope)
            continue
        if name in optional:
            definition = _resolve_if_possible(name, scope, found)
        else:
            definition = _resolve(name, scope, strict, found)
        if definition is not None:  # a lifted definition brings the free names of its own source
            optional |= annotation_names(definition.source) - definition.uses
            uses = (definition.uses | annotation_names(definition.source)) - _BUILTINS
            pending.extend((use, definition.scope) for use in sorted(uses - seen))
    sources = [source] + [d.source for d in found.definitions.values()]
    for statement in _submodule_imports(sources, found.imports):
        found.imports[statement] = statement
    return _assemble(found.imports, found.constants, found.definitions)


@dataclass(frozen=True)
class _Found:
    imports: dict[str, str]  # bound name -> import statement
    constants: dict[str, str]  # bound name -> assignment
    definitions: dict[str, _Definition]

    def add_import_of(self, name: str, namespace: Mapping[str, Any]) -> None:
        statement = import_statement(name, namespace[name], namespace) if name in namespace else None
        if statement is not None:
            self.imports[name] = statement


def _resolve_if_possible(name: str, namespace: Mapping[str, Any], found: _Found) -> _Definition | None:
    """``_resolve`` for a name only an annotation may use: nothing when it cannot be carried over."""
    try:
        return _resolve(name, namespace, False, found)
    except CollectError:
        return None


def _resolve(name: str, namespace: Mapping[str, Any], strict: bool, found: _Found) -> _Definition | None:
    """Record how the free name ``name`` is carried over: an import, a constant, or a lifted definition."""
    if name in _IPYTHON_ONLY:
        raise CollectError(
            f"`{name}` is IPython's and does not exist where tasks run.",
            "Keep it out of the cell's module: call it from another cell.",
        )
    if name not in namespace:
        if strict:
            raise CollectError(
                f"`{name}` is used by this cell but is defined neither in it nor in an earlier cell.",
                "Define it in the cell, or run the cell that defines it first.",
            )
        return None
    value = namespace[name]
    statement = import_statement(name, value, namespace)
    if statement is not None:
        found.imports[name] = statement
        return None
    literal = _constant_literal(name, value)
    if literal is not None:
        found.constants[name] = _constant_assignment(name, literal)
        return None
    definition = _launch_plan_reference(name, value, namespace) or _definition(name, value, namespace)
    found.definitions[name] = definition
    return definition


def _submodule_imports(sources: list[str], imports: dict[str, str]) -> list[str]:
    """`import xml` alone does not load `xml.etree`: when code reaches a loaded submodule
    through a lifted plain import (`xml.etree.ElementTree.parse`), import that submodule too."""
    plain = {name for name, statement in imports.items() if statement == f"import {name}"}
    if not plain:
        return []
    needed = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            chain = _attribute_chain(node)
            if not chain or chain[0] not in plain:
                continue
            for i in range(2, len(chain) + 1):
                dotted = ".".join(chain[:i])
                if not isinstance(sys.modules.get(dotted), types.ModuleType):
                    break
                needed.add(f"import {dotted}")
    return sorted(needed)


def _attribute_chain(node: ast.AST) -> list[str] | None:
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or not names:
        return None
    return [node.id] + names[::-1]


def _assemble(imports: dict[str, str], constants: dict[str, str], definitions: dict[str, _Definition]) -> Lifted:
    import_lines = sorted(set(imports.values()))
    constant_lines = [constants[n] for n in sorted(constants)]
    ordered = _dependency_order(definitions)
    blocks = []
    if import_lines:
        blocks.append("\n".join(import_lines) + "\n")
    if constant_lines:
        blocks.append("\n".join(constant_lines) + "\n")
    blocks.extend(d.source for d in ordered)
    lines = (
        import_lines
        + [_shown_constant(n, constants[n]) for n in sorted(constants)]
        + sorted(d.shown or f"{_kind(d.source)} {d.name} (defined in an earlier cell)" for d in ordered)
    )
    return Lifted(source="\n\n".join(b.rstrip("\n") for b in blocks) + "\n" if blocks else "", lines=tuple(lines))


def _dependency_order(definitions: dict[str, _Definition]) -> list[_Definition]:
    """Definitions before their users (decorators, base classes and defaults run at definition
    time); ties and cycles broken by name so the output is the same on every run."""
    ordered: list[_Definition] = []
    state: dict[str, str] = {}

    def visit(name: str) -> None:
        if state.get(name):
            return
        state[name] = "visiting"
        for dep in sorted(definitions[name].uses & definitions.keys()):
            visit(dep)
        state[name] = "done"
        ordered.append(definitions[name])

    for name in sorted(definitions):
        visit(name)
    return ordered


def _kind(source: str) -> str:
    node = ast.parse(source).body[0]
    return "class" if isinstance(node, ast.ClassDef) else "def"


def _shown_constant(name: str, line: str) -> str:
    """A carried-over constant's line for the user (kept in the notebook's saved output): its value
    hidden when the name or the value looks like a credential's. (One whose value is a secret is
    refused before anything ships: `collect`.)"""
    if _SECRET_NAME.search(name) or find_credential(line.encode("utf-8", "surrogateescape"), is_code=True):
        return f"{name} = … (value not shown: it looks like a credential)"
    return _shorten(line)


def _shorten(line: str) -> str:
    return line if len(line) <= _SHOWN_CONSTANT_CHARS else line[: _SHOWN_CONSTANT_CHARS - 1] + "…"


# --- constants -----------------------------------------------------------------------------


class _OverBudget(Exception):
    """The literal's source passed ``MAX_CONSTANT_CHARS`` before it was finished."""


class _Budget:
    """Characters a literal's source may still take: a ten-million-item list is refused after its
    first megabyte of text, not after writing all of it (seconds, and a gigabyte of memory)."""

    def __init__(self, chars: int):
        self.left = chars

    def spend(self, chars: int) -> None:
        self.left -= chars
        if self.left < 0:
            raise _OverBudget


def _constant_literal(name: str, value: Any) -> str | None:
    """The source of ``value`` if it is a plain literal, None for anything else; refused when too large."""
    try:
        return _literal_source(value, _Budget(MAX_CONSTANT_CHARS))
    except _OverBudget:
        raise _too_large_constant(name, value) from None


def _literal_source(value: Any, budget: _Budget, depth: int = 0) -> str | None:
    """Python source that rebuilds ``value``, if it is a plain literal; else None. Raises
    ``_OverBudget`` as soon as the source would pass the budget.

    Written by hand rather than with ``repr``: sets must come out sorted (their repr order
    changes between processes), and nan/inf have no literal form.
    """
    if depth > 50:
        return None
    kind = type(value)
    if value is None or kind in (bool, int, str, bytes, complex, float):
        return _scalar_source(value, budget)
    if kind in (tuple, list, set, frozenset):
        items = _item_sources(value, budget, depth)
        return None if items is None else _sequence_source(kind, items, budget)
    if kind is dict:
        return _dict_source(value, budget, depth)
    return None


# A str, bytes or int this small is written at once; a bigger one is measured before its text is made.
_SMALL_SCALAR = 4096


def _scalar_source(value: Any, budget: _Budget) -> str:
    kind = type(value)
    if kind is float and not math.isfinite(value):
        text = f"float({repr(value)!r})"
    elif kind in (str, bytes) and len(value) > _SMALL_SCALAR:
        budget.spend(len(value))  # its repr is at least as long: refuse before making it
        text = repr(value)
        budget.left += len(value)
    elif kind is int and value.bit_length() > _SMALL_SCALAR:
        digits = int(value.bit_length() * 0.30103)  # at most its number of decimal digits
        budget.spend(digits)
        text = _int_source(value)
        budget.left += digits
    else:
        text = repr(value)
    budget.spend(len(text))
    return text


def _int_source(value: int) -> str:
    try:
        return repr(value)
    except ValueError:  # over Python's int-to-str digit limit (sys.set_int_max_str_digits): hex has none
        return hex(value)


def _item_sources(values, budget: _Budget, depth: int) -> list[str] | None:
    """Each item's source, and the ", " between them; None at the first item that is no literal."""
    items = []
    for value in values:
        item = _literal_source(value, budget, depth + 1)
        if item is None:
            return None
        if items:
            budget.spend(2)
        items.append(item)
    return items


def _sequence_source(kind: type, items: list[str], budget: _Budget) -> str:
    if kind is tuple:
        text = "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    elif kind is list:
        text = "[" + ", ".join(items) + "]"
    else:
        body = "{" + ", ".join(sorted(items)) + "}" if items else ""
        text = (body or "set()") if kind is set else f"frozenset({body})"
    budget.spend(len(text) - sum(len(i) for i in items) - 2 * max(len(items) - 1, 0))  # the brackets
    return text


def _dict_source(value: dict, budget: _Budget, depth: int) -> str | None:
    pairs = []
    for key, item in value.items():
        key_source = _literal_source(key, budget, depth + 1)
        item_source = None if key_source is None else _literal_source(item, budget, depth + 1)
        if item_source is None:
            return None
        budget.spend(4 if pairs else 2)  # ": ", and ", " before all but the first
        pairs.append(f"{key_source}: {item_source}")
    budget.spend(2)
    return "{" + ", ".join(pairs) + "}"


def _constant_assignment(name: str, literal: str) -> str:
    return f"{name} = {literal}"


def _too_large_constant(name: str, value: Any) -> CollectError:
    return CollectError(
        f"`{name}` ({_describe(value)}{_length_of(value)}) would be over {MAX_CONSTANT_CHARS // (1024 * 1024)} MiB "
        "of source, too large to write into the module.",
        "Load it inside a task (from a file or a task input) instead of from the notebook.",
    )


def _length_of(value: Any) -> str:
    if isinstance(value, (str, bytes)):
        return f" of {len(value):,} characters"
    if isinstance(value, (tuple, list, set, frozenset, dict)):
        return f" of {len(value):,} items"
    return ""


# --- launch plans of other cells ---------------------------------------------------------


def _launch_plan_reference(name: str, value: Any, namespace: Mapping[str, Any]) -> _Definition | None:
    """A launch plan another %%flyte_fast cell declared, as a reference to the version that cell
    registered (see `fastreg_magic.cell_launch_plans`); None for any other value."""
    reference = launch_plan_reference(name, value)
    if reference is None:
        return None
    return _Definition(name=name, source=reference.source, uses=frozenset(reference.names),
                       scope=collections.ChainMap(dict(reference.names), namespace), shown=reference.shown)


# --- definitions from earlier cells --------------------------------------------------------


def _definition(name: str, value: Any, namespace: Mapping[str, Any]) -> _Definition:
    target = wrapped_function(value) or value
    if is_named_definition(target) and _MADE_INSIDE in target.__qualname__:
        raise _made_by_a_call(name, target)
    if not is_named_definition(target) or not _defined_in_kernel(target):
        raise CollectError(
            f"`{name}` ({_describe(value)}) comes from the notebook namespace and cannot be shipped as source.",
            "Define it in this cell, or import it from a module; data belongs in a task input or is "
            "loaded inside a task. (Plain literals, imports, and functions or classes from earlier "
            "cells are carried over automatically.)",
        )
    def_name = target.__name__
    if def_name == "<lambda>":
        raise CollectError(
            f"`{name}` is a lambda defined in an earlier cell; its source cannot be lifted on its own.",
            f"Write it as `def {name}(...)` or define it in this cell.",
        )
    source = definition_source(def_name, target, namespace)
    if def_name != name:
        source = f"{source.rstrip()}\n\n\n{name} = {def_name}\n"
    uses = free_names(source) - {def_name, name}
    return _Definition(name=name, source=source, uses=frozenset(uses), scope=_scope_of(target, namespace))


# In the qualified name of a function or class made while another function ran.
_MADE_INSIDE = ".<locals>."


def _made_by_a_call(name: str, target: Any) -> CollectError:
    """Why ``name`` cannot be lifted: its value was made by a call (``add3 = make_adder(3)``, or a
    decorator whose wrapper does not say which function it wraps), so no cell has its source."""
    qualname = target.__qualname__
    maker = qualname.split(_MADE_INSIDE)[0]
    if not _wraps_function_named(target, name):
        kind = "class" if isinstance(target, type) else "function"
        return CollectError(
            f"`{name}` is a {kind} made by calling `{maker}` (it is `{qualname}`): no cell has its source, "
            "and what it kept from that call cannot be written as source.",
            f"Define `{name}` in this cell (e.g. `{name} = {maker}(...)`), or in a module next to the notebook "
            "and import it.",
        )
    fix = "Define"
    if _defined_in_kernel(target):  # a decorator of the notebook's, which the user can change
        fix = (f"In `{maker}`, decorate the wrapper with `@functools.wraps(...)`, so `{name}` is carried over "
               "with its decorator; or define")
    return CollectError(
        f"`{name}` is wrapped by the decorator `{maker}`, whose wrapper (`{qualname}`) hides the function: "
        "its source cannot be found from the wrapper.",
        f"{fix} `{name}` in this cell, or in a module next to the notebook and import it.",
    )


def _wraps_function_named(wrapper: Any, name: str) -> bool:
    """Whether ``wrapper`` closes over a function called ``name``: ``@timer def slow`` made it."""
    for cell in getattr(wrapper, "__closure__", None) or ():
        try:
            inner = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if getattr(wrapped_function(inner) or inner, "__name__", None) == name:
            return True
    return False


def _scope_of(target: Any, namespace: Mapping[str, Any]) -> Mapping[str, Any]:
    """The globals ``target``'s code reads (its module's), then the notebook's namespace."""
    own = getattr(target, "__globals__", None)
    if own is None:  # a class: its module's globals
        own = getattr(sys.modules.get(getattr(target, "__module__", None) or ""), "__dict__", None)
    if own is None or own is namespace:
        return namespace
    return collections.ChainMap(own, namespace)


def _defined_in_kernel(target: Any) -> bool:
    module_name = getattr(target, "__module__", None)
    return module_name == "__main__" or (isinstance(module_name, str) and not is_importable_module(module_name))


def _describe(value: Any) -> str:
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"
