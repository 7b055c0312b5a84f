"""Admin RPCs for what gets registered: tasks, workflows, launch plans, named entities.

FlyteAdmin's rules, as flytekit relies on them:

* re-creating an entity with the same structure is ``ALREADY_EXISTS`` (flytekit treats it
  as success); the same id with a different structure is ``INVALID_ARGUMENT`` "... with
  different structure already exists". Structure is compared by a digest of what is
  stored (the compiled task, the compiled workflow closure, the launch plan spec), not of
  the request bytes;
* the project must be registered and the domain one of development/staging/production;
* a workflow is compiled on registration (see ``compiler``), a launch plan needs its
  workflow, launch plans start INACTIVE, activating one deactivates the name's others.
"""

from __future__ import annotations

import hashlib
import time

import grpc
from flyteidl.admin import common_pb2, launch_plan_pb2, task_pb2, workflow_pb2
from flyteidl.core import compiler_pb2, identifier_pb2, interface_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from fastreg_magic.sandbox import compiler
from fastreg_magic.sandbox.listing import list_page, timestamp_seconds
from fastreg_magic.sandbox.store import Store
from fastreg_magic.sandbox.structure_diff import differing_paths
from fastreg_magic.sandbox.validation import (
    AdminError,
    check_identifier,
    check_limit,
    check_literal_map,
    check_named_id,
    check_parameter_map,
    id_text,
    invalid,
    not_found,
)

TASK, WORKFLOW, LAUNCH_PLAN = identifier_pb2.TASK, identifier_pb2.WORKFLOW, identifier_pb2.LAUNCH_PLAN
KIND_NAMES = {TASK: "task", WORKFLOW: "workflow", LAUNCH_PLAN: "launch plan"}
ENTITY_CLASSES = {TASK: task_pb2.Task, WORKFLOW: workflow_pb2.Workflow, LAUNCH_PLAN: launch_plan_pb2.LaunchPlan}

ENTITY_GETTERS = {
    "name": lambda e: e.id.name,
    "version": lambda e: e.id.version,
    "project": lambda e: e.id.project,
    "domain": lambda e: e.id.domain,
    "created_at": lambda e: timestamp_seconds(e.closure.created_at),
    "state": lambda e: getattr(e.closure, "state", 0),
}


def key_of(identifier) -> tuple:
    return (identifier.project, identifier.domain, identifier.name, identifier.version)


def digest(message) -> bytes:
    return hashlib.sha256(message.SerializeToString(deterministic=True)).digest()


def now_timestamp():
    stamp = Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


