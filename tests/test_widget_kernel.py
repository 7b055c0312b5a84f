"""The execution widget in a real Jupyter kernel, against the session sandbox.

The kernel displays the widget; the test then talks to it only as JupyterLab would (comm
messages: a click, a typed value) and lets the kernel wait with ``await asyncio.sleep``.
Whatever the widget shows afterwards got there through its own background updates.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kernel_driver import KernelDriver  # noqa: E402
from run_flows import WORKFLOWS, register_flows  # noqa: E402

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def flows(remote, tmp_path_factory):
    return register_flows(remote, tmp_path_factory.mktemp("widgetflows"))


@pytest.fixture(scope="module")
def kernel(sandbox, flows):
    root, module, version, _ = flows
    k = KernelDriver(cwd=root, extra_path=[str(root)])
    try:
        k.run(
            textwrap.dedent(
                f"""
                import asyncio
                from IPython.display import display
                from flytekit.configuration import Config
                from flytekit.remote import FlyteRemote
                import {module} as flows
                from fastreg_magic.api import EntityRef, Registration
                from fastreg_magic.config import sandbox_backend
                from fastreg_magic.widget import RegistrationWidget

                remote = FlyteRemote(Config.auto(config_file={str(sandbox.config_file)!r}),
                                     default_project="flytesnacks", default_domain="development",
                                     interactive_mode_enabled=False)
                refs = tuple(
                    EntityRef("workflow", f"{module}.{{name}}", {version!r}, "flytesnacks", "development", None,
                              getattr(flows, name))
                    for name in {WORKFLOWS!r}
                )
                reg = Registration(
                    module={module!r}, version={version!r}, project="flytesnacks", domain="development",
                    backend=sandbox_backend({sandbox.endpoint!r}, {str(sandbox.config_file)!r}), images=(),
                    archive_uri="", archive_size=0, files=("{module}.py",), left_out=(), lifted=(), warnings=(),
                    entities=refs, uploaded=True, registered=True, timings={{}}, remote=remote,
                )
                w = RegistrationWidget(reg)
                display(w)

                async def settle(view, phases, limit=300.0):
                    waited = 0.0
                    while view.phase not in phases and waited < limit:
                        await asyncio.sleep(0.1)
                        waited += 0.1
                    return view.phase
                """
            )
        )
        yield k
    finally:
        k.close()


END = "{'SUCCEEDED', 'FAILED', 'ABORTED', 'TIMED_OUT', 'LAUNCH FAILED'}"


def launch_from_form(kernel: KernelDriver, workflow: str, **typed) -> int:
    """Type into the form and click Launch through comm messages; the index of the new run view (the last:
    past ten views the widget drops its oldest ended one)."""
    before = kernel.eval("[v.model_id for v in w.run_views]")
    for name, value in typed.items():
        kernel.type_into(f"w.form({workflow!r}).editors[{name!r}]", value)
    kernel.click(f"w.form({workflow!r}).launch_button")
    kernel.run("pass")  # the click is handled before this cell runs
    assert kernel.eval("w.run_views[-1].model_id") not in before
    assert kernel.eval("len(w.run_views)") == min(len(before) + 1, 10)
    return kernel.eval("len(w.run_views)") - 1


def test_launch_click_runs_to_succeeded_through_background_updates(kernel):
    index = launch_from_form(kernel, "twice", n="5")
    view = f"w.run_views[{index}]"
    # The click returned at once: the view exists before the run does anything.
    assert kernel.eval(f"{view}.phase") in ("LAUNCHING", "UNDEFINED", "QUEUED", "RUNNING")
    phase = kernel.run(f"phase = await settle({view}, {END})\nphase", user_expressions={"p": "phase"})
    assert phase["user_expressions"]["p"]["data"]["text/plain"] == "'SUCCEEDED'"
    assert kernel.eval(f"{view}.updates") >= 2
    assert "625" in kernel.eval(f"{view}.outputs.value")
    assert kernel.eval(f"{view}.run.outputs") == {"o0": 625}
    assert kernel.eval(f"{view}.run.name") in kernel.eval("[r.name for r in reg.runs]")
    table = kernel.eval(f"{view}.node_table.value")
    assert table.count('data-phase="SUCCEEDED"') == 2 and "square" in table
    svg = kernel.eval(f"{view}.graph.value")
    assert svg.count('data-phase="SUCCEEDED"') == 2
    # The frontend was told: the badge's model received the SUCCEEDED state over IOPub.
    kernel.drain(0.5)
    badge_states = kernel.widget_updates(kernel.eval(f"{view}.badge.model_id"))
    assert any('data-phase="SUCCEEDED"' in s.get("value", "") for s in badge_states)
    assert kernel.eval(f"{view}.relaunch_button.disabled") is False
    assert kernel.eval(f"{view}.terminate_button.disabled") is True


def test_failing_run_shows_the_error_with_traceback_as_text(kernel):
    index = launch_from_form(kernel, "failing", n="1")
    view = f"w.run_views[{index}]"
    kernel.run(f"await settle({view}, {END})")
    assert kernel.eval(f"{view}.phase") == "FAILED"
    error = kernel.eval(f"{view}.error.value")
    assert "Traceback" in error and "ValueError" in error and "went wrong with 1" in error
    assert "<img" not in error and "&lt;img src=x onerror=alert(1)&gt;" in error
    assert kernel.eval(f"{view}.outputs.value") == ""
    assert "<img" not in kernel.eval(f"{view}.node_table.value")


def test_an_output_carrying_html_is_shown_as_text(kernel):
    index = launch_from_form(kernel, "failing", n="-1")
    view = f"w.run_views[{index}]"
    kernel.run(f"await settle({view}, {END})")
    assert kernel.eval(f"{view}.phase") == "SUCCEEDED"
    assert kernel.eval(f"{view}.run.outputs") == {"o0": "<img src=x onerror=alert(2)>"}
    outputs = kernel.eval(f"{view}.outputs.value")
    assert "<img" not in outputs and "&lt;img src=x onerror=alert(2)&gt;" in outputs


def test_terminate_button_aborts_a_running_run(kernel):
    index = launch_from_form(kernel, "slow", s="300")
    view = f"w.run_views[{index}]"
    kernel.run(f"await settle({view}, {{'RUNNING'}} | {END})")
    assert kernel.eval(f"{view}.phase") == "RUNNING"
    kernel.click(f"{view}.terminate_button")
    kernel.run(f"await settle({view}, {END}, limit=120)")
    assert kernel.eval(f"{view}.phase") == "ABORTED"
    assert "aborted" in kernel.eval(f"{view}.error.value")
    assert kernel.eval(f"{view}.terminate_button.disabled") is True


def test_invalid_input_is_shown_next_to_the_field_and_starts_nothing(kernel, remote):
    before_views = kernel.eval("len(w.run_views)")
    before_runs = _execution_count(remote)
    kernel.type_into("w.form('twice').editors['n']", "five")
    kernel.click("w.form('twice').launch_button")
    kernel.run("pass")
    problem = kernel.eval("w.form('twice').problems['n'].value")
    assert "expected a whole number (int), got &#x27;five&#x27;" in problem
    assert "nothing launched" in kernel.eval("w.form('twice').message.value")
    assert kernel.eval("len(w.run_views)") == before_views
    assert _execution_count(remote) == before_runs


def test_an_int_beyond_64_bits_is_refused_by_its_field_not_by_a_failed_launch(kernel, remote):
    before_views = kernel.eval("len(w.run_views)")
    before_runs = _execution_count(remote)
    kernel.type_into("w.form('twice').editors['n']", "99999999999999999999999")
    kernel.click("w.form('twice').launch_button")
    kernel.run("pass")
    problem = kernel.eval("w.form('twice').problems['n'].value")
    assert "99999999999999999999999 is out of range: a Flyte int holds whole numbers" in problem
    message = kernel.eval("w.form('twice').message.value")
    assert "1 input to fix (n): nothing launched" in message and "launch(" not in problem + message
    assert kernel.eval("len(w.run_views)") == before_views  # no "LAUNCH FAILED" run
    assert _execution_count(remote) == before_runs


def _execution_count(remote) -> int:
    executions, _ = remote.client.list_executions_paginated("flytesnacks", "development", limit=1000)
    return len(executions)


def test_relaunch_button_appends_a_new_run(kernel):
    index = launch_from_form(kernel, "twice", n="2")
    kernel.run(f"await settle(w.run_views[{index}], {END})")
    kernel.click(f"w.run_views[{index}].relaunch_button")
    kernel.run("pass")
    assert kernel.eval("len(w.run_views)") == index + 2
    kernel.run(f"await settle(w.run_views[{index + 1}], {END})")
    assert kernel.eval(f"w.run_views[{index + 1}].phase") == "SUCCEEDED"
    assert kernel.eval(f"w.run_views[{index + 1}].run.outputs") == {"o0": 16}
    names = kernel.eval("[r.name for r in reg.runs]")
    assert kernel.eval(f"w.run_views[{index + 1}].run.name") in names


def test_displays_carry_a_readable_text_version(kernel):
    (bundle,) = kernel.run("display(w)")["outputs"]
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith("Registered ")


def test_a_run_started_from_code_displays_its_live_view(kernel):
    result = kernel.run("run = reg.launch('twice', n=6)\nrun")
    (bundle,) = result["outputs"]
    model = bundle["application/vnd.jupyter.widget-view+json"]["model_id"]
    kernel.run(
        "import ipywidgets\nview = ipywidgets.Widget.widgets[" + repr(model) + "]\n"
        f"await settle(view, {END})"
    )
    assert kernel.eval("view.phase") == "SUCCEEDED"
    assert "1296" in kernel.eval("view.outputs.value")


MAGIC_CELL = """%%flyte_fast -m bumpflow --config {config} --source-root {root}
from flytekit import task, workflow


