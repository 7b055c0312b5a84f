"""%%flyte_fast in a real IPython InteractiveShell: loading, options, traits, the cell as a module, errors.

These tests need no backend: they use --dry-run (nothing sent) or fail before any RPC.
Registration against the sandbox is in test_magic_sandbox.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest
from IPython.core.error import UsageError

CELL = textwrap.dedent(
    """
    from flytekit import task, workflow

    @task
    def double(n: int) -> int:
        return n * 2

    @workflow
    def pipeline(n: int = 3) -> int:
        return double(n=n)
    """
)


@pytest.fixture(scope="module")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "fastreg_magic")
    return ip


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def magic(shell, line: str, cell: str):
    return shell.run_cell_magic("flyte_fast", line, cell)


def test_load_ext_is_cheap_and_does_not_import_flytekit():
    code = textwrap.dedent(
        """
        import json, sys, time
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        start = time.perf_counter()
        ip.run_line_magic("load_ext", "fastreg_magic")
        elapsed = time.perf_counter() - start
        print(json.dumps({"flytekit": "flytekit" in sys.modules, "magics": sorted(ip.magics_manager.magics["cell"]),
                          "line": sorted(ip.magics_manager.magics["line"]), "seconds": elapsed}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["flytekit"] is False
    assert "flyte_fast" in result["magics"]
    assert "flyte_watch" in result["line"]


def test_errors_stay_short_when_a_plain_cell_imported_flytekit_first(tmp_path):
    """flytekit's import installs rich's traceback display in the shell, which ignores IPython's
    `_render_traceback_`: the cell's errors would be panels of the magic's frames."""
    code = textwrap.dedent(
        """
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_cell("from flytekit import task, workflow")
        ip.run_line_magic("load_ext", "fastreg_magic")
        ip.run_cell("%%flyte_fast --dry-run -m richmod\\n@task\\ndef t(n: int) -> int:\\n    return n\\n\\nx = 1 / 0\\n")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert "ZeroDivisionError" in shown and "(raised at line 6 of the cell)" in shown, shown
    assert "pipeline.py" not in shown and "magic.py" not in shown, shown


def test_extension_loads_from_ipython_config(tmp_path):
    profile = tmp_path / "profile_default"
    profile.mkdir()
    (profile / "ipython_config.py").write_text(
        "c.InteractiveShellApp.extensions = ['fastreg_magic']\nc.FlyteFast.project = 'from-config'\n"
    )
    code = "ip = get_ipython(); m = [c for c in ip.configurables if type(c).__name__ == 'FlyteFast'][0]; print('PROJECT', m.project)"
    out = subprocess.run(
        [sys.executable, "-m", "IPython", f"--ipython-dir={tmp_path}", "--no-banner", "-c", code],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "PROJECT from-config" in out


def in_fresh_ipython(tmp_path, body: str) -> dict:
    """Run ``body`` in a new interpreter with an InteractiveShell ``ip`` (extension loaded, flytekit not
    imported yet) and ``CELL``, a one-task cell; it prints one JSON line, returned."""
    setup = textwrap.dedent(
        """
        import json, signal, sys
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "fastreg_magic")
        CELL = "from flytekit import task\\n@task\\ndef t(x: int) -> int:\\n    return x + 1\\n"
        """
    )
    out = subprocess.run([sys.executable, "-c", setup + textwrap.dedent(body)], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_first_cell_leaves_the_notebooks_error_display_and_ctrl_c_alone(tmp_path):
    """Importing flytekit swaps in rich's traceback display and a Ctrl-C handler calling `exit`;
    the first %%flyte_fast cell imports it, and puts the notebook's own back."""
    result = in_fresh_ipython(tmp_path, """
        before = signal.getsignal(signal.SIGINT)
        ip.run_cell_magic("flyte_fast", "--dry-run -m firstcell", CELL)
        print(json.dumps({"ctrl_c_kept": signal.getsignal(signal.SIGINT) is before,
                          "display_kept": not {"showtraceback", "_showtraceback"} & set(vars(ip))}))
    """)
    assert result == {"ctrl_c_kept": True, "display_kept": True}


def test_an_error_the_api_raises_in_a_cell_is_one_line(tmp_path):
    result = in_fresh_ipython(tmp_path, """
        import contextlib, io
        ip.run_cell_magic("flyte_fast", "--dry-run -m apierr", CELL)
        ip.run_cell("from fastreg_magic.errors import RunError\\n"
                    "def launch():\\n"
                    "    raise RunError('Launching wf failed: x needs an int.', 'Pass launch(x=1).')\\n")
        shown = {}
        for trait in (False, True):
            ip.run_line_magic("config", f"FlyteFast.show_traceback = {trait}")
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                ip.run_cell("launch()")
            shown[str(trait)] = out.getvalue()
        print(json.dumps(shown))
    """)
    assert result["False"].strip() == "RunError: Launching wf failed: x needs an int. Pass launch(x=1)."
    full = re.sub(r"\x1b\[[0-9;]*m", "", result["True"])
    assert "----> 3     raise RunError(" in full and full.count("\n") > 5


def test_autoreload_does_not_run_the_cells_module_again(tmp_path):
    result = in_fresh_ipython(tmp_path, """
        import builtins, time
        ip.run_line_magic("load_ext", "autoreload")
        ip.run_line_magic("autoreload", "2")
        def cell(k):
            return f"import builtins\\nbuiltins.__dict__.setdefault('RUNS', []).append({k})\\n" + CELL
        ip.run_cell_magic("flyte_fast", "--dry-run -m reloaded", cell(1))
        ip.run_cell("pass")
        time.sleep(1.1)  # the module's file gets a new mtime
        ip.run_cell_magic("flyte_fast", "--dry-run -m reloaded", cell(2))
        ip.run_cell("pass")
        ip.run_cell("pass")
        print(json.dumps(builtins.RUNS))
    """)
    assert result == [1, 2]


def test_unknown_option_is_a_usage_error(shell, project_dir):
    with pytest.raises(UsageError, match=r"unrecognized arguments: --no-such-flag\. Run `%%flyte_fast\?` to see its options"):
        magic(shell, "--no-such-flag", CELL)


def test_malformed_option_is_a_usage_error(shell, project_dir):
    with pytest.raises(UsageError, match="invalid choice: 'some'"):
        magic(shell, "--copy some", CELL)


def test_config_traits_are_defaults(shell, project_dir):
    shell.run_line_magic("config", "FlyteFast.project = 'traitproj'")
    shell.run_line_magic("config", "FlyteFast.domain = 'staging'")
    try:
        reg = magic(shell, "--dry-run -m trait_mod", CELL)
        assert (reg.project, reg.domain) == ("traitproj", "staging")
        reg = magic(shell, "--dry-run -m trait_mod -p other -d production", CELL)
        assert (reg.project, reg.domain) == ("other", "production")
    finally:
        shell.run_line_magic("config", "FlyteFast.project = 'flytesnacks'")
        shell.run_line_magic("config", "FlyteFast.domain = 'development'")


def test_cell_becomes_a_real_module_and_runs_locally(shell, project_dir):
    reg = magic(shell, "--dry-run -m cellmod", CELL)
    module = sys.modules["cellmod"]
    assert module.__file__.endswith("cellmod.py")
    with open(module.__file__) as f:
        assert "def double" in f.read()
    # entities are pushed into the user namespace and run locally
    assert shell.user_ns["pipeline"](n=5) == 10
    assert shell.user_ns["double"].name == "cellmod.double"
    names = {(e.kind, e.name) for e in reg.entities}
    assert names == {("task", "cellmod.double"), ("workflow", "cellmod.pipeline"), ("launch_plan", "cellmod.pipeline")}
    assert reg.files == ("cellmod.py",)
    assert reg.uploaded is False and reg.registered is False
    # the cell's value is the Registration, so `reg = _` works
    shell.run_cell(f"%%flyte_fast --dry-run -m cellmod\n{CELL}", store_history=True)
    assert shell.user_ns["_"].version == reg.version


def test_version_is_content_derived(shell, project_dir):
    first = magic(shell, "--dry-run -m vmod", CELL)
    again = magic(shell, "--dry-run -m vmod", CELL)
    changed = magic(shell, "--dry-run -m vmod", CELL.replace("n * 2", "n * 3"))
    other_image = magic(shell, "--dry-run -m vmod -i ghcr.io/acme/ml:2024-06", CELL)
    assert first.version == again.version
    assert len({first.version, changed.version, other_image.version}) == 3
    assert magic(shell, "--dry-run -m vmod --version v7", CELL).version == "v7"


def test_version_does_not_depend_on_the_directory(shell, tmp_path, monkeypatch):
    versions = set()
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        monkeypatch.chdir(tmp_path / sub)
        versions.add(magic(shell, "--dry-run -m dirmod", CELL).version)
    assert len(versions) == 1


def test_images_like_pyflyte(shell, project_dir):
    reg = magic(shell, "--dry-run -m imgmod -i ghcr.io/acme/ml:2024-06 -i spark=ghcr.io/acme/spark:3", CELL)
    assert reg.images == ("default=ghcr.io/acme/ml:2024-06", "spark=ghcr.io/acme/spark:3")
    default = magic(shell, "--dry-run -m imgmod", CELL)
    assert default.images[0].startswith("default=cr.flyte.org/flyteorg/flytekit:py3.")


def test_bad_image_is_a_usage_error(shell, project_dir):
    with pytest.raises(UsageError, match="Image option"):
        magic(shell, "--dry-run -m badimg -i spark=", CELL)


def test_syntax_error_is_one_line(shell, project_dir):
    # Lines are numbered as the editor shows them: line 1 is the %%flyte_fast line.
    with pytest.raises(UsageError, match="Syntax error on line 3 of the cell"):
        magic(shell, "--dry-run -m synmod", "x = 1\ndef broken(:\n")


def test_a_broken_cell_contacts_no_backend(shell, project_dir, capsys):
    """The cell is checked before any backend is resolved: its own error, not an unreachable endpoint's."""
    with pytest.raises(UsageError, match="Syntax error on line 3"):
        magic(shell, "-m synmod2 --endpoint 127.0.0.1:1", "x = 1\ndef broken(:\n")
    with pytest.raises(UsageError, match="IPython syntax"):
        magic(shell, "-m bangmod2 --config does-not-exist.yaml", "!ls\n" + CELL)
    assert "embedded sandbox" not in capsys.readouterr().out


def test_magic_lines_are_refused(shell, project_dir):
    with pytest.raises(UsageError, match="IPython syntax"):
        magic(shell, "--dry-run -m pctmod", "%time x = 1\n" + CELL)
    with pytest.raises(UsageError, match="IPython syntax"):
        magic(shell, "--dry-run -m bangmod", "!ls\n" + CELL)


def test_cell_without_entities(shell, project_dir):
    with pytest.raises(UsageError, match="defines no Flyte task, workflow or launch plan"):
        magic(shell, "--dry-run -m emptymod", "x = 1\n")


def test_unresolvable_cross_cell_reference(shell, project_dir):
    shell.user_ns["opaque_thing"] = object()
    cell = CELL + "\n@task\ndef uses() -> str:\n    return str(opaque_thing)\n"
    with pytest.raises(UsageError, match="opaque_thing"):
        magic(shell, "--dry-run -m refmod", cell)


def test_cross_cell_function_is_lifted(shell, project_dir):
    shell.run_cell("def helper(x):\n    return x + 100\n", store_history=True)
    cell = CELL + "\n@task\ndef lifted_user(n: int) -> int:\n    return helper(n)\n"
    reg = magic(shell, "--dry-run -m liftmod", cell)
    assert any("helper" in line for line in reg.lifted)
    assert shell.user_ns["lifted_user"](n=1) == 101


def test_missing_local_import(shell, project_dir):
    cell = "from nosuchlocal_pkg import thing\n" + CELL
    with pytest.raises(UsageError, match="nosuchlocal_pkg"):
        magic(shell, "--dry-run -m missmod", cell)


def test_module_name_clashing_with_local_module(shell, project_dir):
    (project_dir / "utils.py").write_text("X = 1\n")
    with pytest.raises(UsageError, match="clashes with the local module"):
        magic(shell, "--dry-run -m utils", CELL)


def test_module_name_clashing_with_installed_module(shell, project_dir):
    with pytest.raises(UsageError, match="clashes with the existing module"):
        magic(shell, "--dry-run -m pytest", CELL)


def test_invalid_module_name(shell, project_dir):
    with pytest.raises(UsageError, match="not a valid Python module name"):
        magic(shell, "--dry-run -m 9lives", CELL)


def test_error_in_user_code_keeps_its_traceback(shell, project_dir):
    with pytest.raises(ZeroDivisionError):
        magic(shell, "--dry-run -m boommod", "x = 1 / 0\n" + CELL)


def test_an_error_the_cells_code_raises_shows_the_users_frames_and_the_editors_line(shell, project_dir, capsys):
    """Like a plain cell's: the cell's frames and those of code it calls, not the frames that ran the module."""
    shell.run_cell("def halve_badly(x):\n    return x / 0\n")
    result = shell.run_cell("%%flyte_fast --dry-run -m tbmod\n" + CELL + "\nsettings = {}\nprint(settings['depth'])\n")
    assert isinstance(result.error_in_exec, KeyError)  # the cell failed: "Run All" stops here
    shown = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # without IPython's colours
    assert "print(settings['depth'])" in shown and "KeyError" in shown
    assert f"(raised at line {len(CELL.splitlines()) + 4} of the cell)" in shown
    assert "pipeline.py" not in shown and "importlib" not in shown and "magic.py" not in shown
    shell.run_cell("%%flyte_fast --dry-run -m tbmod2\n" + CELL + "x = halve_badly(3)\n")
    shown = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert "return x / 0" in shown and "ZeroDivisionError" in shown
    assert (f"(raised in code carried over from an earlier cell, called at line {len(CELL.splitlines()) + 2} "
            "of the cell)") in shown


@pytest.mark.parametrize("cell, message", [
    ("from flytekit import task\n\n@task\ndef t(n: int) -> int:\n    print(n)\n",
     "Line 4 of the cell: t function must return a value"),
    ("from flytekit import task\n\n\n@task\ndef t(n) -> int:\n    return n\n",
     "Line 5 of the cell: 'n' has no type"),
    # raised by flytekit inside the `__init__` dataclasses writes (its file is "<string>")
    ("from flytekit import Cache, task\nx = 1\ny = 2\n@task(cache=Cache())\ndef t(n: int) -> int:\n    return n\n",
     "Line 5 of the cell: If version is not defined then at least one cache policy needs to be set. "),
])
def test_a_definition_flytekit_refuses_is_one_line_naming_the_cell_line(shell, project_dir, cell, message):
    with pytest.raises(UsageError) as info:
        magic(shell, "--dry-run -m refusedmod", cell)
    assert str(info.value).startswith(message)
    assert "nothing was registered" in str(info.value)


def test_a_refused_definition_in_a_local_module_names_that_file(shell, project_dir):
    (project_dir / "refusedlib").mkdir()
    (project_dir / "refusedlib" / "__init__.py").write_text("")
    (project_dir / "refusedlib" / "steps.py").write_text("from flytekit import task\n\n\n@task\ndef clean(n: int) -> int:\n    n\n")
    cell = "from flytekit import workflow\nfrom refusedlib.steps import clean\n\n@workflow\ndef wf(n: int = 1) -> int:\n    return clean(n=n)\n"
    with pytest.raises(UsageError, match="^Line 4 of refusedlib/steps.py: clean function must return a value"):
        magic(shell, "--dry-run -m refusedlocal", cell)


def test_lines_are_the_cells_own_when_code_is_carried_over(shell, project_dir):
    shell.run_cell("OFFSET = 3\n")
    cell = '"""Steps."""\nfrom flytekit import task\n\n\n@task\ndef ok(n: int) -> int:\n    return n + OFFSET\n\n' \
           '@task\ndef broken(n: int) -> int:\n    n\n'
    with pytest.raises(UsageError, match="^Line 10 of the cell: broken function must return a value"):
        magic(shell, "--dry-run -m carriedmod", cell)


def test_show_traceback_trait_gives_the_typed_error(shell, project_dir):
    from fastreg_magic.errors import CollectError

    shell.run_line_magic("config", "FlyteFast.show_traceback = True")
    try:
        with pytest.raises(CollectError):
            magic(shell, "--dry-run -m emptymod2", "x = 1\n")
    finally:
        shell.run_line_magic("config", "FlyteFast.show_traceback = False")


def test_module_name_from_notebook(shell, project_dir, monkeypatch):
    from fastreg_magic.magic import module_name_for, notebook_path

    monkeypatch.setenv("JPY_SESSION_NAME", str(project_dir / "My Pipeline (v2).ipynb"))
    path = notebook_path(shell)
    assert path == project_dir / "My Pipeline (v2).ipynb"
    assert module_name_for(path) == "my_pipeline_v2"
    assert module_name_for(None) == "flyte_cell"
    reg = magic(shell, "--dry-run", CELL)
    assert reg.module == "my_pipeline_v2"
    assert shell.user_ns["double"].name == "my_pipeline_v2.double"


def test_local_package_is_shipped(shell, project_dir):
    pkg = project_dir / "mylib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "features.py").write_text("def clean(x: int) -> int:\n    return abs(x)\n")
    (pkg / "unused.py").write_text("Y = 2\n")
    (project_dir / ".env").write_text("TOKEN=secret\n")
    cell = "from mylib.features import clean\n" + CELL + "\n@task\ndef cleaned(n: int) -> int:\n    return clean(n)\n"
    reg = magic(shell, "--dry-run -m pkgmod", cell)
    assert reg.files == ("mylib/__init__.py", "mylib/features.py", "pkgmod.py")
    assert ".env" in {item.relpath for item in reg.left_out}
    assert shell.user_ns["cleaned"](n=-4) == 4
    everything = magic(shell, "--dry-run -m pkgmod --copy all", cell)
    assert "mylib/unused.py" in everything.files and ".env" not in everything.files


def test_edited_local_module_is_reimported(shell, project_dir):
    pkg = project_dir / "editlib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "calc.py").write_text("def f(x: int) -> int:\n    return x + 1\n")
    cell = "from editlib.calc import f\n" + CELL + "\n@task\ndef uses_f(n: int) -> int:\n    return f(n)\n"
    first = magic(shell, "--dry-run -m editmod", cell)
    assert shell.user_ns["uses_f"](n=1) == 2
    (pkg / "calc.py").write_text("def f(x: int) -> int:\n    return x + 1000\n")
    second = magic(shell, "--dry-run -m editmod", cell)
    assert second.version != first.version
    assert shell.user_ns["uses_f"](n=1) == 1001  # local execution runs what the archive ships


def test_a_local_module_edited_behind_another_is_reimported_too(shell, project_dir):
    """`features` bound `g` from `helpers` when it was imported: editing `helpers` must reach it, and a
    package's re-export of a submodule's function as well."""
    pkg = project_dir / "deplib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .features import feat\n")
    (pkg / "helpers.py").write_text("def g(x):\n    return x + 1\n")
    (pkg / "features.py").write_text("from deplib.helpers import g\ndef feat(x):\n    return g(x)\n")
    cell = "from deplib import feat\n" + CELL + "\n@task\ndef uses_feat(n: int) -> int:\n    return feat(n)\n"
    magic(shell, "--dry-run -m depmod", cell)
    assert shell.user_ns["uses_feat"](n=1) == 2
    (pkg / "helpers.py").write_text("def g(x):\n    return x + 100\n")
    magic(shell, "--dry-run -m depmod", cell)
    assert shell.user_ns["uses_feat"](n=1) == 101


def test_a_local_module_imported_in_a_plain_cell_then_edited_runs_as_shipped(shell, project_dir):
    pkg = project_dir / "plainlib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "steps.py").write_text("def f(x):\n    return x + 1\n")
    shell.run_cell(f"import sys; sys.path.insert(0, {str(project_dir)!r}); import plainlib.steps")
    (pkg / "steps.py").write_text("def f(x):\n    return x + 100\n")
    cell = "from plainlib.steps import f\n" + CELL + "\n@task\ndef uses_steps(n: int) -> int:\n    return f(n)\n"
    magic(shell, "--dry-run -m plainmod", cell)
    assert shell.user_ns["uses_steps"](n=1) == 101  # what the archive ships, not what was imported before


def test_names_a_plain_cell_imported_from_a_local_module_keep_working_and_follow_edits(shell, project_dir):
    """`clean` imported in a plain cell and used by the cell: every re-run carries it over, and after an edit
    plain cells, the cell and %autoreload all run the new code."""
    import time

    pkg = project_dir / "namelib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "features.py").write_text("def clean(n):\n    return n + 1\n")
    shell.run_cell(f"import sys; sys.path.insert(0, {str(project_dir)!r})")
    assert shell.run_cell("from namelib.features import clean\nimport namelib.features as F").success
    cell = CELL + "\n@task\ndef cleaned(n: int) -> int:\n    return clean(n)\n"
    for _ in range(2):  # unchanged re-runs
        reg = magic(shell, "--dry-run -m namemod", cell)
        assert "namelib/features.py" in reg.files
    time.sleep(0.01)
    (pkg / "features.py").write_text("def clean(n):\n    return n + 3\n")
    magic(shell, "--dry-run -m namemod", cell)
    assert shell.user_ns["cleaned"](n=10) == 13
    assert shell.user_ns["clean"](10) == 13 and shell.user_ns["F"].clean(10) == 13  # plain cells: the same code
    shell.run_line_magic("load_ext", "autoreload")
    shell.run_line_magic("autoreload", "2")
    try:
        (pkg / "features.py").write_text("def clean(n):\n    return n + 5\n")
        shell.run_cell("pass")  # autoreload reloads before a cell runs
        assert shell.user_ns["F"].clean(10) == 15, "autoreload still sees the module"
    finally:
        shell.run_line_magic("autoreload", "0")


def test_a_local_module_deleted_after_it_was_imported_is_refused(shell, project_dir):
    """The kernel still holds it, the container would not find it: refused, not registered to fail remotely."""
    (project_dir / "gonemod_lib.py").write_text("def g(x):\n    return x\n")
    shell.run_cell(f"import sys; sys.path.insert(0, {str(project_dir)!r}); import gonemod_lib")
    (project_dir / "gonemod_lib.py").unlink()
    cell = "from gonemod_lib import g\n" + CELL
    with pytest.raises(UsageError, match=r"`gonemod_lib` is imported by this cell, but its file .*gonemod_lib.py no "
                                         r"longer exists.*Restore it"):
        magic(shell, "--dry-run -m gonemod", cell)
    (project_dir / "gonens_pkg").mkdir()  # a namespace package: a folder without __init__.py
    (project_dir / "gonens_pkg" / "helper.py").write_text("def h(x):\n    return x\n")
    shell.run_cell("import gonens_pkg.helper")
    (project_dir / "gonens_pkg" / "helper.py").unlink()
    (project_dir / "gonens_pkg").rmdir()
    with pytest.raises(UsageError, match=r"`gonens_pkg` is imported by this cell, but its folder .*gonens_pkg no "
                                         r"longer exists"):
        magic(shell, "--dry-run -m gonemod", "from gonens_pkg.helper import h\n" + CELL)


def test_what_the_cell_defines_is_the_notebooks_as_after_a_plain_cell(shell, project_dir):
    cell = textwrap.dedent(
        """
        from dataclasses import dataclass
        from flytekit import task, workflow

        SCALE = 3

        @dataclass
        class Params:
            k: int

        def scaled(x: int) -> int:
            return x * SCALE

        @task
        def apply(p: Params) -> int:
            return scaled(p.k)
        """
    )
    magic(shell, "--dry-run -m definesmod", cell)
    assert shell.run_cell("result = apply(p=Params(k=2)), scaled(1), SCALE").success
    assert shell.user_ns["result"] == (6, 3, 3)
    later = "from flytekit import task\n\n@task\ndef tripled(n: int) -> int:\n    return scaled(n)\n"
    reg = magic(shell, "--dry-run -m laterdefmod", later)  # a helper of an earlier %%flyte_fast cell is carried over
    assert any("scaled" in line for line in reg.lifted)
    assert shell.user_ns["tripled"](n=2) == 6


def test_a_local_module_imported_by_name_as_the_cell_runs_is_named_as_not_shipped(shell, project_dir):
    pkg = project_dir / "byname_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "alpha.py").write_text("FACTOR = 2\n")
    cell = "import importlib\n" + CELL + "\nPLUGIN = importlib.import_module('byname_plugins.alpha')\n"
    reg = magic(shell, "--dry-run -m bynamemod", cell)
    assert "byname_plugins/alpha.py" not in reg.files
    assert any(w.startswith("`byname_plugins.alpha` (byname_plugins/alpha.py) was imported as the cell ran but is "
                            "not shipped") for w in reg.warnings), reg.warnings
    everything = magic(shell, "--dry-run -m bynamemod --copy all", cell)
    assert "byname_plugins/alpha.py" in everything.files and not any("byname" in w for w in everything.warnings)


def test_a_local_file_named_like_a_loaded_stdlib_module_is_refused(shell, project_dir):
    import random

    (project_dir / "random.py").write_text("def pick():\n    return 4\n")
    cell = "import random\n" + CELL
    with pytest.raises(UsageError, match=r"random\.py in the source root has the name of Python's standard-library "
                                         r"module `random`.*Rename it"):
        magic(shell, "--dry-run -m shadowmod", cell)
    assert sys.modules["random"] is random and hasattr(random, "randint")  # the kernel's own is untouched
    (project_dir / "test.py").write_text("X = 1\n")  # a stdlib name nothing here has loaded shadows nothing
    (project_dir / "random.py").unlink()
    assert "test.py" in magic(shell, "--dry-run -m shadowmod --copy all", CELL).files


@pytest.mark.parametrize("future", ["from __future__ import annotations\n", ""])
def test_names_used_only_in_annotations_are_carried_over(shell, project_dir, future):
    shell.run_cell("from typing import List, Literal")
    cell = future + textwrap.dedent(
        """
        from flytekit import task

        @task
        def total(xs: "List[int]", mode: Literal["sum", "max"] = "sum") -> int:
            return sum(xs) if mode == "sum" else max(xs)
        """
    )
    reg = magic(shell, "--dry-run -m annmod", cell)
    assert any("List" in line for line in reg.lifted)
    assert not any("sum" in line or "max" in line for line in reg.lifted)  # Literal values are no names
    assert shell.user_ns["total"](xs=[1, 2], mode="max") == 2


def test_serialize_to_writes_files_and_registers_nothing(shell, project_dir):
    from fastreg_magic import specs
    from fastreg_magic.pipeline import MANIFEST_NAME

    out = project_dir / "_pb_output"
    reg = magic(shell, f"-m sermod --serialize-to {out}", CELL)
    assert reg.registered is False and reg.uploaded is False and reg.remote is None
    written = sorted(p.name for p in out.iterdir())
    assert MANIFEST_NAME in written and f"fast{reg.archive_uri.rsplit('fast', 1)[-1]}" in written
    assert [(s.kind, s.name) for s in specs.read_specs(out)] == [
        ("task", "sermod.double"), ("workflow", "sermod.pipeline"), ("launch_plan", "sermod.pipeline")
    ]
    assert reg.archive_uri.startswith("file://") and reg.files == ("sermod.py",)


def test_the_text_summary_says_what_a_dry_run_and_serialize_to_did(shell, project_dir):
    from fastreg_magic.widget_text import registration_text

    dry = registration_text(magic(shell, "--dry-run -m textmod", CELL))
    assert dry.startswith("Dry run of textmod version ")
    assert "not built; 1 file would ship" in dry and "dry run: nothing built, uploaded or registered" in dry
    assert "Registered" not in dry and "unchanged" not in dry

    out = project_dir / "_pb"
    written = registration_text(magic(shell, f"-m textmod --serialize-to {out}", CELL))
    assert written.startswith("Serialized textmod version ")
    assert f"written to {out}: nothing uploaded or registered" in written and "unchanged" not in written


def test_a_path_with_spaces_is_quoted_as_in_a_shell(shell, project_dir):
    """IPython's own splitting keeps the quotes: the archive went to a folder named `"`."""
    from fastreg_magic.pipeline import MANIFEST_NAME

    root = project_dir / "my notebooks é"
    root.mkdir()
    for quoted, out in ((f'"{project_dir}/ser out"', project_dir / "ser out"),
                        (f"'{project_dir}/single q'", project_dir / "single q")):
        reg = magic(shell, f'-m spaced --source-root "{root}" --serialize-to {quoted}', CELL)
        assert (out / MANIFEST_NAME).is_file(), sorted(p.name for p in project_dir.iterdir())
        assert reg.files == ("spaced.py",)
    assert not any(p.name.startswith(("'", '"')) for p in project_dir.iterdir())
    with pytest.raises(UsageError, match="Quote a path with spaces"):
        magic(shell, f'-m spaced --serialize-to "{project_dir}/unclosed', CELL)
