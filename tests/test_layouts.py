"""What ships from the project layouts people really have, and what the cell says about what does not.

Each test builds the layout in ``tmp_path`` — a notebook folder inside a project, a src layout, a
library pip installed beside a checkout of it — and runs a ``%%flyte_fast --dry-run`` cell through a real
IPython shell from the notebook's folder, as Jupyter starts the kernel there. Installed distributions are
written as pip writes them (a ``*.dist-info`` with its RECORD, an editable install's ``.pth``) into a
``site-packages`` folder that ``site.addsitedir`` adds, as Python's startup does for the real one.
"""

from __future__ import annotations

import json
import site
import sys
from pathlib import Path

import pytest

CELL = "from flytekit import task\nfrom {module} import clean\n\n@task\ndef t(n: int) -> str:\n    return clean(n)\n"


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fastreg_magic")
    return shell


@pytest.fixture(autouse=True)
def kernel_state(monkeypatch):
    """sys.path and the modules the test imports are the kernel's own again afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0].endswith("_lay"):
            del sys.modules[name]


def write(root: Path, tree: dict[str, str]) -> None:
    for relpath, content in tree.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(content)


def pip_installed(site_packages: Path, name: str, files: dict[str, str], editable_from: Path | None = None) -> None:
    """``name`` 0.1 as pip installs it into ``site_packages``: its files, and a dist-info whose RECORD lists
    them; an editable install (``editable_from``, PEP 660) has only a ``.pth`` naming its code's folder."""
    if editable_from is not None:
        files = {f"__editable__.{name}-0.1.pth": f"{editable_from}\n"}
    info = f"{name}-0.1.dist-info"
    direct_url = {"url": "file:///somewhere", "dir_info": {"editable": True} if editable_from else {}}
    write(site_packages, {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
        f"{info}/top_level.txt": f"{name}\n",
        f"{info}/direct_url.json": json.dumps(direct_url),
        f"{info}/RECORD": "".join(f"{relpath},,\n" for relpath in [*files, f"{info}/METADATA", f"{info}/RECORD"]),
    })
    site.addsitedir(str(site_packages))  # appends it to sys.path and reads the .pth, as at Python's startup


def run_in(shell, notebooks: Path, monkeypatch, cell: str, line: str = ""):
    """The cell run with --dry-run by a kernel started in the notebook's folder (its first sys.path entry)."""
    monkeypatch.chdir(notebooks)
    monkeypatch.syspath_prepend(str(notebooks))
    return shell.run_cell_magic("flyte_fast", f"-m flow_lay --dry-run {line}".strip(), cell)


# --- a library on sys.path, not under the source root ---------------------------------------------------


def featlib_layout(tmp_path: Path) -> tuple[Path, Path]:
    """`pip install ./featlib` (its `clean` says "installed"), and a checkout of it in the project (saying
    "checkout"), whose notebooks are in proj/notebooks."""
    proj, site_packages = tmp_path.resolve() / "proj", tmp_path.resolve() / "venv/lib/python3.11/site-packages"
    pip_installed(site_packages, "featlib_lay", {"featlib_lay/__init__.py": "def clean(n):\n    return f'installed:{n}'\n"})
    write(proj, {"featlib_lay/__init__.py": "def clean(n):\n    return f'checkout:{n}'\n", "notebooks/.keep": ""})
    return proj, site_packages


def test_a_checkout_that_hides_the_installed_copy_of_a_library_is_noted(shell, tmp_path, monkeypatch):
    """The notebook puts the project first on sys.path: the kernel runs the checkout, the runs would run the
    installed copy."""
    proj, site_packages = featlib_layout(tmp_path)
    monkeypatch.syspath_prepend("..")  # the notebook's `sys.path.insert(0, "..")`
    reg = run_in(shell, proj / "notebooks", monkeypatch, CELL.format(module="featlib_lay"))
    assert shell.user_ns["t"](n=1) == "checkout:1"
    assert reg.files == ("flow_lay.py",)
    assert reg.warnings == (
        f"`featlib_lay` is imported from {proj}, outside the source root {proj / 'notebooks'}, not from its "
        f"installed copy in {site_packages}: it is not shipped, so the runs use the image's installed copy, not "
        f"this code. Pass --source-root {proj} to ship it.",
    )


