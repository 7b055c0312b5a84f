"""Admin RPCs that start and follow workflow executions, and the child launcher for launch-plan nodes.

``CreateExecution`` checks the request as FlyteAdmin does (project/domain, name format
and uniqueness, a launch plan or a task, inputs against the launch plan), records the
execution QUEUED and hands the executor an :class:`ExecutionJob`. A task launched on its
own gets FlyteAdmin's ``.flytegen.<task>`` workflow and launch plan. Phases, outputs and
errors then arrive as executor events (see ``events``).
"""

from __future__ import annotations

import logging
import secrets
import string
import threading

import grpc
from flyteidl.admin import common_pb2, execution_pb2, launch_plan_pb2, workflow_pb2
from flyteidl.core import execution_pb2 as core_execution_pb2
from flyteidl.core import identifier_pb2, interface_pb2, literals_pb2

from fastreg_magic.sandbox import compiler
from fastreg_magic.sandbox.contract import ExecutionJob
from fastreg_magic.sandbox.entity_service import LAUNCH_PLAN, TASK, WORKFLOW, key_of, now_timestamp
from fastreg_magic.sandbox.listing import list_page, timestamp_seconds
from fastreg_magic.sandbox.validation import (
    GENERATED_NAME_LENGTH,
    AdminError,
    check_execution_name,
    check_labels,
    check_limit,
    check_literal_map,
    check_named_id,
    id_text,
    invalid,
    not_found,
    require,
    resolve_inputs,
)

log = logging.getLogger("fastreg_magic.sandbox")

Phase = core_execution_pb2.WorkflowExecution
TERMINAL_PHASES = {Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED, Phase.TIMED_OUT}
NAME_ALPHABET = string.ascii_lowercase + string.digits
TERMINATE_GRACE_SECONDS = 60

EXECUTION_GETTERS = {
    "name": lambda e: e.id.name,
    "project": lambda e: e.id.project,
    "domain": lambda e: e.id.domain,
    "phase": lambda e: Phase.Phase.Name(e.closure.phase),
    "created_at": lambda e: timestamp_seconds(e.closure.created_at),
    "execution_created_at": lambda e: timestamp_seconds(e.closure.created_at),
    "updated_at": lambda e: timestamp_seconds(e.closure.updated_at),
    "execution_updated_at": lambda e: timestamp_seconds(e.closure.updated_at),
    "started_at": lambda e: timestamp_seconds(e.closure.started_at),
    "duration": lambda e: e.closure.duration.ToTimedelta().total_seconds(),
    "mode": lambda e: e.spec.metadata.mode,
    "state": lambda e: e.closure.state_change_details.state,
    "user": lambda e: e.spec.metadata.principal,
    "launch_plan.name": lambda e: e.spec.launch_plan.name,
    "launch_plan.version": lambda e: e.spec.launch_plan.version,
    "launch_plan.project": lambda e: e.spec.launch_plan.project,
    "launch_plan.domain": lambda e: e.spec.launch_plan.domain,
    "workflow.name": lambda e: e.closure.workflow_id.name,
    "workflow.version": lambda e: e.closure.workflow_id.version,
    "task.name": lambda e: e.spec.launch_plan.name if e.spec.launch_plan.resource_type == TASK else "",
    "task.version": lambda e: e.spec.launch_plan.version if e.spec.launch_plan.resource_type == TASK else "",
    "error_code": lambda e: e.closure.error.code,
    "parent_node_execution.name": lambda e: e.spec.metadata.parent_node_execution.execution_id.name,
}


def execution_key(execution_id) -> tuple:
    return (execution_id.project, execution_id.domain, execution_id.name)


def generate_name() -> str:
    """FlyteAdmin's form: 'a' followed by 19 random lower-case letters and digits."""
    return "a" + "".join(secrets.choice(NAME_ALPHABET) for _ in range(GENERATED_NAME_LENGTH - 1))


