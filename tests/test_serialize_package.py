"""`fastreg serialize` of a module file inside a package: named `pkg.mod` as `pyflyte register` names it,
shipped with its package, and run from there on the sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from fastreg_magic import specs
from fastreg_magic.pipeline import MANIFEST_NAME

FASTREG = [sys.executable, "-m", "fastreg_magic.cli"]

FLOWS = textwrap.dedent(
    """\
    from flytekit import task, workflow
    from .util import double

    @task
    def twice(n: int) -> int:
        return double(n)

    @workflow
    def flow(n: int = 2) -> int:
        return twice(n=n)
    """
)


def run_cli(*args, cwd, check=True):
    result = subprocess.run([*FASTREG, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"fastreg {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def write(root: Path, files: dict[str, str]) -> None:
    for relpath, text in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def members(out: Path) -> list[str]:
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    with tarfile.open(out / manifest["archive"], "r:gz") as tar:
        return sorted(m.name for m in tar.getmembers() if m.isfile())


def launch(remote, out: Path, workflow: str, **inputs):
    """The launch plan `register-files` created, run by a stock FlyteRemote to its end."""
    version = json.loads((out / MANIFEST_NAME).read_text())["version"]
    lp = remote.fetch_launch_plan(name=workflow, version=version)
    execution = remote.execute(lp, inputs=inputs, wait=False)
    return remote.wait(execution, timeout=timedelta(minutes=5), poll_interval=timedelta(seconds=1))


@pytest.fixture
def shop(tmp_path):
    """src/shop/{__init__,util,flows}.py: a package whose module imports its sibling relatively."""
    write(tmp_path / "src", {
        "shop/__init__.py": "",
        "shop/util.py": "def double(x: int) -> int:\n    return 2 * x\n",
        "shop/flows.py": FLOWS,
    })
    return tmp_path


def test_a_module_in_a_package_is_named_by_its_package_and_runs_on_the_sandbox(shop, sandbox, remote):
    out = shop / "out"
    result = run_cli("serialize", "src/shop/flows.py", "-o", out, cwd=shop)
    assert "module shop.flows" in result.stdout
    assert members(out) == ["shop/__init__.py", "shop/flows.py", "shop/util.py"]
    written = specs.read_specs(out)
    assert [(s.kind, s.name) for s in written] == [
        ("task", "shop.flows.twice"), ("workflow", "shop.flows.flow"), ("launch_plan", "shop.flows.flow")
    ]
    args = list(written[0].proto.template.container.args)
    assert args[args.index("task-module") + 1] == "shop.flows"  # what the container imports, from the archive
    run_cli("register-files", out, "--config", sandbox.config_file, cwd=shop)
    execution = launch(remote, out, "shop.flows.flow", n=21)
    assert execution.closure.phase == 4, execution.error  # SUCCEEDED
    assert execution.outputs["o0"] == 42


def test_the_source_root_names_the_module_from_the_folder_it_gives(shop):
    by_package = shop / "by_package"
    run_cli("serialize", "src/shop/flows.py", "-o", by_package, cwd=shop)
    given = shop / "given"
    result = run_cli("serialize", "src/shop/flows.py", "-o", given, "--source-root", "src", cwd=shop)
    assert "module shop.flows" in result.stdout
    assert members(given) == members(by_package)
    version = lambda out: json.loads((out / MANIFEST_NAME).read_text())["version"]  # noqa: E731
    assert version(given) == version(by_package)


def test_a_source_root_inside_the_package_makes_it_a_top_level_module(shop):
    result = run_cli("serialize", "src/shop/flows.py", "-o", shop / "out", "--source-root", "src/shop",
                     cwd=shop, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "relative import outside any package" in result.stderr
    assert "the folder above its package as --source-root" in result.stderr


def test_a_file_outside_the_source_root_ships_as_a_top_level_module(tmp_path):
    write(tmp_path / "lib", {"helpers.py": "def double(n):\n    return 2 * n\n"})
    write(tmp_path / "jobs", {"nightly.py": "from flytekit import task\nfrom helpers import double\n\n"
                                            "@task\ndef twice(n: int) -> int:\n    return double(n)\n"})
    run_cli("serialize", "jobs/nightly.py", "-o", tmp_path / "out", "--source-root", "lib", cwd=tmp_path)
    assert members(tmp_path / "out") == ["helpers.py", "nightly.py"]


def test_a_folder_that_is_no_module_name_is_refused(tmp_path):
    write(tmp_path / "src", {"my-shop/flows.py": "from flytekit import task\n"})
    result = run_cli("serialize", "src/my-shop/flows.py", "-o", tmp_path / "out", "--source-root", "src",
                     cwd=tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "would be the module `my-shop.flows`, but `my-shop` is not a valid Python module name" in result.stderr


def test_nested_packages_ship_what_the_module_imports_and_run(tmp_path, sandbox, remote):
    """A module two packages deep importing upwards, relatively and absolutely; a sibling module that
    imports its own neighbour relatively. Every package's __init__ ships; the unrelated module does not."""
    write(tmp_path / "src", {
        "store/__init__.py": "",
        "store/prices.py": "from .rates import RATE\n\ndef net(x: int) -> int:\n    return x * RATE\n",
        "store/rates.py": "RATE = 3\n",
        "store/unused.py": "X = 1\n",
        "store/jobs/__init__.py": "",
        "store/jobs/nightly.py": textwrap.dedent(
            """\
            from flytekit import task, workflow
            from ..prices import net
            from store.rates import RATE

            @task
            def price(n: int) -> int:
                return net(n) + RATE

            @workflow
            def nightly(n: int = 1) -> int:
                return price(n=n)
            """
        ),
    })
    out = tmp_path / "out"
    run_cli("serialize", "src/store/jobs/nightly.py", "-o", out, cwd=tmp_path)
    assert members(out) == ["store/__init__.py", "store/jobs/__init__.py", "store/jobs/nightly.py",
                            "store/prices.py", "store/rates.py"]
    run_cli("register-files", out, "--config", sandbox.config_file, cwd=tmp_path)
    execution = launch(remote, out, "store.jobs.nightly.nightly", n=5)
    assert execution.closure.phase == 4, execution.error
    assert execution.outputs["o0"] == 18