def test_the_installed_copy_of_a_library_is_left_to_the_image(shell, tmp_path, monkeypatch):
    proj, _ = featlib_layout(tmp_path)
    reg = run_in(shell, proj / "notebooks", monkeypatch, CELL.format(module="featlib_lay"))
    assert shell.user_ns["t"](n=1) == "installed:1"
    assert reg.warnings == ()


def test_a_library_installed_with_pip_install_target_is_left_to_the_image(shell, tmp_path, monkeypatch):
    """Not under site-packages, but pip put the file there (its RECORD says so): the image's business."""
    target = tmp_path.resolve() / "pylibs"
    write(target, {"tlib_lay/__init__.py": "def clean(n):\n    return str(n)\n",
                   "tlib_lay-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tlib_lay\nVersion: 1.0\n",
                   "tlib_lay-1.0.dist-info/RECORD": "tlib_lay/__init__.py,,\ntlib_lay-1.0.dist-info/RECORD,,\n"})
    write(tmp_path, {"notebooks/.keep": ""})
    monkeypatch.syspath_prepend(str(target))  # PYTHONPATH=pylibs
    assert run_in(shell, tmp_path / "notebooks", monkeypatch, CELL.format(module="tlib_lay")).warnings == ()


def test_an_editable_install_of_a_src_layout_says_its_edits_are_not_shipped_and_how_to_ship_them(
        shell, tmp_path, monkeypatch):
    """`pip install -e proj` (setuptools, src layout), notebook in proj/notebooks."""
    proj = tmp_path.resolve() / "proj"
    write(proj, {"src/mylib_lay/__init__.py": "", "src/mylib_lay/features.py": "def clean(n):\n    return str(n)\n",
                 "notebooks/.keep": ""})
    pip_installed(tmp_path / "venv/lib/python3.11/site-packages", "mylib_lay", {}, editable_from=proj / "src")
    cell = CELL.format(module="mylib_lay.features")

    reg = run_in(shell, proj / "notebooks", monkeypatch, cell)
    assert reg.files == ("flow_lay.py",)
    assert reg.warnings == (
        f"`mylib_lay` is an editable install (pip install -e) whose code is in {proj / 'src'}, outside the source "
        f"root {proj / 'notebooks'}: it is not shipped, so your edits there do not reach the runs, which use the "
        f"image's copy. Pass --source-root {proj / 'src'} to ship it.",
    )
    told = run_in(shell, proj / "notebooks", monkeypatch, cell, f"--source-root {proj / 'src'}")
    assert told.files == ("flow_lay.py", "mylib_lay/__init__.py", "mylib_lay/features.py")
    assert told.warnings == ()


def test_a_helper_beside_the_notebook_outside_a_src_source_root_is_told_to_move_under_it(shell, tmp_path, monkeypatch):
    proj = tmp_path.resolve() / "proj"
    write(proj, {"src/mylib_lay/__init__.py": "", "src/mylib_lay/features.py": "def clean(n):\n    return str(n)\n",
                 "notebooks/nbhelpers_lay.py": "def helper(s):\n    return s\n"})
    monkeypatch.syspath_prepend(str(proj / "src"))
    cell = CELL.format(module="mylib_lay.features") + "from nbhelpers_lay import helper\n"
    reg = run_in(shell, proj / "notebooks", monkeypatch, cell, "--source-root ../src")
    assert "mylib_lay/features.py" in reg.files
    assert reg.warnings == (
        f"`nbhelpers_lay` is imported from {proj / 'notebooks'}, the kernel's working directory, outside the source "
        f"root {proj / 'src'}: it is not shipped, so the runs would not find it. Move it under {proj / 'src'} "
        "(into a package there, say) to ship it.",
    )


