"""Data a default names, in `fastreg serialize` output: kept in the release folder by content, stored
on the backend by `fastreg register-files` where the magic stores it; and the command's other answers
a CI job reads (images given on its command line, a re-run that registers nothing, damaged files)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from fastreg_magic.pipeline import MANIFEST_NAME

FASTREG = [sys.executable, "-m", "fastreg_magic.cli"]

DATA_CELL = textwrap.dedent(
    """\
    from flytekit import task, workflow
    from flytekit.types.file import FlyteFile

    @task
    def count_rows(f: FlyteFile) -> int:
        with open(f) as handle:
            return len(handle.read().strip().splitlines()) - 1

    @workflow
    def data_wf(f: FlyteFile = FlyteFile("data/train.csv")) -> int:
        return count_rows(f=f)
    """
)


def _notebook(path: Path, cells: list[str]) -> Path:
    nb = {
        "cells": [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
                  for c in cells],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))
    return path


def _clone(folder: Path, line: str) -> Path:
    """A checkout of a repository: a notebook whose cell's workflow defaults to a file of the checkout."""
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    return _notebook(folder / "flows.ipynb", [f"%%flyte_fast {line}\n{DATA_CELL}"])


def run_cli(*args, cwd=None, check=True):
    result = subprocess.run([*FASTREG, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"fastreg {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _default_uri(remote, name: str, version: str) -> str:
    lp = remote.client.get_launch_plan(remote.fetch_launch_plan(name=name, version=version).id)
    return lp.spec.default_inputs.parameters["f"].default.scalar.blob.uri


def test_serialize_keeps_a_default_file_in_the_release_the_same_from_any_clone(tmp_path):
    line = "-m ci_data_same"
    first, second = _clone(tmp_path / "ci" / "clone1", line), _clone(tmp_path / "laptop" / "repo", line)
    run_cli("serialize", first, "-o", tmp_path / "out1", cwd=tmp_path)
    run_cli("serialize", second, "-o", tmp_path / "out2", cwd=tmp_path / "laptop")

    written = _files(tmp_path / "out1")
    assert written == _files(tmp_path / "out2")  # byte-identical, whatever the clone path and the time
    manifest = json.loads(written[MANIFEST_NAME])
    [(kept, entry)] = manifest["data"].items()
    assert kept == f"data/{entry['sha256']}/train.csv" and entry["kind"] == "file"
    assert written[kept] == (tmp_path / "ci" / "clone1" / "data" / "train.csv").read_bytes()
    for name, content in written.items():
        if name.endswith(".pb"):
            assert b"/tmp" not in content and str(tmp_path).encode() not in content, name


@pytest.fixture
def two_clones(tmp_path):
    """The same notebook serialized from two checkouts, as two CI runs would."""
    line = f"-m ci_data_{uuid.uuid4().hex[:8]}"
    outs = []
    for index in (1, 2):
        notebook = _clone(tmp_path / f"clone{index}", line)
        outs.append(tmp_path / f"out{index}")
        run_cli("serialize", notebook, "-o", outs[-1])
    return outs


def test_register_files_stores_the_default_file_and_a_fresh_checkout_registers_nothing_new(two_clones, sandbox,
                                                                                            remote):
    from datetime import timedelta

    first, second = two_clones
    manifest = json.loads((first / MANIFEST_NAME).read_text())
    version, module = manifest["version"], manifest["module"]
    registered = run_cli("register-files", first, "--config", sandbox.config_file)
    assert f"registered 3 entities as version {version}" in registered.stdout

    uri = _default_uri(remote, f"{module}.data_wf", version)
    # Stored on the backend (the sandbox keeps uploads in its data dir), not in the serializing machine's temp.
    assert uri.startswith(str(sandbox.data_dir / "uploads")) and uri.endswith("/train.csv"), uri
    lp = remote.fetch_launch_plan(name=f"{module}.data_wf", version=version)
    run = remote.wait(remote.execute(lp, inputs={}, wait=False), timeout=timedelta(minutes=5),
                      poll_interval=timedelta(seconds=1))
    assert run.closure.phase == 4, run.error  # SUCCEEDED: the run read the default file
    assert run.outputs["o0"] == 3

    again = run_cli("register-files", second, "--config", sandbox.config_file, check=False)
    assert again.returncode == 0, again.stderr
    assert f"already registered: nothing new (3 entities) as version {version}" in again.stdout


def test_the_magic_in_a_kernel_then_register_files_of_the_same_cell_is_the_same_version(sandbox_shell, sandbox,
                                                                                         tmp_path, monkeypatch):
    line = f"-m ci_kernel_{uuid.uuid4().hex[:8]} --source-root {tmp_path / 'repo'}"
    notebook = _clone(tmp_path / "repo", line)
    monkeypatch.chdir(tmp_path / "repo")  # where Jupyter runs the notebook's cells
    reg = sandbox_shell.run_cell_magic("flyte_fast", line, DATA_CELL)
    assert reg.registered

    run_cli("serialize", notebook, "-o", tmp_path / "out")
    assert json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["version"] == reg.version
    result = run_cli("register-files", tmp_path / "out", "--config", sandbox.config_file, check=False)
    assert result.returncode == 0, result.stderr
    assert f"already registered: nothing new (3 entities) as version {reg.version}" in result.stdout


def test_register_files_refuses_kept_data_changed_after_serialize(tmp_path):
    notebook = _clone(tmp_path / "repo", "-m ci_data_changed")
    out = tmp_path / "out"
    run_cli("serialize", notebook, "-o", out)
    [kept] = json.loads((out / MANIFEST_NAME).read_text())["data"]
    (out / kept).write_text("a,b\n")
    # Refused before the backend is asked anything: this endpoint answers nothing.
    result = run_cli("register-files", out, "--endpoint", "127.0.0.1:1", check=False)
    assert result.returncode == 1
    assert f"The data {out / kept} was changed since `fastreg serialize` wrote it" in result.stderr

    shutil.rmtree((out / kept).parent)
    result = run_cli("register-files", out, "--endpoint", "127.0.0.1:1", check=False)
    assert f"The data {out / kept} is missing" in result.stderr


def test_reserializing_removes_the_data_the_earlier_release_kept(tmp_path):
    notebook = _clone(tmp_path / "repo", "-m ci_data_again")
    out = tmp_path / "out"
    run_cli("serialize", notebook, "-o", out)
    [old] = json.loads((out / MANIFEST_NAME).read_text())["data"]
    (tmp_path / "repo" / "data" / "train.csv").write_text("a,b\n7,8\n")
    run_cli("serialize", notebook, "-o", out)
    [new] = json.loads((out / MANIFEST_NAME).read_text())["data"]
    assert new != old and (out / new).is_file() and not (out / old).parent.exists()


GPU_CELL = textwrap.dedent(
    """\
    from flytekit import task, workflow

    @task(container_image="{{.image.gpu.fqn}}:{{.image.gpu.version}}")
    def on_gpu(x: int) -> int:
        return x

    @workflow
    def gpu_wf(x: int = 7) -> int:
        return on_gpu(x=x)
    """
)


def test_an_image_on_the_command_line_replaces_only_the_image_of_its_name(tmp_path):
    notebook = _notebook(tmp_path / "nb.ipynb", [
        f"%%flyte_fast -m ci_images -i ghcr.io/acme/base:1.0 -i gpu=ghcr.io/acme/gpu:2.1\n{GPU_CELL}"])
    run_cli("serialize", notebook, "-o", tmp_path / "plain", "-i", "ghcr.io/acme/ci:9")
    images = json.loads((tmp_path / "plain" / MANIFEST_NAME).read_text())["images"]
    assert images == ["default=ghcr.io/acme/ci:9", "gpu=ghcr.io/acme/gpu:2.1"]

    run_cli("serialize", notebook, "-o", tmp_path / "named", "-i", "gpu=ghcr.io/acme/gpu:3.0")
    images = json.loads((tmp_path / "named" / MANIFEST_NAME).read_text())["images"]
    assert images == ["default=ghcr.io/acme/base:1.0", "gpu=ghcr.io/acme/gpu:3.0"]


def test_a_task_on_a_named_image_no_option_gives_names_the_image_and_the_option(tmp_path):
    notebook = _notebook(tmp_path / "nb.ipynb", [f"%%flyte_fast -m ci_no_gpu -i ghcr.io/acme/base:1.0\n{GPU_CELL}"])
    result = run_cli("serialize", notebook, "-o", tmp_path / "out", check=False)
    assert result.returncode == 1
    assert "ci_no_gpu.on_gpu runs on the image named 'gpu', which no -i option gives." in result.stderr
    assert "Pass -i gpu=REGISTRY/IMAGE:TAG on the %%flyte_fast line or to `fastreg serialize`." in result.stderr


def test_an_empty_pb_file_is_refused_as_an_invalid_protobuf(tmp_path):
    notebook = _clone(tmp_path / "repo", "-m ci_empty_pb")
    out = tmp_path / "out"
    run_cli("serialize", notebook, "-o", out)
    workflow_pb = next(out.glob("*_2.pb"))
    workflow_pb.write_bytes(b"")
    result = run_cli("register-files", out, "--endpoint", "127.0.0.1:1", check=False)
    assert result.returncode == 1
    assert f"{workflow_pb} is not a valid workflow protobuf: it is empty. Re-run `fastreg serialize`." in result.stderr


def test_register_files_with_no_backend_does_not_promise_a_sandbox_it_never_starts(tmp_path):
    notebook = _clone(tmp_path / "repo", "-m ci_unreachable")
    run_cli("serialize", notebook, "-o", tmp_path / "out")
    result = run_cli("register-files", tmp_path / "out", "--endpoint", "127.0.0.1:1", check=False)
    assert result.returncode == 1 and "is unreachable" in result.stderr
    assert "the embedded sandbox (`fastreg sandbox`) is used" not in result.stderr
    assert "register-files never starts the embedded sandbox" in result.stderr


DATASET_CELL = textwrap.dedent(
    """\
    import os
    import numpy as np
    from flytekit import task, workflow
    from flytekit.types.directory import FlyteDirectory

    @task
    def describe(d: FlyteDirectory, a: np.ndarray) -> str:
        root = d.download()
        names = sorted(os.path.relpath(os.path.join(folder, name), root)
                       for folder, _, files in os.walk(root) for name in files)
        return f"{','.join(names)};{int(a.sum())}"

    @workflow
    def dataset_wf(d: FlyteDirectory = FlyteDirectory("ds"), a: np.ndarray = np.arange(4)) -> str:
        return describe(d=d, a=a)
    """
)

DATAFRAME_CELL = textwrap.dedent(
    """\
    import pandas as pd
    from flytekit import task, workflow

    @task
    def total(df: pd.DataFrame) -> int:
        return int(df["x"].sum())

    @workflow
    def frame_wf(df: pd.DataFrame = pd.DataFrame({"x": [1, 2, 4]})) -> int:
        return total(df=df)
    """
)


def _as_on_another_machine(repo: Path, out: Path) -> None:
    """Only the release folder is there: the checkout is gone, and so is every local path its files name."""
    from google.protobuf.json_format import MessageToDict

    from fastreg_magic import specs

    def uris(value):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from [item] if key == "uri" and isinstance(item, str) else uris(item)
        elif isinstance(value, list):
            for item in value:
                yield from uris(item)

    shutil.rmtree(repo)
    for spec in specs.read_specs(out):
        for uri in uris(MessageToDict(spec.proto)):
            local = Path(uri.removeprefix("file://"))
            if local.is_absolute() and local.exists():
                shutil.rmtree(local) if local.is_dir() else local.unlink()


def _dataset_repo(repo: Path) -> Path:
    (repo / "ds" / "sub").mkdir(parents=True)
    (repo / "ds" / "a.txt").write_text("x\n")
    (repo / "ds" / "sub" / "b.txt").write_text("y\n")
    return repo


def test_a_directory_and_an_array_register_from_ci_as_from_the_magic(sandbox_shell, sandbox, tmp_path, monkeypatch):
    repo = _dataset_repo(tmp_path / "repo")
    line = f"-m ci_dataset_{uuid.uuid4().hex[:8]} --source-root {repo}"
    notebook = _notebook(repo / "flows.ipynb", [f"%%flyte_fast {line}\n{DATASET_CELL}"])
    monkeypatch.chdir(repo)
    reg = sandbox_shell.run_cell_magic("flyte_fast", line, DATASET_CELL)
    assert reg.registered

    run_cli("serialize", notebook, "-o", tmp_path / "out")
    kept = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["data"]
    assert sorted(entry["kind"] for entry in kept.values()) == ["directory", "file"]  # the folder, the array's .npy
    result = run_cli("register-files", tmp_path / "out", "--config", sandbox.config_file, check=False)
    assert result.returncode == 0, result.stderr
    assert f"already registered: nothing new (3 entities) as version {reg.version}" in result.stdout


@pytest.mark.parametrize("cell, workflow, expected", [(DATASET_CELL, "dataset_wf", "a.txt,sub/b.txt;6"),
                                                      (DATAFRAME_CELL, "frame_wf", 7)])
def test_runs_of_a_release_registered_from_ci_read_its_data_defaults(cell, workflow, expected, sandbox, remote,
                                                                     tmp_path):
    from datetime import timedelta

    repo = _dataset_repo(tmp_path / "repo")
    module = f"ci_runs_{uuid.uuid4().hex[:8]}"
    notebook = _notebook(repo / "flows.ipynb", [f"%%flyte_fast -m {module}\n{cell}"])
    run_cli("serialize", notebook, "-o", tmp_path / "out")
    _as_on_another_machine(repo, tmp_path / "out")
    run_cli("register-files", tmp_path / "out", "--config", sandbox.config_file)
    version = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["version"]
    lp = remote.fetch_launch_plan(name=f"{module}.{workflow}", version=version)
    run = remote.wait(remote.execute(lp, inputs={}, wait=False), timeout=timedelta(minutes=5),
                      poll_interval=timedelta(seconds=1))
    assert run.closure.phase == 4, run.error  # SUCCEEDED
    assert run.outputs["o0"] == expected


def test_a_launch_plans_fixed_input_file_is_kept_in_the_release_too(tmp_path):
    cell = DATA_CELL + textwrap.dedent(
        """
        from flytekit import LaunchPlan

        fixed = LaunchPlan.get_or_create(data_wf, name="ci_fixed_rows", fixed_inputs={"f": FlyteFile("data/val.csv")})
        """
    )
    repo = tmp_path / "repo"
    notebook = _clone(repo, "-m ci_fixed")
    (repo / "data" / "val.csv").write_text("a,b\n9,9\n")
    _notebook(notebook, [f"%%flyte_fast -m ci_fixed\n{cell}"])
    run_cli("serialize", notebook, "-o", tmp_path / "out")
    kept = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["data"]
    [val] = [path for path in kept if path.endswith("/val.csv")]
    plan = next((tmp_path / "out").glob("*_ci_fixed_rows_3.pb")).read_bytes()
    assert val.encode() in plan and b"/tmp" not in plan
