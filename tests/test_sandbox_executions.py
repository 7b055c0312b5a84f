"""End to end: the catalogue registered with stock ``pyflyte register``, run with ``pyflyte run --remote``
and ``FlyteRemote.execute``/``wait`` against the session sandbox, read back with ``sync_execution``.

The whole catalogue is registered once; every execution of the module is launched at once by a
module fixture (so 20+ executions run concurrently) and each test waits for its own.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from flytekit.models.core.execution import WorkflowExecutionPhase

from tests.workflows import basic
from tests.workflows.harness import processes_of

ROOT = Path(__file__).resolve().parent.parent
PYFLYTE = str(Path(sys.executable).parent / "pyflyte")
POLL = timedelta(seconds=1)
WAIT = timedelta(minutes=8)
CONCURRENT = 20

# name -> (launch plan, inputs, expected outputs or None when the run must fail)
CATALOGUE = {
    "linear": ("workflows.basic.linear", {"x": 2}, {"o0": 6}),
    "fan_out_in": ("workflows.basic.fan_out_in", {}, {"o0": 19}),
    "collections": ("workflows.basic.collections", {"xs": [5, 4]}, {"o0": [4, 5]}),
    "optional": ("workflows.basic.optional", {}, {"o0": None}),
    "dataclasses": ("workflows.basic.dataclasses", {"x": 1}, None),
    "fails": ("workflows.basic.fails", {}, None),
    "retried": ("workflows.basic.retried", {}, {"o0": 2}),
    "nested": ("workflows.control.nested", {}, {"o0": 256}),
    "launch_plan": ("workflows.control.via_launch_plan", {}, {"o0": 6561}),
    "branch": ("workflows.control.branching", {"x": 500}, {"o0": "big"}),
    "branch_fail": ("workflows.control.branch_or_fail", {"x": -2}, None),
    "mapped": ("workflows.control.mapped", {"xs": [1, 2]}, {"o0": 5}),
    "mapped_tolerant": ("workflows.control.mapped_tolerant", {}, {"o0": 12}),
    "mapped_launch_plan": ("workflows.control.mapped_launch_plan", {"xs": [2], "plus": [1]}, {"o0": 5}),
    "dynamic": ("workflows.control.dynamic_sum", {"n": 2}, {"o0": 5}),
    "file": ("workflows.files.file_round_trip", {"text": "round trip"}, None),
    "directory": ("workflows.files.dir_round_trip", {}, {"o0": 3}),
    "gate": ("workflows.gates.with_sleep", {}, {"o0": 1}),
    "mapped_retried": ("workflows.control.mapped_retried", {"xs": [1, 2]}, {"o0": [11, 21]}),
    "mapped_retries_overridden": ("workflows.control.mapped_retries_overridden", {"xs": [3]}, {"o0": [31]}),
    "timeout_overridden": ("workflows.basic.timeout_overridden", {"seconds": 4}, {"o0": 4}),
    "decked": ("workflows.basic.decked", {"x": 7}, {"o0": 7}),
}


@pytest.fixture(scope="module")
def version():
    return f"e2e-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def registered(sandbox, version):
    """The catalogue, registered (fast) with stock pyflyte, as a user would from the project root."""
    result = subprocess.run(
        [PYFLYTE, "-c", str(sandbox.config_file), "register", "--version", version, "tests/workflows"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def launched(remote, registered, version):
    """Every execution of this module, launched at once."""
    runs = {}
    for name, (lp_name, inputs, _) in CATALOGUE.items():
        runs[name] = remote.execute(remote.fetch_launch_plan(name=lp_name, version=version), inputs=inputs)
    one_step = remote.fetch_launch_plan(name="workflows.basic.one_step", version=version)
    runs["concurrent"] = [remote.execute(one_step, inputs={"x": i}) for i in range(CONCURRENT)]
    return runs


def finished(remote, execution):
    return remote.wait(execution, timeout=WAIT, poll_interval=POLL)


@pytest.mark.parametrize("name", [n for n, (_, _, expected) in CATALOGUE.items() if expected is not None])
def test_catalogue_workflow_succeeds_with_its_outputs(remote, launched, name):
    execution = finished(remote, launched[name])
    assert execution.closure.phase == WorkflowExecutionPhase.SUCCEEDED, execution.error
    assert execution.outputs == CATALOGUE[name][2] or dict(execution.outputs.items()) == CATALOGUE[name][2]


def test_user_failure_shows_the_traceback(remote, launched):
    execution = finished(remote, launched["fails"])
    assert execution.closure.phase == WorkflowExecutionPhase.FAILED
    assert "ValueError: x must not be positive, got 5" in execution.error.message
    assert "in explode" in execution.error.message


def test_branch_else_fail_message_reaches_the_user(remote, launched):
    execution = finished(remote, launched["branch_fail"])
    assert execution.closure.phase == WorkflowExecutionPhase.FAILED
    assert "x must not be negative" in execution.error.message


def test_dataclass_outputs_read_back_through_flyteremote(remote, launched):
    execution = finished(remote, launched["dataclasses"])
    assert execution.closure.phase == WorkflowExecutionPhase.SUCCEEDED, execution.error
    point = execution.outputs.get("o0", as_type=basic.Point)
    assert point == basic.Point(x=2, y=11, tags=["a", "b", "shifted"])
    assert execution.outputs["o1"] == 11 and execution.outputs["o2"] == "B"


def test_file_output_is_a_readable_plain_path(remote, launched):
    execution = finished(remote, launched["file"])
    assert execution.closure.phase == WorkflowExecutionPhase.SUCCEEDED, execution.error
    assert execution.outputs["o0"] == "round trip"
    uri = execution.outputs.literals["o1"].scalar.blob.uri
    assert uri.startswith("/")
    assert Path(uri).read_text() == "round trip"


@pytest.mark.parametrize(
    "name", ["nested", "launch_plan", "branch", "mapped", "mapped_launch_plan", "dynamic", "retried"]
)
def test_sync_execution_reads_every_node_back(remote, launched, name):
    execution = remote.sync_execution(finished(remote, launched[name]), sync_nodes=True)
    nodes = execution.node_executions
    assert {"start-node", "n0", "end-node"} <= set(nodes)
    assert all(node.closure.phase == 3 for node in nodes.values())  # SUCCEEDED
    n0 = nodes["n0"]
    if name in ("nested", "branch", "dynamic"):
        assert n0.metadata.is_parent_node
        assert n0.subworkflow_node_executions, "children of a parent node must be listed"
    if name == "launch_plan":
        assert n0.workflow_executions and n0.workflow_executions[0].outputs["o0"] == 81
    if name in ("mapped", "mapped_launch_plan"):
        assert n0.task_executions
    if name == "retried":
        assert [t.id.retry_attempt for t in n0.task_executions] == [0, 1]
    if name != "mapped_launch_plan":  # FlyteRemote reads no node outputs back for a map over launch plans
        assert n0.outputs is not None


def test_twenty_concurrent_executions_all_finish(remote, launched):
    results = [finished(remote, execution) for execution in launched["concurrent"]]
    assert [r.closure.phase for r in results] == [WorkflowExecutionPhase.SUCCEEDED] * CONCURRENT
    assert [r.outputs["o0"] for r in results] == [2 * i for i in range(CONCURRENT)]


def test_pyflyte_run_remote_runs_the_workflow(sandbox, remote, registered):
    name = f"cli{uuid.uuid4().hex[:10]}"
    result = subprocess.run(
        [PYFLYTE, "-c", str(sandbox.config_file), "run", "--remote", "--name", name, "--wait-execution",
         "tests/workflows/basic.py", "fan_out_in", "--x", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    execution = finished(remote, remote.fetch_execution(name=name))
    assert execution.closure.phase == WorkflowExecutionPhase.SUCCEEDED, execution.error
    assert execution.outputs["o0"] == 8 + 14


def test_terminate_ends_the_run_and_its_processes(remote, registered, version):
    lp = remote.fetch_launch_plan(name="workflows.basic.long_running", version=version)
    execution = remote.execute(lp, inputs={"seconds": 600})
    name = execution.id.name
    _wait_for_process(name)
    remote.terminate(execution, cause="enough")
    execution = finished(remote, execution)
    assert execution.closure.phase == WorkflowExecutionPhase.ABORTED
    _wait_for_no_process(name)


def _wait_for_process(name: str, attempts: int = 1200) -> None:
    import time

    for _ in range(attempts):
        if processes_of(name):
            return
        time.sleep(0.1)
    raise AssertionError(f"no task process of {name} started")


def _wait_for_no_process(name: str, attempts: int = 300) -> None:
    import time

    for _ in range(attempts):
        if not processes_of(name):
            return
        time.sleep(0.1)
    raise AssertionError(f"task processes of {name} still alive: {processes_of(name)}")


def test_single_task_execution(remote, registered, version):
    task = remote.fetch_task(name="workflows.basic.add", version=version)
    execution = finished(remote, remote.execute(task, inputs={"a": 2, "b": 3}))
    assert execution.closure.phase == WorkflowExecutionPhase.SUCCEEDED, execution.error
    assert execution.outputs["o0"] == 5


def test_local_file_input_is_uploaded_and_read_by_the_task(sandbox, registered, version, tmp_path):
    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote
    from flytekit.types.file import FlyteFile

    # flytekit uploads local files through the process-wide flyte:// protocol, bound to the most
    # recently built FlyteRemote; build one here, as a user's script would.
    remote = FlyteRemote(Config.auto(config_file=str(sandbox.config_file)), default_project="flytesnacks",
                         default_domain="development", interactive_mode_enabled=False)

    local = tmp_path / "note.txt"
    local.write_text("uploaded through the data proxy")
    lp = remote.fetch_launch_plan(name="workflows.files.read_given", version=version)
    execution = finished(remote, remote.execute(lp, inputs={"f": FlyteFile(str(local))}))
    assert execution.closure.phase == WorkflowExecutionPhase.SUCCEEDED, execution.error
    assert execution.outputs["o0"] == "uploaded through the data proxy"


@pytest.mark.parametrize("name", ["mapped_retried", "mapped_retries_overridden"])
def test_map_task_elements_are_retried_on_their_own(remote, launched, name):
    # each element failed its first attempt and succeeded on its second (outputs are 10 * x + attempt)
    execution = remote.sync_execution(finished(remote, launched[name]), sync_nodes=True)
    assert execution.closure.phase == WorkflowExecutionPhase.SUCCEEDED, execution.error
    elements = execution.node_executions["n0"].task_executions[-1].closure.metadata.external_resources
    assert [(e.index, e.retry_attempt) for e in elements] == [(i, 1) for i in range(len(elements))]


def test_node_timeout_override_wins_over_the_task_timeout(remote, launched):
    execution = finished(remote, launched["timeout_overridden"])  # the task alone would time out at 2 s
    assert execution.closure.phase == WorkflowExecutionPhase.SUCCEEDED, execution.error
    assert execution.outputs["o0"] == 4


def test_deck_of_a_task_is_readable_through_flyteremote(remote, launched):
    execution = remote.sync_execution(finished(remote, launched["decked"]), sync_nodes=True)
    node = execution.node_executions["n0"]
    assert node.closure.deck_uri.endswith("deck.html")
    html = remote.get(f"flyte://v1/flytesnacks/development/{execution.id.name}/n0/d")
    text = html.data if hasattr(html, "data") else html.decode()  # IPython's HTML, or bytes without IPython
    assert "deck of 7" in text


@pytest.mark.parametrize("name", ["calls_sub_with_cleanup", "with_cleanup_workflow"])
def test_failure_handler_runs_with_the_error(remote, registered, version, tmp_path, name):
    # a sub-workflow's on_failure task, and a workflow used as on_failure, both get the error as err
    marker = tmp_path / "cleanup.txt"
    lp = remote.fetch_launch_plan(name=f"workflows.basic.{name}", version=version)
    execution = finished(remote, remote.execute(lp, inputs={"x": 5, "marker": str(marker)}))
    assert execution.closure.phase == WorkflowExecutionPhase.FAILED
    assert "x must not be positive" in execution.error.message
    x, failed_node, message = marker.read_text().split("|", 2)
    assert (x, failed_node) == ("5", "n0")
    assert "ValueError: x must not be positive, got 5" in message
