"""Names a %%flyte_fast cell takes from earlier cells: stdlib from-imports, made functions, magic cells.

Earlier cells run in a real IPython InteractiveShell; the cell is collected against its
namespace as the magic does, and the generated module is then run by a fresh Python from its
own file, to show it stands alone where the task runs.
"""

from __future__ import annotations

import linecache
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from fastreg_magic.collect import ModuleSource, files_to_ship, module_from_cell
from fastreg_magic.errors import CollectError
from fastreg_magic.lift import free_names


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    forget_earlier_cells(shell)
    yield shell
    forget_earlier_cells(shell)


def forget_earlier_cells(shell) -> None:
    """A fresh notebook: ``reset(new_session=False)`` empties the namespace, not the input history."""
    shell.reset(new_session=False)
    shell.run_line_magic("reset", "-f in")


def run(shell, code: str, *, history: bool = True) -> None:
    """Run a cell; ``history=False`` runs it as IPython's startup lines (``exec_lines``) do."""
    shell.run_cell(textwrap.dedent(code), store_history=history).raise_error()


def lift(shell, expression: str) -> ModuleSource:
    """The module of a cell whose function returns ``expression``."""
    return module_from_cell(f"def f():\n    return {expression}\n", "flow", shell.user_ns)


def value_in_fresh_python(module: ModuleSource, where: Path) -> str:
    """``repr(f())`` of the module, run by a fresh interpreter from its own file."""
    (where / f"{module.name}.py").write_text(module.source)
    done = subprocess.run([sys.executable, "-c", f"import {module.name}; print(repr({module.name}.f()))"],
                          cwd=where, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def value_in_kernel(shell, module: ModuleSource) -> str:
    run(shell, "def f():\n    return " + module.source.rsplit("return ", 1)[1])
    return repr(shell.user_ns["f"]())


# --- imports of the standard library: import lines, as the user wrote them ---------------------

# (earlier cell, what the task returns, the import line it gets). os and posixpath are frozen
# into Python, time, itertools and _functools built into it: none has a file of its own.
STDLIB_IMPORTS = [
    ("from os.path import join", "join('a', 'b')", "from os.path import join"),
    ("from os import getenv", "getenv('FASTREG_UNSET_VARIABLE', 'unset')", "from os import getenv"),
    ("from time import time", "time() > 0", "from time import time"),
    ("from itertools import chain", "list(chain([1], [2]))", "from itertools import chain"),
    ("from functools import reduce", "reduce(max, [3, 1, 2])", "from functools import reduce"),
    ("from os.path import join as pjoin", "pjoin('a', 'b')", "from os.path import join as pjoin"),
    ("from os.path import *", "basename('/data/x.csv')", "from os.path import basename"),
    ("import os", "os.sep", "import os"),
    ("import os.path as osp", "osp.join('a', 'b')", "import os.path as osp"),
    ("from math import sqrt", "sqrt(16.0)", "from math import sqrt"),
    ("import time as t", "t.time() > 0", "import time as t"),
]


@pytest.mark.parametrize(("earlier", "expression", "line"), STDLIB_IMPORTS)
def test_stdlib_imports_from_earlier_cells_become_import_lines(shell, tmp_path, earlier, expression, line):
    run(shell, earlier)
    module = lift(shell, expression)
    assert module.lifted == (line,)
    assert value_in_fresh_python(module, tmp_path) == value_in_kernel(shell, module)


@pytest.mark.parametrize(("earlier", "expression", "line"), STDLIB_IMPORTS)
def test_stdlib_imports_outside_the_input_history_become_import_lines(shell, earlier, expression, line):
    """Names imported by IPython's startup lines (``exec_lines``) are in no cell of the history:
    the import line comes from where the value is defined."""
    run(shell, earlier, history=False)
    assert lift(shell, expression).lifted == (line,)


@pytest.mark.parametrize(
    ("earlier", "expression", "line"),
    [
        # defined in posix (nt on Windows, which a Linux container has not)
        ("from os import getcwd", "callable(getcwd)", "from os import getcwd"),
        # a method of random's hidden Random instance, which names no module
        ("from random import random as rnd", "0 <= rnd() < 1", "from random import random as rnd"),
        # defined in _hashlib as openssl_sha256
        ("from hashlib import sha256 as h256", "h256(b'').hexdigest()[:8]", "from hashlib import sha256 as h256"),
        ("from threading import Lock", "type(Lock()).__name__", "from threading import Lock"),
    ],
)
def test_the_import_line_is_the_one_the_user_wrote(shell, tmp_path, earlier, expression, line):
    run(shell, earlier)
    module = lift(shell, expression)
    assert module.lifted == (line,)
    assert value_in_fresh_python(module, tmp_path) == value_in_kernel(shell, module)


def test_a_name_redefined_after_its_import_is_lifted_as_redefined(shell, tmp_path):
    run(shell, "from os.path import join")
    run(shell, "def join(*parts):\n    return '+'.join(parts)\n")
    module = lift(shell, "join('a', 'b')")
    assert module.lifted == ("def join (defined in an earlier cell)",)
    assert value_in_fresh_python(module, tmp_path) == "'a+b'"


def test_local_and_installed_modules_are_imported_as_before(shell, tmp_path, monkeypatch):
    (tmp_path / "mylib").mkdir()
    (tmp_path / "mylib" / "__init__.py").write_text("")
    (tmp_path / "mylib" / "features.py").write_text("def clean(n):\n    return n + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run(shell, "from mylib.features import clean\nfrom mylib.features import clean as tidy\n"
               "import flytekit as fk\nfrom flytekit import task\n")
    module = lift(shell, "clean(1), tidy(2), fk.task is task")
    assert module.lifted == ("from flytekit import task", "from mylib.features import clean",
                             "from mylib.features import clean as tidy", "import flytekit as fk")
    assert "mylib/features.py" in [f.relpath for f in files_to_ship(module, tmp_path).files]


def test_a_task_using_stdlib_names_and_a_time_cell_helper_ships(shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shell.run_line_magic("load_ext", "fastreg_magic")
    run(shell, "from os.path import join as pjoin\nfrom functools import reduce\nfrom time import time\n")
    run(shell, "%%time\ndef total(xs):\n    return reduce(lambda a, b: a + b, xs)\n")
    cell = ("from flytekit import task\n\n@task\ndef where(n: int) -> str:\n"
            "    return pjoin('runs', str(total([n, n])), str(time() > 0))\n")
    reg = shell.run_cell_magic("flyte_fast", "--dry-run -m stdlibmod", cell)
    assert reg.lifted == ("from functools import reduce", "from os.path import join as pjoin", "from time import time",
                          "def total (defined in an earlier cell)")
    assert shell.user_ns["where"](n=2) == "runs/4/True"


# --- functions made by a call: refused, naming the user's variable -------------------------


def test_a_function_made_by_calling_a_factory_is_refused_by_its_name(shell):
    run(shell, """
        def make_adder(n):
            def add(x):
                return x + n
            return add

        add3 = make_adder(3)
        """)
    with pytest.raises(CollectError) as refused:
        lift(shell, "add3(1)")
    assert refused.value.message.startswith("`add3` is a function made by calling `make_adder`")
    assert "Define `add3` in this cell (e.g. `add3 = make_adder(...)`), or in a module" in refused.value.hint


def test_a_class_made_by_calling_a_factory_is_refused_by_its_name(shell):
    run(shell, "def make_point():\n    class Point:\n        dims = 2\n    return Point\n\nPoint2 = make_point()\n")
    with pytest.raises(CollectError, match=r"^`Point2` is a class made by calling `make_point`"):
        lift(shell, "Point2.dims")


def test_a_function_behind_a_wrapper_without_wraps_is_refused_with_the_fix(shell):
    run(shell, """
        def timer(func):
            def wrapper(*args):
                return func(*args)
            return wrapper
        """)
    run(shell, "@timer\ndef slow(x):\n    return x\n")
    with pytest.raises(CollectError) as refused:
        lift(shell, "slow(1)")
    assert refused.value.message.startswith("`slow` is wrapped by the decorator `timer`, whose wrapper")
    assert refused.value.hint.startswith("In `timer`, decorate the wrapper with `@functools.wraps(...)`")
    assert "define `slow` in this cell, or in a module next to the notebook" in refused.value.hint


def test_a_wrapper_from_an_imported_module_is_refused_without_the_wraps_fix(shell, tmp_path, monkeypatch):
    (tmp_path / "timing.py").write_text("def timer(func):\n    def wrapper(*a):\n        return func(*a)\n"
                                        "    return wrapper\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run(shell, "from timing import timer\n\n@timer\ndef slow(x):\n    return x\n")
    with pytest.raises(CollectError) as refused:
        lift(shell, "slow(1)")
    assert refused.value.message.startswith("`slow` is wrapped by the decorator `timer`")
    assert refused.value.hint.startswith("Define `slow` in this cell")


def test_a_function_behind_a_wrapper_with_wraps_is_lifted_with_its_decorator(shell, tmp_path):
    run(shell, """
        import functools

        def timer(func):
            @functools.wraps(func)
            def wrapper(*args):
                return func(*args) * 10
            return wrapper
        """)
    run(shell, "@timer\ndef slow(x):\n    return x\n")
    module = lift(shell, "slow(2)")
    assert module.lifted == ("import functools", "def slow (defined in an earlier cell)",
                             "def timer (defined in an earlier cell)")
    assert value_in_fresh_python(module, tmp_path) == "20"


def test_the_magic_names_the_variable_of_a_made_function(shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shell.run_line_magic("load_ext", "fastreg_magic")
    run(shell, "def make_adder(n):\n    def add(x):\n        return x + n\n    return add\n\nadd3 = make_adder(3)\n")
    cell = "from flytekit import task\n\n@task\ndef plus3(n: int) -> int:\n    return add3(n)\n"
    with pytest.raises(UsageError, match=r"`add3` is a function made by calling `make_adder`"):
        shell.run_cell_magic("flyte_fast", "--dry-run -m madefn", cell)


# --- definitions in cells run with a cell magic ---------------------------------------------


def test_a_function_and_class_from_a_time_cell_are_lifted(shell, tmp_path):
    run(shell, "%%time\nSCALE = 2\n\ndef helper(x):\n    return x * SCALE\n\nclass Box:\n    def size(self):\n"
               "        return 3\n")
    module = lift(shell, "helper(Box().size())")
    assert module.lifted == ("SCALE = 2", "class Box (defined in an earlier cell)",
                             "def helper (defined in an earlier cell)")
    assert value_in_fresh_python(module, tmp_path) == "6"


def test_the_version_of_a_time_cell_that_made_the_function_is_lifted(shell, tmp_path):
    run(shell, "%%time\ndef helper():\n    return 'first'\n")
    run(shell, "%%time\nfirst_helper = helper\n\ndef helper():\n    return 'second'\n")
    assert value_in_fresh_python(lift(shell, "helper()"), tmp_path) == "'second'"
    assert value_in_fresh_python(lift(shell, "first_helper()"), tmp_path) == "'first'"


def test_a_time_cell_the_kernel_no_longer_has_is_named_as_the_reason(shell):
    run(shell, "%%time\ndef helper(x):\n    return x * 2\n")
    run(shell, "%reset -f in")
    linecache.clearcache()  # the cells IPython cached are gone too
    with pytest.raises(CollectError, match=r"source of `helper` .* not available: it was defined in a `%%time` cell"):
        lift(shell, "helper(1)")


def test_a_function_made_by_exec_is_named_as_the_reason(shell):
    run(shell, "exec('def helper(x):\\n    return x * 2\\n')")
    with pytest.raises(CollectError, match=r"source of `helper` .* not available: it was made by exec\(\)"):
        lift(shell, "helper(1)")


# --- names a definition binds, whatever it is called ---------------------------------------
# CPython's symtable tells the module's table by its name, "top": a function or class called `top`
# used to have every name it binds taken for a read of the module's globals.


@pytest.mark.parametrize(
    "cell",
    [
        "from flytekit import task\n\n@task\ndef top(k: int) -> int:\n    return 2 * k\n",
        "from flytekit import task, workflow\n\n@task\ndef double(k: int) -> int:\n    return 2 * k\n\n"
        "@workflow\ndef top(k: int) -> int:\n    return double(k=k)\n",
    ],
    ids=["task", "workflow"],
)
def test_a_task_or_workflow_named_top_ships(shell, tmp_path, monkeypatch, cell):
    monkeypatch.chdir(tmp_path)
    shell.run_line_magic("load_ext", "fastreg_magic")
    reg = shell.run_cell_magic("flyte_fast", "--dry-run -m topmod", cell)
    assert reg.lifted == ()
    assert shell.user_ns["top"](k=3) == 6


@pytest.mark.parametrize(
    ("code", "free"),
    [
        ("def top(k):\n    y = k\n    return y + N\n", {"N"}),
        ("class top:\n    size = 2\n    area = size * size\n", set()),
        ("def outer(k):\n    def top(j):\n        total = j + k\n        return total + N\n    return top\n", {"N"}),
        ("def outer(k):\n    class top:\n        c = k\n        d = c + N\n    return top\n", {"N"}),
        ("def top(q):\n    return [i + q + N for i in range(3)], (lambda a: a + q + N)(1)\n", {"N"}),
        ("def top():\n    global G\n    G = 1\n    return G + N\n", {"N"}),
    ],
    ids=["function", "class", "nested-function", "nested-class", "comprehension-and-lambda", "global"],
)
def test_names_bound_in_a_definition_named_top_are_its_own(code, free):
    assert free_names(code) == free


def test_a_name_bound_by_walrus_in_a_comprehension_is_the_cells_own(shell, tmp_path, monkeypatch):
    """From Python 3.12 comprehensions are inlined (PEP 709) and symtable shows `last` as declared
    global, never assigned: it must still count as the cell's own, not as a name from an earlier cell."""
    monkeypatch.chdir(tmp_path)
    shell.run_line_magic("load_ext", "fastreg_magic")
    cell = ("from flytekit import task\n\nsizes = [(last := n) * 2 for n in range(3)]\n\n"
            "@task\ndef biggest() -> int:\n    return last\n")
    assert free_names(cell) == set()
    reg = shell.run_cell_magic("flyte_fast", "--dry-run -m walrusmod", cell)
    assert reg.lifted == ()
    assert shell.user_ns["biggest"]() == 2


# --- constants too large to write into the module --------------------------------------------


def peak_memory_of(fn) -> int:
    """Bytes ``fn`` allocated at its peak (tracemalloc), whatever it raises."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except CollectError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    ("setup", "said"),
    [
        ("BIG = list(range(2 * 10**6))", r"`BIG` \(a list of 2,000,000 items\)"),
        ("BIG = {i: str(i) for i in range(10**6)}", r"`BIG` \(a dict of 1,000,000 items\)"),
        ("import threading\nBIG = {i: i for i in range(10**6)}\nBIG['lock'] = threading.Lock()",
         r"`BIG` \(a dict of 1,000,001 items\)"),
        ("BIG = 'x' * 10**8", r"`BIG` \(a str of 100,000,000 characters\)"),
    ],
    ids=["list", "dict", "dict-with-a-lock-at-the-end", "str"],
)
def test_a_constant_too_large_is_refused_after_its_first_mebibyte_of_source(shell, setup, said):
    """Writing all of it first took seconds and most of a gigabyte for ten million items: the
    source is written against a budget and given up as soon as it passes 1 MiB."""
    run(shell, setup)
    cell = "def f():\n    return len(BIG)\n"
    with pytest.raises(CollectError, match=said + r" would be over 1 MiB of source, too large to write into the module"
                                             r"\. Load it inside a task"):
        module_from_cell(cell, "flow", shell.user_ns)
    peak = peak_memory_of(lambda: module_from_cell(cell, "flow", shell.user_ns))
    assert peak < 32 * 1024**2, f"refusing it took {peak / 1024**2:.0f} MiB"


def test_the_magic_says_a_large_constant_is_too_large(shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shell.run_line_magic("load_ext", "fastreg_magic")
    run(shell, "L = list(range(10**7))")
    cell = "from flytekit import task\n\n@task\ndef t(x: int) -> int:\n    return x + len(L)\n"
    with pytest.raises(UsageError, match=r"`L` \(a list of 10,000,000 items\) would be over 1 MiB of source"):
        shell.run_cell_magic("flyte_fast", "--dry-run -m usesl", cell)


def test_a_constant_just_under_the_limit_still_ships(shell, tmp_path):
    from fastreg_magic.lift import MAX_CONSTANT_CHARS

    run(shell, f"S = 'x' * {MAX_CONSTANT_CHARS - 2}\nN = [10**5000, (1,), {{2, 1}}, b'b', None, float('inf')]")
    # 10**5000 is past Python's int-to-str digit limit: written in hex, it still comes back equal.
    module = module_from_cell("def f():\n    return len(S), N[0] % 1000003, N[1:]\n", "flow", shell.user_ns)
    assert f"S = '{'x' * (MAX_CONSTANT_CHARS - 2)}'" in module.source.splitlines()
    assert value_in_fresh_python(module, tmp_path) == value_in_kernel(shell, module)
    with pytest.raises(CollectError, match="would be over 1 MiB"):
        run(shell, f"S = 'x' * {MAX_CONSTANT_CHARS - 1}")
        module_from_cell("def f():\n    return len(S)\n", "flow", shell.user_ns)
