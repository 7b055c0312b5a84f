"""`fastreg quickstart`: the newcomer's first command, run as a newcomer runs it (a subprocess).

The full run starts its own embedded sandbox in a temporary data dir (stopped afterwards), runs
``notebooks/quickstart.ipynb`` headless and prints the version and the run's outputs. Failures
(a missing notebook, a failing cell) exit non-zero with a message naming what failed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from fastreg_magic.errors import NotebookRunError
from fastreg_magic.quickstart import execute_notebook
from sandbox_support import stop_background_sandbox

FASTREG = [sys.executable, "-m", "fastreg_magic.cli"]


def fastreg(*args: str, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FASTREG, *args], cwd=ROOT, env=env or dict(os.environ), capture_output=True, text=True, timeout=timeout
    )


def write_notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, path)
    return path


def test_missing_notebook_exits_nonzero_naming_it(tmp_path):
    missing = tmp_path / "nowhere.ipynb"
    result = fastreg("quickstart", "--notebook", str(missing))
    assert result.returncode == 1
    assert str(missing) in result.stderr
    assert "--notebook" in result.stderr


def test_failing_cell_is_named_with_its_error(tmp_path):
    notebook = write_notebook(tmp_path / "broken.ipynb", "x = 1", "\n# divide\nratio = x / 0", "never = True")
    with pytest.raises(NotebookRunError) as caught:
        execute_notebook(notebook, timeout=60)
    err = caught.value
    assert "cell 2" in err.message and "# divide" in err.message
    assert "ZeroDivisionError" in err.message
    assert "ratio = x / 0" in err.traceback
    assert "\x1b[" not in err.traceback  # readable in a terminal log, no colour codes


def test_cells_run_in_the_notebook_folder_with_the_given_environment(tmp_path):
    (tmp_path / "data.txt").write_text("beside the notebook")
    notebook = write_notebook(
        tmp_path / "where.ipynb",
        "import os\nprint(open('data.txt').read(), os.environ['QUICKSTART_PROBE'])",
    )
    executed = execute_notebook(notebook, env=dict(os.environ, QUICKSTART_PROBE="probe-value"), timeout=60)
    assert executed.cells[0].outputs[0]["text"].strip() == "beside the notebook probe-value"


def test_a_notebook_run_headless_is_known_to_its_kernel_as_in_jupyterlab(tmp_path):
    """The cell's module is named after the notebook, and `--copy all` leaves the notebook out."""
    (tmp_path / "helper.py").write_text("X = 1\n")
    notebook = write_notebook(
        tmp_path / "My Flows.ipynb",
        "%load_ext fastreg_magic",
        "%%flyte_fast --dry-run --copy all\nfrom flytekit import task\n\n@task\ndef one() -> int:\n    return 1",
        "print(_.module, sorted(_.files))",
    )
    executed = execute_notebook(notebook, timeout=120)
    assert executed.cells[2].outputs[0]["text"].strip() == "my_flows ['helper.py', 'my_flows.py']"


@pytest.mark.slow
def test_quickstart_prints_version_and_outputs(tmp_path):
    data_dir = tmp_path / "sandbox"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLYTE_", "FLYTECTL_"))}
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    executed_copy = tmp_path / "executed.ipynb"
    try:
        result = fastreg("quickstart", "--data-dir", str(data_dir), "--save-executed", str(executed_copy), env=env)
    finally:
        stop_background_sandbox(data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "embedded sandbox: 127.0.0.1:" in out and str(data_dir) in out
    version = re.search(r"registered version: (\S+)", out)
    assert version, out
    assert "SUCCEEDED" in out
    assert "HELLO, FLYTE" in out  # the workflow's output, computed by its tasks on the sandbox
    assert "nothing uploaded or registered" in out  # the unchanged re-run
    runs = re.findall(r"^run (\S+) \(version (\S+)\)", out, re.MULTILINE)
    assert runs and len(runs) == len({name for name, _ in runs}), out  # each run once, under the version it ran
    executed = nbformat.read(executed_copy, as_version=4)
    assert version.group(1) in json.dumps(executed.cells[-1].outputs)


@pytest.mark.slow
def test_quickstart_with_a_failing_cell_exits_nonzero_naming_the_cell(tmp_path):
    data_dir = tmp_path / "sandbox"
    notebook = write_notebook(tmp_path / "broken.ipynb", "%load_ext fastreg_magic", "raise RuntimeError('flux capacitor')")
    try:
        result = fastreg("quickstart", "--notebook", str(notebook), "--data-dir", str(data_dir))
    finally:
        stop_background_sandbox(data_dir)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("fastreg quickstart: broken.ipynb: cell 2 (\"raise RuntimeError('flux capacitor')\")")
    assert "RuntimeError: flux capacitor" in last_line
    traceback = result.stderr.strip().splitlines()[:-1]
    assert any("raise RuntimeError('flux capacitor')" in line for line in traceback)  # the cell's traceback first
