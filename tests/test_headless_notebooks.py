"""A notebook executed headless (nbclient, as `jupyter nbconvert --execute` and papermill run it) saves
widgets that show how its runs ended, and each cell's widget shows its own runs only.

nbclient keeps a widget's state as the updates sent on behalf of the cell it is running arrive; the
saved notebook is what a report reader sees. The notebook runs in a fresh ``python3`` kernel against
the session sandbox, and the saved widget state is read back from the executed notebook.
"""

from __future__ import annotations

import json
import re
import uuid

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 240
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

CELL_TEMPLATE = """%%flyte_fast
from flytekit import task, workflow

@task
def {workflow}_task(n: int) -> int:
    return n * 2

@workflow
def {workflow}(n: int = 1) -> int:
    return {workflow}_task(n=n)
"""


def executed(cells: list[str], cwd) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    NotebookClient(nb, timeout=RUN_TIMEOUT_S + 60, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def saved_widget_text(nb, cell_index: int) -> str:
    """Every text of the widget cell ``cell_index`` shows, as saved in the notebook (its models and theirs)."""
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    (root,) = [out["data"][WIDGET_VIEW]["model_id"] for out in nb.cells[cell_index].outputs
               if WIDGET_VIEW in out.get("data", {})]
    seen, todo, texts = set(), [root], []
    while todo:
        model = todo.pop()
        if model in seen or model not in state:
            continue
        seen.add(model)
        saved = json.dumps(state[model]["state"])
        todo += re.findall(r"IPY_MODEL_([0-9a-f]{32})", saved)
        value = state[model]["state"].get("value")
        if isinstance(value, str):
            texts.append(value)
    return "\n".join(texts)


def phases(text: str) -> set[str]:
    return set(re.findall(r'class="fastreg-phase" data-phase="(\w+)"', text))


def test_a_headless_notebook_saves_each_cells_runs_as_they_ended(sandbox, tmp_path):
    tag = uuid.uuid4().hex[:8]
    nb = executed([
        f"%load_ext fastreg_magic\n%config FlyteFast.config_file = {str(sandbox.config_file)!r}",
        CELL_TEMPLATE.format(workflow=f"first_{tag}"),
        f"reg_a = _\nrun_a = reg_a.launch(n=2).wait(timeout={RUN_TIMEOUT_S})\nprint(run_a.phase, run_a.name)",
        CELL_TEMPLATE.format(workflow=f"second_{tag}"),
        "reg_b = _\nrun_b = reg_b.launch(n=3)\nprint(run_b.name)",
        f"print(run_b.wait(timeout={RUN_TIMEOUT_S}).phase)",  # waited for in a later cell than it was launched in
    ], tmp_path)
    phase_a, name_a = nb.cells[2].outputs[0]["text"].split()
    name_b = nb.cells[4].outputs[0]["text"].strip()
    assert phase_a == "SUCCEEDED"
    assert nb.cells[5].outputs[0]["text"].strip() == "SUCCEEDED"

    first, second = saved_widget_text(nb, 1), saved_widget_text(nb, 3)
    assert name_a in first and name_b not in first
    assert name_b in second and name_a not in second
    assert "previous version" not in first + second
    assert phases(first) == {"SUCCEEDED"}, phases(first)
    assert phases(second) == {"SUCCEEDED"}, phases(second)
