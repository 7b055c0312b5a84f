"""A cell re-run many times, with many runs: what its widget costs, what keeps polling, and exiting.

In a real Jupyter kernel against the session sandbox. Costs are counted, never timed: the run
views a widget builds, the widgets left open in the kernel, the runs polled and by how many views.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
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
    kernel.run("display(_.widget)")
    assert kernel.eval(following) == 2
    assert kernel.eval("runs_watch.watching()") == 1
    kernel.run("live.terminate()\nlive.wait(timeout=300);")


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
