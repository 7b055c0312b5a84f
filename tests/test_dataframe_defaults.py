"""A DataFrame in a cell's defaults (pandas, a pyarrow Table; a workflow's default, a launch plan's fixed
input) is stored on the backend by its content: the same cell is the same version from any kernel, with
nothing stored or registered anew, and the magic and `fastreg serialize` + `register-files` agree on it.
Against the real embedded sandbox, with fresh interpreters through the plain API and a real IPython."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta
from pathlib import Path

from fastreg_magic.pipeline import MANIFEST_NAME

RUN_TIMEOUT_S = 300  # how long a run may take before the test gives up waiting (not a measurement)

FRAMES_CELL = textwrap.dedent(
    """\
    import pandas as pd
    import pyarrow as pa
    from flytekit import LaunchPlan, task, workflow

    @task
    def total(df: pd.DataFrame, t: pa.Table) -> int:
        return int(df["x"].sum()) + sum(t.column("y").to_pylist())

    @workflow
    def frames_wf(df: pd.DataFrame = pd.DataFrame({"x": [1, 2, 4], "name": ["a", "b", "c"]}),
                  t: pa.Table = pa.table({"y": [100, 200]})) -> int:
        return total(df=df, t=t)

    fixed = LaunchPlan.get_or_create(frames_wf, name=__name__ + ".fixed_frame",
                                     fixed_inputs={"df": pd.DataFrame({"x": [10, 20], "name": ["p", "q"]})})
    """
)

# One registration, as a new kernel makes it: a fresh interpreter, the plain API.
REGISTER = textwrap.dedent(
    """\
    import json, sys
    from fastreg_magic import fast_register

    reg = fast_register(sys.argv[1], module=sys.argv[2], source_root=sys.argv[3], config_file=sys.argv[4])
    print(json.dumps({"version": reg.version, "registered": reg.registered}))
    """
)


def _register_in_a_new_process(sandbox, module: str, source_root: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", REGISTER, FRAMES_CELL, module, str(source_root),
                             str(sandbox.config_file)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _stored(sandbox) -> set[Path]:
    """Every object the sandbox's storage holds (its DataProxy uploads)."""
    return {path for path in (sandbox.data_dir / "uploads").rglob("*") if path.is_file()}


def _frame_uris(remote, name: str, version: str) -> dict[str, str]:
    """The URI of each DataFrame the registered launch plan holds, default or fixed."""
    plan = remote.client.get_launch_plan(remote.fetch_launch_plan(name=name, version=version).id)
    uris = {key: p.default.scalar.structured_dataset.uri
            for key, p in plan.spec.default_inputs.parameters.items() if p.default.scalar.structured_dataset.uri}
    uris.update({key: literal.scalar.structured_dataset.uri
                 for key, literal in plan.spec.fixed_inputs.literals.items()})
    return uris


def _versions_of(remote, module: str) -> set[str]:
    from flytekit.models.common import NamedEntityIdentifier

    workflows, _ = remote.client.list_workflows_paginated(
        NamedEntityIdentifier("flytesnacks", "development", f"{module}.frames_wf"), limit=20)
    return {workflow.id.version for workflow in workflows}


def _run(remote, name: str, version: str) -> int:
    plan = remote.fetch_launch_plan(name=name, version=version)
    run = remote.wait(remote.execute(plan, inputs={}, wait=False), timeout=timedelta(seconds=RUN_TIMEOUT_S),
                      poll_interval=timedelta(seconds=1))
    assert run.closure.phase == 4, run.error  # SUCCEEDED
    return run.outputs["o0"]


