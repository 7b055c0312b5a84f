"""%%flyte_fast in a real Jupyter kernel (nbclient): register, local execution, `reg = _`, one-line errors."""

from __future__ import annotations

import textwrap

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

pytestmark = pytest.mark.slow


def _cells(config_file: str) -> list[str]:
    return [
        "%load_ext fastreg_magic",
        f"%config FlyteFast.config_file = {config_file!r}",
        "OFFSET = 7\n\ndef shift(x):\n    return x + OFFSET\n",
        textwrap.dedent(
            """\
            %%flyte_fast -m kernel_flows
            from flytekit import task, workflow

            @task
            def add(n: int) -> int:
                return shift(n)

            @workflow
            def flow(n: int = 1) -> int:
                return add(n=n)
            """
        ),
        "reg = _\nprint('VERSION', reg.version, reg.registered, reg.uploaded, len(reg.entities))\nprint('LIFTED', reg.lifted)",
        "print('LOCAL', flow(n=3))",
        "%%flyte_fast -m kernel_flows\nprint('no entities here')\n",
    ]


def test_notebook_runs_the_magic(sandbox, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in _cells(str(sandbox.config_file))]
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    # The last cell is a bad one: the kernel must mark it failed with a one-line UsageError.
    with pytest.raises(CellExecutionError) as info:
        client.execute()
    assert info.value.ename == "UsageError"
    assert "defines no Flyte task" in info.value.evalue
    outputs = ["".join(o.get("text", "") for o in cell.outputs) for cell in nb.cells]
    assert "VERSION" in outputs[4] and "True True 3" in outputs[4], nb.cells[3].outputs
    assert "shift" in outputs[4]
    assert "LOCAL 10" in outputs[5]
    shown = "".join(o.get("text", "") for o in nb.cells[6].outputs)
    assert "UsageError: The cell defines no Flyte task" in shown and "Traceback" not in shown


def test_flyte_watch_shows_the_run_view_once(sandbox, tmp_path):
    """`%flyte_watch NAME` as a cell's last line: the Run is the cell's value, displayed as one live view."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from kernel_driver import KernelDriver

    kernel = KernelDriver(cwd=tmp_path)
    try:
        kernel.run(f"%load_ext fastreg_magic\n%config FlyteFast.config_file = {str(sandbox.config_file)!r}")
        kernel.run(
            "%%flyte_fast -m watch_once\nfrom flytekit import task, workflow\n\n"
            "@task\ndef inc(n: int) -> int:\n    return n + 1\n\n"
            "@workflow\ndef flow(n: int = 1) -> int:\n    return inc(n=n)\n"
        )
        kernel.run("reg = _\nstarted = reg.launch(n=4)")
        name = kernel.eval("started.name")
        shown = kernel.run(f"%flyte_watch {name}")["outputs"]
        views = [o for o in shown if "application/vnd.jupyter.widget-view+json" in o]
        assert len(views) == 1, shown
        assert name in views[0]["text/plain"]
        assert kernel.eval("_.name") == name  # the cell's value is the Run itself
        kept = kernel.run(f"watched = %flyte_watch {name}")["outputs"]
        assert kept == []  # an assignment displays nothing, as in any cell
    finally:
        kernel.close()
