"""Run catalogue workflows through the executor alone: serialize with flytekit, compile, submit, record events.

    closure = compile_entity(basic.linear)
    with ExecutorHarness(tmp_path) as h:
        run = h.run(basic.linear, x=2)
        assert run.phase == WorkflowPhase.SUCCEEDED and run.outputs(basic.linear) == {"o0": 6}

The child launcher here is a real one: a launch-plan node's child runs on the same executor.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

from flyteidl.admin import launch_plan_pb2
from flyteidl.core import execution_pb2 as core_exec
from flyteidl.core import identifier_pb2, literals_pb2

from flytekit import LaunchPlan
from flytekit.configuration import Image, ImageConfig, SerializationSettings
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.type_engine import TypeEngine
from flytekit.models import literals as literal_models
from flytekit.tools.translator import get_serializable

from fastreg_magic.sandbox.compiler import compile_workflow
from fastreg_magic.sandbox.contract import ChildOutcome, ExecutionJob
from fastreg_magic.sandbox.executor import Executor

ROOT = Path(__file__).resolve().parents[2]
WorkflowPhase = core_exec.WorkflowExecution.Phase
NodePhase = core_exec.NodeExecution.Phase
TaskPhase = core_exec.TaskExecution.Phase
TERMINAL = {WorkflowPhase.SUCCEEDED, WorkflowPhase.FAILED, WorkflowPhase.ABORTED, WorkflowPhase.TIMED_OUT}

SETTINGS = SerializationSettings(
    project="flytesnacks", domain="development", version="v1",
    image_config=ImageConfig(default_image=Image(name="default", fqn="cr.flyte.org/flyteorg/flytekit", tag="py3.11")),
    python_interpreter=sys.executable,
)


def compile_entity(entity, settings: SerializationSettings = SETTINGS):
    """The compiled closure of a flytekit workflow, as the control plane would store it."""
    mapping: OrderedDict = OrderedDict()
    spec = get_serializable(mapping, settings, entity)
    tasks, plans = {}, {}
    for entity, model in mapping.items():
        proto = model.to_flyte_idl()
        if type(proto).__name__ == "TaskSpec":
            tasks[_key(proto.template.id)] = proto.template
        elif isinstance(entity, LaunchPlan):  # what the control plane derives when it registers the plan
            plans[_key(proto.id)] = launch_plan_pb2.LaunchPlanClosure(
                expected_inputs=proto.spec.default_inputs, expected_outputs=entity.interface.to_flyte_idl().outputs)
    return compile_workflow(spec.to_flyte_idl(), find_task=lambda ref: tasks.get(_key(ref)),
                            find_launch_plan=lambda ref: plans.get(_key(ref))), mapping


def _key(identifier) -> tuple:
    return (identifier.project, identifier.domain, identifier.name, identifier.version)


def to_literals(entity, **kwargs) -> literals_pb2.LiteralMap:
    """Python inputs (with the workflow's defaults merged) as a LiteralMap."""
    ctx = FlyteContextManager.current_context()
    interface = entity.python_interface
    defaults = {name: default for name, (_, default) in interface.inputs_with_defaults.items()}
    values = {**defaults, **kwargs}
    literal_map = TypeEngine.dict_to_literal_map(ctx, values, {k: interface.inputs[k] for k in values})
    return literal_map.to_flyte_idl()


def to_python(entity, literal_map: literals_pb2.LiteralMap) -> dict:
    ctx = FlyteContextManager.current_context()
    model = literal_models.LiteralMap.from_flyte_idl(literal_map)
    return TypeEngine.literal_map_to_kwargs(ctx, model, python_types=entity.python_interface.outputs)


class RecordingSink:
    """Keeps every event; lets a test wait for an execution to end."""

    def __init__(self):
        self.workflow_events, self.node_events, self.task_events = [], [], []
        self._cond = threading.Condition()

    def on_workflow_event(self, event) -> None:
        with self._cond:
            self.workflow_events.append(event)
            self._cond.notify_all()

    def on_node_event(self, event) -> None:
        with self._cond:
            self.node_events.append(event)

    def on_task_event(self, event) -> None:
        with self._cond:
            self.task_events.append(event)

    def final(self, name: str):
        for event in reversed(self.workflow_events):
            if event.execution_id.name == name and event.phase in TERMINAL:
                return event
        return None

    def wait_end(self, name: str, timeout: float = 300, stop: threading.Event | None = None):
        with self._cond:
            while self.final(name) is None:
                if stop is not None and stop.is_set():
                    return None
                if not self._cond.wait(timeout=min(timeout, 0.5) if stop is not None else timeout):
                    if stop is None:
                        raise TimeoutError(f"execution {name} did not end within {timeout}s")
            return self.final(name)


class LocalChildren:
    """A ChildLauncher that runs launch plans (registered by name) on the same executor."""

    def __init__(self, harness: ExecutorHarness):
        self.harness = harness
        self.launch_plans: dict[str, object] = {}
        self.terminated: list[str] = []
        self._launched: dict[str, int] = {}
        self._lock = threading.Lock()

    def launch_child(self, launch_plan_id, inputs, parent, *, element=None, attempt=0):
        entity = self.launch_plans[launch_plan_id.name]
        with self._lock:
            count = self._launched[parent.execution_id.name] = self._launched.get(parent.execution_id.name, 0) + 1
        suffix = "" if count == 1 else f"-{count}"  # the first child of a run is "<run>-child"
        return self.harness.submit(entity.workflow, inputs=inputs, name=f"{parent.execution_id.name}-child{suffix}")

    def wait_child(self, execution_id, stop):
        event = self.harness.sink.wait_end(execution_id.name, stop=stop)
        if event is None:
            return None
        return ChildOutcome(phase=event.phase, outputs=event.output_data if event.HasField("output_data") else None,
                            error=event.error if event.HasField("error") else None)

    def terminate_child(self, execution_id, cause):
        self.terminated.append(execution_id.name)
        self.harness.executor.terminate(execution_id, cause)


class ExecutorHarness:
    def __init__(self, tmp_path: Path, max_workers: int | None = None):
        self.tmp_path = tmp_path
        self.sink = RecordingSink()
        self.children = LocalChildren(self)
        self.executor = Executor(self.sink, self.children, max_workers=max_workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.executor.shutdown(timeout=10)

    def submit(self, entity, *, inputs=None, name=None, settings=SETTINGS, envs=None,
               **kwargs) -> identifier_pb2.WorkflowExecutionIdentifier:
        closure, mapping = compile_entity(entity, settings)
        for model_entity in mapping:
            if isinstance(model_entity, LaunchPlan):
                self.children.launch_plans[model_entity.name] = model_entity
        name = name or "a" + uuid.uuid4().hex[:19]
        execution_id = identifier_pb2.WorkflowExecutionIdentifier(project="flytesnacks", domain="development", name=name)
        data_dir = self.tmp_path / "executions" / name
        data_dir.mkdir(parents=True)
        job = ExecutionJob(
            execution_id=execution_id,
            closure=closure,
            inputs=inputs if inputs is not None else to_literals(entity, **kwargs),
            data_dir=str(data_dir),
            raw_output_prefix=str(self.tmp_path / "raw" / name),
            envs={"PYTHONPATH": str(ROOT)} if envs is None else envs,
        )
        self.executor.submit(job)
        return execution_id

    def run(self, entity, **kwargs):
        execution_id = self.submit(entity, **kwargs)
        return Run(self, entity, execution_id, self.sink.wait_end(execution_id.name))

    def wait_task_running(self, execution_id, timeout: float = 120) -> None:
        """Block until some task of the execution has started its process."""
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(e.parent_node_execution_id.execution_id.name == execution_id.name and e.phase == TaskPhase.RUNNING
                   for e in list(self.sink.task_events)):
                return
            time.sleep(0.05)
        raise TimeoutError(f"no task of {execution_id.name} started within {timeout}s")


def processes_of(execution_name: str) -> list[int]:
    """Live processes started for an execution (found by the FLYTE_INTERNAL_EXECUTION_ID they carry)."""
    marker = f"FLYTE_INTERNAL_EXECUTION_ID={execution_name}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if marker in environ.split(b"\0") and state != "Z":
            found.append(int(proc.name))
    return found


class Run:
    """What a test looks at: the final workflow event and the events of this execution."""

    def __init__(self, harness, entity, execution_id, final):
        self.harness, self.entity, self.id, self.final = harness, entity, execution_id, final

    @property
    def phase(self) -> int:
        return self.final.phase

    @property
    def error(self) -> str:
        return self.final.error.message

    def outputs(self) -> dict:
        return to_python(self.entity, self.final.output_data)

    def node_events(self, node_id: str | None = None):
        return [e for e in self.harness.sink.node_events
                if e.id.execution_id.name == self.id.name and (node_id is None or e.id.node_id == node_id)]

    def task_events(self, node_id: str | None = None):
        return [e for e in self.harness.sink.task_events
                if e.parent_node_execution_id.execution_id.name == self.id.name
                and (node_id is None or e.parent_node_execution_id.node_id == node_id)]

    def node_phases(self, node_id: str) -> list[int]:
        return [e.phase for e in self.node_events(node_id)]
