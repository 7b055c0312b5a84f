"""`%flyte_watch` with no run name, after a restart: the runs of a launch plan a cell declared for a
workflow it imports.

Such a plan (``LaunchPlan.get_or_create(wf, name="nightly")`` for ``from plib.flows import wf``) has
nothing of the cell's module in its name or its workflow's; what ties it to the cell is its version,
which every entity of one registration shares. A fresh kernel, which remembers no registration, finds
the cell's versions on the backend and lists the runs of the launch plans of those versions.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kernel_driver import KernelDriver  # noqa: E402

pytestmark = pytest.mark.slow

TAG = uuid.uuid4().hex[:8]
LIB = f"plib_{TAG}"
CELL_MODULE = f"nb_{TAG}"
OTHER_MODULE = f"other_{TAG}"
PLAN = f"nightly_{TAG}"

LIBRARY = """from flytekit import task, workflow


@task
def add(n: int, m: int) -> int:
    return n + m


@workflow
def wf(n: int = 1, m: int = 1) -> int:
    return add(n=n, m=m)
"""

CELL = """from flytekit import LaunchPlan, task, workflow
from {lib}.flows import wf


@task
def times(n: int) -> int:
    return n * {factor}


@workflow
def mine(n: int = 1) -> int:
    return times(n=n)


nightly = LaunchPlan.get_or_create(wf, name="{plan}", fixed_inputs={{"m": 10}})
"""

# another notebook's cell: a plan of the same name for the same imported workflow, at its own version
OTHER_CELL = """from flytekit import LaunchPlan
from {lib}.flows import wf

elsewhere = LaunchPlan.get_or_create(wf, name="{plan}", fixed_inputs={{"m": 10}})
"""


def succeeded(run):
    run.wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    return run


@pytest.fixture(scope="module")
def launched(sandbox_shell, tmp_path_factory):
    """Runs of the cell's plan at two versions of the cell (an edit in between), of its own workflow, and of
    the same-named plan registered by another cell; then this kernel forgets what it registered."""
    from fastreg_magic import api

    root = tmp_path_factory.mktemp("plans")
    (root / LIB).mkdir()
    (root / LIB / "__init__.py").write_text("")
    (root / LIB / "flows.py").write_text(LIBRARY)
    magic = f"-m {CELL_MODULE} --source-root {root}"
    first = sandbox_shell.run_cell_magic("flyte_fast", magic, CELL.format(lib=LIB, factor=2, plan=PLAN))
    first_nightly = succeeded(first.launch(PLAN, n=1))
    second = sandbox_shell.run_cell_magic("flyte_fast", magic, CELL.format(lib=LIB, factor=3, plan=PLAN))
    assert second.version != first.version
    own = succeeded(second.launch("mine", n=2))
    second_nightly = succeeded(second.launch(PLAN, n=3))
    other = sandbox_shell.run_cell_magic("flyte_fast", f"-m {OTHER_MODULE} --source-root {root}",
                                         OTHER_CELL.format(lib=LIB, plan=PLAN))
    assert other.version not in (first.version, second.version)
    not_ours = succeeded(other.launch(PLAN, n=4))
    api.forget_registrations()  # from here on, what a restarted kernel knows of these cells: nothing
    return {"first": first_nightly, "own": own, "second": second_nightly, "not ours": not_ours}


def listed_rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.startswith("  ")]


def test_a_fresh_kernel_lists_the_runs_of_a_plan_the_cell_declared_for_an_imported_workflow(sandbox, tmp_path,
                                                                                               launched):
    morning = KernelDriver(cwd=tmp_path)  # the notebook reopened the next morning
    try:
        morning.run(f"%load_ext fastreg_magic\n%config FlyteFast.config_file = {str(sandbox.config_file)!r}")
        (listed,) = morning.run(f"%flyte_watch -m {CELL_MODULE}")["outputs"]
    finally:
        morning.close()
    rows = listed_rows(listed["text/plain"])
    names = [row[0] for row in rows]
    # both versions' runs of the plan, and of the cell's own workflow, newest first
    assert names == [launched["second"].name, launched["own"].name, launched["first"].name], listed["text/plain"]
    assert [row[1] for row in rows] == [PLAN, "mine", PLAN]  # the workflow by its short name
    assert all("SUCCEEDED" in row for row in rows)
    # the same-named plan another cell registered, at its own version, is not this cell's
    assert launched["not ours"].name not in listed["text/plain"]
    assert f"%flyte_watch {launched['second'].name}" in listed["text/plain"]


def test_only_the_runs_of_the_cells_recent_versions_are_listed(sandbox_shell, launched, monkeypatch):
    from fastreg_magic import runs_recent

    monkeypatch.setattr(runs_recent, "RECENT_VERSIONS", 1)  # the newest version only
    listed = sandbox_shell.run_line_magic("flyte_watch", f"-m {CELL_MODULE}")
    names = [row.name for row in listed]
    assert names == [launched["second"].name, launched["own"].name]  # the first version's run is older
    assert not listed.of_anything