@task
def inc(n: int) -> int:
    return n + 1


@workflow
def bump(n: int = 41) -> int:
    return inc(n=n)
"""


def displayed_widget(kernel: KernelDriver, result: dict, name: str) -> None:
    (bundle,) = [o for o in result["outputs"] if "application/vnd.jupyter.widget-view+json" in o]
    model = bundle["application/vnd.jupyter.widget-view+json"]["model_id"]
    kernel.run(f"import ipywidgets\n{name} = ipywidgets.Widget.widgets[{model!r}]")


def test_the_magic_cell_shows_the_widget_whose_launch_button_runs_the_workflow(kernel, sandbox, tmp_path):
    kernel.run("%load_ext fastreg_magic")
    cell = MAGIC_CELL.format(config=sandbox.config_file, root=tmp_path)
    displayed_widget(kernel, kernel.run(cell), "mw")
    header = kernel.eval("mw.header.value")
    assert "bumpflow" in header and "embedded sandbox" in header and "unchanged" not in header
    kernel.click("mw.form().launch_button")
    kernel.run("pass")
    kernel.run(f"await settle(mw.run_views[0], {END})")
    assert kernel.eval("mw.run_views[0].phase") == "SUCCEEDED"
    assert kernel.eval("mw.run_views[0].run.outputs") == {"o0": 42}
    assert kernel.eval("[r.name for r in mw.reg.runs]") == [kernel.eval("mw.run_views[0].run.name")]

    displayed_widget(kernel, kernel.run(cell), "again")  # the same cell, unchanged
    assert "unchanged: nothing uploaded or registered" in kernel.eval("again.header.value")
    # the re-run cell's view still shows the run started from the view it replaced
    assert kernel.eval("[v.run.name for v in again.run_views]") == [kernel.eval("mw.run_views[0].run.name")]


def test_several_runs_at_once_each_follow_their_own_run(kernel):
    first = kernel.eval("len(w.run_views)")
    kernel.type_into("w.form('twice').editors['n']", "3")
    kernel.click("w.form('twice').launch_button")
    kernel.type_into("w.form('twice').editors['n']", "4")
    kernel.click("w.form('twice').launch_button")
    kernel.type_into("w.form('failing').editors['n']", "1")
    kernel.click("w.form('failing').launch_button")
    kernel.run("pass")
    assert kernel.eval("len(w.run_views)") == min(first + 3, 10)  # the latest ten runs
    views = [f"w.run_views[{i - 3}]" for i in range(3)]
    kernel.run("await asyncio.gather(" + ", ".join(f"settle({v}, {END})" for v in views) + ")")
    assert [kernel.eval(f"{v}.phase") for v in views] == ["SUCCEEDED", "SUCCEEDED", "FAILED"]
    assert [kernel.eval(f"{v}.run.outputs") for v in views[:2]] == [{"o0": 81}, {"o0": 256}]
    assert len({kernel.eval(f"{v}.run.name") for v in views}) == 3
    # each view says what its run was launched with: the two runs of one form are told apart
    assert ["<code>n=3</code>" in kernel.eval(f"{views[0]}.inputs.value"),
            "<code>n=4</code>" in kernel.eval(f"{views[1]}.inputs.value")] == [True, True]


def test_a_run_launched_from_code_joins_the_displayed_widget(kernel):
    before = kernel.eval("len(w.run_views)")
    kernel.run("coded = reg.launch('twice', n=7)")
    assert kernel.eval("len(w.run_views)") == min(before + 1, 10)  # the latest ten runs
    assert kernel.eval("w.run_views[-1].run.name") == kernel.eval("coded.name")
    kernel.run(f"await settle(w.run_views[-1], {END})")
    assert kernel.eval("w.run_views[-1].phase") == "SUCCEEDED"
    assert "2401" in kernel.eval("w.run_views[-1].outputs.value")


CHATTY_CELL = """%%flyte_fast -m chattyflow --config {config} --source-root {root}
import sys
from flytekit import task, workflow


