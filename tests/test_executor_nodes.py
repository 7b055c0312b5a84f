"""The executor alone, on the workflow catalogue: real task processes, events read back from a recording sink.

All executions of this module are submitted at once (module fixture) and run concurrently; each
test waits for its own. This is also the "many concurrent executions" check at the executor level.
"""

from __future__ import annotations

import datetime

import pytest

from tests.workflows import basic, control, files, gates
from tests.workflows.harness import ExecutorHarness, NodePhase, Run, TaskPhase, WorkflowPhase

CASES = {
    "linear": (basic.linear, {"x": 2}),
    "fan_out_in": (basic.fan_out_in, {}),
    "primitives": (basic.primitives, {}),
    "collections": (basic.collections, {}),
    "optional_none": (basic.optional, {}),
    "optional_given": (basic.optional, {"x": 3}),
    "dataclasses": (basic.dataclasses, {}),
    "fails": (basic.fails, {}),
    "retried": (basic.retried, {}),
    "not_retried": (basic.not_retried, {}),
    "times_out": (basic.times_out, {}),
    "nested": (control.nested, {}),
    "via_launch_plan": (control.via_launch_plan, {}),
    "branch_elif": (control.branching, {}),
    "branch_if": (control.branching, {"x": 500}),
    "branch_else": (control.branching, {"x": 1}),
    "branch_fail": (control.branch_or_fail, {"x": -1}),
    "branch_on_output": (control.branch_on_output, {"x": 2}),
    "mapped": (control.mapped, {}),
    "mapped_tolerant": (control.mapped_tolerant, {}),
    "mapped_strict": (control.mapped_strict, {}),
    "mapped_launch_plan": (control.mapped_launch_plan, {}),
    "dynamic": (control.dynamic_sum, {}),
    "file": (files.file_round_trip, {}),
    "directory": (files.dir_round_trip, {}),
    "gate": (gates.with_sleep, {}),
    "fail_fast": (basic.fail_fast, {}),
    "finish_others_first": (basic.finish_others_first, {}),
}


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    with ExecutorHarness(tmp_path_factory.mktemp("executor"), max_workers=4) as h:
        h.submitted = {name: (entity, h.submit(entity, **kwargs)) for name, (entity, kwargs) in CASES.items()}
        yield h


def run_of(harness, name: str) -> Run:
    entity, execution_id = harness.submitted[name]
    return Run(harness, entity, execution_id, harness.sink.wait_end(execution_id.name, timeout=500))


def succeeded(harness, name: str) -> dict:
    run = run_of(harness, name)
    assert run.phase == WorkflowPhase.SUCCEEDED, run.error
    return run.outputs()


def test_linear_workflow_runs_each_task_once_in_order(harness):
    run = run_of(harness, "linear")
    assert run.outputs() == {"o0": 6}
    assert run.node_phases("n0") == [NodePhase.QUEUED, NodePhase.RUNNING, NodePhase.SUCCEEDED]
    assert run.node_phases("start-node") == [NodePhase.SUCCEEDED]
    assert run.node_phases("end-node") == [NodePhase.SUCCEEDED]
    n0_done = run.node_events("n0")[-1]
    n1_queued = run.node_events("n1")[0]
    assert n1_queued.occurred_at.ToNanoseconds() >= n0_done.occurred_at.ToNanoseconds()
    assert n1_queued.input_data.literals["x"].scalar.primitive.integer == 3
    assert n0_done.target_entity.name == "tests.workflows.basic.add"
    attempts = run.task_events("n0")
    # QUEUED until it holds a worker slot, RUNNING once its process starts (propeller's task phases)
    assert [e.phase for e in attempts] == [TaskPhase.QUEUED, TaskPhase.RUNNING, TaskPhase.SUCCEEDED]
    assert all(e.HasField("occurred_at") for e in run.node_events() + attempts)
    assert attempts[-1].output_data.literals["o0"].scalar.primitive.integer == 3


def test_independent_nodes_fan_out_and_join(harness):
    assert succeeded(harness, "fan_out_in") == {"o0": 19}


def test_primitives_round_trip(harness):
    assert succeeded(harness, "primitives") == {
        "o0": "x:7", "o1": 2.5, "o2": False,
        "o3": datetime.datetime(2024, 1, 2, 1, tzinfo=datetime.timezone.utc),
    }


def test_collections_and_maps(harness):
    assert succeeded(harness, "collections") == {"o0": [1, 2, 3]}


def test_optional_inputs_none_and_value(harness):
    assert succeeded(harness, "optional_none") == {"o0": None}
    assert succeeded(harness, "optional_given") == {"o0": "got 3"}


