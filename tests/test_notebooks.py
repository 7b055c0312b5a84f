"""The example notebooks run top to bottom, without errors, in a real Jupyter kernel.

Each notebook is copied to a temporary folder (so a run leaves nothing in ``notebooks/``) and
executed with nbclient in a fresh ``python3`` kernel whose ``FLYTECTL_CONFIG`` names the test
session's sandbox: every ``%%flyte_fast`` cell registers to it and every run really runs on it.
Notebooks are committed without outputs; that is checked here too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from fastreg_magic.quickstart import execute_notebook

NOTEBOOKS = ROOT / "notebooks"
NAMES = ["quickstart", "local_modules", "real_cluster"]
CELL_TIMEOUT_S = 300


@pytest.fixture
def notebook_dir(tmp_path) -> Path:
    """A throwaway copy of notebooks/, the folder the kernel runs in."""
    target = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, target, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc"))
    return target


@pytest.fixture
def kernel_env(sandbox, tmp_path) -> dict[str, str]:
    """The kernel's environment: Flyte configured to the session sandbox, IPython profile isolated."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLYTE_", "FLYTECTL_"))}
    env["FLYTECTL_CONFIG"] = str(sandbox.config_file)
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    return env


def run_notebook(name: str, notebook_dir: Path, env: dict[str, str]):
    return execute_notebook(notebook_dir / f"{name}.ipynb", env=env, timeout=CELL_TIMEOUT_S)


def text_of(cell) -> str:
    """Everything a cell printed or displayed as text."""
    parts = []
    for output in cell.get("outputs", []):
        if "text" in output:
            parts.append(output["text"])
        parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def cells_with(nb, needle: str) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code" and needle in cell.source]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{name}.ipynb has no code cells"
    assert [c.execution_count for c in code if c.execution_count] == []
    assert [c.outputs for c in code if c.outputs] == []
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.slow
def test_quickstart_registers_runs_and_skips_the_unchanged_rerun(notebook_dir, kernel_env):
    executed = run_notebook("quickstart", notebook_dir, kernel_env)

    [wait_cell] = cells_with(executed, "run.wait(")
    assert "SUCCEEDED" in text_of(wait_cell)
    assert "HELLO, FLYTE" in text_of(wait_cell)  # the workflow's real output, computed by its tasks
    [version_cell] = cells_with(executed, "edited = _")
    assert "HELLO, FLYTE!" in text_of(version_cell)  # the edited code is what ran
    [again_cell] = cells_with(executed, "again = _")
    assert "same version: True" in text_of(again_cell)
    assert "uploaded: False | registered: False" in text_of(again_cell)


@pytest.mark.slow
def test_local_modules_ships_the_local_package_and_never_the_secret(notebook_dir, kernel_env):
    executed = run_notebook("local_modules", notebook_dir, kernel_env)

    [run_cell] = cells_with(executed, "run = auto.launch(")
    assert "SUCCEEDED" in text_of(run_cell)
    assert "{'o0': 5}" in text_of(run_cell)  # word count computed by textkit inside the task
    for cell in cells_with(executed, "left out:"):
        assert ".env" in text_of(cell)
    # The demo secret's value appears in no output at all.
    assert all("demo-secret" not in text_of(cell) for cell in executed.cells if cell.cell_type == "code")


@pytest.mark.slow
def test_real_cluster_runs_end_to_end_on_the_sandbox(notebook_dir, kernel_env):
    executed = run_notebook("real_cluster", notebook_dir, kernel_env)

    skipped = [text_of(cell) for cell in executed.cells if "Skipped on the embedded sandbox" in text_of(cell)]
    assert skipped, "the cells that need a real cluster should say why they skip"
    assert all("needs" in text or "console" in text for text in skipped)
    [options_cell] = cells_with(executed, "fetch_launch_plan(")
    assert "service account: default" in text_of(options_cell)
    assert "raw outputs under: /" in text_of(options_cell)  # the local folder standing in for a bucket
    [run_cell] = cells_with(executed, "run = configured.launch(")
    assert "SUCCEEDED" in text_of(run_cell)
    assert "256" in text_of(run_cell)  # square(square(4)), computed on the sandbox