class EntityRpcs:
    """Mixin of the Admin servicer: registration and lookup of tasks, workflows and launch plans."""

    store: Store

    # -- tasks -----------------------------------------------------------------------------

    def CreateTask(self, request, context):
        check_identifier(request.id, TASK, has_field=request.HasField("id"))
        self.check_project(request.id.project, request.id.domain)
        if not request.HasField("spec") or not request.spec.HasField("template"):
            raise invalid("missing spec" if not request.HasField("spec") else "missing template")
        template = request.spec.template
        if not template.type:
            raise invalid(f"missing type in the template of task {id_text(request.id)}")
        if not template.HasField("interface"):
            raise invalid(f"missing interface in the template of task {id_text(request.id)}")
        compiled = task_pb2.TaskClosure(compiled_task=compiler_pb2.CompiledTask(template=template))
        compiled.compiled_task.template.id.CopyFrom(request.id)
        entity = task_pb2.Task(id=request.id, closure=compiled,
                               short_description=request.spec.description.short_description)
        self._create(TASK, request.id, digest(compiled.compiled_task), entity)
        return task_pb2.TaskCreateResponse()

    def GetTask(self, request, context):
        return self._get(TASK, request.id)

    def ListTasks(self, request, context):
        return task_pb2.TaskList(**self._list(TASK, request, "tasks"))

    def ListTaskIds(self, request, context):
        return self._list_ids(TASK, request)

    def find_task(self, identifier):
        found = self.store.get_entity(TASK, key_of(identifier), task_pb2.Task)
        return found[0].closure.compiled_task.template if found else None

    # -- workflows -------------------------------------------------------------------------

    def CreateWorkflow(self, request, context):
        check_identifier(request.id, WORKFLOW, has_field=request.HasField("id"))
        self.check_project(request.id.project, request.id.domain)
        if not request.HasField("spec") or not request.spec.HasField("template"):
            raise invalid("missing spec" if not request.HasField("spec") else "missing template")
        spec = workflow_pb2.WorkflowSpec()
        spec.CopyFrom(request.spec)
        spec.template.id.CopyFrom(request.id)
        closure = compiler.compile_workflow(spec, self.find_task, self._find_launch_plan)
        entity = workflow_pb2.Workflow(
            id=request.id,
            closure=workflow_pb2.WorkflowClosure(compiled_workflow=closure),
            short_description=request.spec.description.short_description,
        )
        self._create(WORKFLOW, request.id, digest(closure), entity)
        return workflow_pb2.WorkflowCreateResponse()

    def GetWorkflow(self, request, context):
        return self._get(WORKFLOW, request.id)

    def ListWorkflows(self, request, context):
        return workflow_pb2.WorkflowList(**self._list(WORKFLOW, request, "workflows"))

    def ListWorkflowIds(self, request, context):
        return self._list_ids(WORKFLOW, request)

    def _find_launch_plan(self, identifier) -> launch_plan_pb2.LaunchPlanClosure | None:
        found = self.store.get_entity(LAUNCH_PLAN, key_of(identifier), launch_plan_pb2.LaunchPlan)
        return found[0].closure if found else None

    # -- launch plans ----------------------------------------------------------------------

    def CreateLaunchPlan(self, request, context):
        check_identifier(request.id, LAUNCH_PLAN, has_field=request.HasField("id"))
        self.check_project(request.id.project, request.id.domain)
        if not request.HasField("spec"):
            raise invalid("missing spec")
        spec = request.spec
        if not spec.HasField("workflow_id"):
            raise invalid(f"missing workflow_id in launch plan {id_text(request.id)}")
        check_identifier(spec.workflow_id, WORKFLOW)
        workflow = self.store.get_entity(WORKFLOW, key_of(spec.workflow_id), workflow_pb2.Workflow)
        if workflow is None:
            raise invalid(
                f"launch plan {id_text(request.id)} refers to workflow {id_text(spec.workflow_id)}, "
                "which is not registered; register the workflow first"
            )
        check_literal_map(spec.fixed_inputs, "fixed_inputs")
        check_parameter_map(spec.default_inputs, "default_inputs")
        interface = workflow[0].closure.compiled_workflow.primary.template.interface
        entity = launch_plan_pb2.LaunchPlan(
            id=request.id,
            spec=spec,
            closure=launch_plan_pb2.LaunchPlanClosure(
                state=launch_plan_pb2.INACTIVE,
                expected_inputs=_expected_inputs(request.id, spec, interface),
                expected_outputs=interface.outputs,
            ),
        )
        self._create(LAUNCH_PLAN, request.id, digest(spec), entity)
        return launch_plan_pb2.LaunchPlanCreateResponse()

    def GetLaunchPlan(self, request, context):
        return self._get(LAUNCH_PLAN, request.id)

    def ListLaunchPlans(self, request, context):
        return launch_plan_pb2.LaunchPlanList(**self._list(LAUNCH_PLAN, request, "launch_plans"))

    def ListLaunchPlanIds(self, request, context):
        return self._list_ids(LAUNCH_PLAN, request)

    def UpdateLaunchPlan(self, request, context):
        check_identifier(request.id, LAUNCH_PLAN, has_field=request.HasField("id"))
        with self.store.transaction():
            found = self.store.get_entity(LAUNCH_PLAN, key_of(request.id), launch_plan_pb2.LaunchPlan)
            if found is None:
                raise not_found(f"launch plan {id_text(request.id)} is not registered")
            if request.state == launch_plan_pb2.ACTIVE:
                for other in self.store.list_entities(LAUNCH_PLAN, request.id.project, request.id.domain,
                                                      request.id.name, launch_plan_pb2.LaunchPlan):
                    if other.closure.state == launch_plan_pb2.ACTIVE and other.id.version != request.id.version:
                        other.closure.state = launch_plan_pb2.INACTIVE
                        other.closure.updated_at.CopyFrom(now_timestamp())
                        self.store.replace_entity(LAUNCH_PLAN, key_of(other.id), other)
            plan = found[0]
            plan.closure.state = request.state
            plan.closure.updated_at.CopyFrom(now_timestamp())
            self.store.replace_entity(LAUNCH_PLAN, key_of(request.id), plan)
        return launch_plan_pb2.LaunchPlanUpdateResponse()

    def GetActiveLaunchPlan(self, request, context):
        check_named_id(request.id)
        for plan in self.store.list_entities(LAUNCH_PLAN, request.id.project, request.id.domain, request.id.name,
                                             launch_plan_pb2.LaunchPlan):
            if plan.closure.state == launch_plan_pb2.ACTIVE:
                return plan
        raise not_found(f"no active launch plan named {id_text(request.id)}")

    def ListActiveLaunchPlans(self, request, context):
        check_named_id(request, with_name=False)
        check_limit(request.limit)
        plans = [p for p in self.store.list_entities(LAUNCH_PLAN, request.project, request.domain, None,
                                                     launch_plan_pb2.LaunchPlan)
                 if p.closure.state == launch_plan_pb2.ACTIVE]
        page, token = list_page(plans, request, ENTITY_GETTERS)
        return launch_plan_pb2.LaunchPlanList(launch_plans=page, token=token)

    # -- named entities --------------------------------------------------------------------

    def ListNamedEntities(self, request, context):
        check_named_id(request, with_name=False)
        check_limit(request.limit)
        names = self.store.entity_names(request.resource_type, request.project, request.domain)
        entities = [self._named_entity(request.resource_type, request.project, request.domain, n) for n in names]
        getters = {"name": lambda e: e.id.name, "created_at": lambda e: e.id.name,
                   "state": lambda e: e.metadata.state}
        page, token = list_page(entities, request, getters, default_key="name", descending=False)
        return common_pb2.NamedEntityList(entities=page, token=token)

    def GetNamedEntity(self, request, context):
        check_named_id(request.id)
        if not self.store.list_entities(request.resource_type, request.id.project, request.id.domain, request.id.name,
                                        ENTITY_CLASSES.get(request.resource_type, task_pb2.Task)):
            raise not_found(f"no {KIND_NAMES.get(request.resource_type, 'entity')} named {id_text(request.id)}")
        return self._named_entity(request.resource_type, request.id.project, request.id.domain, request.id.name)

    def UpdateNamedEntity(self, request, context):
        check_named_id(request.id)
        key = (request.id.project, request.id.domain, request.id.name)
        self.store.put_named_entity(request.resource_type, key, request.metadata)
        return common_pb2.NamedEntityUpdateResponse()

    def _named_entity(self, kind, project, domain, name) -> common_pb2.NamedEntity:
        metadata = self.store.get_named_entity(kind, (project, domain, name), common_pb2.NamedEntityMetadata)
        return common_pb2.NamedEntity(
            resource_type=kind,
            id=common_pb2.NamedEntityIdentifier(project=project, domain=domain, name=name),
            metadata=metadata or common_pb2.NamedEntityMetadata(),
        )

    # -- shared ----------------------------------------------------------------------------

    def _create(self, kind: int, identifier, new_digest: bytes, entity) -> None:
        entity.closure.created_at.CopyFrom(now_timestamp())
        if kind == LAUNCH_PLAN:
            entity.closure.updated_at.CopyFrom(entity.closure.created_at)
        with self.store.lock:
            if self.store.add_entity(kind, key_of(identifier), new_digest, entity):
                return
            existing = self.store.get_entity(kind, key_of(identifier), ENTITY_CLASSES[kind])
        noun = KIND_NAMES[kind]
        if existing[1] == new_digest:
            raise AdminError(grpc.StatusCode.ALREADY_EXISTS, f"{noun} with identical structure already exists")
        changed = differing_paths(_structure(kind, existing[0]), _structure(kind, entity))
        raise invalid(
            f"{identifier.name} {noun} with different structure already exists. "
            f"(Please register a new version of the {noun}): {id_text(identifier)}; "
            f"differs in: {', '.join(changed)}"
        )

    def _get(self, kind: int, identifier):
        check_identifier(identifier, kind)
        found = self.store.get_entity(kind, key_of(identifier), ENTITY_CLASSES[kind])
        if found is None:
            raise not_found(f"missing entity of type {KIND_NAMES[kind]} with identifier {id_text(identifier)}")
        return found[0]

    def _list(self, kind: int, request, field: str) -> dict:
        if not request.HasField("id"):
            raise invalid("missing id")
        check_named_id(request.id, with_name=False)
        check_limit(request.limit)
        entities = self.store.list_entities(kind, request.id.project, request.id.domain, request.id.name or None,
                                            ENTITY_CLASSES[kind])
        page, token = list_page(entities, request, ENTITY_GETTERS)
        return {field: page, "token": token}

    def _list_ids(self, kind: int, request):
        check_named_id(request, with_name=False)
        check_limit(request.limit)
        ids = [common_pb2.NamedEntityIdentifier(project=request.project, domain=request.domain, name=n)
               for n in self.store.entity_names(kind, request.project, request.domain)]
        getters = {"name": lambda e: e.name, "created_at": lambda e: e.name}
        page, token = list_page(ids, request, getters, default_key="name", descending=False)
        return common_pb2.NamedEntityIdentifierList(entities=page, token=token)