def test_dataclass_outputs_and_attribute_paths(harness):
    outputs = succeeded(harness, "dataclasses")
    assert outputs["o0"] == basic.Point(x=3, y=21, tags=["a", "b", "shifted"])
    assert outputs["o1"] == 21  # p.y + 1, through an attribute path on a dataclass output
    assert outputs["o2"] == "B"  # p.tags[1], a list index inside the dataclass


def test_user_failure_carries_the_traceback_and_stops_downstream(harness):
    run = run_of(harness, "fails")
    assert run.phase == WorkflowPhase.FAILED
    assert run.final.error.kind == 1  # USER
    assert "ValueError: x must not be positive, got 5" in run.error
    assert "basic.py" in run.error and "in explode" in run.error
    assert run.node_phases("n0")[-1] == NodePhase.FAILED
    assert run.node_events("n1") == []  # never started


def test_recoverable_failure_is_retried(harness):
    run = run_of(harness, "retried")
    assert run.outputs() == {"o0": 2}
    attempts = [(e.retry_attempt, e.phase) for e in run.task_events("n0")
                if e.phase not in (TaskPhase.QUEUED, TaskPhase.RUNNING)]
    assert attempts == [(0, TaskPhase.FAILED), (1, TaskPhase.SUCCEEDED)]


def test_non_recoverable_failure_is_not_retried(harness):
    run = run_of(harness, "not_retried")
    assert run.phase == WorkflowPhase.FAILED
    assert {e.retry_attempt for e in run.task_events("n0")} == {0}


def test_task_timeout_ends_the_attempt(harness):
    """As propeller: an attempt out of time fails retryably; with no retries left the node fails."""
    run = run_of(harness, "times_out")
    assert run.phase == WorkflowPhase.FAILED
    assert "task execution timeout [2s] expired" in run.error
    assert run.node_phases("n0")[-1] == NodePhase.FAILED


def test_sub_workflow_nodes_are_children_of_their_parent(harness):
    run = run_of(harness, "nested")
    assert run.outputs() == {"o0": 256}
    parent = run.node_events("n0")
    assert all(e.is_parent for e in parent)
    children = [e for e in run.node_events() if e.parent_node_metadata.node_id == "n0"]
    assert {e.id.node_id for e in children} == {"n0-0-n0", "n0-0-n1"}
    assert {e.spec_node_id for e in children} == {"n0", "n1"}
    assert {e.retry_group for e in children} == {"0"}


def test_launch_plan_node_starts_a_child_execution(harness):
    run = run_of(harness, "via_launch_plan")
    assert run.outputs() == {"o0": 6561}
    running = [e for e in run.node_events("n0") if e.phase == NodePhase.RUNNING]
    child = running[0].workflow_node_metadata.execution_id
    assert child.name and child.name != run.id.name
    assert harness.sink.final(child.name).phase == WorkflowPhase.SUCCEEDED
    assert running[0].target_entity.name == "tests.workflows.control.inner_lp"


def test_branches_pick_if_elif_else(harness):
    assert succeeded(harness, "branch_if") == {"o0": "big"}
    assert succeeded(harness, "branch_elif") == {"o0": "five-or-six"}
    assert succeeded(harness, "branch_else") == {"o0": "other"}
    run = run_of(harness, "branch_elif")
    children = [e for e in run.node_events() if e.parent_node_metadata.node_id == "n0"]
    assert children and all(e.id.node_id.startswith("n0-0-") for e in children)


def test_branch_else_fail_fails_with_its_message(harness):
    run = run_of(harness, "branch_fail")
    assert run.phase == WorkflowPhase.FAILED
    assert "x must not be negative" in run.error


def test_branch_on_an_upstream_output(harness):
    assert succeeded(harness, "branch_on_output") == {"o0": 4}


def test_map_task_gathers_outputs_and_reports_elements(harness):
    run = run_of(harness, "mapped")
    assert run.outputs() == {"o0": 30}
    assert all(e.is_array for e in run.node_events("n0"))
    final = run.task_events("n0")[-1]
    assert final.phase == TaskPhase.SUCCEEDED
    assert sorted(r.index for r in final.metadata.external_resources) == [0, 1, 2, 3]
    assert {r.phase for r in final.metadata.external_resources} == {TaskPhase.SUCCEEDED}


def test_map_task_min_success_ratio_tolerates_failures(harness):
    run = run_of(harness, "mapped_tolerant")
    assert run.outputs() == {"o0": 12}  # 2 + 4 + 6; the odd element failed
    gathered = run.node_events("n0")[-1].output_data.literals["o0"].collection.literals
    assert [item.scalar.HasField("none_type") for item in gathered] == [True, False, False, False]


