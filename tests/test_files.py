"""`fastreg serialize` and `fastreg register-files`: the seed's two-step flow on the magic's code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from fastreg_magic import specs
from fastreg_magic.pipeline import MANIFEST_NAME

FASTREG = [sys.executable, "-m", "fastreg_magic.cli"]

CELL = textwrap.dedent(
    """\
    from flytekit import task, workflow
    from helpers.text import shout

    @task
    def greet(name: str) -> str:
        return shout("hello " + name)

    @workflow
    def hello(name: str = "world") -> str:
        return greet(name=name)
    """
)


def _notebook(path: Path, cells: list[str]) -> Path:
    nb = {
        "cells": [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None} for c in cells],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))
    return path


@pytest.fixture
def project(tmp_path):
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "__init__.py").write_text("")
    (helpers / "text.py").write_text("def shout(s):\n    return s.upper()\n")
    (tmp_path / ".env").write_text("SECRET=1\n")
    return tmp_path


def run_cli(*args, cwd=None, check=True):
    result = subprocess.run([*FASTREG, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"fastreg {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _members(archive: Path) -> list[str]:
    with tarfile.open(archive, "r:gz") as tar:
        return sorted(m.name for m in tar.getmembers() if m.isfile())


def test_serialize_module(project, tmp_path):
    module = project / "flows.py"
    module.write_text(CELL)
    out = tmp_path / "out"
    run_cli("serialize", module, "-o", out, "-i", "ghcr.io/acme/ml:1")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["module"] == "flows"
    assert _members(out / manifest["archive"]) == ["flows.py", "helpers/__init__.py", "helpers/text.py"]
    written = specs.read_specs(out)
    assert [(s.kind, s.name) for s in written] == [
        ("task", "flows.greet"), ("workflow", "flows.hello"), ("launch_plan", "flows.hello")
    ]
    assert written[0].proto.template.container.image == "ghcr.io/acme/ml:1"
    assert written[0].proto.template.id.version == manifest["version"]


def test_serialize_notebook_builds_cells_as_the_magic_does(project, tmp_path):
    nb = _notebook(project / "Greeting Flows.ipynb", [
        "%load_ext fastreg_magic",
        "PREFIX = 'Dear '\n\ndef polite(s):\n    return PREFIX + s\n",
        "%%flyte_fast -i ghcr.io/acme/ml:2\n" + CELL + "\n@task\ndef formal(name: str) -> str:\n    return polite(name)\n",
        "%%flyte_fast -m second_cell\nfrom flytekit import task\n\n@task\ndef one() -> int:\n    return 1\n",
        "print('after the last magic cell: not run')",
    ])
    out = tmp_path / "out"
    result = run_cli("serialize", nb, "-o", out)
    folders = sorted(p.name for p in out.iterdir())
    assert folders == ["cell002", "cell003"], result.stdout
    first = json.loads((out / "cell002" / MANIFEST_NAME).read_text())
    assert first["module"] == "greeting_flows"  # from the notebook's file name, as in Jupyter
    assert first["images"] == ["default=ghcr.io/acme/ml:2"]
    members = _members(out / "cell002" / first["archive"])
    assert members == ["greeting_flows.py", "helpers/__init__.py", "helpers/text.py"]
    with tarfile.open(out / "cell002" / first["archive"]) as tar:
        source = tar.extractfile("greeting_flows.py").read().decode()
    assert "PREFIX = 'Dear '" in source and "def polite" in source  # lifted from the earlier cell
    second = json.loads((out / "cell003" / MANIFEST_NAME).read_text())
    assert second["module"] == "second_cell"
    assert "after the last magic cell" not in result.stdout


def test_serialize_reports_bad_cells_plainly(project, tmp_path):
    nb = _notebook(project / "bad.ipynb", ["%%flyte_fast\nx = 1\n"])
    result = run_cli("serialize", nb, "-o", tmp_path / "out", check=False)
    assert result.returncode == 1
    assert "Cell 0 of bad.ipynb" in result.stderr and "no Flyte task" in result.stderr
    assert "Traceback" not in result.stderr


def test_serialize_is_deterministic(project, tmp_path):
    module = project / "flows.py"
    module.write_text(CELL)
    run_cli("serialize", module, "-o", tmp_path / "a")
    run_cli("serialize", module, "-o", tmp_path / "b")
    a = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert a == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_register_files_needs_a_serialized_dir(tmp_path):
    result = run_cli("register-files", tmp_path, "--endpoint", "127.0.0.1:1", check=False)
    assert result.returncode == 1
    assert "127.0.0.1:1" in result.stderr or "no serialized release" in result.stderr


def test_serialize_then_register_files_round_trip(project, tmp_path, sandbox, remote):
    from datetime import timedelta

    module = project / "roundtrip_flows.py"
    module.write_text(CELL)
    out = tmp_path / "out"
    run_cli("serialize", module, "-o", out)
    version = json.loads((out / MANIFEST_NAME).read_text())["version"]
    result = run_cli("register-files", out, "-p", "flytesnacks", "-d", "development", "--config", sandbox.config_file)
    assert f"registered 3 entities as version {version}" in result.stdout
    lp = remote.fetch_launch_plan(name="roundtrip_flows.hello", version=version)
    task = remote.fetch_task(name="roundtrip_flows.greet", version=version)
    args = " ".join(task.template.container.args)
    assert "remote_package_path" not in args and "registration." not in args  # registration-time placeholders filled
    execution = remote.execute(lp, inputs={"name": "flyte"}, wait=False)
    execution = remote.wait(execution, timeout=timedelta(minutes=5), poll_interval=timedelta(seconds=1))
    assert execution.closure.phase == 4, execution.error  # SUCCEEDED
    assert execution.outputs["o0"] == "HELLO FLYTE"


def test_register_files_to_a_distribution_dir(project, tmp_path, sandbox, remote):
    module = project / "distdir_flows.py"
    module.write_text(CELL)
    out = tmp_path / "out"
    run_cli("serialize", module, "-o", out)
    dist = tmp_path / "dist"
    dist.mkdir()
    run_cli("register-files", out, "--additional-distribution-dir", dist.as_uri(), "--config", sandbox.config_file,
            "--service-account", "runner", "--raw-output-prefix", str(tmp_path / "raw"))
    version = json.loads((out / MANIFEST_NAME).read_text())["version"]
    task = remote.fetch_task(name="distdir_flows.greet", version=version)
    uri = task.template.container.args[2]
    assert uri.startswith(dist.as_uri()) and [p.name for p in dist.iterdir()] == [uri.rsplit("/", 1)[-1]]
    lp = remote.client.get_launch_plan(remote.fetch_launch_plan(name="distdir_flows.hello", version=version).id)
    assert lp.spec.security_context.run_as.k8s_service_account == "runner"
    assert lp.spec.raw_output_data_config.output_location_prefix == str(tmp_path / "raw")


def test_register_files_refuses_a_taken_version_before_creating_anything(project, tmp_path, sandbox, remote):
    module = project / "pinned_flows.py"
    module.write_text(CELL)
    first, second = tmp_path / "first", tmp_path / "second"
    run_cli("serialize", module, "-o", first, "--version", "pinned-7")
    run_cli("register-files", first, "--config", sandbox.config_file)
    module.write_text(CELL.replace('"hello "', '"hi "') + "\n@task\ndef added(n: int) -> int:\n    return n\n")
    run_cli("serialize", module, "-o", second, "--version", "pinned-7")
    result = run_cli("register-files", second, "--config", sandbox.config_file, check=False)
    assert result.returncode == 1
    assert "'pinned-7'" in result.stderr and "different structure" in result.stderr
    assert "pinned_flows.greet" in result.stderr and "--version" in result.stderr
    with pytest.raises(Exception, match="added"):
        remote.fetch_task(name="pinned_flows.added", version="pinned-7")


# ---------------------------------------------------------------- failures: one line, nothing wrong registered


def one_line(result) -> str:
    """The single line a failing command printed on stderr (no traceback, nothing else)."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


