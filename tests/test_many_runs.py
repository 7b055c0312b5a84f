"""A cell re-run many times, with many runs: what its widget costs, what keeps polling, and exiting.

In a real Jupyter kernel against the session sandbox. Costs are counted, never timed: the run
views a widget builds, the widgets left open in the kernel, the runs polled and by how many views.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kernel_driver import KernelDriver  # noqa: E402

pytestmark = pytest.mark.slow

CELL = """%%flyte_fast -m manyruns --config {config}
import time
from flytekit import task, workflow

@task
def add(x: int) -> int:
    return x + 1

@task
def nap(s: float) -> float:
    time.sleep(s)
    return s

@workflow
def wf(x: int = 1) -> int:
    return add(x=x)

@workflow
def napping(s: float = 300.0) -> float:
    return nap(s=s)
"""

EARLIER = 14  # runs launched before the re-runs: more than a widget shows


@pytest.fixture(scope="module")
def kernel(sandbox, tmp_path_factory):
    root = tmp_path_factory.mktemp("manyruns")
    k = KernelDriver(cwd=root)
    try:
        k.run("%load_ext fastreg_magic")
        k.run("from ipywidgets.widgets.widget import _instances\nfrom fastreg_magic import runs_watch\n"
              "from fastreg_magic.widget_run import RunView")
        yield k
    finally:
        k.close()


def shown_widget(kernel: KernelDriver, cell: str) -> str:
    """Run ``cell``; the model id of the widget it displayed, as the frontend is told it."""
    outputs = kernel.run(cell)["outputs"]
    views = [o["application/vnd.jupyter.widget-view+json"] for o in outputs if "application/vnd.jupyter.widget-view+json" in o]
    assert len(views) == 1, outputs
    return views[0]["model_id"]


def test_a_rerun_shows_the_latest_runs_and_closes_the_widget_it_replaces(kernel, sandbox):
    cell = CELL.format(config=sandbox.config_file)
    first = shown_widget(kernel, cell)
    kernel.run(f"reg = _\nruns = [reg.launch('wf', x=i) for i in range({EARLIER})]\nfor r in runs: r.wait(timeout=600)")
    # The widget on screen reads each run's nodes once it has ended (a view must not keep nodes read before).
    kernel.run("import time\nwhile runs_watch.watching(): time.sleep(0.05)")

    second = shown_widget(kernel, cell)  # unchanged: registers nothing, shows the cell's runs
    assert kernel.eval(f"'{first}' in _instances") is False  # the replaced widget is closed
    w = f"_instances['{second}']"
    assert kernel.eval(f"len({w}.run_views)") == 10
    assert kernel.eval(f"[v.run.name for v in {w}.run_views] == [r.name for r in runs[-10:]]")
    assert f"{EARLIER - 10} earlier runs: <code>reg.runs</code>" in kernel.eval(f"{w}.earlier.value")
    # Ended runs are drawn from what is known of them: not polled at all, by any view.
    assert kernel.eval(f"[v._watch.polls for v in {w}.run_views]") == [0] * 10
    assert kernel.eval("runs_watch.watching()") == 0
    assert "SUCCEEDED" in kernel.eval(f"{w}.run_views[-1].badge.value")

    # Each further re-run costs the same: as many widgets open in the kernel afterwards as before.
    open_widgets = kernel.eval("len(_instances)")
    third = shown_widget(kernel, cell)
    assert kernel.eval("len(_instances)") == open_widgets
    assert kernel.eval(f"'{second}' in _instances") is False

    # The earlier runs are built when asked for.
    w = f"_instances['{third}']"
    kernel.click(f"{w}.show_all_button")
    kernel.run("pass")  # the click is handled before this cell runs
    assert kernel.eval(f"[v.run.name for v in {w}.run_views] == [r.name for r in reg.runs]")
    assert kernel.eval(f"{w}.earlier_bar.layout.display") == "none"


def test_a_live_run_is_polled_once_however_many_widgets_showed_it(kernel, sandbox):
    cell = CELL.format(config=sandbox.config_file)
    shown_widget(kernel, cell)
    kernel.run("live = _.launch('napping', s=300.0)")
    following = ("sum(1 for v in list(_instances.values()) if isinstance(v, RunView) and v.run is live"
                 " and v._watch.active)")
    for _ in range(2):
        w = f"_instances['{shown_widget(kernel, cell)}']"
        # the live run is among the latest shown, and only the widget on screen follows it
        assert kernel.eval(f"any(v.run is live for v in {w}.run_views)") is True
        assert kernel.eval(following) == 1
    # A second view of it (the release's widget placed elsewhere) shares its one poller.
    kernel.run("elsewhere = _.widget\ndisplay(elsewhere)")
    assert kernel.eval(following) == 2
    assert kernel.eval("runs_watch.watching()") == 1
    kernel.run("live.terminate()\nlive.wait(timeout=300);\nelsewhere.close()")  # it would show the next tests' runs too


# Each click's start is held until the cell has been re-run, as a slow CreateExecution would hold it.
LAUNCH_CLICK = """
start_run = w_old.reg.start_run
object.__setattr__(w_old.reg, 'start_run', lambda ref, values, **kw: held.wait() and start_run(ref, values, **kw))
button, thread = w_old.form('napping').launch_button, 'fastreg-launch'
"""
RELAUNCH_CLICK = """
ended = w_old.reg.launch('wf', x=1).wait(timeout=300)
relaunch = ended.relaunch
ended.relaunch = lambda: held.wait() and relaunch()
button, thread = next(v for v in w_old.run_views if v.run is ended).relaunch_button, 'fastreg-relaunch'
"""


@pytest.mark.parametrize("click", [LAUNCH_CLICK, RELAUNCH_CLICK], ids=["launch", "relaunch"])
def test_a_run_started_from_the_widget_as_the_cell_is_rerun_shows_in_the_new_widget(kernel, sandbox, click):
    cell = CELL.format(config=sandbox.config_file)
    old = f"_instances['{shown_widget(kernel, cell)}']"
    kernel.run(f"import threading\nheld = threading.Event()\nw_old = {old}\n{click}\nbefore = len(w_old.reg.runs)")
    kernel.click("button")
    kernel.run("starting = w_old.run_views[-1]")  # the click is handled before this cell runs
    assert kernel.eval("starting.phase") == "LAUNCHING"

    new = f"_instances['{shown_widget(kernel, cell)}']"  # re-run at once: the old widget is closed
    kernel.run("held.set()\nfor t in threading.enumerate():\n    if t.name == thread: t.join(300)\n"
               "started = w_old.reg.runs[-1]\nassert len(w_old.reg.runs) == before + 1")
    try:
        # The user sees the run just started, in the widget on screen, whose view follows it.
        assert kernel.eval(f"[v.run is started for v in {new}.run_views].count(True)") == 1
        assert kernel.eval(f"{new}.run_views[-1].run is started and {new}.run_views[-1]._watch.active") is True
        # The replaced widget's view, closed as the run was starting, does not follow it for nobody.
        assert kernel.eval("starting._watch is None and starting.comm is None") is True
        following = ("[v.comm is not None for v in list(_instances.values()) if isinstance(v, RunView)"
                     " and v.run is started and v._watch.active]")
        assert all(kernel.eval(following))
    finally:
        kernel.run("started.terminate()\nstarted.wait(timeout=300);")


def run_in_cell(kernel: KernelDriver, code: str, cell_id: str) -> list[dict]:
    """Execute ``code`` as JupyterLab executes a notebook cell, naming the cell; its outputs."""
    msg = kernel.kc.session.msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                                     "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    msg["metadata"]["cellId"] = cell_id
    kernel.kc.shell_channel.send(msg)
    outputs, deadline = [], time.monotonic() + 300
    while True:
        reply = kernel._next_iopub(deadline)
        if reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
            continue
        if reply["msg_type"] == "error":
            raise AssertionError("\n".join(reply["content"]["traceback"]))
        if reply["msg_type"] in ("display_data", "execute_result"):
            outputs.append(reply["content"]["data"])
        if reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle":
            return outputs


def view_shown(outputs: list[dict]) -> str:
    views = [o["application/vnd.jupyter.widget-view+json"] for o in outputs if "application/vnd.jupyter.widget-view+json" in o]
    assert len(views) == 1, outputs
    return views[0]["model_id"]


def test_rerunning_a_flyte_watch_cell_replaces_its_view_and_the_run_is_polled_once(kernel, sandbox):
    shown_widget(kernel, CELL.format(config=sandbox.config_file))
    name = kernel.run("live = _.launch('napping', s=300.0)\nprint(live.name)")["stdout"].strip()
    watch_cell = f"%flyte_watch {name} --config {sandbox.config_file}"
    views = (f"[v for v in list(_instances.values()) if isinstance(v, RunView) and v.run is not None"
             f" and v.run.name == {name!r} and v._watch.active]")
    try:
        # A frontend that names its cells (JupyterLab, Notebook 7, VS Code): two cells watch the run.
        first = view_shown(run_in_cell(kernel, watch_cell, "cell-a"))
        other = view_shown(run_in_cell(kernel, watch_cell, "cell-b"))
        open_widgets = kernel.eval("len(_instances)")
        for _ in range(3):  # re-running cell-a replaces its own view only, and costs nothing more
            again = view_shown(run_in_cell(kernel, watch_cell, "cell-a"))
            assert kernel.eval(f"'{first}' in _instances") is False
            assert kernel.eval(f"'{other}' in _instances") is True
            assert kernel.eval("len(_instances)") == open_widgets
            first = again
        # The cell's widget and the two cells' views follow the run, all through one poller.
        assert kernel.eval(f"len({views})") == 3
        assert kernel.eval(f"len({{id(v._watch._watch) for v in {views}}})") == 1

        # A frontend that does not name its cells: re-running the same cell replaces its view too.
        first = shown_widget(kernel, watch_cell)
        open_widgets = kernel.eval("len(_instances)")
        for _ in range(3):
            again = shown_widget(kernel, watch_cell)
            assert kernel.eval(f"'{first}' in _instances") is False
            assert kernel.eval("len(_instances)") == open_widgets
            first = again
        assert kernel.eval(f"len({{id(v._watch._watch) for v in {views}}})") == 1
        kernel.run("watched = _")
    finally:
        kernel.run("live.terminate()\nlive.wait(timeout=300);")
    # The Run the watch cell returned learns the end from that one poller, as its view shows it.
    kernel.run("import asyncio\nfor tick in range(600):  # the poller's next poll sees it; a bound, not a deadline\n"
               "    if watched.done: break\n    await asyncio.sleep(0.1)")
    assert kernel.eval("watched.phase") == "ABORTED"
    assert kernel.eval(f"_instances['{first}'].phase") == "ABORTED"


EXITING = """
import threading, time
from flytekit.configuration import Config
from flytekit.remote import FlyteRemote
from fastreg_magic import runs, runs_watch

