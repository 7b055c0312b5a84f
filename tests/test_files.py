"""`fastreg serialize` and `fastreg register-files`: the seed's two-step flow on the magic's code."""

from __future__ import annotations

import json
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