TASK_CELL = "%%flyte_fast -m {module}\nfrom flytekit import task\n\n@task\ndef {name}(x: int) -> int:\n    return x\n"


def test_reserializing_into_a_folder_replaces_what_the_earlier_run_wrote(project, tmp_path, sandbox, remote):
    first = TASK_CELL.format(module="stale_first", name="one")
    second = TASK_CELL.format(module="stale_second", name="two")
    out = tmp_path / "out"
    run_cli("serialize", _notebook(project / "v1.ipynb", [first]), "-o", out)
    assert (out / MANIFEST_NAME).is_file()
    (out / "notes.txt").write_text("mine")  # not fastreg's: stays
    run_cli("serialize", _notebook(project / "v2.ipynb", [first, second]), "-o", out)
    assert sorted(p.name for p in out.iterdir()) == ["cell000", "cell001", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"
    result = run_cli("register-files", out, "--config", sandbox.config_file)
    manifests = [json.loads((out / cell / MANIFEST_NAME).read_text()) for cell in ("cell000", "cell001")]
    assert [m["module"] for m in manifests] == ["stale_first", "stale_second"]
    assert f"{out / 'cell000'}: registered 1 entities" in result.stdout
    assert f"{out / 'cell001'}: registered 1 entities" in result.stdout
    remote.fetch_task(name="stale_second.two", version=manifests[1]["version"])  # the new cell is registered
    # and back to one cell: the cell folders go, the release is at the top again
    run_cli("serialize", _notebook(project / "v3.ipynb", [second]), "-o", out)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == []
    assert json.loads((out / MANIFEST_NAME).read_text())["module"] == "stale_second"
    assert len(list(out.glob("*.pb"))) == 1 and len(list(out.glob("*.tar.gz"))) == 1


def test_register_files_refuses_a_release_next_to_cell_folders(project, tmp_path):
    module = project / "mixed_flows.py"
    module.write_text(CELL)
    out = tmp_path / "out"
    run_cli("serialize", module, "-o", out)
    (out / "cell001").mkdir()
    for path in list(out.iterdir()):  # a cell folder beside the release, as an older fastreg left them
        if path.is_file():
            (out / "cell001" / path.name).write_bytes(path.read_bytes())
    result = run_cli("register-files", out, "--endpoint", "127.0.0.1:1", check=False)
    assert result.returncode == 1
    line = one_line(result)
    assert "holds both a serialized release" in line and "cell001" in line and "fastreg serialize" in line


def test_serialize_refuses_pb_files_it_did_not_write(project, tmp_path):
    module = project / "foreign_flows.py"
    module.write_text(CELL)
    out = tmp_path / "out"
    out.mkdir()
    (out / "00_other.wf_2.pb").write_bytes(b"pyflyte's")
    result = run_cli("serialize", module, "-o", out, check=False)
    assert result.returncode == 1
    line = one_line(result)
    assert "00_other.wf_2.pb" in line and "did not write" in line
    assert _tree(out) == {"00_other.wf_2.pb": b"pyflyte's"}


def test_serialize_names_the_line_a_module_or_cell_raises_at(project, tmp_path):
    module = project / "modraise.py"
    module.write_text("from flytekit import task\n\nraise RuntimeError('boom')\n")
    result = run_cli("serialize", module, "-o", tmp_path / "m", check=False)
    assert result.returncode == 1
    assert one_line(result).startswith("fastreg serialize: modraise.py line 3: RuntimeError: boom.")
    assert not (tmp_path / "m").exists()  # nothing written, not even the folder

    (project / "helpers" / "boom.py").write_text("import os\nraise ValueError('bad helper')\n")
    module.write_text("from flytekit import task\nimport helpers.boom\n")
    line = one_line(run_cli("serialize", module, "-o", tmp_path / "m", check=False))
    assert "helpers/boom.py line 2 (imported by modraise.py): ValueError: bad helper." in line

    cell = TASK_CELL.format(module="cellraise", name="t5") + "raise RuntimeError('cell fails')\n"
    notebook = _notebook(project / "cellraise.ipynb", ["x = 1", cell])
    result = run_cli("serialize", notebook, "-o", tmp_path / "n", check=False)
    assert result.returncode == 1
    assert "Cell 1 of cellraise.ipynb, line 7: RuntimeError: cell fails." in one_line(result)


def test_a_failing_earlier_cell_is_named_when_a_later_cell_fails(project, tmp_path):
    cells = [
        "import os\nLIMIT = int(os.environ['NO_SUCH_SETTING_FOR_FASTREG'])\n",
        "%%flyte_fast\nfrom flytekit import task\n\n@task\ndef capped(x: int) -> int:\n    return min(x, LIMIT)\n",
    ]
    out = tmp_path / "out"
    result = run_cli("serialize", _notebook(project / "early.ipynb", cells), "-o", out, check=False)
    assert result.returncode == 1
    line = one_line(result)
    assert "`LIMIT` is used by this cell but is defined neither" in line  # what failed
    assert "Cell 0 of early.ipynb, line 2, failed: KeyError: 'NO_SUCH_SETTING_FOR_FASTREG'." in line  # and why
    assert not out.exists()


def test_serialize_runs_a_notebook_that_uses_the_cells_value_and_launches(project, tmp_path):
    """The shape of a working notebook: `reg = _` after a cell, a launch, then another cell. The launch
    cannot happen while serializing (nothing is registered); it is skipped and said so."""
    cells = [
        "%load_ext fastreg_magic",
        TASK_CELL.format(module="first_step", name="one"),
        "reg = _\nVERSION = reg.version\n",
        "run = reg.launch(x=1)\nrun.wait()\n",
        "%%flyte_fast -m second_step\nfrom flytekit import task\n\n@task\ndef two(x: int) -> str:\n"
        "    return VERSION\n",
    ]
    out = tmp_path / "out"
    result = run_cli("serialize", _notebook(project / "steps.ipynb", cells), "-o", out)
    first = json.loads((out / "cell001" / MANIFEST_NAME).read_text())
    with tarfile.open(out / "cell004" / json.loads((out / "cell004" / MANIFEST_NAME).read_text())["archive"]) as tar:
        source = tar.extractfile("second_step.py").read().decode()
    assert f"VERSION = {first['version']!r}" in source  # `_` was the first cell's Registration
    assert "Cell 3 of steps.ipynb, line 1, failed: RunError:" in result.stderr
    assert "Skipped it: nothing is registered while serializing." in result.stderr
    assert "Traceback" not in result.stderr


def test_serialize_expands_a_cells_options_as_jupyter_does(project, tmp_path):
    cells = [
        f"STORE = {(tmp_path / 'store').as_uri()!r}\nACCOUNT = 'robot'\nimages = {{'gpu': 'ghcr.io/acme/gpu:3'}}\n",
        "%%flyte_fast -m expanded --distribution-dir $STORE --service-account {ACCOUNT} -i {images['gpu']}\n"
        "from flytekit import task\n\n@task\ndef one(x: int) -> int:\n    return x\n",
    ]
    out = tmp_path / "out"
    run_cli("serialize", _notebook(project / "expanded.ipynb", cells), "-o", out)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["distribution_dir"] == (tmp_path / "store").as_uri()
    assert manifest["service_account"] == "robot"
    assert manifest["images"] == ["default=ghcr.io/acme/gpu:3"]


def test_command_line_options_apply_to_every_cell_of_a_notebook(project, tmp_path):
    (project / "notes.txt").write_text("not imported by anything\n")
    cells = ["%%flyte_fast -m opt_one -i ghcr.io/acme/ml:cell\nfrom flytekit import task\n\n@task\n"
             "def one(x: int) -> int:\n    return x\n",
             TASK_CELL.format(module="opt_two", name="two")]
    out = tmp_path / "out"
    run_cli("serialize", _notebook(project / "opts.ipynb", cells), "-o", out, "-i", "ghcr.io/acme/ml:ci",
            "--version", "ci-7", "--copy", "all", "--destination-dir", "/root/code")
    for folder in ("cell000", "cell001"):
        manifest = json.loads((out / folder / MANIFEST_NAME).read_text())
        assert manifest["version"] == "ci-7" and manifest["images"] == ["default=ghcr.io/acme/ml:ci"]
        assert "notes.txt" in _members(out / folder / manifest["archive"])  # --copy all
        task = specs.read_specs(out / folder)[0].proto.template
        assert task.id.version == "ci-7" and task.container.image == "ghcr.io/acme/ml:ci"
        assert "/root/code" in task.container.args


def test_a_failing_cell_leaves_the_output_folder_as_it_was(project, tmp_path):
    good = [TASK_CELL.format(module="kept_one", name="one"), TASK_CELL.format(module="kept_two", name="two")]
    out = tmp_path / "out"
    run_cli("serialize", _notebook(project / "good.ipynb", good), "-o", out)
    before = _tree(out)
    bad = [TASK_CELL.format(module="new_one", name="one"), good[1] + "raise RuntimeError('late')\n"]
    result = run_cli("serialize", _notebook(project / "bad.ipynb", bad), "-o", out, check=False)
    assert result.returncode == 1 and "Cell 1 of bad.ipynb, line 7: RuntimeError: late." in one_line(result)
    assert _tree(out) == before  # the first cell's new folder was not written over the complete release


def test_serialize_output_that_cannot_be_a_folder_is_one_line(project, tmp_path):
    module = project / "okmod.py"
    module.write_text(CELL)
    afile = tmp_path / "afile"
    afile.write_text("x")
    line = one_line(run_cli("serialize", module, "-o", afile, check=False))
    assert f"-o {afile} is a file, not a directory." in line
    result = run_cli("serialize", module, "-o", afile / "sub", check=False)
    assert result.returncode == 1 and f"cannot write to the output directory {afile / 'sub'}" in one_line(result)
    assert afile.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_serialize_into_a_read_only_folder_is_one_line(project, tmp_path):
    module = project / "okmod.py"
    module.write_text(CELL)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = run_cli("serialize", module, "-o", locked / "out", check=False)
    assert result.returncode == 1 and "cannot write to the output directory" in one_line(result)


@pytest.mark.parametrize("damage", ["unparseable manifest", "manifest without keys", "corrupt archive",
                                   "unlisted .pb file", "manifest of an earlier fastreg"])
def test_register_files_on_a_damaged_folder_is_one_line(project, tmp_path, damage):
    module = project / "damaged_flows.py"
    module.write_text(CELL)
    out = tmp_path / "out"
    run_cli("serialize", module, "-o", out)
    manifest = out / MANIFEST_NAME
    if damage == "unparseable manifest":
        manifest.write_text("{oops")
    elif damage == "manifest without keys":
        manifest.write_text("{}")
    elif damage == "corrupt archive":
        (out / json.loads(manifest.read_text())["archive"]).write_text("garbage")
    elif damage == "manifest of an earlier fastreg":  # it did not record the archive's bytes
        manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items()
                                        if k != "archive_sha256"}))
    else:
        (out / "09_extra.t_1.pb").write_bytes((sorted(out.glob("*.pb"))[0]).read_bytes())
    # checked before the backend is asked anything: the unreachable endpoint is never dialed
    result = run_cli("register-files", out, "--endpoint", "127.0.0.1:1", check=False)
    assert result.returncode == 1
    line = one_line(result)
    assert "re-run `fastreg serialize`" in line.lower(), line
    assert "127.0.0.1:1" not in line