def test_a_new_process_registers_a_cell_holding_dataframes_as_the_same_version_storing_nothing_new(
        sandbox, remote, tmp_path):
    module = f"frames_{uuid.uuid4().hex[:8]}"
    first = _register_in_a_new_process(sandbox, module, tmp_path)
    assert first["registered"]
    stored = _stored(sandbox)
    uris = _frame_uris(remote, f"{module}.frames_wf", first["version"])

    again = _register_in_a_new_process(sandbox, module, tmp_path)

    assert again["version"] == first["version"]  # not a version of another structure
    assert _versions_of(remote, module) == {first["version"]}
    assert _stored(sandbox) == stored  # the same frames are the same objects: nothing new in storage
    assert _frame_uris(remote, f"{module}.frames_wf", again["version"]) == uris
    fixed = _frame_uris(remote, f"{module}.fixed_frame", again["version"])
    for name, uri in {**uris, **{f"fixed {k}": v for k, v in fixed.items()}}.items():
        # a folder in the sandbox's storage, as a DataFrame is stored by a run: not a kernel's temporary file
        assert Path(uri).is_relative_to(sandbox.data_dir / "uploads") and Path(uri).is_dir(), (name, uri)
    assert fixed["df"] != uris["df"]

    # The runs read the stored frames: 1 + 2 + 4 + 100 + 200, and 10 + 20 + 100 + 200.
    assert _run(remote, f"{module}.frames_wf", again["version"]) == 307
    assert _run(remote, f"{module}.fixed_frame", again["version"]) == 330


def _notebook(path: Path, cell: str) -> Path:
    notebook = {
        "cells": [{"cell_type": "code", "metadata": {}, "source": cell, "outputs": [], "execution_count": None}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook))
    return path


def _fastreg(*args, cwd=None):
    result = subprocess.run([sys.executable, "-m", "fastreg_magic.cli", *map(str, args)], capture_output=True,
                            text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0, f"fastreg {args}:\n{result.stdout}\n{result.stderr}"
    return result


def test_the_magic_and_serialize_then_register_files_register_dataframe_defaults_as_one_version(
        sandbox_shell, sandbox, remote, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    line = f"-m frames_ci_{uuid.uuid4().hex[:8]} --source-root {repo}"
    notebook = _notebook(repo / "flows.ipynb", f"%%flyte_fast {line}\n{FRAMES_CELL}")
    monkeypatch.chdir(repo)  # where Jupyter runs the notebook's cells
    reg = sandbox_shell.run_cell_magic("flyte_fast", line, FRAMES_CELL)
    assert reg.registered

    _fastreg("serialize", notebook, "-o", tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    assert manifest["version"] == reg.version
    assert sorted(entry["kind"] for entry in manifest["data"].values()) == ["directory"] * 3  # the three frames
    result = _fastreg("register-files", tmp_path / "out", "--config", sandbox.config_file)
    assert f"already registered: nothing new (4 entities) as version {reg.version}" in result.stdout

    run = reg.launch("frames_wf").wait(timeout=RUN_TIMEOUT_S)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": 307}


def test_the_cell_re_run_as_in_a_new_kernel_keeps_its_version_and_a_run_to_a_bucket_reads_its_frame(
        sandbox_shell, s3, tmp_path, monkeypatch):
    from fastreg_magic import api

    cell = textwrap.dedent(
        """\
        import pandas as pd
        from flytekit import task, workflow

        @task
        def doubled(df: pd.DataFrame) -> pd.DataFrame:
            return df.assign(x=df["x"] * 2)

        @workflow
        def double_wf(df: pd.DataFrame = pd.DataFrame({"x": [1, 2, 4]})) -> pd.DataFrame:
            return doubled(df=df)
        """
    )
    monkeypatch.chdir(tmp_path)
    prefix = f"s3://{s3.bucket}/raw"
    line = f"-m frames_s3_{uuid.uuid4().hex[:8]} --raw-output-prefix {prefix}"
    first = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    api.forget_registrations()  # what a new kernel knows of the cell: nothing
    reg = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert reg.registered and reg.version == first.version

    run = reg.launch("double_wf").wait(timeout=RUN_TIMEOUT_S)

    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs["o0"]["x"].tolist() == [2, 4, 8]
    assert any(key.endswith("/00000") for key in s3.find(f"{s3.bucket}/raw"))  # the output frame, in the bucket

    import pandas as pd

    given = reg.launch("double_wf", df=pd.DataFrame({"x": [5]})).wait(timeout=RUN_TIMEOUT_S)
    assert given.phase == "SUCCEEDED", given.error
    assert given.outputs["o0"]["x"].tolist() == [10]  # a frame given at launch goes the same way
