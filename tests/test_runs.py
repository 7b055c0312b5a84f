"""`Run`: launch, attach, follow, terminate, relaunch, against the real sandbox with stock flytekit."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from run_flows import register_flows  # noqa: E402

from fastreg_magic import runs, runs_watch  # noqa: E402
from fastreg_magic.api import EntityRef  # noqa: E402
from fastreg_magic.errors import RunError  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flows(remote, tmp_path_factory):
    return register_flows(remote, tmp_path_factory.mktemp("runflows"))


def ref(flows, name: str, kind: str = "workflow") -> EntityRef:
    _, module, version, mod = flows
    return EntityRef(kind, f"{module}.{name}", version, "flytesnacks", "development", None, getattr(mod, name))


def test_launch_wait_outputs_nodes_and_graph(remote, flows):
    run = runs.launch(remote, ref(flows, "twice"), {"n": 4})
    assert run.phase in ("QUEUED", "RUNNING", "UNDEFINED")  # launch returns without waiting
    assert run.url is None  # the sandbox has no console
    run.wait(timeout=300)
    assert run.phase == "SUCCEEDED" and run.done
    assert run.outputs == {"o0": 256}
    assert run.error is None
    assert run.elapsed > 0
    rows = run.nodes()
    assert [(r.node, r.task.rsplit(".", 1)[-1], r.phase) for r in rows] == [("n0", "square", "SUCCEEDED"), ("n1", "square", "SUCCEEDED")]
    assert all(r.duration and r.duration > 0 and r.retries == 0 for r in rows)
    assert run.graph().edges == [("n0", "n1")]


def test_launch_a_task_directly(remote, flows):
    run = runs.launch(remote, ref(flows, "square", "task"), {"n": 7}).wait(timeout=300)
    assert run.outputs == {"o0": 49}
    (row,) = run.nodes()
    assert row.task.endswith(".square") and row.phase == "SUCCEEDED"


def test_bad_input_names_are_refused_before_anything_starts(remote, flows):
    before = _count(remote)
    with pytest.raises(RunError, match=r"has no input 'm'.*Its inputs are: n"):
        runs.launch(remote, ref(flows, "twice"), {"m": 1})
    with pytest.raises(RunError, match=r"needs a value for 'n'"):
        runs.launch(remote, ref(flows, "square", "task"), {})
    assert _count(remote) == before


def test_an_unregistered_version_is_a_clear_error(remote, flows):
    _, module, _, mod = flows
    missing = EntityRef("workflow", f"{module}.twice", "never-registered", "flytesnacks", "development", None, mod.twice)
    with pytest.raises(RunError, match="not found on 127.0.0.1"):
        runs.launch(remote, missing, {})


def test_failed_run_carries_the_users_traceback(remote, flows):
    run = runs.launch(remote, ref(flows, "failing"), {}).wait(timeout=300)
    assert run.phase == "FAILED"
    assert "Traceback" in run.error and "ValueError: <img src=x onerror=alert(1)> went wrong with 1" in run.error
    assert run.outputs is None
    assert run.nodes()[0].phase == "FAILED"


def test_attach_by_url_or_id_reads_outputs_with_registered_types(remote, flows):
    run = runs.launch(remote, ref(flows, "twice"), {"n": 2}).wait(timeout=300)
    for text in (
        f"https://console.example/console/projects/flytesnacks/domains/development/executions/{run.name}",
        f"flytesnacks:development:{run.name}",
        run.name,
    ):
        seen = runs.attach(remote, text)
        assert (seen.name, seen.phase, seen.outputs) == (run.name, "SUCCEEDED", {"o0": 16})
    assert runs.attach(remote, f"https://console.example/console/projects/flytesnacks/domains/development/executions/{run.name}").url == (
        f"https://console.example/console/projects/flytesnacks/domains/development/executions/{run.name}"
    )
    with pytest.raises(RunError, match="not found"):
        runs.attach(remote, "flytesnacks:development:nosuchrun")


def test_wait_timeout_terminate_and_relaunch(remote, flows):
    run = runs.launch(remote, ref(flows, "slow"), {"s": 300.0})
    with pytest.raises(RunError, match=r"still (QUEUED|RUNNING|UNDEFINED) after 0.5 s"):
        run.wait(timeout=0.5)
    run.terminate("stopped by the test")
    run.wait(timeout=120)
    assert run.phase == "ABORTED"
    assert "aborted" in run.error
    run.terminate()  # an ended run is left alone
    assert run.phase == "ABORTED"

    again = runs.launch(remote, ref(flows, "twice"), {"n": 3}).wait(timeout=300)
    relaunched = again.relaunch().wait(timeout=300)
    assert relaunched.name != again.name and relaunched.outputs == {"o0": 81}


def test_watch_follows_a_run_to_its_end_in_the_background(remote, flows):
    run = runs.launch(remote, ref(flows, "twice"), {"n": 1})
    updates, done = [], threading.Event()

    def on_update(update):
        updates.append((update.run.phase, update.nodes, update.final))
        if update.final:
            done.set()

    handle = runs_watch.watch(run, on_update)
    assert done.wait(timeout=300)
    assert updates[-1][0] == "SUCCEEDED" and updates[-1][2] is True
    assert [r.phase for r in updates[-1][1]] == ["SUCCEEDED", "SUCCEEDED"]
    assert not handle.active
    assert len(updates) == handle.polls  # one update per poll, and it stopped at the end


def _count(remote) -> int:
    executions, _ = remote.client.list_executions_paginated("flytesnacks", "development", limit=1000)
    return len(executions)


def test_a_run_from_flytekits_execution_object(remote, flows):
    launched = runs.launch(remote, ref(flows, "twice"), {"n": 1}).wait(timeout=300)
    execution = remote.fetch_execution(name=launched.name)
    run = runs.Run.from_execution(remote, execution)
    assert (run.name, run.phase, run.outputs) == (launched.name, "SUCCEEDED", {"o0": 1})


TYPED_FLOWS = '''
import os
from dataclasses import dataclass
from typing import List, NamedTuple, Optional

from flytekit import task, workflow
from flytekit.types.file import FlyteFile

Stats = NamedTuple("Stats", [("count", int), ("mean", float), ("label", str), ("ok", bool)])


@dataclass
class Settings:
    x: int
    y: int = 10


@task
def maybe(x: Optional[int]) -> str:
    return repr(x)


@task
def stats(n: int) -> Stats:
    return Stats(count=n, mean=n / 2, label="x", ok=True)


@task
def triple(n: int) -> tuple[int, int, int]:
    return n, n + 1, n + 2


@task
def total(s: Settings, xs: List[int], label: str, f: Optional[FlyteFile] = None) -> int:
    return s.x + s.y + sum(xs)


@task
def join(a: int, b: str) -> str:
    return f"{a}-{b}"


@workflow
def needs_a(a: int, b: str = "x") -> str:
    return join(a=a, b=b)
'''


@pytest.fixture(scope="module")
def typed_flows(remote, tmp_path_factory):
    names = ("maybe", "stats", "triple", "total", "needs_a")
    return register_flows(remote, tmp_path_factory.mktemp("typedflows"), TYPED_FLOWS, names, prefix="typedflows")


def test_a_workflows_required_input_is_asked_for_before_launching(remote, typed_flows):
    from flytekit import LaunchPlan

    _, module, version, mod = typed_flows
    default_lp = LaunchPlan.get_or_create(mod.needs_a)  # what `reg.launch("needs_a")` picks
    target = EntityRef("launch_plan", f"{module}.needs_a", version, "flytesnacks", "development", None, default_lp)
    before = _count(remote)
    with pytest.raises(RunError) as info:
        runs.launch(remote, target, {"b": "y"})
    assert str(info.value) == f"{module}.needs_a needs a value for 'a'. Pass it: launch(a=...)."
    assert _count(remote) == before


def test_an_optional_task_input_left_out_is_sent_as_none(remote, typed_flows):
    run = runs.launch(remote, ref(typed_flows, "maybe", "task"), {}).wait(timeout=300)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": "None"})


def test_outputs_keep_their_declared_order(remote, typed_flows):
    from fastreg_magic.widget_text import outputs_html, run_text

    named = runs.launch(remote, ref(typed_flows, "stats", "task"), {"n": 4}).wait(timeout=300)
    assert list(named.outputs.items()) == [("count", 4), ("mean", 2.0), ("label", "x"), ("ok", True)]
    plain = runs.launch(remote, ref(typed_flows, "triple", "task"), {"n": 1}).wait(timeout=300)
    assert list(plain.outputs.items()) == [("o0", 1), ("o1", 2), ("o2", 3)]
    text = run_text(plain)
    assert text.index("o0 = 1") < text.index("o1 = 2") < text.index("o2 = 3")
    html = outputs_html(plain.outputs)
    assert html.index("o0") < html.index("o1") < html.index("o2")
    attached = runs.attach(remote, plain.name)  # types read from the registered interface
    assert list(attached.outputs) == ["o0", "o1", "o2"]


def test_a_dict_for_a_dataclass_input_from_code_takes_the_dataclass_defaults(remote, typed_flows):
    run = runs.launch(remote, ref(typed_flows, "total", "task"), {"s": {"x": 1}, "xs": [2], "label": "l"}).wait(timeout=300)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 13})


@pytest.mark.parametrize(
    "inputs, message, hint",
    [
        (
            {"s": {"x": 1}, "xs": (1, 2), "label": "l"},
            "input 'xs' (list[int]): expected a list, got the tuple (1, 2).",
            "Pass a value of type list[int]: launch(xs=...).",
        ),
        (
            {"s": {"x": 1}, "xs": ["q"], "label": "l"},
            "input 'xs' (list[int]): Expected value of type <class 'int'> but got 'q' of type <class 'str'>.",
            "Pass a value of type list[int]: launch(xs=...).",
        ),
        (
            {"s": {"x": 1}, "xs": [2**70], "label": "l"},
            "input 'xs' (list[int]): 1180591620717411303424 at [0] is out of range: a Flyte int holds whole numbers "
            "from -9223372036854775808 to 9223372036854775807.",
            "Pass a value of type list[int]: launch(xs=...).",
        ),
        (
            {"s": {"x": 1}, "xs": [1], "label": None},
            "input 'label' (str): needs a str, got None.",
            "Pass a value of type str: launch(label=...).",
        ),
        (
            {"s": {"y": 1}, "xs": [1], "label": "l"},
            "input 's' (Settings): missing field 'x' of Settings.",
            "Pass a value of type Settings: launch(s=...).",
        ),
        (
            {"s": {"x": 1}, "xs": [1], "label": "l", "f": "MISSING"},
            "input 'f' (Optional[FlyteFile]): File MISSING does not exist.",
            "Pass a path that exists on this machine, or a remote URL: launch(f=...).",
        ),
    ],
)
def test_a_value_that_cannot_be_converted_names_its_input(remote, typed_flows, tmp_path, inputs, message, hint):
    from flytekit.types.file import FlyteFile

    if inputs.get("f") == "MISSING":
        missing = tmp_path / "missing.txt"
        inputs = {**inputs, "f": FlyteFile(str(missing))}
        message = message.replace("MISSING", str(missing))
    target = ref(typed_flows, "total", "task")
    before = _count(remote)
    with pytest.raises(RunError) as info:
        runs.launch(remote, target, inputs)
    assert (info.value.message, info.value.hint) == (f"{target.name}: {message}", hint)
    assert "Flyte Serialized object" not in str(info.value)
    assert _count(remote) == before


def test_an_int_beyond_64_bits_from_code_is_one_clear_error_and_starts_nothing(remote, typed_flows):
    target = ref(typed_flows, "triple", "task")
    before = _count(remote)
    with pytest.raises(RunError) as info:
        runs.launch(remote, target, {"n": 99999999999999999999999})
    assert str(info.value) == (
        f"{target.name}: input 'n' (int): 99999999999999999999999 is out of range: a Flyte int holds whole numbers "
        "from -9223372036854775808 to 9223372036854775807. Pass a value of type int: launch(n=...)."
    )
    assert _count(remote) == before


# -- %flyte_watch: a run started elsewhere, in a real InteractiveShell ---------------------------


def test_flyte_watch_of_a_missing_run_says_so_in_a_sentence_with_a_hint_that_helps(sandbox_shell):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError) as info:
        sandbox_shell.run_line_magic("flyte_watch", "nosuchrun123")
    message = str(info.value)
    assert message.startswith("Reading run nosuchrun123: not found on ")
    found = message.split(" Check ", 1)[0]
    assert found.endswith("."), message  # the backend's words end the sentence
    assert "flytesnacks/development" in message and "-p/-d" in message and "console URL" in message
    assert "%%flyte_fast" not in message  # re-running a cell cannot bring back a run


def test_flyte_watch_shows_what_the_run_was_launched_with(sandbox, sandbox_shell, remote, flows):
    from fastreg_magic.widget_text import inputs_html, run_text

    started = runs.launch(remote, ref(flows, "twice"), {"n": 3})
    watched = sandbox_shell.run_line_magic("flyte_watch", started.name)
    assert watched.inputs == {"n": 3}
    assert "inputs: n=3" in run_text(watched)
    assert "n=3" in inputs_html(watched.inputs)
    # The sandbox's own address, as a console URL, is this backend.
    url = f"http://{sandbox.endpoint}/console/projects/flytesnacks/domains/development/executions/{started.name}"
    assert sandbox_shell.run_line_magic("flyte_watch", url).name == started.name
    started.wait(timeout=300)


def test_flyte_watch_of_another_clusters_url_is_refused_naming_both(sandbox_shell, remote, flows):
    from IPython.core.error import UsageError

    started = runs.launch(remote, ref(flows, "twice"), {"n": 2})  # the same name exists here: still not that run
    url = f"https://flyte.example.com/console/projects/flytesnacks/domains/development/executions/{started.name}"
    with pytest.raises(UsageError) as info:
        sandbox_shell.run_line_magic("flyte_watch", url)
    message = str(info.value)
    assert "flyte.example.com" in message and "embedded sandbox" in message
    assert "--config" in message and "--endpoint" in message
    started.wait(timeout=300)