def test_register_files_hint_for_a_folder_registered_with_another_distribution_dir(project, tmp_path, sandbox):
    module = project / "hint_flows.py"
    module.write_text(CELL)
    out = tmp_path / "out"
    run_cli("serialize", module, "-o", out)
    run_cli("register-files", out, "--config", sandbox.config_file)
    dist = tmp_path / "dist"
    dist.mkdir()
    result = run_cli("register-files", out, "--config", sandbox.config_file, "--additional-distribution-dir",
                     dist.as_uri(), check=False)
    assert result.returncode == 1
    line = one_line(result)
    assert "different structure" in line and "re-run `fastreg serialize` with a new --version" in line
    assert "register it with the same --additional-distribution-dir" in line
    assert "drop --version" not in line


def test_an_unexpected_error_is_one_line_too(monkeypatch, capsys, tmp_path):
    from fastreg_magic import cli, files

    def broken(args):
        raise KeyError("oops")

    monkeypatch.setattr(files, "run_register_files", broken)
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    assert cli.main(["register-files", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "fastreg register-files: unexpected KeyError: 'oops'. This is a bug in fastreg: re-run with "
        "FASTREG_TRACEBACK=1 for the traceback, and report it."
    ]
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    with pytest.raises(KeyError):
        cli.main(["register-files", str(tmp_path)])


@pytest.mark.parametrize("body, line, faulty, text", [
    ("x = 1\ndef broken(:\n", 3, "def broken(:", "Syntax error on line 3 of the cell"),
    ("from flytekit import task\n\n@task\ndef t(n: int) -> int:\n    print(n)\n", 4, "@task",
     "Line 4 of the cell: t function must return a value"),
])
def test_serialize_and_the_magic_number_a_cells_lines_as_the_editor_does(project, tmp_path, body, line, faulty, text):
    """Line 1 of a cell is its %%flyte_fast line, in the notebook, in the magic's message and in the CLI's."""
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    cell = "%%flyte_fast --dry-run -m numbered\n" + body
    assert cell.splitlines()[line - 1] == faulty  # the editor's line `line` is the faulty one
    cli = one_line(run_cli("serialize", _notebook(project / "numbered.ipynb", [cell]), "-o", tmp_path / "o", check=False))
    assert f"Cell 0 of numbered.ipynb: {text}" in cli
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fastreg_magic")
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic("flyte_fast", "--dry-run -m numbered", body)
    assert str(info.value).startswith(text)


def test_a_notebook_whose_plain_cell_imports_a_local_module_serializes_from_anywhere(project, tmp_path):
    """Jupyter runs a notebook's cells in its folder: `fastreg serialize` too, wherever it is started."""
    cells = ["from helpers.text import shout\nGREETING = shout('hi')\n",
             "%%flyte_fast -m shouter\nfrom flytekit import task\n\n@task\ndef greet() -> str:\n    return GREETING\n"]
    notebook = _notebook(project / "plain_import.ipynb", cells)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_cli("serialize", notebook, "-o", "out", cwd=elsewhere)
    manifest = json.loads((elsewhere / "out" / MANIFEST_NAME).read_text())
    assert manifest["module"] == "shouter"


# ---------------------------------------------------------------- what serialize tells, and where it stores


def test_serialize_tells_on_stderr_what_it_left_out_and_its_warnings(project, tmp_path):
    module = project / "noisy_flows.py"
    module.write_text(CELL)
    with open(project / "big.bin", "wb") as handle:
        handle.truncate(11_000_000)
    out = tmp_path / "out"
    result = run_cli("serialize", module, "-o", out, "--copy", "all")
    assert f"{out}: left out .env: secret (never shipped)" in result.stderr.splitlines()
    assert f"{out}: warning: big.bin is 10.5 MiB (over 10 MiB)" in result.stderr.splitlines()
    assert "left out" not in result.stdout and f"{out}: module noisy_flows" in result.stdout


def test_serialize_over_the_size_limit_names_the_option_that_raises_it(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outputs")  # not under the project, which --copy all ships
    module = project / "heavy_flows.py"
    module.write_text(CELL)
    (project / "blob.bin").write_bytes(os.urandom(2 * 1024 * 1024))  # incompressible
    result = run_cli("serialize", module, "-o", outside / "out", "--copy", "all", "--max-archive-mib", "1", check=False)
    assert result.returncode == 1
    line = one_line(result)
    assert "over the 1.0 MiB limit" in line and "blob.bin" in line and "fastreg serialize --max-archive-mib N" in line
    run_cli("serialize", module, "-o", outside / "out", "--copy", "all", "--max-archive-mib", "3")
    notebook = _notebook(project / "heavy.ipynb", [f"%%flyte_fast -m heavy_cell --copy all\n{CELL}"])
    result = run_cli("serialize", notebook, "-o", outside / "nb", "--max-archive-mib", "1", check=False)
    assert result.returncode == 1 and "over the 1.0 MiB limit" in one_line(result)
    run_cli("serialize", notebook, "-o", outside / "nb", "--max-archive-mib", "3")


def test_register_files_stores_the_archive_in_the_cells_distribution_dir(project, tmp_path, sandbox, remote):
    dist = tmp_path / "nbd"
    notebook = _notebook(project / "dist.ipynb", [f"%%flyte_fast -m nbdist_flows --distribution-dir {dist.as_uri()}/\n{CELL}"])
    out = tmp_path / "out"
    run_cli("serialize", notebook, "-o", out)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["distribution_dir"] == dist.as_uri()
    result = run_cli("register-files", out, "--config", sandbox.config_file)
    assert f"registered 3 entities as version {manifest['version']}" in result.stdout
    uri = remote.fetch_task(name="nbdist_flows.greet", version=manifest["version"]).template.container.args[2]
    assert uri == f"{dist.as_uri()}/fastreg-{manifest['digest']}.tar.gz" and (dist / uri.rsplit("/", 1)[-1]).is_file()
    # An explicit --additional-distribution-dir still wins: the archive goes there (and the version,
    # registered with the other location, is refused as taken).
    other = tmp_path / "other"
    again = run_cli("register-files", out, "--config", sandbox.config_file, "--additional-distribution-dir",
                    other.as_uri(), check=False)
    assert (other / uri.rsplit("/", 1)[-1]).is_file() and "different structure" in one_line(again)


def test_register_files_applies_the_cells_service_account_and_raw_output_prefix(project, tmp_path, sandbox, remote):
    line = "%%flyte_fast -m nbsettings_flows --service-account nb-runner --raw-output-prefix file:///tmp/nb-raw"
    notebook = _notebook(project / "settings.ipynb", [f"{line}\n{CELL}"])
    out = tmp_path / "out"
    run_cli("serialize", notebook, "-o", out)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert (manifest["service_account"], manifest["raw_output_prefix"]) == ("nb-runner", "file:///tmp/nb-raw")
    run_cli("register-files", out, "--config", sandbox.config_file)
    plan = remote.client.get_launch_plan(remote.fetch_launch_plan(name="nbsettings_flows.hello",
                                                                  version=manifest["version"]).id)
    assert plan.spec.security_context.run_as.k8s_service_account == "nb-runner"
    assert plan.spec.raw_output_data_config.output_location_prefix == "file:///tmp/nb-raw"


def test_the_magics_serialize_to_failure_names_serialize_to(tmp_path, monkeypatch):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.chdir(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x")
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fastreg_magic")
    cell = "from flytekit import task\n\n@task\ndef t() -> int:\n    return 1\n"
    with pytest.raises(UsageError, match=r"cannot write the serialized files to .*afile/sub .*Pass --serialize-to a directory"):
        shell.run_cell_magic("flyte_fast", f"-m serialize_to_flow --serialize-to {afile / 'sub'}", cell)


def test_serialize_copy_all_ships_a_file_whose_name_is_not_utf8(project, tmp_path):
    module = project / "latin_flows.py"
    module.write_text(CELL)
    with open(os.path.join(os.fsencode(project), b"caf\xe9.csv"), "wb") as handle:
        handle.write(b"latte,1\n")
    out = tmp_path / "out"
    result = run_cli("serialize", module, "-o", out, "--copy", "all")
    assert "Traceback" not in result.stderr
    archive = out / json.loads((out / MANIFEST_NAME).read_text())["archive"]
    with tarfile.open(archive, "r:gz") as tar:
        assert tar.extractfile(os.fsdecode(b"caf\xe9.csv")).read() == b"latte,1\n"


def test_register_files_with_nothing_configured_is_refused_unless_the_sandbox_runs(project, tmp_path):
    """A CI job whose Flyte config went missing fails, naming what to configure, and starts nothing; with
    the embedded sandbox already running (a user at their machine), it registers there and says so."""
    module = project / "nothing_configured.py"
    module.write_text(CELL)
    out = tmp_path / "out"
    run_cli("serialize", module, "-o", out)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYTE", "FLYTECTL", "XDG_"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CACHE_HOME=str(home / "cache"))

    def fastreg(*args):
        return subprocess.run([*FASTREG, *args], capture_output=True, text=True, env=env, timeout=300)

    try:
        refused = fastreg("register-files", str(out))
        status = fastreg("sandbox", "--status")
        fastreg("sandbox", "--create-project", "flytesnacks")  # starts the per-user sandbox in the background
        used = fastreg("register-files", str(out))
    finally:
        fastreg("sandbox", "--stop")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "No Flyte backend is configured, and the embedded sandbox is not running" in refused.stderr
    assert "--config FILE or --endpoint HOST:PORT" in refused.stderr
    assert status.returncode == 1, status.stdout  # nothing was started
    assert used.returncode == 0, used.stderr
    assert "No Flyte backend configured: using the embedded sandbox at 127.0.0.1:" in used.stderr
    assert "(it is running)" in used.stderr
    assert "No Flyte backend" not in used.stdout  # stdout stays the release lines a script may read
    assert "registered" in used.stdout


def test_serialize_reads_the_users_ipython_profile_as_their_kernel_does(project, tmp_path):
    ipython_dir = tmp_path / "ipython"
    (ipython_dir / "profile_default").mkdir(parents=True)
    (ipython_dir / "profile_default" / "ipython_config.py").write_text(
        "c.FlyteFast.images = ['ghcr.io/acme/ml:from-profile']\n")
    out = tmp_path / "out"
    result = subprocess.run([*FASTREG, "serialize", str(_notebook(project / "profiled.ipynb", [
        TASK_CELL.format(module="profiled", name="one")])), "-o", str(out)],
        capture_output=True, text=True, env={**os.environ, "IPYTHONDIR": str(ipython_dir)})
    assert result.returncode == 0, result.stderr
    assert json.loads((out / MANIFEST_NAME).read_text())["images"] == ["default=ghcr.io/acme/ml:from-profile"]


def test_what_plain_cells_print_goes_to_stderr(project, tmp_path):
    cells = ["print('loading the data')\n", "1 / 0\n", TASK_CELL.format(module="printing", name="one")]
    result = run_cli("serialize", _notebook(project / "printing.ipynb", cells), "-o", tmp_path / "out")
    assert result.stdout.splitlines() == [line for line in result.stdout.splitlines() if "module printing" in line]
    assert "loading the data" in result.stderr
    assert ("Cell 1 of printing.ipynb, line 1, failed: ZeroDivisionError: division by zero. Skipped it: "
            "nothing is registered while serializing.") in result.stderr


def test_register_files_refuses_an_archive_changed_after_serialize(project, tmp_path, sandbox, remote):
    module = project / "tampered_flows.py"
    module.write_text(CELL)
    out = tmp_path / "out"
    run_cli("serialize", module, "-o", out)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    archive = out / manifest["archive"]
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(archive, "w:gz") as tar:  # same names, one changed file
        for member, data in members:
            data = data.replace(b"hello ", b"HACKED ") if member.name == "tampered_flows.py" else data
            member.size = len(data)
            tar.addfile(member, __import__("io").BytesIO(data))
    result = run_cli("register-files", out, "--config", sandbox.config_file, check=False)
    assert result.returncode == 1
    assert "does not hold what `fastreg serialize` put in it" in one_line(result)
    with pytest.raises(Exception):
        remote.fetch_task(name="tampered_flows.greet", version=manifest["version"])


def test_a_notebooks_cells_register_all_together_or_not_at_all(project, tmp_path, sandbox, remote):
    """The second cell's version is taken (with other code): the first cell, fine on its own, is not
    registered either, and the message names the folder."""
    taken = [TASK_CELL.format(module="pair_two", name="two").replace("%%flyte_fast -m pair_two",
                                                                     "%%flyte_fast -m pair_two --version pair-1")]
    run_cli("serialize", _notebook(project / "before.ipynb", taken), "-o", tmp_path / "before")
    run_cli("register-files", tmp_path / "before", "--config", sandbox.config_file)
    cells = [TASK_CELL.format(module="pair_one", name="one"),
             taken[0].replace("return x", "return x + 1")]
    out = tmp_path / "out"
    run_cli("serialize", _notebook(project / "pair.ipynb", cells), "-o", out)
    result = run_cli("register-files", out, "--config", sandbox.config_file, check=False)
    assert result.returncode == 1 and result.stdout == ""
    line = one_line(result)
    assert f"{out / 'cell001'}: " in line and "different structure" in line
    version = json.loads((out / "cell000" / MANIFEST_NAME).read_text())["version"]
    with pytest.raises(Exception):
        remote.fetch_task(name="pair_one.one", version=version)


def test_copy_all_leaves_serializes_own_output_folder_out(project, tmp_path):
    cells = ["%%flyte_fast -m in_place --copy all\nfrom flytekit import task\n\n@task\n"
             "def one(x: int) -> int:\n    return x\n"]
    notebook = _notebook(project / "in_place.ipynb", cells)
    versions = []
    for _ in range(3):  # the seed's layout: _pb_output/ inside the source root
        result = run_cli("serialize", notebook, "-o", project / "_pb_output")
        versions.append(json.loads((project / "_pb_output" / MANIFEST_NAME).read_text())["version"])
    assert versions[0] == versions[1] == versions[2]
    assert "left out _pb_output/" in result.stderr


def test_register_files_registers_where_the_cell_said(project, tmp_path, sandbox, remote):
    """A cell's -d (and --activate) is where the kernel registers it; register-files does the same,
    unless told otherwise on its command line."""
    cells = ["%%flyte_fast -m placed_flow -d staging --activate\nfrom flytekit import task, workflow\n\n@task\n"
             "def one(x: int) -> int:\n    return x\n\n@workflow\ndef wf(x: int = 1) -> int:\n    return one(x=x)\n"]
    out = tmp_path / "out"
    run_cli("serialize", _notebook(project / "placed.ipynb", cells), "-o", out)
    version = json.loads((out / MANIFEST_NAME).read_text())["version"]
    result = run_cli("register-files", out, "--config", sandbox.config_file)
    assert "in flytesnacks/staging" in result.stdout
    lp = remote.fetch_launch_plan(project="flytesnacks", domain="staging", name="placed_flow.wf", version=version)
    assert remote.client.get_launch_plan(lp.id).closure.state == 1  # ACTIVE
    with pytest.raises(Exception):
        remote.fetch_task(project="flytesnacks", domain="development", name="placed_flow.one", version=version)
    run_cli("register-files", out, "--config", sandbox.config_file, "-d", "development")
    remote.fetch_task(project="flytesnacks", domain="development", name="placed_flow.one", version=version)


SCHEDULED = CELL + textwrap.dedent(
    """
    from flytekit import CronSchedule, LaunchPlan

    nightly = LaunchPlan.get_or_create(hello, name="nightly", schedule=CronSchedule(schedule="0 3 * * *"))
    """
)


def test_register_files_activating_a_scheduled_launch_plan_on_the_sandbox_says_it_will_not_run(project, tmp_path,
                                                                                                  sandbox, remote):
    module = project / "cron_flows.py"
    module.write_text(SCHEDULED)
    out = tmp_path / "out"
    run_cli("serialize", module, "-o", out)
    notice = ("launch plan nightly is active with a schedule, but the embedded sandbox runs no schedules: "
              "launch it yourself, or register to a Flyte cluster")
    assert notice not in run_cli("register-files", out, "--config", sandbox.config_file).stderr  # not activated
    result = run_cli("register-files", out, "--config", sandbox.config_file, "--activate")
    assert f"{out}: warning: {notice}" in result.stderr.splitlines()
    version = json.loads((out / MANIFEST_NAME).read_text())["version"]
    assert remote.client.get_launch_plan(remote.fetch_launch_plan(name="nightly", version=version).id).closure.state == 1


def _recompress(archive: Path) -> bytes:
    """The same members compressed at another level (`gunzip -c | gzip -1 -n`): other bytes, same content."""
    import gzip

    return gzip.compress(gzip.decompress(archive.read_bytes()), compresslevel=1, mtime=0)


@pytest.mark.parametrize("change", ["bytes appended", "recompressed"])
def test_register_files_refuses_an_archive_whose_bytes_changed_after_serialize(project, tmp_path, sandbox, remote,
                                                                               change):
    """Bytes appended after the tar data pass any look at its members, then fail every run's `tar`."""
    module = project / f"{change.split()[0]}_flows.py"
    module.write_text(CELL)
    out = tmp_path / "out"
    run_cli("serialize", module, "-o", out)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    archive = out / manifest["archive"]
    if change == "bytes appended":
        with open(archive, "ab") as handle:  # echo x >> out/fast*.tar.gz
            handle.write(b"x\n")
    else:
        archive.write_bytes(_recompress(archive))
    result = run_cli("register-files", out, "--config", sandbox.config_file, check=False)
    assert result.returncode == 1
    line = one_line(result)
    assert f"The archive {archive} was changed since `fastreg serialize` wrote it" in line
    assert "Re-run `fastreg serialize` into this directory." in line
    with pytest.raises(Exception):
        remote.fetch_task(name=f"{module.stem}.greet", version=manifest["version"])


def test_register_files_uses_the_archive_another_machine_stored_compressed_otherwise(project, tmp_path, sandbox,
                                                                                      remote):
    """A laptop's kernel stored this content first, its zlib compressing it otherwise; a CI runner serializes
    and registers it: the stored archive is used, nothing is uploaded over it, the version is the same."""
    from datetime import timedelta

    from fastreg_magic.package import Archive
    from fastreg_magic.upload import SignedUrlUploader

    module = project / "zlib_flows.py"
    module.write_text(CELL)
    out = tmp_path / "out"
    run_cli("serialize", module, "-o", out)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    laptop = tmp_path / "laptop.tar.gz"
    laptop.write_bytes(_recompress(out / manifest["archive"]))
    stored = SignedUrlUploader(remote.client, "flytesnacks", "development").upload(
        Archive(path=laptop, digest=manifest["digest"], size=laptop.stat().st_size, members=()))
    result = run_cli("register-files", out, "--config", sandbox.config_file)
    assert f"registered 3 entities as version {manifest['version']}" in result.stdout
    task = remote.fetch_task(name="zlib_flows.greet", version=manifest["version"])
    assert stored.uri in task.template.container.args
    assert Path(stored.uri).read_bytes() == laptop.read_bytes()  # nothing was uploaded over it
    execution = remote.execute(remote.fetch_launch_plan(name="zlib_flows.hello", version=manifest["version"]),
                               inputs={"name": "ci"}, wait=False)
    execution = remote.wait(execution, timeout=timedelta(minutes=5), poll_interval=timedelta(seconds=1))
    assert execution.closure.phase == 4, execution.error  # SUCCEEDED
    assert execution.outputs["o0"] == "HELLO CI"
