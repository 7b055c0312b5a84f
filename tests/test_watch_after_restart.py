"""Run views after the kernel is gone: what they say for themselves, and how to find a run again.

A widget's saved state is what it showed last, and a fresh kernel cannot update it. So a live run view
says it is live only while its kernel runs and how to watch the run again; the cell's saved text names
every run launched from it; and `%flyte_watch` with no run name lists the recent runs of the notebook's
cells, from the backend, in a fresh kernel.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from IPython.core.error import UsageError

sys.path.insert(0, str(Path(__file__).parent))
from kernel_driver import KernelDriver  # noqa: E402

pytestmark = pytest.mark.slow

CELL = """%%flyte_fast -m napflow --config {config} --source-root {root}
import time
from flytekit import task, workflow


@task
def nap(s: float) -> float:
    time.sleep(s)
    return s


@workflow
def sleeper(s: float = 0.0) -> float:
    return nap(s=s)
"""

END = "{'SUCCEEDED', 'FAILED', 'ABORTED', 'TIMED_OUT', 'LAUNCH FAILED'}"
WIDGET = "application/vnd.jupyter.widget-view+json"


def fresh_kernel(sandbox, cwd) -> KernelDriver:
    k = KernelDriver(cwd=cwd)
    k.run(textwrap.dedent(f"""
        import asyncio
        %load_ext fastreg_magic
        %config FlyteFast.config_file = {str(sandbox.config_file)!r}

        async def settle(view, phases, limit=300.0):
            waited = 0.0
            while view.phase not in phases and waited < limit:
                await asyncio.sleep(0.1)
                waited += 0.1
            return view.phase
        """))
    return k


@pytest.fixture(scope="module")
def kernel(sandbox, tmp_path_factory):
    root = tmp_path_factory.mktemp("napflow")
    k = fresh_kernel(sandbox, root)
    try:
        k.run(CELL.format(config=sandbox.config_file, root=root))
        (shown,) = [m for m in k.iopub if m["msg_type"] in ("display_data", "execute_result")
                    and WIDGET in m["content"]["data"]]
        model = shown["content"]["data"][WIDGET]["model_id"]
        k.run(f"import ipywidgets\nw = ipywidgets.Widget.widgets[{model!r}]")
        yield k
    finally:
        k.close()


def launch(kernel: KernelDriver, s: float) -> str:
    """Launch from the form as JupyterLab does; the expression of the new run view."""
    before = kernel.eval("len(w.run_views)")
    kernel.type_into("w.form().editors['s']", str(s))
    kernel.click("w.form().launch_button")
    kernel.run("pass")  # the click is handled before this cell runs
    assert kernel.eval("len(w.run_views)") == before + 1
    return f"w.run_views[{before}]"


def test_a_live_run_view_says_it_is_live_only_while_this_kernel_runs(kernel):
    view = launch(kernel, 600)
    kernel.run(f"await settle({view}, {{'RUNNING'}} | {END})")
    assert kernel.eval(f"{view}.phase") == "RUNNING"
    name = kernel.eval(f"{view}.run.name")
    note = kernel.eval(f"{view}.live_note.value")
    assert "live while this kernel runs" in note and f"%flyte_watch {name}" in note
    assert kernel.eval(f"{view}.live_note.layout.display") != "none"
    (bundle,) = kernel.run(f"display({view})")["outputs"]
    assert f"After a restart: %flyte_watch {name}" in bundle["text/plain"]

    kernel.click(f"{view}.terminate_button")
    kernel.run(f"await settle({view}, {END})")
    assert kernel.eval(f"{view}.phase") == "ABORTED"
    # an ended run's view is true for good: it no longer claims to be live
    assert kernel.eval(f"{view}.live_note.layout.display") == "none"
    (bundle,) = kernel.run(f"display({view})")["outputs"]
    assert "After a restart" not in bundle["text/plain"]


def test_a_fresh_kernel_lists_the_runs_of_the_notebooks_cells_newest_first(kernel, sandbox, tmp_path):
    for _ in range(2):
        view = launch(kernel, 0)
        kernel.run(f"await settle({view}, {END})")
    launched = kernel.eval("[r.name for r in w.reg.runs]")[-2:]
    morning = fresh_kernel(sandbox, tmp_path)  # the notebook reopened the next morning: nothing in memory
    try:
        (listed,) = morning.run("%flyte_watch -m napflow")["outputs"]
        text = listed["text/plain"]
        names = [line.split()[0] for line in text.splitlines()[1:] if line.startswith("  ")]
        assert names[:2] == list(reversed(launched))  # newest first
        lines = text.splitlines()[1:3]
        assert all("sleeper" in line and "SUCCEEDED" in line for line in lines)
        assert f"%flyte_watch {launched[-1]}" in text
        assert f"data-run='{launched[0]}'" in listed["text/html"]

        (only,) = morning.run("%flyte_watch -m napflow -n 1")["outputs"]
        assert launched[-1] in only["text/plain"] and launched[0] not in only["text/plain"]

        # the name found is the way back to the live view
        (view,) = morning.run(f"%flyte_watch {launched[0]}")["outputs"]
        morning.run(f"import ipywidgets\nv = ipywidgets.Widget.widgets[{view[WIDGET]['model_id']!r}]\n"
                    f"await settle(v, {END})")
        assert morning.eval("v.phase") == "SUCCEEDED"
    finally:
        morning.close()


def test_listing_uses_the_notebooks_module_and_refuses_what_it_cannot_do(sandbox_shell, tmp_path):
    cell = "from flytekit import task, workflow\n\n@task\ndef one(n: int) -> int:\n    return n\n\n" \
           "@workflow\ndef other(n: int = 1) -> int:\n    return one(n=n)\n"
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-m otherflow --source-root {tmp_path}", cell)
    run = reg.launch("other", n=2).wait(timeout=300)
    sandbox_shell.run_line_magic("config", "FlyteFast.module = 'otherflow'")
    try:
        listed = sandbox_shell.run_line_magic("flyte_watch", "")
    finally:
        sandbox_shell.run_line_magic("config", "FlyteFast.module = ''")
    mine = [row for row in listed if row.target.startswith("otherflow.")]
    assert [row.name for row in mine] == [run.name]
    assert not any(row.target.startswith("napflow.") for row in listed)  # another notebook's runs
    assert mine[0].target == "otherflow.other" and mine[0].phase == "SUCCEEDED"
    assert mine[0].duration is not None and mine[0].started is not None

    with pytest.raises(UsageError, match="between 1 and 100"):
        sandbox_shell.run_line_magic("flyte_watch", "-n 0")
    with pytest.raises(UsageError, match="without a run name"):
        sandbox_shell.run_line_magic("flyte_watch", f"{run.name} -n 3")


# -- runs of the launch plans a cell names itself ---------------------------------------------------

LIBRARY = """from flytekit import task, workflow