remote = FlyteRemote(Config.auto(config_file={config!r}), default_project="flytesnacks",
                     default_domain="development", interactive_mode_enabled=False)
run = runs.attach(remote, {name!r})
runs_watch.watch(run, lambda update: None)
# The script's own work ends a moment after its main thread: the process exits while the run is followed.
threading.Thread(target=time.sleep, args=(1.5,)).start()
print("exiting", flush=True)
"""


def test_a_process_exiting_while_a_run_is_followed_exits_quietly(kernel, sandbox, tmp_path):
    shown_widget(kernel, CELL.format(config=sandbox.config_file))
    name = kernel.run("_r = _.launch('napping', s=300.0)\nprint(_r.name)")["stdout"].strip()
    try:
        script = tmp_path / "exiting.py"
        script.write_text(textwrap.dedent(EXITING.format(config=str(sandbox.config_file), name=name)))
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    finally:
        kernel.run("_r.terminate()")
    assert done.returncode == 0 and "exiting" in done.stdout
    assert done.stderr.strip() == "", done.stderr


def test_flyte_watch_looks_where_the_cells_registered_and_starts_no_sandbox(sandbox, tmp_path, monkeypatch):
    """A kernel whose cells all pass --config, with no Flyte configuration and no sandbox of its own."""
    for name in ("FLYTECTL_CONFIG", "FLYTE_PLATFORM_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # where the per-user sandbox would keep its data
    k = KernelDriver(cwd=tmp_path)
    try:
        k.run("%load_ext fastreg_magic")
        k.run(CELL.format(config=sandbox.config_file))
        name = k.run("r = _.launch('wf', x=2)\nr.wait(timeout=600)\nprint(r.name)")["stdout"].strip()

        shown = k.run(f"watched = %flyte_watch {name}")
        assert "No Flyte backend configured" not in shown["stdout"]
        assert k.eval("watched.name") == name and k.eval("watched.outputs") == {"o0": 3}
        missing = k.run("%flyte_watch nosuchrun123")["stdout"]  # a UsageError shows as one line
        assert "UsageError: Reading run nosuchrun123: not found on" in missing, missing
        assert "--config FILE or --endpoint HOST:PORT" in missing
        # no sandbox was started to look: none runs on the per-user data dir
        status = subprocess.run([str(Path(sys.executable).parent / "fastreg"), "sandbox", "--status"],
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 1, status.stdout + status.stderr
    finally:
        k.close()
