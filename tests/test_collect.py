"""Cell -> module (with what it borrows from earlier cells), and module -> the files to ship.

Cross-cell lifting runs through a real IPython InteractiveShell: earlier cells are run with
``run_cell`` and the cell is collected against ``shell.user_ns``, as the magic does. The
generated module is then imported for real from a fresh directory, to show it stands alone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastreg_magic.collect import (
    FileSet,
    ModuleSource,
    files_to_ship,
    module_from_cell,
    module_from_file,
)
from fastreg_magic.errors import CollectError


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.reset(new_session=False)
    yield shell
    shell.reset(new_session=False)


def run(shell, code: str) -> None:
    result = shell.run_cell(textwrap.dedent(code), store_history=True)
    result.raise_error()


def import_standalone(module: ModuleSource, where: Path):
    """Import the generated module from its own file, in a fresh namespace (as the container would)."""
    path = where / f"{module.name}.py"
    path.write_text(module.source)
    spec = importlib.util.spec_from_file_location(f"standalone_{module.name}", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


@contextlib.contextmanager
def generated_cell_module(tmp: Path, name: str, source: str):
    """A module as the magic leaves one for another %%flyte_fast cell: imported from a private file,
    marked as generated; removed from ``sys.modules`` afterwards."""
    (tmp / "generated").mkdir(exist_ok=True)
    path = tmp / "generated" / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        module.__fastreg_fingerprint__ = ("source", "digest")
        yield module
    finally:
        sys.modules.pop(name, None)


def ship(tmp: Path, tree: dict[str, str | bytes], cell: str, name: str = "flow", copy: str = "auto") -> FileSet:
    for relpath, content in tree.items():
        path = tmp / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else textwrap.dedent(content).encode())
    return files_to_ship(module_from_cell(textwrap.dedent(cell), name), tmp, copy=copy)


def shipped(fileset: FileSet) -> list[str]:
    return [f.relpath for f in fileset.files]


def left_out(fileset: FileSet) -> dict[str, str]:
    return {item.relpath: item.reason for item in fileset.left_out}


# --- cell -> module ------------------------------------------------------------------------


def test_a_standalone_cell_is_the_module_unchanged():
    cell = "from flytekit import task\n\n@task\ndef t(n: int) -> int:\n    return n\n"
    module = module_from_cell(cell, "flow", {})
    assert module == ModuleSource(name="flow", source=cell, lifted=())


def test_earlier_cells_are_lifted_and_the_module_runs_on_its_own(shell, tmp_path):
    run(
        shell,
        """
        import json as js
        import xml.etree.ElementTree as ET
        from textwrap import dedent
        from typing import List, Optional as Opt
        N = 3
        SCALE = 0.5
        NAMES = ("a", "b")
        TABLE = {"x": [1, 2, None], "y": {b"k": True}}

        def normalize(x):
            return js.dumps({"x": x * N}) + inner()

        def inner():
            return ET.Element("e").tag + dedent("  z")

        class Point:
            dims = 2
        """,
    )
    cell = "def answer(v: Opt[List[int]]):\n    return normalize(v), Point.dims, SCALE, NAMES, TABLE\n"
    module = module_from_cell(cell, "flow", shell.user_ns)

    assert module.lifted == (
        "from textwrap import dedent",
        "from typing import List",
        "from typing import Optional as Opt",
        "import json as js",
        "import xml.etree.ElementTree as ET",
        "N = 3",
        "NAMES = ('a', 'b')",
        "SCALE = 0.5",
        "TABLE = {'x': [1, 2, None], 'y': {b'k': True}}",
        "class Point (defined in an earlier cell)",
        "def inner (defined in an earlier cell)",
        "def normalize (defined in an earlier cell)",
    )
    standalone = import_standalone(module, tmp_path)
    run(shell, cell)
    assert standalone.answer(2) == shell.user_ns["answer"](2)
    assert standalone.answer(2)[0] == '{"x": 6}ez'


def test_submodules_reached_through_a_plain_import_are_imported_too(shell, tmp_path):
    run(shell, "import xml.etree.ElementTree\nimport os.path as osp\n")
    cell = "def f():\n    return xml.etree.ElementTree.Element('e').tag + osp.join('a', 'b')\n"
    module = module_from_cell(cell, "flow", shell.user_ns)
    assert module.lifted == ("import os.path as osp", "import xml", "import xml.etree", "import xml.etree.ElementTree")
    # A fresh interpreter has not loaded xml.etree: the module must import it itself.
    (tmp_path / "flow.py").write_text(module.source)
    done = subprocess.run([sys.executable, "-c", "import flow; print(flow.f())"], cwd=tmp_path, capture_output=True, text=True)
    assert done.stdout.strip() == "ea/b", done.stderr


def test_ipython_only_names_are_refused(shell):
    with pytest.raises(CollectError, match="`display` is IPython's"):
        module_from_cell("def f():\n    display(1)\n", "flow", shell.user_ns)


def test_lifting_is_deterministic_whatever_the_namespace_order(shell):
    run(shell, "B = {'z', 'a', 'm'}\nA = frozenset({3, 1, 2})\nC = float('nan')\n")
    cell = "def f():\n    return A, B, C\n"
    first = module_from_cell(cell, "flow", shell.user_ns)
    reordered = dict(reversed(list(shell.user_ns.items())))
    for _ in range(10):
        assert module_from_cell(cell, "flow", reordered) == first
    assert "B = {'a', 'm', 'z'}" in first.source
    assert "A = frozenset({1, 2, 3})" in first.source
    assert "C = float('nan')" in first.source


def test_definitions_come_before_what_uses_them_at_definition_time(shell, tmp_path):
    run(
        shell,
        """
        import functools

        def zz_decorator(f):
            @functools.wraps(f)
            def wrapper(*a):
                return f(*a) + 1
            return wrapper

        class ZBase:
            k = 10

        @zz_decorator
        def aa_decorated(x):
            return x

        class AChild(ZBase):
            pass
        """,
    )
    run(shell, "@functools.lru_cache\ndef cached(n):\n    return n * 3\n")
    module = module_from_cell("def f():\n    return aa_decorated(1), AChild.k, cached(2)\n", "flow", shell.user_ns)
    assert "@functools.lru_cache\ndef cached(n):" in module.source
    assert module.source.index("def zz_decorator") < module.source.index("def aa_decorated")
    assert module.source.index("class ZBase") < module.source.index("class AChild")
    assert import_standalone(module, tmp_path).f() == (2, 10, 6)


def test_dataclasses_and_names_the_cell_defines_itself(shell, tmp_path):
    run(
        shell,
        """
        from dataclasses import dataclass, field

        @dataclass
        class Settings:
            lr: float = 0.1
            tags: list = field(default_factory=list)

        def scaled(x):
            return x * FACTOR  # FACTOR: defined by the cell below, not by any earlier cell
        """,
    )
    cell = "FACTOR = 3\n\ndef f():\n    return scaled(Settings().lr)\n"
    module = module_from_cell(cell, "flow", shell.user_ns)
    assert module.lifted == (
        "from dataclasses import dataclass",
        "from dataclasses import field",
        "class Settings (defined in an earlier cell)",
        "def scaled (defined in an earlier cell)",
    )
    assert "@dataclass\nclass Settings:" in module.source
    assert import_standalone(module, tmp_path).f() == pytest.approx(0.3)


def test_flytekit_task_from_an_earlier_cell_is_lifted_with_its_decorator(shell, tmp_path):
    run(shell, "from flytekit import task\n\n@task\ndef double(n: int) -> int:\n    return 2 * n\n")
    # The cell imports `task` itself, below the lifted `@task def double`: it is lifted too.
    cell = "from flytekit import task, workflow\n\n@workflow\ndef wf(n: int = 2) -> int:\n    return double(n=n)\n"
    module = module_from_cell(cell, "flow", shell.user_ns)
    assert "from flytekit import task" in module.lifted
    assert "def double (defined in an earlier cell)" in module.lifted
    assert "@task\ndef double(n: int) -> int:" in module.source
    assert import_standalone(module, tmp_path).wf(n=4) == 8


def test_code_from_another_generated_cell_module_is_lifted_not_imported(shell, tmp_path):
    """A module the magic generated from another cell lives in a kernel-private file: its
    functions are carried over as source, and the module itself cannot be imported remotely."""
    with generated_cell_module(tmp_path, "cell_one_for_test", "def shared(x):\n    return x + 100\n") as module:
        shell.user_ns.update(shared=module.shared, cell_one_for_test=module)
        lifted = module_from_cell("def f():\n    return shared(1)\n", "flow", shell.user_ns)
        assert lifted.lifted == ("def shared (defined in an earlier cell)",)
        assert import_standalone(lifted, tmp_path).f() == 101
        with pytest.raises(CollectError, match="`cell_one_for_test` is the module of another %%flyte_fast cell"):
            module_from_cell("def f():\n    return cell_one_for_test.shared(1)\n", "flow", shell.user_ns)
        importing = module_from_cell("from cell_one_for_test import shared\n", "flow", shell.user_ns)
        with pytest.raises(CollectError, match="is imported by this cell but is the module of another %%flyte_fast cell"):
            (tmp_path / "proj").mkdir()
            files_to_ship(importing, tmp_path / "proj")


def test_a_task_from_another_cell_brings_what_its_own_module_gave_it(shell, tmp_path):
    """Another %%flyte_fast cell's task reads `task`, a helper and a constant from that cell's module,
    none of which is in the notebook's namespace (the magic pushes only entities there): they are
    looked up in that module and carried over with it."""
    source = textwrap.dedent(
        """
        from flytekit import task

        OFFSET = 10

        def helper(x):
            return x + OFFSET

        @task
        def bump(x: int) -> int:
            return helper(x)
        """
    )
    with generated_cell_module(tmp_path, "cell_two_for_test", source) as module:
        shell.user_ns["bump"] = module.bump
        cell = "from flytekit import task, workflow\n\n@workflow\ndef wf(x: int = 1) -> int:\n    return bump(x=x)\n"
        lifted = module_from_cell(cell, "flow", shell.user_ns)
        assert lifted.lifted == ("from flytekit import task", "OFFSET = 10", "def bump (defined in an earlier cell)",
                                 "def helper (defined in an earlier cell)")
        assert import_standalone(lifted, tmp_path).wf(x=3) == 13


def test_future_imports_and_docstring_stay_first(shell, tmp_path):
    run(shell, "K = 7\n")
    cell = '"""Doc."""\nfrom __future__ import annotations\n\ndef f() -> int:\n    return K\n'
    module = module_from_cell(cell, "flow", shell.user_ns)
    assert module.source.startswith('"""Doc."""\nfrom __future__ import annotations\n')
    loaded = import_standalone(module, tmp_path)
    assert loaded.__doc__ == "Doc." and loaded.f() == 7


def test_names_bound_anywhere_in_the_cell_are_not_lifted(shell):
    run(shell, "x = 1\ny = 2\nz = 3\nfor_ = 4\n")
    cell = textwrap.dedent(
        """
        x = 10
        def f():
            global y
            y = 5
        for z in range(2):
            pass
        print(x, y, z)
        """
    )
    assert module_from_cell(cell, "flow", shell.user_ns).lifted == ()


def test_free_names_are_found_across_statements_sharing_lines_and_after_an_edit(shell):
    run(shell, "K = 3\nM = 4\nimport math\n")
    cell = "a = (1,\n     2); b = a + (K,)\n\n@staticmethod\ndef f():\n    return math.pi * M\n"
    assert module_from_cell(cell, "flow", shell.user_ns).lifted == ("import math", "K = 3", "M = 4")
    # The same statements again, one of them edited: the edit's new free name counts, the old one no longer.
    edited = cell.replace("return math.pi * M", "return math.pi")
    assert module_from_cell(edited, "flow", shell.user_ns).lifted == ("import math", "K = 3")
    rebinding = edited.replace("a = (1,", "K = 0; a = (1,")
    assert module_from_cell(rebinding, "flow", shell.user_ns).lifted == ("import math",)


@pytest.mark.parametrize(
    "cell",
    ["x = 1\r\ny = x + K\r\n", "s = 'a\x0cb'\nt = s * K\n", "s = 'a\u2028b'\nt = s * K\n", "def f():\n    return K\n\x0c\ng = f\n"],
    ids=["crlf", "form-feed-in-string", "line-separator-in-string", "form-feed-between-statements"],
)
def test_free_names_are_found_whatever_the_line_breaks(shell, cell):
    run(shell, "K = 3\n")
    assert module_from_cell(cell, "flow", shell.user_ns).lifted == ("K = 3",)


@pytest.mark.parametrize(
    ("setup", "name", "kind"),
    [
        ("obj = object()", "obj", "object"),
        ("import io\nbuf = io.StringIO()", "buf", "_io.StringIO"),
        ("class C:\n    pass\ninst = C()", "inst", "C"),
    ],
)
def test_values_that_are_not_code_or_literals_are_refused_by_name(shell, setup, name, kind):
    run(shell, setup)
    with pytest.raises(CollectError, match=rf"`{name}` \(an? [\w.]*{kind}\).*Define it in this cell, or import it"):
        module_from_cell(f"def f():\n    return {name}\n", "flow", shell.user_ns)


def test_a_lambda_is_refused_with_the_fix(shell):
    run(shell, "square = lambda v: v * v")
    with pytest.raises(CollectError, match=r"`square` is a lambda.*def square"):
        module_from_cell("def f():\n    return square(2)\n", "flow", shell.user_ns)


def test_an_unknown_name_is_refused(shell):
    with pytest.raises(CollectError, match="`undefined_thing` is used by this cell but is defined neither"):
        module_from_cell("def f():\n    return undefined_thing\n", "flow", shell.user_ns)


def test_a_star_import_lets_unknown_names_through(shell):
    module = module_from_cell("from math import *\n\ndef f():\n    return floor(2.5)\n", "flow", shell.user_ns)
    assert module.lifted == ()


@pytest.mark.parametrize(
    ("cell", "line", "text"),
    [
        ("import os\n%time x = 1\n", 2, "%time x = 1"),
        ("!pip install numpy\nimport os\n", 1, "!pip install numpy"),
        ("def f():\n    %timeit f()\n", 2, "%timeit f()"),
    ],
)
def test_magics_and_shell_lines_are_refused_with_their_line_number(cell, line, text):
    with pytest.raises(CollectError, match=rf"Line {line} of the cell is IPython syntax.*`{re.escape(text)}`"):
        module_from_cell(cell, "flow", {})


def test_a_syntax_error_names_the_line_and_its_text():
    with pytest.raises(CollectError, match=r"Syntax error on line 3 of the cell.*`def broken\(:`"):
        module_from_cell("import os\n\ndef broken(:\n    pass\n", "flow", {})
    with pytest.raises(CollectError, match=r"line 2 of the cell: 'return' outside function: `return 1`"):
        module_from_cell("x = 1\nreturn 1\n", "flow", {})
    with pytest.raises(CollectError, match=r"line 2 of the cell: from __future__ imports must occur"):
        module_from_cell("x = 1\nfrom __future__ import annotations\n", "flow", {})


@pytest.mark.parametrize(("name", "why"), [("my-flow", "not a valid"), ("class", "not a valid"), ("json", "standard library")])
def test_bad_module_names_are_refused(name, why):
    with pytest.raises(CollectError, match=why):
        module_from_cell("x = 1\n", name, {})


def test_module_from_file(tmp_path):
    path = tmp_path / "pipeline.py"
    path.write_text("X = 1")
    assert module_from_file(path) == ModuleSource(name="pipeline", source="X = 1\n", lifted=())
    (tmp_path / "bad.py").write_text("def (:\n")
    with pytest.raises(CollectError, match="Syntax error on line 1"):
        module_from_file(tmp_path / "bad.py")


# --- module -> files (copy="auto") ---------------------------------------------------------

PROJECT = {
    "mylib/__init__.py": "from .features import clean\n",
    "mylib/features.py": "import os\nfrom . import util\nfrom mylib.sub import deep\n\ndef clean(x):\n    return x\n",
    "mylib/util.py": "X = 1\n",
    "mylib/unused.py": "Y = 2\n",
    "mylib/sub/__init__.py": "",
    "mylib/sub/deep.py": "import toolbox_ns.tool\n",
    "toolbox_ns/tool.py": "Z = 3\n",  # a namespace package: no __init__.py
    "notes.txt": "not code\n",
    "other.py": "unrelated = True\n",
}


def test_auto_ships_the_module_and_what_it_imports_transitively(tmp_path):
    fileset = ship(tmp_path, PROJECT, "import json\nimport flytekit\nfrom mylib.features import clean\n")
    assert shipped(fileset) == [
        "flow.py",
        "mylib/__init__.py",
        "mylib/features.py",
        "mylib/sub/__init__.py",
        "mylib/sub/deep.py",
        "mylib/util.py",
        "toolbox_ns/tool.py",
    ]
    generated = next(f for f in fileset.files if f.relpath == "flow.py")
    assert generated.path is None and generated.data.startswith(b"import json")
    assert fileset.root == tmp_path.resolve()
    assert fileset.warnings == () and fileset.left_out == ()


def test_auto_follows_imports_inside_functions(tmp_path):
    fileset = ship(tmp_path, PROJECT, "def f():\n    import other\n    return other.unrelated\n")
    assert shipped(fileset) == ["flow.py", "other.py"]


def test_auto_follows_imports_in_every_kind_of_block(tmp_path):
    project = {f"m{i}.py": f"V = {i}\n" for i in range(7)}
    cell = (
        "try:\n    import m0\nexcept ImportError:\n    import m1\nelse:\n    import m2\nfinally:\n    import m3\n"
        "match 1:\n    case 1:\n        import m4\n"
        "class K:\n    def m(self):\n        with open(__file__):\n            import m5\n"
        "for _ in ():\n    pass\nelse:\n    from m6 import V\n"
    )
    assert shipped(ship(tmp_path, project, cell)) == ["flow.py"] + [f"m{i}.py" for i in range(7)]


def test_a_local_folder_without_init_does_not_hide_an_installed_package(tmp_path):
    fileset = ship(tmp_path, {"requests/notes.txt": "x\n", "json/readme.md": "y\n"}, "import requests.adapters\nimport json.decoder\n")
    assert shipped(fileset) == ["flow.py"] and fileset.warnings == ()


def test_a_missing_top_level_import_is_refused_with_the_fix(tmp_path):
    with pytest.raises(CollectError, match=rf"`utils` is imported by this cell but was not found under {tmp_path}.*--source-root"):
        ship(tmp_path, PROJECT, "import utils\n")


def test_a_missing_import_inside_a_function_or_try_is_left_to_the_image(tmp_path):
    cell = "try:\n    import not_here_either\nexcept ImportError:\n    pass\n\ndef f():\n    import only_in_image\n"
    assert shipped(ship(tmp_path, PROJECT, cell)) == ["flow.py"]


def test_a_missing_submodule_of_a_local_package_is_refused(tmp_path):
    with pytest.raises(CollectError, match=r"`mylib.nothing` is imported by this cell but the local package `mylib` has no module"):
        ship(tmp_path, PROJECT, "import mylib.nothing\n")


def test_a_local_module_with_a_syntax_error_is_named(tmp_path):
    with pytest.raises(CollectError, match=r"broken_mod.py has a syntax error on line 2"):
        ship(tmp_path, {"broken_mod.py": "x = 1\ndef (:\n"}, "import broken_mod\n")


def test_a_relative_import_in_the_cell_is_refused():
    with pytest.raises(CollectError, match="relative import outside any package"):
        files_to_ship(module_from_cell("from . import x\n", "flow"), Path.cwd())


@pytest.mark.parametrize("clash", ["flow.py", "flow/__init__.py"])
def test_a_local_module_named_like_the_cell_is_a_clash(tmp_path, clash):
    with pytest.raises(CollectError, match=r"clashes with the local (module|package).*-m/--module .*\(e\.g\. -m flow_flow\)"):
        ship(tmp_path, {clash: "x = 1\n"}, "y = 2\n")


def test_the_module_file_written_from_the_same_cell_is_not_a_clash(tmp_path):
    assert shipped(ship(tmp_path, {"flow.py": "y = 2\n"}, "y = 2\n")) == ["flow.py"]


def test_a_plain_folder_named_like_the_module_is_not_a_clash(tmp_path):
    assert shipped(ship(tmp_path, {"flow/data.csv": "1\n"}, "y = 2\n", copy="all")) == ["flow.py", "flow/data.csv"]


def test_auto_reports_secrets_next_to_shipped_code_and_never_ships_them(tmp_path):
    tree = dict(PROJECT, **{".env": "TOKEN=1\n", "mylib/server.pem": "-----\n", "deep/dir/id_rsa": "k\n"})
    fileset = ship(tmp_path, tree, "from mylib import util\n")
    assert left_out(fileset) == {".env": "secret (never shipped)", "mylib/server.pem": "secret (never shipped)"}
    assert not any(".env" in f or ".pem" in f for f in shipped(fileset))


def test_auto_refuses_an_imported_module_that_is_ignored(tmp_path):
    tree = dict(PROJECT, **{".gitignore": "mylib/util.py\n"})
    with pytest.raises(CollectError, match=r"mylib/util.py is imported by the cell .* never shipped: it is ignored by "
                       r"\.gitignore\. .*`import mylib.util` would fail.* Change \.gitignore so it no longer matches"):
        ship(tmp_path, tree, "from mylib import util\n")


def test_an_ignored_module_imported_inside_try_is_left_out_with_a_warning_and_elsewhere_refused(tmp_path):
    tree = dict(PROJECT, **{".gitignore": "mylib/util.py\n"})
    guarded = "try:\n    from mylib import util\nexcept ImportError:\n    util = None\n"
    fileset = ship(tmp_path, tree, guarded)
    assert "mylib/util.py" not in shipped(fileset)
    assert fileset.warnings == ("mylib/util.py is imported inside a `try` but ignored by .gitignore: it is not shipped.",)
    in_a_function = "def load():\n    from mylib import util\n    return util\n"  # runs in the task: it would fail
    with pytest.raises(CollectError, match=r"mylib/util.py is imported by the cell .* never shipped"):
        ship(tmp_path, {}, in_a_function)


def test_a_module_importable_only_from_outside_the_root_is_a_warning(tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    (outside / "extlib_for_test").mkdir(parents=True)
    (outside / "extlib_for_test" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(outside))
    root = tmp_path / "proj"
    root.mkdir()
    fileset = ship(root, {}, "import extlib_for_test\n")
    assert shipped(fileset) == ["flow.py"]
    assert fileset.warnings == (
        f"`extlib_for_test` is imported from {outside}, outside the source root {root}: it is not shipped, "
        f"so the runs use the image's copy, if it has one, not this code. Pass --source-root {outside} to ship "
        f"it, or move it under {root}.",
    )


def test_a_package_found_in_a_subfolder_through_sys_path_is_a_warning(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    (root / "src" / "srclib_for_test").mkdir(parents=True)
    (root / "src" / "srclib_for_test" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(root / "src"))
    fileset = ship(root, {}, "import srclib_for_test\n")
    assert shipped(fileset) == ["flow.py"]
    assert fileset.warnings == (
        f"`srclib_for_test` is imported from {root / 'src'}, a subfolder of the source root that Python "
        "searches through sys.path; in the container it would not be importable, so it is not shipped. "
        f"Pass --source-root {root / 'src'} to ship it.",
    )


# --- module -> files (copy="all") and ignores ----------------------------------------------


def test_all_ships_everything_but_junk_ignored_files_and_secrets(tmp_path):
    tree = {
        "app.py": "",
        "data/small.csv": "1,2\n",
        "build/out.bin": b"\0",
        "docs/readme.md": "",
        "docs/keep.md": "",
        "sub/.gitignore": "*.log\n!keep.log\n",
        "sub/a.log": "",
        "sub/keep.log": "",
        "sub/code.py": "",
        "top.md": "",
        "scratch/tmp.txt": "",
        ".gitignore": "build/\n",
        ".flyteignore": "docs/readme.md\n",
        ".dockerignore": "*.md\nscratch\n",
        "__pycache__/app.cpython-311.pyc": b"\0",
        "pkg/mod.pyc": b"\0",
        ".git/config": "",
        ".ipynb_checkpoints/x.ipynb": "",
        "node_modules/x/index.js": "",
        "myenv/pyvenv.cfg": "home = /usr\n",
        "myenv/lib/site.py": "",
        ".env.local": "A=1\n",
        "keys/deploy.key": "k",
        ".aws/credentials": "[default]\n",
        "conf/gcloud/application_default_credentials.json": "{}",
    }
    fileset = ship(tmp_path, tree, "x = 1\n", copy="all")
    assert shipped(fileset) == [
        ".dockerignore", ".flyteignore", ".gitignore", "app.py", "data/small.csv", "docs/keep.md",
        "flow.py", "sub/.gitignore", "sub/code.py", "sub/keep.log",
    ]  # fmt: skip
    assert left_out(fileset) == {
        ".aws/credentials": "secret (never shipped)",
        ".env.local": "secret (never shipped)",
        "build/": "ignored by .gitignore",
        "conf/gcloud/application_default_credentials.json": "secret (never shipped)",
        "docs/readme.md": "ignored by .flyteignore",
        "keys/deploy.key": "secret (never shipped)",
        "scratch/": "ignored by .dockerignore",
        "sub/a.log": "ignored by .gitignore",
        "top.md": "ignored by .dockerignore",
    }


def test_gitignore_above_the_root_applies_up_to_the_repository(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("proj/generated/\n*.tmp\n")
    fileset = ship(repo / "proj", {"generated/x.py": "", "a.tmp": "", "ok.py": ""}, "x = 1\n", copy="all")
    assert shipped(fileset) == ["flow.py", "ok.py"]
    assert left_out(fileset) == {"a.tmp": "ignored by .gitignore", "generated/": "ignored by .gitignore"}


def test_symlinks_ship_file_content_but_do_not_follow_directories(tmp_path):
    (tmp_path / "real.py").write_text("R = 1\n")
    (tmp_path / "link.py").symlink_to(tmp_path / "real.py")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "dangling.py").symlink_to(tmp_path / "missing.py")
    fileset = ship(tmp_path, {}, "x = 1\n", copy="all")
    assert shipped(fileset) == ["flow.py", "link.py", "real.py"]
    assert left_out(fileset) == {
        "dangling.py": "broken symbolic link",
        "loop": "symbolic link to a directory (not followed)",
    }


def test_a_link_to_a_secret_is_a_secret(tmp_path):
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("[default]\n")
    root = tmp_path / "proj"
    root.mkdir()
    (root / "settings.ini").symlink_to(home / ".aws" / "credentials")
    (root / "conda_env" / "conda-meta").mkdir(parents=True)
    (root / "conda_env" / "lib.py").write_text("")
    fileset = ship(root, {}, "x = 1\n", copy="all")
    assert shipped(fileset) == ["flow.py"]
    assert left_out(fileset) == {"settings.ini": "secret (never shipped)"}


def test_credentials_are_never_shipped_whatever_their_file_is_called(tmp_path):
    key = "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----\\n"
    (tmp_path / "service-account.json").write_text(
        '{"type": "service_account", "client_email": "x@y.iam.gserviceaccount.com", "private_key": "%s"}' % key)
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "ssh_host").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n")
    (tmp_path / "aws.cfg").write_text("[default]\naws_access_key_id = AKIA\naws_secret_access_key = abc\n")
    (tmp_path / "secrets.toml").write_text('token = "t"\n')
    (tmp_path / "notes.md").write_text("How to make a key: openssl genrsa; never commit the PRIVATE KEY.\n")
    fileset = ship(tmp_path, {}, "x = 1\n", copy="all")
    assert shipped(fileset) == ["flow.py", "notes.md"]
    assert left_out(fileset) == {name: "secret (never shipped)" for name in
                                 ("aws.cfg", "deploy/ssh_host", "secrets.toml", "service-account.json")}


def test_large_files_are_warned_about(tmp_path):
    with open(tmp_path / "big.parquet", "wb") as handle:
        handle.truncate(42 * 1024 * 1024)
    fileset = ship(tmp_path, {}, "x = 1\n", copy="all")
    assert fileset.warnings == ("big.parquet is 42 MiB (over 10 MiB)",)


def test_bad_copy_mode_and_root_are_refused(tmp_path):
    module = module_from_cell("x = 1\n", "flow")
    with pytest.raises(CollectError, match="--copy 'some' is not a copy mode"):
        files_to_ship(module, tmp_path, copy="some")
    with pytest.raises(CollectError, match="is not a directory"):
        files_to_ship(module, tmp_path / "nope")


def test_the_same_tree_gives_the_same_file_set(tmp_path):
    first = ship(tmp_path, PROJECT, "from mylib import clean\n", copy="all")
    for _ in range(10):
        assert files_to_ship(module_from_cell("from mylib import clean\n", "flow"), tmp_path, copy="all") == first


def test_no_ipython_or_flytekit_import_to_collect(tmp_path):
    code = (
        "import sys; from pathlib import Path; from fastreg_magic import collect, package, upload; "
        f"collect.files_to_ship(collect.module_from_cell('import json', 'flow', {{}}), Path({str(tmp_path)!r})); "
        "assert 'IPython' not in sys.modules and 'flytekit' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lifting_in_a_real_jupyter_kernel(tmp_path):
    """ipykernel keeps cells in linecache under /tmp/ipykernel_<pid>/<hash>.py, not IPython's
    <ipython-input-...> names; classes with no methods are found through the cell history."""
    from kernel_driver import KernelDriver  # tests/ is on sys.path (rootless test modules)

    kernel = KernelDriver(cwd=tmp_path)
    try:
        kernel.run("import json\nLIMIT = 5\n\nclass Marker:\n    label = 'm'\n\ndef normalize(x):\n    return json.dumps([x, LIMIT])\n")
        kernel.run("normalize = normalize  # re-run cells do not confuse the search\n")
        out = kernel.run(
            "from fastreg_magic.collect import module_from_cell\n"
            "m = module_from_cell('def f():\\n    return normalize(Marker.label)\\n', 'flow', get_ipython().user_ns)\n"
            "print(m.lifted)\nns = {}\nexec(compile(m.source, 'flow.py', 'exec'), ns)\nprint(ns['f']())\n"
        )["stdout"]
    finally:
        kernel.close()
    lines = "".join(out).splitlines()
    assert lines == [
        "('import json', 'LIMIT = 5', 'class Marker (defined in an earlier cell)', 'def normalize (defined in an earlier cell)')",
        '["m", 5]',
    ]


# --- what is never shipped: secret values, not words; imported modules left out refuse the cell --------


def test_secret_values_give_a_file_away_not_the_words_that_name_them(tmp_path):
    tree = {
        "mylib/__init__.py": "",
        "mylib/storage.py": 'import os\n\ndef client_kwargs():\n    return dict(aws_secret_access_key=os.environ.get("SECRET"))\n',
        "mylib/hardcoded.py": 'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"\n',
        "utils/__init__.py": "",
        "utils/gcloud/__init__.py": "def bucket():\n    return 'gs://b'\n",
        "id_rsa_tools.py": "def fingerprint(path):\n    return path\n",
        "deploy/.env.production": "TOKEN=1\n",
        "deploy/settings.ini": "[s3]\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG\n",
        "home/.config/gcloud/credentials.db": b"\0",
        "keys/sa.json": '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nabc"}',
        "docs/howto.md": "Set `aws_secret_access_key` in ~/.aws/credentials, never here.\n",
        "docs/pem.md": "A key file starts with -----BEGIN PRIVATE KEY----- and a line break.\n",
        "mylib/pem.py": 'HEADER = "-----BEGIN RSA PRIVATE KEY-----"\n',
    }
    fileset = ship(tmp_path, tree, "x = 1\n", copy="all")
    assert shipped(fileset) == [
        "docs/howto.md", "docs/pem.md", "flow.py", "id_rsa_tools.py", "mylib/__init__.py", "mylib/pem.py",
        "mylib/storage.py", "utils/__init__.py", "utils/gcloud/__init__.py",
    ]  # fmt: skip
    assert left_out(fileset) == {path: "secret (never shipped)" for path in (
        "deploy/.env.production", "deploy/settings.ini", "home/.config/gcloud/credentials.db", "keys/sa.json",
        "mylib/hardcoded.py")}


@pytest.mark.parametrize("line", [
    'def opts():\n    return dict(aws_secret_access_key="{key}", key="AKIAZ7QW3RT5YU8OP2LK")\n',
    'client = boto3.client("s3", aws_access_key_id="AKIAZ7QW3RT5YU8OP2LK", aws_secret_access_key="{key}")\n',
    'AWS_SECRET_ACCESS_KEY = "{key}"  # prod\n',
    'STORAGE = {{"key": "AKIAZ7QW3RT5YU8OP2LK", "secret": "{key}"}}\n',
])
def test_an_aws_secret_key_written_inline_in_code_is_never_shipped(tmp_path, line):
    tree = {"mylib/__init__.py": "", "mylib/store.py": line.format(key="q8Zr3vT1xY9wK2mN5pL7sD4fG6hJ0aB3cE8uI1oP")}
    fileset = ship(tmp_path, tree, "x = 1\n", copy="all")
    assert left_out(fileset) == {"mylib/store.py": "secret (never shipped)"}


def test_modules_that_read_credentials_from_the_environment_ship_and_run(sandbox_shell, tmp_path):
    """The tester's two cases: a module naming `aws_secret_access_key` and a package named `gcloud`
    were left out as secrets, registered anyway, and the run failed with ModuleNotFoundError."""
    write_project(tmp_path, {
        "credlib/__init__.py": "",
        "credlib/storage.py": 'import os\n\ndef client_kwargs():\n    return dict(aws_secret_access_key='
                              'os.environ.get("SECRET"))\n\ndef bucket():\n    return "my-bucket"\n',
        "cloudutils/__init__.py": "",
        "cloudutils/gcloud/__init__.py": "def prefix():\n    return 'gs://'\n",
    })
    cell = textwrap.dedent("""\
        from flytekit import task, workflow
        from credlib.storage import bucket
        from cloudutils.gcloud import prefix

        @task
        def where() -> str:
            return prefix() + bucket()

        @workflow
        def wf() -> str:
            return where()
        """)
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-m creds_flow --source-root {tmp_path}", cell)
    assert {"credlib/storage.py", "cloudutils/gcloud/__init__.py"} <= set(reg.files)
    assert reg.left_out == ()
    run = reg.launch("wf").wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert list(run.outputs.values()) == ["gs://my-bucket"]


def write_project(root: Path, tree: dict[str, str]) -> None:
    for relpath, content in tree.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(content)


@pytest.fixture
def magic_shell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fastreg_magic")
    return shell


@pytest.mark.parametrize("copy", ["auto", "all"])
def test_an_imported_module_holding_a_secret_refuses_the_cell(magic_shell, tmp_path, copy):
    from IPython.core.error import UsageError

    write_project(tmp_path, {"keyed/__init__.py": "", "keyed/aws.py": 'AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG"\n'})
    cell = "from flytekit import task\nfrom keyed.aws import AWS_SECRET_ACCESS_KEY\n\n@task\ndef t() -> int:\n    return 1\n"
    with pytest.raises(UsageError, match=r"keyed/aws.py is imported by the cell .* never shipped: it holds credentials .*"
                                         r"`import keyed.aws` would fail.* Take the credentials out of it"):
        magic_shell.run_cell_magic("flyte_fast", f"-m secret_flow --source-root {tmp_path} --copy {copy} --dry-run", cell)


def test_an_imported_module_an_ignore_file_leaves_out_refuses_the_cell_with_copy_all_too(tmp_path):
    tree = dict(PROJECT, **{".flyteignore": "mylib/\n"})
    with pytest.raises(CollectError, match=r"mylib/__init__.py is imported .* ignored by \.flyteignore.*"
                                           r"Change \.flyteignore so it no longer matches mylib/__init__.py"):
        ship(tmp_path, tree, "from mylib import util\n", copy="all")


def test_copy_all_ships_a_package_reached_through_a_directory_link_as_copy_auto_does(tmp_path):
    tree = dict(PROJECT, **{"data/table.csv": "1\n"})
    for relpath, content in tree.items():
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_text(content)
    (tmp_path / "link_to_dir").symlink_to(tmp_path / "mylib", target_is_directory=True)
    (tmp_path / "unused_link").symlink_to(tmp_path / "data", target_is_directory=True)
    cell = "from link_to_dir import util\n"
    auto = ship(tmp_path, {}, cell)
    everything = ship(tmp_path, {}, cell, copy="all")
    assert "link_to_dir/util.py" in shipped(auto)
    assert set(shipped(auto)) <= set(shipped(everything))
    assert left_out(everything) == {"unused_link": "symbolic link to a directory (not followed)"}


def test_a_file_just_over_the_size_limit_is_not_said_to_be_the_limit(tmp_path):
    for name, size in (("eleven_million.bin", 11_000_000), ("one_byte_over.bin", 10 * 1024 * 1024 + 1)):
        with open(tmp_path / name, "wb") as handle:
            handle.truncate(size)
    fileset = ship(tmp_path, {}, "x = 1\n", copy="all")
    assert fileset.warnings == (
        "eleven_million.bin is 10.5 MiB (over 10 MiB)",
        "one_byte_over.bin is 10,485,761 bytes (over 10 MiB)",
    )


def test_a_package_beside_the_notebook_under_a_parent_source_root_gets_one_note(magic_shell, tmp_path, monkeypatch):
    notebook_folder = tmp_path / "analysis"
    write_project(notebook_folder, {"nbside_lib/__init__.py": "", "nbside_lib/features.py": "def clean(n):\n    return n\n"})
    monkeypatch.chdir(notebook_folder)
    monkeypatch.syspath_prepend(str(notebook_folder))  # the kernel's working directory, as Jupyter starts it
    cell = ("from flytekit import task\nfrom nbside_lib.features import clean\n\n"
            "@task\ndef t(n: int) -> int:\n    return clean(n)\n")
    try:
        reg = magic_shell.run_cell_magic("flyte_fast", f"-m nbside_flow --source-root {tmp_path} --dry-run", cell)
    finally:
        for name in ("nbside_lib", "nbside_lib.features", "nbside_flow"):
            sys.modules.pop(name, None)
    assert reg.warnings == (
        f"`nbside_lib` is imported from {notebook_folder}, a subfolder of the source root that Python searches "
        "through sys.path; in the container it would not be importable, so it is not shipped. "
        f"Pass --source-root {notebook_folder} to ship it.",
    )


def autosave(notebook: Path, count: int) -> None:
    """What Jupyter writes on autosave after the cell ran again: a new execution count, new outputs."""
    import json

    cell = {"cell_type": "code", "execution_count": count, "metadata": {}, "outputs": [], "source": ["x = 1"]}
    notebook.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def test_copy_all_leaves_out_the_running_notebook_so_an_autosave_ships_nothing_new(sandbox_shell, tmp_path):
    notebook = tmp_path / "Copy All Pipeline.ipynb"
    autosave(notebook, 1)
    autosave(tmp_path / "report_template.ipynb", 1)  # another notebook, which a papermill task may run
    write_project(tmp_path, {"data/table.csv": "1,2\n"})
    sandbox_shell.user_ns["__vsc_ipynb_file__"] = str(notebook)  # how VS Code tells the kernel its notebook
    cell = "from flytekit import task\n\n@task\ndef t(n: int) -> int:\n    return n\n"
    try:
        first = sandbox_shell.run_cell_magic("flyte_fast", f"--copy all --source-root {tmp_path}", cell)
        autosave(notebook, 2)
        again = sandbox_shell.run_cell_magic("flyte_fast", f"--copy all --source-root {tmp_path}", cell)
    finally:
        del sandbox_shell.user_ns["__vsc_ipynb_file__"]
    assert first.module == "copy_all_pipeline"
    assert set(first.files) == {"copy_all_pipeline.py", "data/table.csv", "report_template.ipynb"}
    assert ("Copy All Pipeline.ipynb", "the notebook this kernel runs: its cells ship as modules, not its file") in {
        (item.relpath, item.reason) for item in first.left_out}
    assert again.version == first.version and not again.uploaded and not again.registered


def test_copy_all_in_the_home_folder_leaves_tool_state_out_with_a_notice(tmp_path, monkeypatch):
    from fastreg_magic import sandbox

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("IPYTHONDIR", raising=False)
    monkeypatch.delenv("JUPYTER_RUNTIME_DIR", raising=False)
    # What sandbox sessions leave behind: in the default data dir, and in one given with --data-dir.
    sandbox.start(data_dir=home / ".local" / "share" / "fastreg" / "sandbox", port=0).stop()
    sandbox.start(data_dir=home / "experiments" / "sb", port=0).stop()
    write_project(home, {
        ".ipython/profile_default/history.sqlite": "everything ever typed",
        ".ipython/profile_default/startup/00-setup.py": "import os\n",
        ".jupyter/jupyter_server_config.json": "{}",
        ".cache/pip/http/wheel.bin": "cached",
        ".rustup/settings.toml": "",
        "experiments/sb/secrets/db/password": "hunter2",
        "experiments/train.py": "",
        "notes.md": "",
    })
    fileset = ship(home, {}, "x = 1\n", copy="all")
    assert shipped(fileset) == ["experiments/train.py", "flow.py", "notes.md"]
    assert left_out(fileset) == {
        ".ipython/": "IPython's own folder (profiles, command history), not code",
        ".jupyter/": "Jupyter's own folder (settings, runtime files), not code",
        ".local/": "installed packages and programs' data (~/.local), not code",
        ".rustup/": "rustup's own folder, not code",
        "experiments/sb/": "the fastreg sandbox's data dir (its database, uploads and secrets), not code",
    }
