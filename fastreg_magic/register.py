"""Entities → flyteidl specs → FlyteAdmin registrations.

Three steps, each usable alone (the magic runs all three; ``fastreg serialize`` stops after the first,
``fastreg register-files`` starts at the second):

1. :func:`serialize` turns a module's tasks, workflows and launch plans (plus everything they reference,
   and the default launch plan of every workflow among them, as ``pyflyte register`` registers one for
   each workflow) into admin protos with flytekit's translator. The
   protos are project/domain independent: the identifiers carry flytekit's ``{{ registration.* }}``
   placeholders and the task commands ``{{ .remote_package_path }}`` — the seed's serialize format.
2. :func:`hydrate` (in ``specs.py``) fills those in for one project/domain/archive and applies the launch-plan options
   (service account, raw output prefix).
3. :func:`register_specs` sends the Create RPCs in dependency waves, each wave in parallel; an entity
   that already exists identically counts as done. A Create has a deadline (``CREATE_DEADLINE_S``, or
   ``$FASTREG_CREATE_DEADLINE_S``), and once one fails nothing more is sent. A launch plan is made the
   active version as it is registered with ``--activate``, or when it was declared ``auto_activate=True``.

Every gRPC failure is mapped to a typed error in :func:`error_for`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import re
import sys
import threading
import time
import weakref
from types import ModuleType
from typing import Collection, Iterable, Sequence

from fastreg_magic.errors import BackendError, FastRegError, RegistrationError, VersionConflict, causes
from fastreg_magic.specs import DOMAIN_PLACEHOLDER, PROJECT_PLACEHOLDER, Spec, dependencies, identity_key

# Creates in flight at once. Each waits a network round trip on a sender thread (flytekit's interceptors
# block in the call), so a dependency wave wider than this costs a second round trip against a remote
# FlyteAdmin. Measured with the 10-task benchmark cell: 16 senders instead of 8 saved one round trip
# and cost nothing on loopback; 32 keeps waves of up to 32 entities to one round trip. Threads start
# only as a wave needs them.
MAX_PARALLEL_CREATES = 32


# ---------------------------------------------------------------- entities of a module


def module_entities(module: ModuleType) -> list:
    """The tasks, workflows and launch plans a module defines, in definition order."""
    from flytekit.core.base_task import PythonTask
    from flytekit.core.launch_plan import LaunchPlan
    from flytekit.core.reference_entity import ReferenceEntity
    from flytekit.core.workflow import WorkflowBase

    found, seen = [], set()
    for value in list(vars(module).values()):
        if id(value) in seen or isinstance(value, ReferenceEntity):
            continue  # a reference names an entity registered elsewhere: nothing to register
        if isinstance(value, (PythonTask, WorkflowBase)) and _defined_in(value, module.__name__):
            found.append(value)
        elif isinstance(value, LaunchPlan) and (_defined_in(value.workflow, module.__name__)
                                                or not _held_by_its_workflows_module(value)):
            found.append(value)
        seen.add(id(value))
    return found


def _defined_in(entity, module_name: str) -> bool:
    from flytekit.core.workflow import ImperativeWorkflow

    if isinstance(entity, ImperativeWorkflow):
        return True  # `Workflow("name")` records no module: one the cell holds is the cell's
    function = getattr(entity, "task_function", None) or getattr(entity, "_workflow_function", None)
    if function is not None:
        return getattr(function, "__module__", None) == module_name
    return getattr(entity, "instantiated_in", None) == module_name


def _held_by_its_workflows_module(plan) -> bool:
    """Whether the module that defines ``plan``'s workflow holds ``plan`` too: a plan imported along with its
    workflow is that module's; one declared in a cell for an imported workflow is the cell's."""
    function = getattr(plan.workflow, "_workflow_function", None)
    loaded = sys.modules.get(getattr(function, "__module__", None) or "")
    return loaded is not None and any(value is plan for value in vars(loaded).values())


def forget_launch_plans_of(replaced: ModuleType | None = None) -> None:
    """Forget the launch plans of modules that are loaded again, so that their new load declares them anew.

    flytekit keeps every launch plan it makes, by name, for the life of the process
    (``LaunchPlan.CACHE``) and refuses a second one of that name for another workflow object or with
    other settings. A cell run again after an edit is a new load of its module, with new workflow
    objects: without this, a cell naming a launch plan (``LaunchPlan.get_or_create(wf, name=...)``,
    ``LaunchPlan.create``) could not be edited until the kernel restarts. Call it as ``replaced`` is
    about to be replaced by a new load (``sys.modules`` already holding the new one). A launch plan
    belongs to a replaced module when its workflow's function was defined in a module no longer
    loaded (the cell's previous load, a local module forgotten because its file changed), or, for
    a ``Workflow(...)`` built by hand (it records no module) or a workflow the cell imported, when
    ``replaced`` holds it. Two launch
    plans of one name within one load still meet flytekit's refusal.
    """
    from flytekit.core.launch_plan import LaunchPlan

    held = {id(value) for value in vars(replaced).values()} if replaced is not None else set()
    for name, plan in list(LaunchPlan.CACHE.items()):
        replaced_with_module = _module_replaced(plan.workflow)
        if replaced_with_module is None:  # built by hand: the replaced module's if it holds it
            replaced_with_module = id(plan) in held or id(plan.workflow) in held
        elif not replaced_with_module:  # declared by the replaced module for a workflow it imported
            replaced_with_module = id(plan) in held and not _held_by_its_workflows_module(plan)
        if replaced_with_module:
            LaunchPlan.CACHE.pop(name, None)


def _module_replaced(workflow) -> bool | None:
    """Whether the module that defined ``workflow``'s function is no longer the one loaded under its name;
    None for a workflow no function defines (``Workflow(...)``), which records no module."""
    function = getattr(workflow, "_workflow_function", None)
    namespace = getattr(function, "__globals__", None)
    if namespace is None:
        return None
    loaded = sys.modules.get(getattr(function, "__module__", None) or "")
    return loaded is None or vars(loaded) is not namespace


def local_objects(entities: Iterable) -> dict:
    """``(kind, name) -> local flytekit object`` for a module's entities, default launch plans included."""
    from flytekit.core.context_manager import FlyteContextManager
    from flytekit.core.launch_plan import LaunchPlan
    from flytekit.core.workflow import WorkflowBase

    ctx = FlyteContextManager.current_context()
    found = {}
    for entity in entities:
        if isinstance(entity, LaunchPlan):
            found[("launch_plan", entity.name)] = entity
        elif isinstance(entity, WorkflowBase):
            found[("workflow", entity.name)] = entity
            LaunchPlan.CACHE.pop(entity.name, None)
            found.setdefault(("launch_plan", entity.name), LaunchPlan.get_default_launch_plan(ctx, entity))
        else:
            found[("task", entity.name)] = entity
    return found


# ---------------------------------------------------------------- serialization


def image_config(images: Sequence[str]):
    """``-i`` values → flytekit ``ImageConfig`` exactly as pyflyte parses them (``fqn`` or ``name=fqn``)."""
    return _image_config(tuple(images))


@functools.lru_cache(maxsize=64)
def _image_config(images: tuple[str, ...]):
    # Parsed once per set of images: flytekit reads its default-image settings on every call.
    from flytekit.configuration import ImageConfig

    try:
        return ImageConfig.validate_image(None, "image", images)
    except (ValueError, AssertionError) as exc:
        raise RegistrationError(
            f"Image option {list(images)} is invalid: {exc}",
            "Pass -i REGISTRY/IMAGE:TAG for the default image and -i NAME=REGISTRY/IMAGE:TAG for named ones.",
        ) from exc


def image_names(config) -> tuple[str, ...]:
    """Images as ``name=fqn:tag`` strings, default first (what the version and the summary show)."""
    return tuple(f"{image.name}={image.full}" for image in (config.images or []))


def naming_image_specs(config, entity):
    """``config`` plus each ``ImageSpec`` the entity runs on, named by the spec's own image name.

    flytekit looks an ImageSpec up in the image config first and, when it is missing there, checks a
    registry for the image and builds it with Docker. That is right for a cluster (it is what
    ``pyflyte register`` does) but not for the embedded sandbox, which runs tasks on this machine in
    no image, nor for a dry run: there the image is only a name, and a build would take minutes.
    """
    from flytekit.configuration import Image, ImageConfig

    specs = _image_specs(entity)
    if not specs:
        return config
    named = [Image.look_up_image_info(spec_id, spec.image_name()) for spec_id, spec in specs.items()]
    return ImageConfig(default_image=config.default_image, images=[*(config.images or []), *named])


def _image_specs(entity) -> dict:
    """id → ImageSpec of every task the entity runs, through workflows (their branches and failure
    nodes too), launch plans and map tasks. Compiles a workflow (flytekit does so on first use), so
    may raise the workflow's own error."""
    from flytekit.core.context_manager import FlyteEntities
    from flytekit.core.python_function_task import PythonFunctionTask
    from flytekit.image_spec.image_spec import ImageSpec

    found = {}
    for entity in _entities_run_by(entity):
        image = getattr(entity, "container_image", None)
        if isinstance(image, ImageSpec):
            found[image.id] = image
        if getattr(entity, "execution_mode", None) == PythonFunctionTask.ExecutionBehavior.DYNAMIC:
            # flytekit serializes a dynamic task with the images of every task defined in the process
            # (its body may call any of them at run time), building each ImageSpec among them.
            others = (getattr(e, "container_image", None) for e in list(FlyteEntities.entities))
            found.update((image.id, image) for image in others if isinstance(image, ImageSpec))
    return found


def compile_workflows(entities: Iterable) -> None:
    """Run the body of every workflow the entities run, as their first use (serializing) would.

    Called as the cell's module is loaded, so that a body that raises is the cell's own error, shown
    with the cell's line. flytekit marks a workflow compiled *before* running its body: a body that
    raised once leaves a workflow with no nodes, which would then serialize without complaint (and
    FlyteAdmin refuse it, "Parameter not bound"). Raises the body's error as it is; flytekit refusing
    what the body returned as a RegistrationError naming the workflow.
    """
    for entity in entities:
        for _ in _entities_run_by(entity):
            pass


def _entities_run_by(entity):
    """``entity`` and every entity it runs, each once: a workflow's nodes (its branches and failure
    node included), a launch plan's workflow, a map task's task. Compiles each workflow on the way."""
    seen, stack = set(), [entity]
    while stack:
        entity = stack.pop()
        if entity is None or id(entity) in seen:
            continue
        seen.add(id(entity))
        yield entity
        stack.extend(_run_directly_by(entity))


def _run_directly_by(entity) -> list:
    """What ``entity`` runs itself (not what those run in turn), as flytekit's translator serializes it."""
    from flytekit.core.array_node import ArrayNode
    from flytekit.core.array_node_map_task import ArrayNodeMapTask
    from flytekit.core.launch_plan import LaunchPlan
    from flytekit.core.reference_entity import ReferenceEntity
    from flytekit.core.workflow import WorkflowBase

    if isinstance(entity, ReferenceEntity):
        return []  # registered elsewhere: nothing of it runs here, nor is serialized
    if isinstance(entity, WorkflowBase):
        nodes = [*_compiled_nodes(entity), entity.failure_node]
        return [leaf.flyte_entity for node in nodes if node is not None for leaf in _leaf_nodes(node)]
    if isinstance(entity, LaunchPlan):
        return [entity.workflow]
    if isinstance(entity, ArrayNodeMapTask):
        return [entity.python_function_task]
    if isinstance(entity, ArrayNode):
        return [entity.target]
    return []


def _compiled_nodes(workflow) -> list:
    """The workflow's nodes. Read by attribute, never ``getattr(..., None)``: reading them runs the
    body, and its error must not pass for a missing attribute (an AttributeError in the body did)."""
    try:
        return list(workflow.nodes)
    except Exception as exc:
        if _raised_in_body(exc, workflow):
            raise  # the user's code failed: its own error and traceback
        raise RegistrationError(
            f"{workflow.name} cannot be serialized for Flyte: {exc}",
            "Fix the workflow and re-run; nothing was registered.",
        ) from exc


def _raised_in_body(exc: BaseException, workflow) -> bool:
    """Whether ``exc`` was raised while the workflow's body ran (in it, or in what it called)."""
    body = getattr(getattr(workflow, "_workflow_function", None), "__code__", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is body:
            return True
        tb = tb.tb_next
    return False


def _leaf_nodes(node) -> list:
    """``node``, or for a branch (``conditional``) the nodes each of its cases runs, nested branches included."""
    from flytekit.core.condition import BranchNode

    if not isinstance(node.flyte_entity, BranchNode):
        return [node]
    block = node.flyte_entity._ifelse_block  # flytekit's translator reads the cases here too
    cases = [block.case.then_node, *[case.then_node for case in block.other or ()], block.else_node]
    return [leaf for case in cases if case is not None for leaf in _leaf_nodes(case)]


def serialization_settings(config, version: str, destination_dir: str, project: str = PROJECT_PLACEHOLDER,
                           domain: str = DOMAIN_PLACEHOLDER):
    """Fast-registration settings; project/domain stay placeholders unless given (``hydrate`` fills them)."""
    from flytekit.configuration import FastSerializationSettings, SerializationSettings

    return SerializationSettings(
        image_config=config,
        project=project,
        domain=domain,
        version=version,
        fast_serialization_settings=FastSerializationSettings(
            enabled=True, destination_dir=destination_dir, distribution_location=None
        ),
    )


def serialize(entities: Iterable, settings, *, build_images: bool = True) -> tuple[Spec, ...]:
    """Serialize entities and everything they reference; default launch plans included. No RPC.

    Without ``build_images``, an ImageSpec is only named (see :func:`naming_image_specs`).
    """
    from collections import OrderedDict

    from flytekit.core.context_manager import FlyteContextManager
    from flytekit.core.workflow import WorkflowBase

    mapping: OrderedDict = OrderedDict()
    ctx = FlyteContextManager.current_context()
    for entity in entities:
        try:
            from flytekit.tools.translator import get_serializable

            named = settings.image_config if build_images else naming_image_specs(settings.image_config, entity)
            if named is not settings.image_config:
                settings = dataclasses.replace(settings, image_config=named)
            get_serializable(mapping, settings, entity)
            if isinstance(entity, WorkflowBase):
                _serialize_default_launch_plan(mapping, settings, ctx, entity)
        except FastRegError:
            raise
        except Exception as exc:
            raise _not_serializable(entity, exc) from exc
    _serialize_default_launch_plans_of_the_rest(mapping, settings, ctx)
    return tuple(_spec_of(local, cp) for local, cp in mapping.items() if _registrable(cp))


def _serialize_default_launch_plan(mapping, settings, ctx, workflow) -> None:
    from flytekit.core.launch_plan import LaunchPlan
    from flytekit.tools.translator import get_serializable

    # LaunchPlan.CACHE would hand back the default launch plan of an earlier run's workflow object (and
    # its old interface, its defaults stored on another backend) after the cell changed; always build a fresh one.
    LaunchPlan.CACHE.pop(workflow.name, None)
    get_serializable(mapping, settings, LaunchPlan.get_default_launch_plan(ctx, workflow))


def _serialize_default_launch_plans_of_the_rest(mapping, settings, ctx) -> None:
    """The default launch plan of every other workflow serialized along (one the cell imports from a local
    module and runs as a sub-workflow, or declares a launch plan for), as ``pyflyte register`` registers one
    for every workflow it registers (flytekit's ``get_registrable_entities``). Without it, the workflow's
    newest version (this one) has no launch plan: ``FlyteRemote.execute(remote.fetch_workflow(name))`` and
    the console's launch form, which look up the launch plan of the workflow's name and version, fail.
    A launch plan of the workflow's name the module declares itself is left as declared."""
    from flytekit.core.reference_entity import ReferenceEntity
    from flytekit.core.workflow import WorkflowBase
    from flytekit.models import launch_plan as launch_plan_models
    from flytekit.models.admin import workflow as workflow_models

    planned = {cp.id.name for cp in mapping.values() if isinstance(cp, launch_plan_models.LaunchPlan)}
    for local, cp in list(mapping.items()):
        if not (isinstance(cp, workflow_models.WorkflowSpec) and isinstance(local, WorkflowBase)) \
                or isinstance(local, ReferenceEntity) or cp.template.id.name in planned:
            continue
        try:
            _serialize_default_launch_plan(mapping, settings, ctx, local)
        except Exception as exc:
            raise _not_serializable(local, exc) from exc
        planned.add(cp.template.id.name)


def _not_serializable(entity, exc: BaseException) -> RegistrationError:
    return RegistrationError(
        f"{getattr(entity, 'name', entity)} cannot be serialized for Flyte: {exc}",
        "Fix the definition (type hints, supported types, task config) and re-run; nothing was registered.",
    )


def _registrable(cp_entity) -> bool:
    from flytekit.models import launch_plan, task
    from flytekit.models.admin import workflow
    from flytekit.remote.remote_callable import RemoteEntity

    return isinstance(cp_entity, (task.TaskSpec, workflow.WorkflowSpec, launch_plan.LaunchPlan)) and not isinstance(
        cp_entity, RemoteEntity
    )


def _spec_of(local, cp_entity) -> Spec:
    from flytekit.models import launch_plan, task

    if isinstance(cp_entity, task.TaskSpec):
        return Spec("task", cp_entity.template.id.name, cp_entity.to_flyte_idl(), local)
    if isinstance(cp_entity, launch_plan.LaunchPlan):
        return Spec("launch_plan", cp_entity.id.name, cp_entity.to_flyte_idl(), local)
    return Spec("workflow", cp_entity.template.id.name, cp_entity.to_flyte_idl(), local)

# ---------------------------------------------------------------- registration

# FlyteAdmin answers a Create in milliseconds, a big workflow's on a loaded cluster in seconds. A Create
# with no answer for this long is a backend that is stuck (or a connection that goes nowhere): the
# registration fails saying so, rather than waiting for good. flytekit puts no deadline on its Creates;
# this is the one it gives its own calls (FlyteRemote.sync_execution's DEFAULT_SYNC_EXECUTION_RPC_TIMEOUT).
CREATE_DEADLINE_S = 60.0
# Another deadline for this process, in seconds: a cluster known to be slow, a test's stopped backend.
CREATE_DEADLINE_ENV = "FASTREG_CREATE_DEADLINE_S"

# After the first Ctrl-C, how long the registration calls under way may take before a line says what the
# cell is waiting for: on a backend that answers, they are done before that, and the one line the cell
# shows is where things stand.
WAITING_LINE_AFTER_S = 0.5


def create_deadline_s() -> float:
    """How long one registration call may go unanswered: ``$FASTREG_CREATE_DEADLINE_S``, else
    ``CREATE_DEADLINE_S``."""
    text = os.environ.get(CREATE_DEADLINE_ENV, "").strip()
    if not text:
        return CREATE_DEADLINE_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not (seconds > 0 and seconds != float("inf")):
        raise RegistrationError(f"{CREATE_DEADLINE_ENV}={text!r} is not a number of seconds above 0.",
                                f"Set it to one (the default is {CREATE_DEADLINE_S:g}) or unset it, then re-run.")
    return seconds


def register_specs(client, specs: Sequence[Spec], *, activate: bool = False,
                   auto_activate: Collection[str] | None = None) -> int:
    """Create every spec, each as soon as what it references is registered; returns the Creates sent.

    FlyteAdmin compiles a workflow against its tasks (and launch plans it calls) and a launch plan
    against its workflow, so those must exist first; everything independent goes out in parallel.
    Once a Create fails, nothing more is sent (a backend that stopped answering would otherwise hold
    the cell a deadline per remaining entity); the first failure is raised once the Creates under way
    have answered.

    With ``activate`` every launch plan is made the active version, as ``pyflyte register
    --activate-launchplans``; without it, those declared with ``auto_activate=True`` (see
    :func:`activated_launch_plans`).
    """
    return len(_created(client, specs, activated_launch_plans(specs, activate, auto_activate)).futures)


def register_specs_active(client, specs: Sequence[Spec], *, activate: bool = True,
                          auto_activate: Collection[str] | None = None) -> list[Reactivated]:
    """``register_specs``; returns the launch plans it activated whose version already existed while
    another was active (another kernel, ``fastreg register-files --activate``), for :func:`reactivated_note`."""
    return _created(client, specs, activated_launch_plans(specs, activate, auto_activate)).reactivated()


def auto_activated(entities: Iterable) -> tuple[str, ...]:
    """The names of the launch plans among ``entities`` (specs, or the registration's entity refs) whose
    flytekit object was declared with ``auto_activate=True``. flytekit activates those as it registers them
    (``FlyteRemote.raw_register``, ``pyflyte register``); the flag is the local object's, not the protobuf's,
    so a release's manifest records these names for ``register-files``."""
    return tuple(entity.name for entity in entities
                 if entity.kind == "launch_plan" and getattr(entity.entity, "should_auto_activate", False))


def activated_launch_plans(specs: Iterable[Spec], activate: bool,
                           auto_activate: Collection[str] | None = None) -> frozenset[str]:
    """The names of the launch plans among ``specs`` to make active as they are registered: all of them
    with ``activate`` (--activate), else those declared ``auto_activate=True`` (``auto_activate``: their
    names, when the specs were read from files and hold no flytekit object)."""
    specs = list(specs)
    if activate:
        return frozenset(spec.name for spec in specs if spec.kind == "launch_plan")
    return frozenset(auto_activated(specs) if auto_activate is None else auto_activate)


def _created(client, specs: Sequence[Spec], activated: frozenset[str]) -> _Creates:
    creates = _Creates(client, _dependency_order(specs), activated, create_deadline_s())
    try:
        creates.send()
        creates.wait()
    except KeyboardInterrupt:
        raise _interrupted_registration(creates) from None
    failure = creates.failure()
    if failure is not None:
        raise failure
    return creates


# How often a thread waiting on the worker pool wakes up to take a Ctrl-C (see `result_of`).
CTRL_C_CHECK_S = 0.05


def wait_for(future: concurrent.futures.Future, timeout: float | None = None) -> bool:
    """Wait for ``future`` (at most ``timeout`` s), taking Ctrl-C at once; whether it is done. A wait
    blocked in the lock does not always wake for SIGINT (the futex wait may be restarted after Python's
    C handler ran), and Python raises the KeyboardInterrupt only when it runs bytecode again: a wait in
    short slices keeps Ctrl-C prompt."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not future.done() and (deadline is None or time.monotonic() < deadline):
        _wait_a_slice(future)
    return future.done()


def _wait_a_slice(future: concurrent.futures.Future) -> None:
    try:
        concurrent.futures.wait([future], timeout=CTRL_C_CHECK_S)
    except RuntimeError as exc:
        # Ctrl-C taken just as threading.Condition.wait was to take its lock back: the `with` around it then
        # releases a lock it does not hold, and that RuntimeError ("release unlocked lock") hides the
        # KeyboardInterrupt. The waiter and its lock were this call's own, so nothing is left broken.
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise exc.__context__ from None
        raise


def result_of(future: concurrent.futures.Future):
    """``future.result()``, taking Ctrl-C at once (see `wait_for`)."""
    wait_for(future)
    return future.result()


class _NotSent(Exception):
    """A Create left unsent because another one failed."""


class _NoAnswer(Exception):
    """The backend did not answer the Create of ``spec``: its deadline passed (``details`` None), or the
    connection went (``details`` says how: gRPC's keepalive gives up on a backend that answers nothing,
    pings included, within a minute)."""

    def __init__(self, spec: Spec, details: str | None):
        super().__init__(spec.name)
        self.spec, self.details = spec, details


class _Creates:
    """The Creates of one version, on the worker pool: each sent once what it references is registered,
    none once one has failed, each with a deadline."""

    def __init__(self, client, ordered: list[tuple[Spec, set]], activated: frozenset[str], deadline_s: float):
        self.client, self.ordered, self.activated, self.deadline_s = client, ordered, activated, deadline_s
        self.futures: dict[tuple, concurrent.futures.Future] = {}
        self.failed = threading.Event()

    @property
    def version(self) -> str:
        return self.ordered[0][0].identifier.version if self.ordered else "?"

    def send(self) -> None:
        """Submit the Creates not submitted yet, in dependency order, to a FIFO pool, so a worker only ever
        waits on futures that are already running or done: no deadlock even when every worker is waiting."""
        for spec, needs in self.ordered:
            key = identity_key(spec.identifier)
            if key not in self.futures:
                waits = [self.futures[k] for k in needs if k in self.futures]
                self.futures[key] = worker_pool().submit(self._create_after, waits, spec)

    def _create_after(self, waits: list, spec: Spec) -> Reactivated | None:
        for dependency in waits:
            dependency.result()  # raises (and so skips this one) when a dependency failed
        if self.failed.is_set():
            raise _NotSent()
        try:
            activate = spec.kind == "launch_plan" and spec.name in self.activated
            return _create(self.client, spec, activate, self.deadline_s)
        except BaseException:
            self.failed.set()
            raise

    def reactivated(self) -> list[Reactivated]:
        """The launch plans made active again (see ``_create``), once every Create has answered."""
        return [f.result() for f in self.futures.values() if f.done() and f.exception() is None and f.result()]

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for every Create (at most ``timeout`` s), taking Ctrl-C at once; whether all are answered."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for future in list(self.futures.values()):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not wait_for(future, left):
                return False
        return True

    def registered(self) -> int:
        return sum(1 for f in self.futures.values() if f.done() and f.exception() is None)

    def unanswered(self) -> int:
        return sum(1 for f in self.futures.values() if not f.done())

    def failure(self) -> BaseException | None:
        """The first failure, in dependency order, as the user should read it; None when there is none."""
        for future in self.futures.values():
            error = future.exception() if future.done() else None
            if isinstance(error, _NoAnswer):
                return self._not_answered(error)
            if error is not None and not isinstance(error, _NotSent):
                return error
        return None

    def _not_answered(self, error: _NoAnswer) -> BackendError:
        where = _endpoint_of(self.client)
        backend = f"The Flyte backend at {where}" if where else "The Flyte backend"
        what = _describe(error.spec)
        if error.details is None:
            happened = f"{backend} did not answer the registration of {what} within {self.deadline_s:g} s"
        else:
            happened = f"{backend} stopped answering during the registration of {what} ({error.details})"
        return BackendError(
            f"{happened}: nothing after it was sent ({self.registered()} of {len(self.ordered)} entities of "
            f"version {self.version} registered).",
            "Check that the backend is up and not overloaded, then re-run the cell (or the command): it "
            "registers what is missing.",
        )


def _endpoint_of(client) -> str | None:
    """The address ``client`` talks to (flytekit's client, or ``admin_client``'s raw calls wrapping it)."""
    platform = getattr(getattr(client, "client", client), "_cfg", None)
    endpoint = getattr(platform, "endpoint", None)
    return endpoint.removeprefix("dns:///") if endpoint else None


def _interrupted_registration(creates: _Creates) -> BaseException:
    """Ctrl-C while the Creates go out. A version half-registered (its tasks without the workflow that
    runs them) is the worst state to leave, so the registration is completed first, saying so when it
    takes a moment; a second Ctrl-C stops waiting, and says the version may be incomplete. Returns the
    error to raise."""
    from fastreg_magic.errors import Interrupted

    version = creates.version
    try:
        creates.send()
        if not creates.wait(WAITING_LINE_AFTER_S):
            _say(_waiting_line(creates.unanswered(), version))
            creates.wait()  # a second Ctrl-C is taken at once
    except KeyboardInterrupt:
        return Interrupted(
            f"Stopped waiting for the registration of version {version}: it may be incomplete "
            f"({creates.registered()} of {len(creates.ordered)} entities registered so far).",
            "Re-running the cell (or the command) completes it.",
        )
    failure = creates.failure()
    if failure is not None:
        return failure  # the registration failed on its own: that is the news
    return Interrupted(
        f"Interrupted while registering version {version}: the Creates under way were let finish rather than "
        f"leave it half-registered, so version {version} is registered ({len(creates.futures)} entities)."
    )


def _waiting_line(unanswered: int, version: str) -> str:
    calls = "registration call" if unanswered == 1 else "registration calls"
    return (f"Waiting for the {unanswered} {calls} under way to answer, so that version {version} is not left "
            "half-registered; press stop (Ctrl-C) again to give up now.")


def _say(line: str) -> None:
    """A line shown while the cell still runs: on stderr, apart from what the cell ends with (its result,
    or the one line of its error), in a notebook as in a terminal."""
    print(line, file=sys.stderr, flush=True)


_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def worker_pool() -> concurrent.futures.ThreadPoolExecutor:
    """One process-wide pool for Create RPCs and uploads: starting threads on every cell costs more
    than the RPCs themselves on a busy machine."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=MAX_PARALLEL_CREATES, thread_name_prefix="fastreg")
        return _pool


def _dependency_order(specs: Sequence[Spec]) -> list[tuple[Spec, set]]:
    """Specs with the keys they wait for, dependencies first (a reference cycle is sent as is)."""
    by_key = {identity_key(s.identifier): s for s in specs}
    needs = {k: (dependencies(s) & set(by_key)) - {k} for k, s in by_key.items()}
    ordered, placed = [], set()
    while len(placed) < len(by_key):
        ready = [k for k in by_key if k not in placed and needs[k] <= placed]
        if not ready:  # a cycle cannot be ordered; send the rest without waiting on each other
            ready = [k for k in by_key if k not in placed]
            for k in ready:
                needs[k] = needs[k] & placed
        for k in ready:
            ordered.append((by_key[k], needs[k]))
            placed.add(k)
    return ordered


def _create(client, spec: Spec, activate: bool, deadline_s: float) -> Reactivated | None:
    """One Create RPC through flytekit's raw client (it takes the protos we already hold), with a deadline:
    flytekit's channel applies the one scoped on the calling thread (its ScopedGrpcDeadlineInterceptor).
    With ``activate``, a launch plan is made the active version; one that already existed while another
    version was active is returned (made active *again*: the cell says so), else None."""
    from flyteidl.admin import launch_plan_pb2, task_pb2, workflow_pb2
    from flytekit.clients.grpc_utils.deadline_interceptor import scoped_grpc_deadline

    identifier = spec.identifier
    try:
        with scoped_grpc_deadline(deadline_s):
            existed = False
            try:
                if spec.kind == "task":
                    client.create_task(task_pb2.TaskCreateRequest(id=identifier, spec=spec.proto))
                elif spec.kind == "workflow":
                    client.create_workflow(workflow_pb2.WorkflowCreateRequest(id=identifier, spec=spec.proto))
                else:
                    client.create_launch_plan(launch_plan_pb2.LaunchPlanCreateRequest(id=identifier, spec=spec.proto.spec))
            except Exception as exc:
                if not _already_exists(exc):
                    raise
                existed = True
            if spec.kind == "launch_plan" and activate:
                return _activated(client, spec, existed)
            return None
    except FastRegError:
        raise
    except Exception as exc:
        no_answer = _no_answer(exc, spec)
        if no_answer is not None:
            raise no_answer from exc
        raise error_for(exc, spec) from exc


def _activated(client, spec: Spec, existed: bool) -> Reactivated | None:
    """Make the launch plan of ``spec`` the active version. A new one is simply activated; one that
    already existed (an unchanged cell in a new kernel) is looked at first, as the memo path's
    ``keep_active`` does, so that taking over from another version is said, and an active one left be.
    Whether that version was ever active before is not known here (it may have been registered without
    --activate): the note does not say "again" for it."""
    from flyteidl.admin import common_pb2, launch_plan_pb2

    identifier = spec.identifier
    active = None
    if existed:
        named = common_pb2.NamedEntityIdentifier(project=identifier.project, domain=identifier.domain,
                                                 name=identifier.name)
        active = _active_version(client, named)
        if active == identifier.version:
            return None
    client.update_launch_plan(launch_plan_pb2.LaunchPlanUpdateRequest(id=identifier, state=launch_plan_pb2.ACTIVE))
    return Reactivated(spec.name, active, again=False) if existed else None


def _no_answer(exc: BaseException, spec: Spec) -> _NoAnswer | None:
    """``exc`` as the backend not answering the Create of ``spec``, or None when it answered (a refusal)."""
    import grpc

    error = grpc_error_of(exc)
    if error is None or login_error_of(exc) is not None:
        return None
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return _NoAnswer(spec, None)
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return _NoAnswer(spec, (error.details() or "unavailable").strip())
    return None


# ---------------------------------------------------------------- activation of a version registered before


@dataclasses.dataclass(frozen=True)
class Reactivated:
    """A launch plan whose version was made the active one, taking over from another version or from none."""

    name: str
    was_active: str | None  # the version active until then; None when none was
    again: bool = True  # its version is known to have been the active one before (this kernel activated it)


class _VersionGone(Exception):
    """The backend no longer has the version to activate (a sandbox started afresh behind the same address)."""


def keep_active(client, plans: Sequence) -> list[Reactivated] | None:
    """Make each launch plan's version the active one, as ``pyflyte register --activate-launchplans`` does
    at every registration: another version may have been activated since (another kernel, ``fastreg
    register-files --activate``). ``plans`` hold ``project``, ``domain``, ``name`` and ``version``.

    One GetActiveLaunchPlan per launch plan, all at once; an UpdateLaunchPlan only where another
    version is active. Returns the launch plans activated again (this kernel activated these versions as
    it registered them); None when the backend no longer has one of these versions, which then has to be
    registered again.
    """
    deadline_s = create_deadline_s()
    futures = [worker_pool().submit(_activate_if_another, client, plan, deadline_s) for plan in plans]
    try:
        done = [result_of(future) for future in futures]
    except _VersionGone:
        return None
    return [plan for plan in done if plan is not None]


def _activate_if_another(client, plan, deadline_s: float) -> Reactivated | None:
    from flyteidl.admin import common_pb2, launch_plan_pb2
    from flyteidl.core import identifier_pb2
    from flytekit.clients.grpc_utils.deadline_interceptor import scoped_grpc_deadline

    named = common_pb2.NamedEntityIdentifier(project=plan.project, domain=plan.domain, name=plan.name)
    identifier = identifier_pb2.Identifier(resource_type=identifier_pb2.LAUNCH_PLAN, project=plan.project,
                                           domain=plan.domain, name=plan.name, version=plan.version)
    spec = Spec("launch_plan", plan.name, launch_plan_pb2.LaunchPlan(id=identifier))  # names it in errors
    try:
        with scoped_grpc_deadline(deadline_s):  # as the Creates: a stuck backend fails, it does not hold the cell
            active = _active_version(client, named)
            if active == plan.version:
                return None
            client.update_launch_plan(launch_plan_pb2.LaunchPlanUpdateRequest(id=identifier, state=launch_plan_pb2.ACTIVE))
    except FastRegError:
        raise
    except Exception as exc:
        if _not_found(exc):
            raise _VersionGone() from exc
        raise error_for(exc, spec) from exc
    return Reactivated(plan.name, active)


def _active_version(client, named) -> str | None:
    """The version of the launch plan FlyteAdmin runs on schedule, None when no version is active."""
    from flyteidl.admin import launch_plan_pb2

    try:
        return client.get_active_launch_plan(launch_plan_pb2.ActiveLaunchPlanRequest(id=named)).id.version
    except Exception as exc:
        if _not_found(exc):
            return None  # FlyteAdmin answers NOT_FOUND when no version is active
        raise


def reactivated_note(plans: Sequence[Reactivated], version: str, whose: str = "this cell's ") -> str:
    """One line for the cell (``whose`` version: the cell's; "" for a release of `register-files`): which
    launch plans are at that version now, each with the version that was active until then, "again" for
    those whose version had been the active one before.

        activated this cell's version V again for launch plans a (version U was active) and b (no version was active)
    """
    clauses = []
    for again in (True, False):
        chosen = [plan for plan in plans if plan.again == again]
        if chosen:
            clauses.append(f"{'again ' if again else ''}for {_plans_with_what_was_active(chosen)}")
    return f"activated {whose}version {version} " + ", and ".join(clauses)


def _plans_with_what_was_active(plans: Sequence[Reactivated]) -> str:
    """``launch plans a, b (version U was active) and c (no version was active)``: the plans grouped by
    the version that was active, in their order."""
    groups: dict[str | None, list[str]] = {}
    for plan in plans:
        groups.setdefault(plan.was_active, []).append(plan.name)
    phrases = [f"{', '.join(names)} ({f'version {was} was active' if was else 'no version was active'})"
               for was, names in groups.items()]
    listed = phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"
    return f"{'launch plan' if len(plans) == 1 else 'launch plans'} {listed}"


def _not_found(exc: BaseException) -> bool:
    import grpc

    error = grpc_error_of(exc)
    return error is not None and error.code() == grpc.StatusCode.NOT_FOUND


def _already_exists(exc: BaseException) -> bool:
    import grpc

    error = grpc_error_of(exc)
    return error is not None and error.code() == grpc.StatusCode.ALREADY_EXISTS


# ---------------------------------------------------------------- errors, mapped in one place


def grpc_error_of(exc: BaseException | None):
    """The ``grpc.RpcError`` behind an exception (flytekit wraps them), or None."""
    import grpc

    return next((e for e in causes(exc) if isinstance(e, grpc.RpcError) and hasattr(e, "code")), None)


def login_error_of(exc: BaseException | None):
    """flytekit's failure to log in (its identity provider refused, or the login was never completed)
    behind an exception, or None. flytekit raises it from inside its gRPC interceptor, wrapped."""
    from flytekit.clients.auth.exceptions import AuthenticationError

    return next((e for e in causes(exc) if isinstance(e, AuthenticationError)), None)


def login_failed(backend_label: str | None, error: BaseException) -> BackendError:
    where = f"Flyte backend {backend_label}" if backend_label else "the Flyte backend"
    return BackendError(
        f"Logging in to {where} failed: {error}",
        "Check the auth settings of your Flyte config (authType, clientId, the client secret), then re-run.",
    )


def error_for(exc: BaseException, spec: Spec | None = None) -> FastRegError:
    """FlyteAdmin's refusal as a typed error with its own message and what to do about it."""
    import grpc

    login = login_error_of(exc)
    if login is not None:
        return login_failed(None, login)
    error = grpc_error_of(exc)
    what = _describe(spec)
    if error is None:
        return RegistrationError(f"Registering {what} failed: {exc or type(exc).__name__}", "Re-run; if it persists, check the backend's logs.")
    code, details = error.code(), (error.details() or "").strip()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return BackendError(f"The Flyte backend refused our credentials: {details}", "Check the auth settings of your Flyte config (--config).")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return BackendError(f"The Flyte backend stopped answering while registering {what}: {details}", "Check that it is running, then re-run the cell.")
    if "different structure" in details.lower():
        return VersionConflict(
            f"{what} already exists with a different structure; FlyteAdmin says: {details}",
            "A registered version is immutable: drop --version to use the content-derived one, or pass a new --version.",
        )
    if _UNKNOWN_DOMAIN.search(details) and code == grpc.StatusCode.INVALID_ARGUMENT:
        return RegistrationError(f"FlyteAdmin refused {what}: {details}", _domain_hint())
    if _mentions_project_or_domain(details) and code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
        return RegistrationError(f"FlyteAdmin refused {what}: {details}", _project_hint())
    return RegistrationError(f"FlyteAdmin refused {what} ({code.name}): {details}", "Fix the definition and re-run.")


def _describe(spec: Spec | None) -> str:
    if spec is None:
        return "the entities"
    identifier = spec.identifier
    return f"{spec.kind.replace('_', ' ')} {spec.name!r} version {identifier.version!r}"


# FlyteAdmin's refusal of a domain its configuration does not list ("domain [prod] is unrecognized by system").
_UNKNOWN_DOMAIN = re.compile(r"\bdomain \[[^\]]*\] is unrecognized", re.IGNORECASE)


def _mentions_project_or_domain(details: str) -> bool:
    return bool(re.search(r"\b(project|domain)\b", details, re.IGNORECASE))


def _project_hint(client=None, project: str | None = None, backend=None, via: str = "cell") -> str:
    """What to do about an unknown project. Creating a project takes flytectl on a cluster; the
    embedded sandbox (asked through ``client``) has its own command, as flytectl is rarely installed.

    ``backend`` names the address that refused, and for a sandbox the data dir the command must name:
    without ``--data-dir`` it would create the project on the per-user sandbox, another one. ``via`` is
    how the user picks a project where they are: "cell" (the magic, or ``fast_register``), "command"
    (``fastreg register-files``)."""
    from fastreg_magic.config import is_embedded_sandbox

    name = project or "ID"
    where = f" at {backend.endpoint}" if backend is not None else ""
    on_cluster = f"flytectl create project --id {name} --name {name}"
    if client is None:
        on_sandbox = f"fastreg sandbox --create-project {name}"
        return f"{_pick(via)}, or create the project first ({on_cluster}; on the embedded sandbox: {on_sandbox})."
    if is_embedded_sandbox(client):
        on_sandbox = f"fastreg sandbox --create-project {name}{_sandbox_data_dir_option(backend)}"
        return f"{_pick(via)}, or create the project on the embedded sandbox{where}: {on_sandbox}"
    return f"{_pick(via)}, or create the project on the backend{where} first ({on_cluster})."


def _domain_hint(via: str = "cell") -> str:
    """What to do about an unknown domain: pick a known one. Unlike a project, a domain cannot be
    created: every project has the backend's domains (FlyteAdmin reads them from its configuration;
    the embedded sandbox's are fixed)."""
    where = "-d"
    if via != "command":
        where = "-d on the %%flyte_fast line (or %config FlyteFast.domain; domain= in fast_register)"
    return (f"Pick one of the known domains with {where}. Domains are not created per project: every project has "
            "the backend's own (FlyteAdmin's come from its configuration, the embedded sandbox's are fixed).")


def _pick(via: str) -> str:
    if via == "command":
        return "Pick an existing project/domain with -p/-d"
    return ("Pick an existing project/domain with -p/-d on the %%flyte_fast line (or %config FlyteFast.project; "
            "project=/domain= in fast_register)")


def _sandbox_data_dir_option(backend) -> str:
    """`` --data-dir D`` for a sandbox other than the per-user one: ``--create-project`` acts on one data dir's
    sandbox, the per-user one when none is named."""
    from fastreg_magic.config_file import sandbox_data_dir

    if backend is None or backend.restarts_with_cell:
        return ""
    data_dir = sandbox_data_dir(backend.config_file) if backend.config_file else None
    return f" --data-dir {data_dir}" if data_dir else f" --data-dir DIR (the data dir of the sandbox at {backend.endpoint})"


_known_places: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # client -> {(project, domain)} seen valid


def check_project_domain(client, project: str, domain: str, *, backend=None, via: str = "cell") -> None:
    """Refuse an unknown project or domain before the first Create RPC (so nothing is half-registered).

    Once a project/domain was found on a backend, later calls trust it (projects are not deleted).
    ``backend`` and ``via`` word the hint (see ``_project_hint``).
    """
    known = _known_places.setdefault(client, set())
    if (project, domain) in known:
        return
    _check_project_domain(client, project, domain, backend, via)
    known.add((project, domain))


def _check_project_domain(client, project: str, domain: str, backend=None, via: str = "cell") -> None:
    import grpc
    from flyteidl.admin import project_pb2

    try:
        response = client.list_projects(project_pb2.ProjectListRequest(limit=1000))
    except Exception as exc:
        error = grpc_error_of(exc)
        if error is not None and error.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED):
            return  # cannot list; FlyteAdmin will still refuse an unknown project at the first Create
        raise error_for(exc) from exc
    projects = {p.id: p for p in response.projects}
    if project not in projects:
        known = ", ".join(sorted(projects)) or "none"
        where = f"the backend at {backend.endpoint}" if backend is not None else "this backend"
        raise RegistrationError(f"Project {project!r} does not exist on {where} (known: {known}).",
                                _project_hint(client, project, backend, via))
    domains = [d.id for d in projects[project].domains]
    if domains and domain not in domains:
        raise RegistrationError(
            f"Domain {domain!r} does not exist in project {project!r} (known: {', '.join(domains)}).",
            _domain_hint(via),
        )


def flytekit_version() -> str:
    import flytekit  # its __version__, not importlib.metadata: that scans every installed distribution

    return flytekit.__version__

