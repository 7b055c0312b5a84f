"""What run views weigh in a notebook saved with its widget state, executed headless by nbclient.

A saved notebook keeps the state of every widget model it saw; JupyterLab keeps every live model in the
page. A run view is built of few models (its texts drawn in a few HTML widgets, the widgets of a view
sharing one plain layout and one style of each kind), so a notebook with many runs stays small.

nbclient (0.11) keeps a model once it has seen it, closed or not (it ignores ``comm_close``): the views a
registration widget let go of (past its latest runs) stay in the saved state, unreachable from any
output, and weigh what a view weighs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from fastreg_magic.quickstart import execute_notebook

pytestmark = pytest.mark.slow

CELL = '''%%flyte_fast -m weighed
from flytekit import task, workflow

@task
def train(n: int) -> float:
    return n * 0.5

@workflow
def pipeline(n: int = 10) -> float:
    return train(n=n)
'''
LAUNCHES = 4
SHOWN = 2  # the registration widget shows 2 runs here, so that 2 of the 4 views are let go of

# A run view built as one widget per text weighed some 80 models and 70 KB; the bounds leave room for a
# longer error or node table, not for that.
MODELS_PER_VIEW = 40
BYTES_PER_VIEW = 36_000


def widget_state(nb) -> dict:
    return nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]


def references(state: dict, model_id: str) -> list[str]:
    return re.findall(r"IPY_MODEL_([0-9a-f]{32})", json.dumps(state[model_id]["state"]))


def reachable(state: dict, roots) -> set[str]:
    """The models ``roots`` are built of (themselves, their children, layouts and styles, and theirs)."""
    seen, stack = set(), list(roots)
    while stack:
        model = stack.pop()
        if model in seen or model not in state:
            continue
        seen.add(model)
        stack += references(state, model)
    return seen


def size(state: dict, models) -> int:
    return sum(len(json.dumps(state[m])) for m in models)


def shown_models(nb) -> list[str]:
    """The widgets the outputs display."""
    return [output["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
            for cell in nb.cells for output in cell.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in output.get("data", {})]


@pytest.fixture(scope="module")
def executed(sandbox, tmp_path_factory):
    folder = tmp_path_factory.mktemp("weight")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext fastreg_magic"),
        nbformat.v4.new_code_cell(CELL),
        nbformat.v4.new_code_cell(
            f"import fastreg_magic.widget_registration as shown\nshown.SHOWN_RUNS = {SHOWN}\nreg = _\n"
            f"runs = [reg.launch('pipeline', n=i) for i in range({LAUNCHES})]\n"
            "print([r.wait(timeout=600).phase for r in runs])"),
    ]
    path = folder / "weight.ipynb"
    nbformat.write(nb, path)
    env = {"FLYTECTL_CONFIG": str(sandbox.config_file), "IPYTHONDIR": str(folder / "ipython")}
    import os

    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("FLYTE_", "FLYTECTL_"))}, **env}
    executed = execute_notebook(path, env=env, timeout=600)
    nbformat.write(executed, path)  # as saved: what JupyterLab reads back
    return nbformat.read(path, as_version=4)


def test_the_runs_ran_and_their_views_show_how_they_ended(executed):
    assert "['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']" in executed.cells[2].outputs[0]["text"]
    state = widget_state(executed)
    [registration] = shown_models(executed)
    views = [m for m in reachable(state, [registration])
             if "fastreg-run" in state[m]["state"].get("_dom_classes", [])]
    assert len(views) == SHOWN
    for view in views:
        texts = " ".join(str(state[m]["state"].get("value", "")) for m in reachable(state, [view]))
        assert "data-phase=\"SUCCEEDED\"" in texts and "fastreg-nodes" in texts and "outputs" in texts


def test_each_run_view_weighs_few_models_and_bytes_in_the_saved_notebook(executed):
    state = widget_state(executed)
    views = [m for m, model in state.items() if "fastreg-run" in model["state"].get("_dom_classes", [])]
    assert len(views) == LAUNCHES  # the 2 shown, and the 2 let go of, which nbclient keeps
    for view in views:
        models = reachable(state, [view])
        assert len(models) <= MODELS_PER_VIEW, len(models)
        assert size(state, models) <= BYTES_PER_VIEW, size(state, models)


def test_the_views_let_go_of_weigh_no_more_than_the_views_shown(executed):
    state = widget_state(executed)
    unshown = set(state) - reachable(state, shown_models(executed))
    assert len(unshown) <= (LAUNCHES - SHOWN) * MODELS_PER_VIEW, len(unshown)
    assert size(state, unshown) <= (LAUNCHES - SHOWN) * BYTES_PER_VIEW, size(state, unshown)