def test_the_package_ships_even_when_the_module_imports_nothing_from_it(tmp_path):
    """The container imports `pkg.mod` through `pkg`: its __init__ (and what that imports) ships."""
    write(tmp_path / "src", {
        "tools/__init__.py": "from .setup import READY\n",
        "tools/setup.py": "READY = True\n",
        "tools/flows.py": "from flytekit import task\n\n@task\ndef one() -> int:\n    return 1\n",
    })
    out = tmp_path / "out"
    result = run_cli("serialize", "src/tools/flows.py", "-o", out, cwd=tmp_path)
    assert "module tools.flows" in result.stdout
    assert members(out) == ["tools/__init__.py", "tools/flows.py", "tools/setup.py"]


def test_a_failing_package_init_fails_serialize_in_one_line(tmp_path):
    """In the container `import tools.flows` runs tools/__init__.py first, even when flows imports nothing
    from it: serialize runs it too, and its failure is the user's, not a crash."""
    write(tmp_path / "src", {
        "tools/__init__.py": "X = 1\nraise RuntimeError('no config')\n",
        "tools/flows.py": "from flytekit import task\n\n@task\ndef one() -> int:\n    return 1\n",
    })
    result = run_cli("serialize", "src/tools/flows.py", "-o", tmp_path / "out", cwd=tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "tools/__init__.py line 2 (imported by flows.py): RuntimeError: no config." in result.stderr


def test_a_module_file_without_a_final_newline_is_no_clash_with_itself(shop):
    (shop / "src/shop/flows.py").write_text(FLOWS.rstrip("\n"))
    result = run_cli("serialize", "src/shop/flows.py", "-o", shop / "out", cwd=shop)
    assert "module shop.flows" in result.stdout


def test_the_magic_still_refuses_a_dotted_module_name(tmp_path, monkeypatch):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fastreg_magic")
    with pytest.raises(UsageError, match="not a valid Python module name"):
        shell.run_cell_magic("flyte_fast", "--dry-run -m shop.flows", "from flytekit import task\n")