def _structure(kind: int, entity):
    """The part of an entity its digest covers (see the create RPCs)."""
    if kind == TASK:
        return entity.closure.compiled_task
    if kind == WORKFLOW:
        return entity.closure.compiled_workflow
    return entity.spec


def _expected_inputs(plan_id, spec, interface: interface_pb2.TypedInterface) -> interface_pb2.ParameterMap:
    """The launch plan's inputs: its defaults, plus every workflow input it neither defaults nor fixes."""
    variables = interface.inputs.variables
    for name in list(spec.default_inputs.parameters) + list(spec.fixed_inputs.literals):
        if name not in variables:
            raise invalid(
                f"launch plan {id_text(plan_id)} sets input {name!r}, which workflow {id_text(spec.workflow_id)} "
                f"does not declare (its inputs: {', '.join(sorted(variables)) or 'none'})"
            )
    both = set(spec.default_inputs.parameters) & set(spec.fixed_inputs.literals)
    if both:
        raise invalid(f"launch plan {id_text(plan_id)} has inputs both fixed and defaulted: {', '.join(sorted(both))}")
    expected = interface_pb2.ParameterMap()
    for name, variable in variables.items():
        if name in spec.fixed_inputs.literals:
            continue
        if name in spec.default_inputs.parameters:
            expected.parameters[name].CopyFrom(spec.default_inputs.parameters[name])
        else:
            expected.parameters[name].CopyFrom(interface_pb2.Parameter(var=variable, required=True))
    return expected