def test_a_parent_folder_put_on_sys_path_as_dotdot_is_named_as_the_folder_it_is(shell, tmp_path, monkeypatch):
    """`sys.path.insert(0, "..")` in a notebook: the library is in the project, above the source root (the
    notebook's folder), not in a subfolder of it."""
    proj = tmp_path.resolve() / "proj"
    write(proj, {"parentlib_lay/__init__.py": "def clean(n):\n    return str(n)\n", "notebooks/.keep": ""})
    monkeypatch.chdir(proj / "notebooks")
    monkeypatch.syspath_prepend("..")
    reg = run_in(shell, proj / "notebooks", monkeypatch, CELL.format(module="parentlib_lay"))
    assert reg.warnings == (
        f"`parentlib_lay` is imported from {proj}, outside the source root {proj / 'notebooks'}: it is not shipped, "
        f"so the runs use the image's copy, if it has one, not this code. Pass --source-root {proj} to ship it, "
        f"or move it under {proj / 'notebooks'}.",
    )
    shipped = run_in(shell, proj / "notebooks", monkeypatch, CELL.format(module="parentlib_lay"), "--source-root ..")
    assert shipped.files == ("flow_lay.py", "parentlib_lay/__init__.py") and shipped.warnings == ()


def test_a_library_loaded_by_name_through_dotdot_on_sys_path_is_named_by_the_folder_it_is(
        shell, tmp_path, monkeypatch):
    """As the cell runs, it imports a module of the project (above the notebook's folder) by name."""
    proj = tmp_path.resolve() / "proj"
    write(proj, {"plugins_lay/__init__.py": "", "plugins_lay/alpha.py": "def clean(n):\n    return str(n)\n",
                 "notebooks/.keep": ""})
    monkeypatch.chdir(proj / "notebooks")
    monkeypatch.syspath_prepend("..")
    cell = ("import importlib\nfrom flytekit import task\n\nclean = importlib.import_module('plugins_lay.alpha').clean\n\n"
            "@task\ndef t(n: int) -> str:\n    return clean(n)\n")
    reg = run_in(shell, proj / "notebooks", monkeypatch, cell)
    assert reg.warnings == (
        f"`plugins_lay` is imported from {proj}, outside the source root {proj / 'notebooks'}: it is not shipped, "
        f"so the runs use the image's copy, if it has one, not this code. Pass --source-root {proj} to ship it, "
        f"or move it under {proj / 'notebooks'}.",
    )


# --- files a shipped package reads ------------------------------------------------------------------------


DATA_LAYOUT = {
    "nslib_lay/features.py": "from pathlib import Path\n\ndef clean(n):\n"
                             "    return (Path(__file__).parent / 'cfg.yaml').read_text()\n",
    "nslib_lay/cfg.yaml": "k: 1\n",
    "nslib_lay/data.txt": "rows\n",
    "nslib_lay/tables/a.csv": "1\n",
    "nslib_lay/tables/b.csv": "2\n",
    "nslib_lay/old.bak": "ignored\n",
    "nslib_lay/py.typed": "",
    "nslib_lay/.gitignore": "*.bak\n",
    "readme.csv": "the source root's own files are nobody's package data\n",
}


def test_files_beside_a_shipped_package_are_named_once_with_how_to_ship_them(shell, tmp_path, monkeypatch):
    write(tmp_path, DATA_LAYOUT)
    reg = run_in(shell, tmp_path, monkeypatch, CELL.format(module="nslib_lay.features"))
    assert reg.files == ("flow_lay.py", "nslib_lay/features.py")
    assert reg.warnings == (
        "Not shipped with --copy auto, though beside the shipped modules: nslib_lay/cfg.yaml, nslib_lay/data.txt, "
        "nslib_lay/tables/a.csv and 1 more file. Code that reads them (`Path(__file__).parent / ...`, "
        "importlib.resources) would not find them in the container; --copy all ships them.",
    )
    everything = run_in(shell, tmp_path, monkeypatch, CELL.format(module="nslib_lay.features"), "--copy all")
    assert {"nslib_lay/cfg.yaml", "nslib_lay/tables/b.csv"} <= set(everything.files)
    assert "nslib_lay/old.bak" not in everything.files
    assert everything.warnings == ()


def test_a_package_of_code_only_gets_no_note(shell, tmp_path, monkeypatch):
    write(tmp_path, {"codelib_lay/__init__.py": "", "codelib_lay/features.py": "def clean(n):\n    return str(n)\n",
                     "codelib_lay/py.typed": "", "data.csv": "1\n"})
    assert run_in(shell, tmp_path, monkeypatch, CELL.format(module="codelib_lay.features")).warnings == ()