class ExecutionRpcs:
    """Mixin of the Admin servicer: executions (create, get, list, data, terminate, relaunch)."""

    executor = None  # set by the server once the executor exists
    executor_error = ""
    _terminate_timers: list  # set by the servicer's __init__, with _timers_lock

    # -- create ----------------------------------------------------------------------------

    def CreateExecution(self, request, context):
        execution_id = self.create_execution(
            request.project, request.domain, request.name, request.spec if request.HasField("spec") else None,
            request.inputs if request.HasField("inputs") else request.spec.inputs,
        )
        return execution_pb2.ExecutionCreateResponse(id=execution_id)

    def create_execution(self, project, domain, name, spec, user_inputs, parent=None, metadata_mode=None,
                         reference=None) -> identifier_pb2.WorkflowExecutionIdentifier:
        require(project, "project")
        require(domain, "domain")
        check_execution_name(name)
        self.check_project(project, domain)
        if spec is None:
            raise invalid("missing spec")
        target = spec.launch_plan
        if not (target.project and target.domain and target.name and target.version):
            raise invalid(f"missing launch_plan: a complete id (project, domain, name, version) is required, got [{id_text(target)}]")
        if target.resource_type not in (LAUNCH_PLAN, TASK):
            raise invalid(f"Invalid reference entity resource type [{target.resource_type}], only [LAUNCH_PLAN, TASK] allowed")
        check_literal_map(user_inputs, "inputs")
        check_labels(spec.labels)
        plan = self._single_task_launch_plan(target) if target.resource_type == TASK else self._stored_plan(target)
        workflow = self.store.get_entity(WORKFLOW, key_of(plan.spec.workflow_id), workflow_pb2.Workflow)
        if workflow is None:
            raise not_found(f"workflow {id_text(plan.spec.workflow_id)} of launch plan {id_text(plan.id)} is not registered")
        inputs = resolve_inputs(user_inputs, plan.spec.fixed_inputs, plan.closure.expected_inputs)

        execution = self._new_record(spec, plan, parent, metadata_mode, reference)
        with self.store.lock:
            name = name or self._fresh_name(project, domain)
            execution.id.CopyFrom(identifier_pb2.WorkflowExecutionIdentifier(project=project, domain=domain, name=name))
            if self.store.get_execution(execution_key(execution.id), execution_pb2.Execution) is not None:
                raise AdminError(grpc.StatusCode.ALREADY_EXISTS, f"execution {project}/{domain}/{name} already exists")
            data_dir = self.store.executions_dir / project / domain / name
            data_dir.mkdir(parents=True, exist_ok=True)
            (data_dir / "inputs.pb").write_bytes(inputs.SerializeToString())
            self.store.add_execution(execution_key(execution.id), execution, inputs)
        self._submit(execution, workflow[0].closure.compiled_workflow, inputs, plan, data_dir, parent)
        return execution.id

    def _new_record(self, spec, plan, parent, metadata_mode, reference) -> execution_pb2.Execution:
        """The QUEUED execution record, before it has a name."""
        execution = execution_pb2.Execution()
        execution.spec.CopyFrom(spec)
        execution.spec.inputs.Clear()
        metadata = execution.spec.metadata
        if metadata_mode is not None:
            metadata.mode = metadata_mode
        if not metadata.principal or metadata.principal == "placeholder":  # flytekit's placeholder
            metadata.principal = "sandbox"
        if parent is not None:
            metadata.parent_node_execution.CopyFrom(parent)
            metadata.nesting = self._nesting(parent) + 1
        if reference is not None:
            metadata.reference_execution.CopyFrom(reference)
        stamp = now_timestamp()
        closure = execution.closure
        closure.phase = Phase.QUEUED
        closure.created_at.CopyFrom(stamp)
        closure.updated_at.CopyFrom(stamp)
        closure.workflow_id.CopyFrom(plan.spec.workflow_id)
        closure.state_change_details.state = execution_pb2.EXECUTION_ACTIVE
        closure.state_change_details.occurred_at.CopyFrom(stamp)
        return execution

    def _stored_plan(self, plan_id) -> launch_plan_pb2.LaunchPlan:
        found = self.store.get_entity(LAUNCH_PLAN, key_of(plan_id), launch_plan_pb2.LaunchPlan)
        if found is None:
            raise not_found(f"launch plan {id_text(plan_id)} is not registered")
        return found[0]

    def _single_task_launch_plan(self, task_id) -> launch_plan_pb2.LaunchPlan:
        """FlyteAdmin's ``.flytegen.<task>`` workflow and launch plan, created on first use."""
        template = self.find_task(task_id)
        if template is None:
            raise not_found(f"missing entity of type task with identifier {id_text(task_id)}")
        spec = compiler.single_task_workflow(template)
        workflow_id = spec.template.id
        if self.store.get_entity(WORKFLOW, key_of(workflow_id), workflow_pb2.Workflow) is None:
            self._create_quietly(self.CreateWorkflow, workflow_pb2.WorkflowCreateRequest(id=workflow_id, spec=spec))
        plan_id = identifier_pb2.Identifier()
        plan_id.CopyFrom(workflow_id)
        plan_id.resource_type = LAUNCH_PLAN
        if self.store.get_entity(LAUNCH_PLAN, key_of(plan_id), launch_plan_pb2.LaunchPlan) is None:
            defaults = interface_pb2.ParameterMap(parameters={
                name: interface_pb2.Parameter(var=var, required=True)
                for name, var in template.interface.inputs.variables.items()
            })
            plan_spec = launch_plan_pb2.LaunchPlanSpec(workflow_id=workflow_id, default_inputs=defaults)
            self._create_quietly(self.CreateLaunchPlan, launch_plan_pb2.LaunchPlanCreateRequest(id=plan_id, spec=plan_spec))
        return self._stored_plan(plan_id)

    def _create_quietly(self, rpc, request) -> None:
        try:
            rpc(request, None)
        except AdminError as err:
            if err.code != grpc.StatusCode.ALREADY_EXISTS:
                raise

    def _fresh_name(self, project, domain) -> str:
        while True:
            name = generate_name()
            if self.store.get_execution((project, domain, name), execution_pb2.Execution) is None:
                return name

    def _nesting(self, parent: identifier_pb2.NodeExecutionIdentifier) -> int:
        found = self.store.get_execution(execution_key(parent.execution_id), execution_pb2.Execution)
        return found.spec.metadata.nesting if found else 0

    def _submit(self, execution, closure, inputs, plan, data_dir, parent) -> None:
        spec = execution.spec
        raw_prefix = (spec.raw_output_data_config.output_location_prefix
                      or plan.spec.raw_output_data_config.output_location_prefix
                      or str(self.store.raw_dir / execution.id.project / execution.id.domain / execution.id.name))
        envs = {kv.key: kv.value for kv in plan.spec.envs.values}
        envs.update({kv.key: kv.value for kv in spec.envs.values})
        job = ExecutionJob(
            execution_id=execution.id,
            closure=closure,
            inputs=inputs,
            data_dir=str(data_dir),
            raw_output_prefix=raw_prefix,
            envs=envs,
            service_account=spec.security_context.run_as.k8s_service_account,
            max_parallelism=spec.max_parallelism or plan.spec.max_parallelism,
            parent_node_execution=parent,
            spec=spec,
        )
        if self.executor is None:
            self.finish_execution(execution.id, Phase.FAILED, "ExecutorUnavailable",
                                  f"the sandbox cannot run executions: {self.executor_error}")
            return
        try:
            self.executor.submit(job)
        except Exception as err:  # noqa: BLE001 - the record must not stay QUEUED forever
            log.exception("executor refused %s", id_text(execution.id))
            self.finish_execution(execution.id, Phase.FAILED, "ExecutorError", f"the executor refused the execution: {err}")

    def finish_execution(self, execution_id, phase, code: str, message: str) -> None:
        """End a non-terminal execution from the control plane (no executor event will come)."""
        def change(execution):
            if execution.closure.phase in TERMINAL_PHASES:
                return None
            stamp = now_timestamp()
            execution.closure.phase = phase
            if phase == Phase.ABORTED:
                execution.closure.abort_metadata.cause = message
            else:
                execution.closure.error.CopyFrom(core_execution_pb2.ExecutionError(
                    code=code, message=message, kind=core_execution_pb2.ExecutionError.SYSTEM))
            if execution.closure.started_at.seconds:
                execution.closure.duration.FromNanoseconds(stamp.ToNanoseconds() - execution.closure.started_at.ToNanoseconds())
            execution.closure.updated_at.CopyFrom(stamp)
            return None

        self.store.update_execution(execution_key(execution_id), execution_pb2.Execution, change)

    def _finish_quietly(self, execution_id, phase, code: str, message: str) -> None:
        try:
            self.finish_execution(execution_id, phase, code, message)
        except Exception:  # noqa: BLE001 - e.g. the sandbox stopped meanwhile; nothing left to update
            log.debug("could not end %s", id_text(execution_id), exc_info=True)

    # -- read ------------------------------------------------------------------------------

    def get_execution(self, execution_id) -> execution_pb2.Execution:
        check_named_id(execution_id)
        found = self.store.get_execution(execution_key(execution_id), execution_pb2.Execution)
        if found is None:
            raise not_found(f"execution {id_text(execution_id)} does not exist")
        return found

    def GetExecution(self, request, context):
        return self.get_execution(request.id)

    def ListExecutions(self, request, context):
        if not request.HasField("id"):
            raise invalid("missing id")
        check_named_id(request.id, with_name=False)
        check_limit(request.limit)
        executions = self.store.list_executions(request.id.project, request.id.domain, execution_pb2.Execution)
        if request.id.name:
            executions = [e for e in executions if e.id.name == request.id.name]
        if "state" not in request.filters:  # as FlyteAdmin: archived executions only when asked for
            executions = [e for e in executions
                          if e.closure.state_change_details.state != execution_pb2.EXECUTION_ARCHIVED]
        page, token = list_page(executions, request, EXECUTION_GETTERS)
        return execution_pb2.ExecutionList(executions=page, token=token)

    def execution_io(self, execution_id) -> tuple[literals_pb2.LiteralMap, literals_pb2.LiteralMap]:
        self.get_execution(execution_id)
        inputs, outputs = self.store.execution_data(execution_key(execution_id))
        return literal_map(inputs), literal_map(outputs)

    def GetExecutionData(self, request, context):
        inputs, outputs = self.execution_io(request.id)
        data_dir = self.store.executions_dir / request.id.project / request.id.domain / request.id.name
        response = execution_pb2.WorkflowExecutionGetDataResponse(full_inputs=inputs, full_outputs=outputs)
        response.inputs.CopyFrom(common_pb2.UrlBlob(url=str(data_dir / "inputs.pb"), bytes=inputs.ByteSize()))
        if outputs.literals:
            response.outputs.CopyFrom(common_pb2.UrlBlob(url="", bytes=outputs.ByteSize()))
        return response

    # -- change ----------------------------------------------------------------------------

    def TerminateExecution(self, request, context):
        self.terminate_execution(request.id, request.cause or "terminated by the user")
        return execution_pb2.ExecutionTerminateResponse()

    def terminate_execution(self, execution_id, cause: str) -> None:
        """Mark the run ABORTING at once, as FlyteAdmin does, then have the executor end it ABORTED."""
        if not self._mark_aborting(execution_id, cause):
            execution = self.get_execution(execution_id)
            raise AdminError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Cannot abort an already terminated workflow execution: {id_text(execution_id)} is "
                f"{Phase.Phase.Name(execution.closure.phase)}",
            )
        if self.executor is not None:
            try:
                if self.executor.terminate(execution_id, cause):
                    # the executor reports ABORTED once the process tree is gone; should it never
                    # (it lost track of the run), the record still ends instead of staying ABORTING
                    self._finish_later(execution_id, cause)
                    return
            except Exception:  # noqa: BLE001 - still end the record below
                log.exception("executor could not terminate %s", id_text(execution_id))
        # nothing runs it any more (its last event came before ABORTING, or it never started)
        self.finish_execution(execution_id, Phase.ABORTED, "", cause)

    def _mark_aborting(self, execution_id, cause: str) -> bool:
        """ABORTING with the cause (FlyteAdmin's SetExecutionAborting); False if the run has already ended.

        Checked and changed in one store update, so a run ending meanwhile keeps its final phase.
        """
        self.get_execution(execution_id)
        marked = []

        def abort(current):
            if current.closure.phase in TERMINAL_PHASES:
                return None
            closure = current.closure
            closure.phase = Phase.ABORTING
            closure.abort_metadata.cause = cause
            closure.abort_metadata.principal = "sandbox"
            closure.updated_at.CopyFrom(now_timestamp())
            marked.append(True)
            return None

        self.store.update_execution(execution_key(execution_id), execution_pb2.Execution, abort)
        return bool(marked)

    def _finish_later(self, execution_id, cause: str) -> None:
        timer = threading.Timer(TERMINATE_GRACE_SECONDS, self._finish_quietly, (execution_id, Phase.ABORTED, "", cause))
        timer.daemon = True
        with self._timers_lock:
            self._terminate_timers = [t for t in self._terminate_timers if t.is_alive()] + [timer]
        timer.start()

    def close(self) -> None:
        """Cancel pending terminate fallbacks: the sandbox is stopping and its store closes next."""
        with self._timers_lock:
            timers, self._terminate_timers = self._terminate_timers, []
        for timer in timers:
            timer.cancel()

    def RelaunchExecution(self, request, context):
        original = self.get_execution(request.id)
        user_inputs = self._user_inputs(original)
        spec = execution_pb2.ExecutionSpec()
        spec.CopyFrom(original.spec)
        spec.overwrite_cache = request.overwrite_cache  # FlyteAdmin's RelaunchExecution: the request's, not the run's
        spec.metadata.Clear()
        spec.metadata.principal = original.spec.metadata.principal
        new_id = self.create_execution(request.id.project, request.id.domain, request.name, spec, user_inputs,
                                       metadata_mode=execution_pb2.ExecutionMetadata.RELAUNCH, reference=original.id)
        return execution_pb2.ExecutionCreateResponse(id=new_id)

    def _user_inputs(self, execution) -> literals_pb2.LiteralMap:
        """The inputs to launch again with: the recorded ones minus those the launch plan fixes."""
        inputs, _ = self.store.execution_data(execution_key(execution.id))
        recorded = literal_map(inputs)
        if execution.spec.launch_plan.resource_type == LAUNCH_PLAN:
            fixed = self._stored_plan(execution.spec.launch_plan).spec.fixed_inputs.literals
            for name in fixed:
                if name in recorded.literals:
                    del recorded.literals[name]
        return recorded

    def UpdateExecution(self, request, context):
        self.get_execution(request.id)

        def change(execution):
            execution.closure.state_change_details.state = request.state
            execution.closure.state_change_details.occurred_at.CopyFrom(now_timestamp())
            return None

        self.store.update_execution(execution_key(request.id), execution_pb2.Execution, change)
        return execution_pb2.ExecutionUpdateResponse()


def literal_map(data: bytes | None) -> literals_pb2.LiteralMap:
    literal_map = literals_pb2.LiteralMap()
    if data:
        literal_map.ParseFromString(data)
    return literal_map