@task
def chatty(n: int) -> int:
    for i in range(n):
        print("line", i, file=sys.stderr)
    if n > 0:
        raise ValueError("printed " + str(n) + " lines")
    return n


@workflow
def talk(n: int = 20000) -> int:
    return chatty(n=n)
"""


def test_a_task_that_printed_20000_lines_shows_its_logs_without_flooding_the_notebook(kernel, sandbox, tmp_path):
    kernel.run("%load_ext fastreg_magic")
    displayed_widget(kernel, kernel.run(CHATTY_CELL.format(config=sandbox.config_file, root=tmp_path)), "cw")
    kernel.click("cw.form().launch_button")
    kernel.run("pass")
    kernel.run(f"await settle(cw.run_views[0], {END})")
    assert kernel.eval("cw.run_views[0].phase") == "FAILED"
    error = kernel.eval("cw.run_views[0].error.value")
    assert "ValueError: printed 20000 lines" in error and "line 19999" in error and len(error) < 20_000
    links = kernel.eval("cw.run_views[0].logs.links.value")
    assert "stdout.log (local file)" in links and "stderr.log (local file)" in links

    logs = "cw.run_views[0].logs"
    kernel.run(f"{logs}.choice.label = 'n0 · stderr.log (local file)'")
    kernel.click(f"{logs}.show_button")
    kernel.run(f"""
waited = 0.0
while 'line 19999' not in {logs}.text.value and waited < 60:
    await asyncio.sleep(0.1)
    waited += 0.1
""")
    shown = kernel.eval(f"{logs}.text.value")
    assert "line 19999" in shown and "its last 200 lines of" in shown
    # What the browser was sent for it: one small update, not 20,000 lines.
    kernel.drain(0.5)
    sent = [s["value"] for s in kernel.widget_updates(kernel.eval(f"{logs}.text.model_id")) if "value" in s]
    assert sent and max(len(v) for v in sent) < 20_000