@task
def add(n: int, m: int) -> int:
    return n + m


@workflow
def plus(n: int = 1, m: int = 1) -> int:
    return add(n=n, m=m)
"""

NAMED_PLANS = """from flytekit import LaunchPlan, task, workflow
from wlib import plus


@task
def times(n: int, k: int) -> int:
    return n * k


@workflow
def scaled(n: int = 1, k: int = 2) -> int:
    return times(n=n, k=k)


quad = LaunchPlan.get_or_create(scaled, "quad", fixed_inputs={"k": 4})
plus_ten = LaunchPlan.get_or_create(plus, "plus_ten", fixed_inputs={"m": 10})
"""


@pytest.fixture(scope="module")
def named_plan_runs(sandbox_shell, tmp_path_factory):
    """Runs of `quad` (a named launch plan of the cell's own workflow) and of `plus_ten` (of a workflow
    the cell imports from a local module), both with a fixed input."""
    root = tmp_path_factory.mktemp("cellw")
    (root / "wlib.py").write_text(LIBRARY)
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-m cellw --source-root {root}", NAMED_PLANS)
    quad = reg.launch("quad", n=3).wait(timeout=300)
    plus_ten = reg.launch("plus_ten", n=5).wait(timeout=300)
    assert (quad.phase, plus_ten.phase) == ("SUCCEEDED", "SUCCEEDED"), (quad.error, plus_ten.error)
    return quad, plus_ten


def test_the_runs_of_a_cells_named_launch_plans_are_listed(sandbox_shell, named_plan_runs):
    quad, plus_ten = named_plan_runs
    listed = sandbox_shell.run_line_magic("flyte_watch", "-m cellw")
    assert {(row.name, row.target) for row in listed} >= {(quad.name, "quad"), (plus_ten.name, "plus_ten")}
    assert [row.name for row in listed][:2] == [plus_ten.name, quad.name]  # newest first


def test_a_fresh_kernel_lists_the_runs_of_named_launch_plans_of_the_cells_workflows(sandbox, tmp_path,
                                                                                     named_plan_runs):
    quad, _ = named_plan_runs
    morning = fresh_kernel(sandbox, tmp_path)  # nothing in memory: found by their workflow's name
    try:
        (listed,) = morning.run("%flyte_watch -m cellw")["outputs"]
    finally:
        morning.close()
    rows = [line.split() for line in listed["text/plain"].splitlines() if line.startswith("  ")]
    assert [quad.name, "quad"] in [row[:2] for row in rows]


def test_watching_a_run_of_a_launch_plan_reads_its_fixed_inputs(sandbox_shell, named_plan_runs):
    from fastreg_magic.widget_text import run_text

    quad, plus_ten = named_plan_runs
    watched = sandbox_shell.run_line_magic("flyte_watch", quad.name)
    assert watched.inputs == {"n": 3, "k": 4}
    assert "inputs: k=4, n=3" in run_text(watched) and "could not be read" not in run_text(watched)
    assert sandbox_shell.run_line_magic("flyte_watch", plus_ten.name).inputs == {"n": 5, "m": 10}


def test_with_no_run_of_the_guessed_cells_the_latest_runs_are_listed(sandbox_shell, named_plan_runs):
    """After a restart the user may not remember the -m names their cells used: with none given and no run
    of the notebook's own module, the latest runs of the project and domain are shown, saying so."""
    from fastreg_magic import api

    quad, _ = named_plan_runs
    api.forget_registrations()  # what a restarted kernel knows of its cells: nothing
    sandbox_shell.run_line_magic("config", "FlyteFast.module = 'never_registered_here'")
    try:
        listed = sandbox_shell.run_line_magic("flyte_watch", "-n 100")
    finally:
        sandbox_shell.run_line_magic("config", "FlyteFast.module = ''")
    assert listed.of_anything and quad.name in [row.name for row in listed]
    text = str(sandbox_shell.display_formatter.format(listed)[0]["text/plain"])
    assert text.startswith("No runs of never_registered_here.* in flytesnacks/development"), text
    assert "the latest runs in flytesnacks/development, newest first" in text
    sandbox_shell.run_line_magic("config", "FlyteFast.module = 'never_registered_here'")
    try:
        asked = sandbox_shell.run_line_magic("flyte_watch", "-m never_registered_here")  # a name given: only it
    finally:
        sandbox_shell.run_line_magic("config", "FlyteFast.module = ''")
    assert not asked.of_anything and len(asked) == 0