def test_map_task_without_ratio_fails_on_any_element(harness):
    run = run_of(harness, "mapped_strict")
    assert run.phase == WorkflowPhase.FAILED
    assert "ValueError: odd input 1" in run.error


def test_dynamic_task_runs_its_generated_nodes(harness):
    run = run_of(harness, "dynamic")
    assert run.outputs() == {"o0": 14}
    dynamic = [e for e in run.node_events("n0") if e.phase == NodePhase.DYNAMIC_RUNNING]
    assert dynamic and dynamic[0].is_dynamic and dynamic[0].is_parent
    generated = dynamic[0].task_node_metadata.dynamic_workflow.compiled_workflow
    assert len(generated.primary.template.nodes) == 4  # three squares and the total
    children = [e for e in run.node_events() if e.parent_node_metadata.node_id == "n0"]
    assert len({e.id.node_id for e in children}) == 4


def test_files_round_trip_as_plain_paths(harness, tmp_path):
    outputs = succeeded(harness, "file")
    assert outputs["o0"] == "hello"
    run = run_of(harness, "file")
    uri = run.final.output_data.literals["o1"].scalar.blob.uri
    assert uri.startswith("/") and not uri.startswith("file:")
    with open(uri) as handle:
        assert handle.read() == "hello"


def test_directories_round_trip(harness):
    assert succeeded(harness, "directory") == {"o0": 3}


def test_a_sleep_gate_passes_then_its_downstream_task_runs(harness):
    assert succeeded(harness, "gate") == {"o0": 1}


def test_a_failure_aborts_running_siblings(harness):
    run = run_of(harness, "fail_fast")
    assert run.phase == WorkflowPhase.FAILED
    assert "x must not be positive" in run.error
    assert run.node_phases("n1")[-1] == NodePhase.ABORTED  # the 300 s sleeper did not run to its end
    assert run.task_events("n1")[-1].phase == TaskPhase.ABORTED


def test_fail_after_executable_nodes_complete_lets_others_finish(harness):
    run = run_of(harness, "finish_others_first")
    assert run.phase == WorkflowPhase.FAILED
    assert run.node_phases("n0")[-1] == NodePhase.FAILED
    assert run.node_phases("n1")[-1] == NodePhase.SUCCEEDED


def test_failure_node_runs_with_the_error(harness, tmp_path):
    marker = tmp_path / "cleanup.txt"
    run = harness.run(basic.with_cleanup, x=5, marker=str(marker))
    assert run.phase == WorkflowPhase.FAILED
    assert "x must not be positive" in run.error
    assert run.node_phases("fn0")[-1] == NodePhase.SUCCEEDED
    x, failed_node, message = marker.read_text().split("|", 2)
    assert (x, failed_node) == ("5", "n0")
    assert "ValueError: x must not be positive, got 5" in message


def test_a_failure_node_that_fails_gives_the_run_its_error(harness):
    """As propeller's handleFailureNode: the handler's own failure is what the workflow fails with."""
    run = harness.run(basic.with_cleanup, x=5)  # the default marker path cannot be written
    assert run.phase == WorkflowPhase.FAILED
    assert run.node_phases("fn0")[-1] == NodePhase.FAILED
    assert basic.UNWRITABLE_MARKER in run.error and "x must not be positive" not in run.error


def test_map_over_a_launch_plan_starts_a_child_per_element(harness):
    run = run_of(harness, "mapped_launch_plan")
    assert run.outputs() == {"o0": (1 + 10) + (4 + 20) + (9 + 30)}
    final = run.task_events("n0")[-1]
    children = [r.workflow_node_metadata.execution_id.name for r in final.metadata.external_resources]
    assert len(set(children)) == 3 and all(children)
    assert all(harness.sink.final(name).phase == WorkflowPhase.SUCCEEDED for name in children)


def test_a_map_elements_time_runs_from_its_start_not_from_its_wait_for_a_worker(tmp_path):
    """With one worker the elements run one after another: each one's time starts when it starts running,
    so their times do not overlap (an element's time used to include its wait in the queue)."""
    import datetime

    with ExecutorHarness(tmp_path, max_workers=1) as one_worker:
        run = one_worker.run(control.mapped)
    assert run.outputs() == {"o0": 30}
    resources = run.task_events("n0")[-1].metadata.external_resources
    spans = sorted((datetime.datetime.fromisoformat(r.custom_info["started_at"]),
                    datetime.datetime.fromisoformat(r.custom_info["ended_at"])) for r in resources)
    assert len(spans) == 4  # in the order they ran, which need not be the elements' order
    for (_, ended), (started, _) in zip(spans, spans[1:]):
        assert started >= ended, spans
