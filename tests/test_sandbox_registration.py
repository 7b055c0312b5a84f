"""Registration against the sandbox with stock clients: FlyteRemote in-process, pyflyte as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import launch_plan_pb2, workflow_pb2
from flyteidl.core import identifier_pb2, workflow_pb2 as core_workflow_pb2
from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.exceptions.user import FlyteEntityNotExistException, FlyteInvalidInputException
from flytekit.models.launch_plan import LaunchPlanState

from sandbox_support import PIPELINE_BODY, grpc_code, grpc_details, write_module

PYFLYTE = str(Path(sys.executable).parent / "pyflyte")

PIPELINE = """
from flytekit import task, workflow
""" + PIPELINE_BODY


def settings(project="flytesnacks", domain="development") -> SerializationSettings:
    return SerializationSettings(image_config=ImageConfig.auto_default_image(), project=project, domain=domain)


def version() -> str:
    return f"v-{uuid.uuid4().hex[:8]}"


def test_registered_workflow_is_compiled_with_start_and_end_nodes(remote, tmp_path):
    module = write_module(tmp_path, PIPELINE)
    v = version()
    fetched = remote.register_workflow(module.pipeline, serialization_settings=settings(), version=v)

    # stock flytekit promoted the closure: both user nodes, wired n0 -> n1
    assert sorted(n.id for n in fetched.nodes) == ["n0", "n1"]
    closure = remote.client.raw.get_workflow(admin_get(fetched.id.to_flyte_idl())).closure.compiled_workflow
    node_ids = [n.id for n in closure.primary.template.nodes]
    assert node_ids[0] == "start-node" and node_ids[-1] == "end-node"
    assert list(closure.primary.connections.downstream["n0"].ids) == ["n1"]
    assert list(closure.primary.connections.upstream["n1"].ids) == ["n0"]
    assert list(closure.primary.connections.downstream["n1"].ids) == ["end-node"]
    assert "n0" in closure.primary.connections.downstream["start-node"].ids
    # workflow inputs are bound from start-node, and both referenced tasks ride along
    n0 = next(n for n in closure.primary.template.nodes if n.id == "n0")
    assert {b.binding.promise.node_id for b in n0.inputs} == {"start-node"}
    assert sorted(t.template.id.name for t in closure.tasks) == [f"{module.__name__}.add", f"{module.__name__}.double"]


def test_identical_reregistration_succeeds_and_changed_structure_is_refused(remote, tmp_path):
    import importlib

    module = write_module(tmp_path, PIPELINE)
    v = version()
    remote.register_workflow(module.pipeline, serialization_settings=settings(), version=v)
    remote.register_workflow(module.pipeline, serialization_settings=settings(), version=v)  # ALREADY_EXISTS = fine

    # same names and version, different interface of `double`
    (tmp_path / f"{module.__name__}.py").write_text(PIPELINE.replace(
        "def double(x: int) -> int:\n    return 2 * x", "def double(x: int) -> str:\n    return str(x)").replace(
        "def pipeline(a: int, b: int = 3) -> int", "def pipeline(a: int, b: int = 3) -> str"))
    changed = importlib.reload(module)
    with pytest.raises(FlyteInvalidInputException) as info:
        remote.register_workflow(changed.pipeline, serialization_settings=settings(), version=v)
    assert grpc_code(info.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert "double task with different structure already exists" in grpc_details(info.value)
    assert "template.interface.outputs" in grpc_details(info.value)  # says what changed


def test_workflow_with_unregistered_task_is_refused_naming_it(remote):
    v = version()
    missing = identifier_pb2.Identifier(resource_type=identifier_pb2.TASK, project="flytesnacks",
                                        domain="development", name="nowhere.task", version=v)
    wf_id = identifier_pb2.Identifier(resource_type=identifier_pb2.WORKFLOW, project="flytesnacks",
                                      domain="development", name="broken.wf", version=v)
    template = core_workflow_pb2.WorkflowTemplate(
        id=wf_id, nodes=[core_workflow_pb2.Node(id="n0", task_node=core_workflow_pb2.TaskNode(reference_id=missing))])
    with pytest.raises(FlyteInvalidInputException) as info:
        remote.client.raw.create_workflow(workflow_pb2.WorkflowCreateRequest(
            id=wf_id, spec=workflow_pb2.WorkflowSpec(template=template)))
    assert f"task flytesnacks/development/nowhere.task/{v}" in grpc_details(info.value)
    with pytest.raises(FlyteEntityNotExistException):
        remote.client.raw.get_workflow(admin_get(wf_id))  # nothing was stored


def admin_get(identifier):
    from flyteidl.admin import common_pb2

    return common_pb2.ObjectGetRequest(id=identifier)


@pytest.mark.parametrize(
    "project, domain, name, v, expected",
    [
        ("nope", "development", "x.t", "v1", "project [nope]"),
        ("flytesnacks", "qa", "x.t", "v1", "domain [qa] is unrecognized"),
        ("flytesnacks", "development", "", "v1", "missing name"),
        ("flytesnacks", "development", "x.t", "", "missing version"),
        ("flytesnacks", "development", "x.t", "v/1", "version [v/1] must be url safe"),
    ],
)
def test_bad_task_ids_are_refused_with_a_clear_message(remote, project, domain, name, v, expected):
    from flyteidl.admin import task_pb2
    from flyteidl.core import interface_pb2, tasks_pb2

    task_id = identifier_pb2.Identifier(resource_type=identifier_pb2.TASK, project=project, domain=domain,
                                        name=name, version=v)
    template = tasks_pb2.TaskTemplate(id=task_id, type="python-task", interface=interface_pb2.TypedInterface())
    with pytest.raises(FlyteInvalidInputException) as info:
        remote.client.raw.create_task(task_pb2.TaskCreateRequest(id=task_id, spec=task_pb2.TaskSpec(template=template)))
    assert expected in grpc_details(info.value)


def test_unknown_entities_are_not_found(remote):
    with pytest.raises(FlyteEntityNotExistException) as info:
        remote.fetch_task(name="never.registered", version="v1")
    assert "never.registered" in grpc_details(info.value)


def test_launch_plan_needs_its_workflow(remote):
    v = version()
    lp_id = identifier_pb2.Identifier(resource_type=identifier_pb2.LAUNCH_PLAN, project="flytesnacks",
                                      domain="development", name="orphan.lp", version=v)
    wf_id = identifier_pb2.Identifier(resource_type=identifier_pb2.WORKFLOW, project="flytesnacks",
                                      domain="development", name="orphan.wf", version=v)
    with pytest.raises(FlyteInvalidInputException) as info:
        remote.client.raw.create_launch_plan(launch_plan_pb2.LaunchPlanCreateRequest(
            id=lp_id, spec=launch_plan_pb2.LaunchPlanSpec(workflow_id=wf_id)))
    assert "orphan.wf" in grpc_details(info.value) and "not registered" in grpc_details(info.value)


def test_launch_plans_start_inactive_and_activation_is_exclusive(remote, tmp_path):
    module = write_module(tmp_path, PIPELINE)
    v1, v2 = version(), version()
    for v in (v1, v2):
        remote.register_workflow(module.pipeline, serialization_settings=settings(), version=v)
    name = f"{module.__name__}.pipeline"
    assert lp_state(remote, name, v1) == LaunchPlanState.INACTIVE
    with pytest.raises(FlyteEntityNotExistException):
        remote.client.get_active_launch_plan(named_id(name))

    remote.activate_launchplan(remote.fetch_launch_plan(name=name, version=v1).id)
    assert remote.client.get_active_launch_plan(named_id(name)).id.version == v1
    remote.activate_launchplan(remote.fetch_launch_plan(name=name, version=v2).id)
    assert remote.client.get_active_launch_plan(named_id(name)).id.version == v2
    assert lp_state(remote, name, v1) == LaunchPlanState.INACTIVE
    active, _ = remote.client.list_active_launch_plans_paginated("flytesnacks", "development", limit=100)
    assert [lp.id.version for lp in active if lp.id.name == name] == [v2]


def lp_state(remote, name, v):
    lp_id = identifier_pb2.Identifier(resource_type=identifier_pb2.LAUNCH_PLAN, project="flytesnacks",
                                      domain="development", name=name, version=v)
    return remote.client.raw.get_launch_plan(admin_get(lp_id)).closure.state


def named_id(name):
    from flytekit.models.common import NamedEntityIdentifier

    return NamedEntityIdentifier("flytesnacks", "development", name)


def test_listing_versions_with_filters_and_pagination(remote, tmp_path):
    module = write_module(tmp_path, PIPELINE)
    versions = [version() for _ in range(3)]
    for v in versions:
        remote.register_workflow(module.pipeline, serialization_settings=settings(), version=v)
    name = f"{module.__name__}.add"
    from flytekit.models.admin.common import Sort
    from flytekit.models.common import NamedEntityIdentifier

    page1, token = remote.client.list_tasks_paginated(NamedEntityIdentifier("flytesnacks", "development", name),
                                                      limit=2, sort_by=Sort("created_at", Sort.Direction.ASCENDING))
    page2, last = remote.client.list_tasks_paginated(NamedEntityIdentifier("flytesnacks", "development", name),
                                                     limit=2, token=token,
                                                     sort_by=Sort("created_at", Sort.Direction.ASCENDING))
    assert [t.id.version for t in page1 + page2] == versions and last == ""
    only = remote.client.list_tasks_paginated(NamedEntityIdentifier("flytesnacks", "development", name), limit=10,
                                              filters=[filter_eq("version", versions[1])])[0]
    assert [t.id.version for t in only] == [versions[1]]
    names = remote.client.list_task_ids_paginated("flytesnacks", "development", limit=1000)[0]
    assert name in {n.name for n in names}


def filter_eq(field, value):
    from flytekit.models.filters import Filter

    return Filter.from_python_std(f"eq({field},{value})")


def test_projects_are_listed_registered_and_archived(remote, tmp_path):
    from flytekit.models.project import Project

    assert "flytesnacks" in {p.id for p in remote.list_projects()}
    new_id = f"proj-{uuid.uuid4().hex[:6]}"
    remote.client.register_project(Project(new_id, new_id, "made by a test"))
    assert new_id in {p.id for p in remote.list_projects(limit=1000)}
    module = write_module(tmp_path, PIPELINE)
    remote.register_workflow(module.pipeline, serialization_settings=settings(project=new_id), version=version())

    remote.client.update_project(Project(new_id, new_id, "archived by a test", state=Project.ProjectState.ARCHIVED))
    with pytest.raises(FlyteInvalidInputException) as info:
        remote.register_workflow(module.pipeline, serialization_settings=settings(project=new_id), version=version())
    assert f"project [{new_id}] is not active" in grpc_details(info.value)


# -- pyflyte ---------------------------------------------------------------------------------


def pyflyte(sandbox, cwd, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLYTE_SDK_RICH_TRACEBACKS": "0"}
    return subprocess.run([PYFLYTE, "-c", str(sandbox.config_file), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_pyflyte_register_fast_uploads_the_archive_through_dataproxy(sandbox, remote, tmp_path):
    project_dir = tmp_path / "proj"
    module = f"flows_{uuid.uuid4().hex[:8]}"
    project_dir.mkdir()
    (project_dir / f"{module}.py").write_text(PIPELINE)
    v = version()
    first = pyflyte(sandbox, project_dir, "register", "--version", v, f"{module}.py")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Successfully registered 4 entities" in first.stdout

    task = remote.fetch_task(name=f"{module}.add", version=v)
    args = list(task.template.container.args)
    archive = Path(args[args.index("--additional-distribution") + 1])
    assert archive.is_absolute() and archive.is_file()
    assert archive.resolve().is_relative_to(sandbox.data_dir.resolve())
    assert remote.fetch_launch_plan(name=f"{module}.pipeline", version=v).id.version == v

    again = pyflyte(sandbox, project_dir, "register", "--version", v, f"{module}.py")
    assert again.returncode == 0, again.stdout + again.stderr  # identical: treated as already registered

    (project_dir / f"{module}.py").write_text(PIPELINE.replace("2 * x", "4 * x"))
    changed = pyflyte(sandbox, project_dir, "register", "--version", v, f"{module}.py")
    assert changed.returncode != 0
    assert "different structure already exists" in changed.stdout + changed.stderr


# -- bindings are type-checked, as FlyteAdmin's compiler does ---------------------------------

TYPED = """
import enum
import typing
from dataclasses import dataclass

from flytekit import LaunchPlan, conditional, map_task, task, workflow


@task
def to_text(x: int) -> str:
    return str(x)


@task
def texts(n: int) -> typing.List[str]:
    return [str(i) for i in range(n)]


@task
def plus_one(x: int) -> int:
    return x + 1


@task
def total(xs: typing.List[int]) -> int:
    return sum(xs)


@task
def total_named(named: typing.Dict[str, int]) -> int:
    return sum(named.values())


@dataclass
class Point:
    x: int
    label: str


@task
def make_point(x: int) -> Point:
    return Point(x=x, label=str(x))


@workflow
def text_as_output(x: int = 3) -> int:
    return to_text(x=x)


@workflow
def text_into_int(x: int = 3) -> int:
    return plus_one(x=to_text(x=x))


@workflow
def field_into_int(x: int = 3) -> int:
    return plus_one(x=make_point(x=x).label)


@workflow
def text_in_a_list(x: int = 3) -> int:
    return total(xs=[x, to_text(x=x)])


@workflow
def text_in_a_dict(x: int = 3) -> int:
    return total_named(named={"a": x, "b": to_text(x=x)})


@workflow
def inner(x: int) -> int:
    return plus_one(x=x)


@workflow
def text_into_sub_workflow(x: int = 3) -> int:
    return inner(x=to_text(x=x))


inner_lp = LaunchPlan.get_or_create(inner, name="{module}.inner_lp")


@workflow
def text_into_launch_plan(x: int = 3) -> int:
    return inner_lp(x=to_text(x=x))


@workflow
def text_into_branch(x: int = 3) -> int:
    s = to_text(x=x)
    return conditional("sign").if_(x > 0).then(plus_one(x=s)).else_().then(plus_one(x=x))


@workflow
def texts_into_map_task(n: int = 3) -> typing.List[int]:
    return map_task(plus_one)(x=texts(n=n))


# what FlyteAdmin accepts, and so must the sandbox
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class LabelledPoint(Point):
    colour: str = "red"


@task
def describe(n: typing.Optional[int], c: Color, name: str, p: Point,
             ns: typing.List[typing.Optional[int]], empty: typing.List[str]) -> str:
    return f"{n} {c} {name} {p} {ns} {empty}"


@task
def make_labelled(x: int) -> LabelledPoint:
    return LabelledPoint(x=x, label="l")


@task
def colour() -> Color:
    return Color.BLUE


@workflow
def castable(x: int = 3, c: str = "red") -> str:
    return describe(n=x, c=c, name=colour(), p=make_labelled(x=x), ns=[x, plus_one(x=x)], empty=[])
"""


@pytest.mark.parametrize("workflow, node, fragments", [
    ("text_as_output", "end-node", ["'to_text.o0' has type [simple:STRING]", "'o0' which has type [simple:INTEGER]"]),
    ("text_into_int", "n1", ["'to_text.o0' has type [simple:STRING]", "'plus_one.x' which has type [simple:INTEGER]"]),
    ("field_into_int", "n1", ["'make_point.o0' has type [simple:STRING]", "'plus_one.x'"]),
    ("text_in_a_list", "n1", ["'to_text.o0' has type [simple:STRING]", "'total.xs' which has type [simple:INTEGER]"]),
    ("text_in_a_dict", "n1", ["'to_text.o0' has type [simple:STRING]", "'total_named.named'"]),
    ("text_into_sub_workflow", "n1", ["'to_text.o0' has type [simple:STRING]", "which has type [simple:INTEGER]"]),
    ("text_into_launch_plan", "n1", ["'to_text.o0' has type [simple:STRING]", "which has type [simple:INTEGER]"]),
    ("text_into_branch", "n1-n0", ["'to_text.o0' has type [simple:STRING]", "'plus_one.x'"]),
    ("texts_into_map_task", "n1", ["has type [collection_type:{simple:STRING}]",
                                   "which has type [collection_type:{simple:INTEGER}]"]),
])
def test_bindings_that_do_not_type_check_are_refused_naming_node_variable_and_types(
        remote, tmp_path, workflow, node, fragments):
    name = f"typed_{uuid.uuid4().hex[:8]}"
    module = write_module(tmp_path, TYPED.replace("{module}", name), name)
    v = version()
    with pytest.raises(FlyteInvalidInputException) as info:
        remote.register_workflow(getattr(module, workflow), serialization_settings=settings(), version=v)
    details = grpc_details(info.value)
    assert details.startswith(f"failed to compile workflow for [flytesnacks/development/{name}.{workflow}/{v}]")
    assert f"Code: MismatchingTypes, Node Id: {node}," in details
    for fragment in fragments:
        assert fragment in details
    with pytest.raises(FlyteEntityNotExistException):
        remote.fetch_workflow(name=f"{name}.{workflow}", version=v)  # nothing was stored


def test_bindings_flyteadmin_casts_are_accepted(remote, tmp_path):
    # int -> Optional[int], str -> enum, enum -> str, a child dataclass for its parent, [] for any list
    name = f"typed_{uuid.uuid4().hex[:8]}"
    module = write_module(tmp_path, TYPED.replace("{module}", name), name)
    fetched = remote.register_workflow(module.castable, serialization_settings=settings(), version=version())
    assert fetched.id.name == f"{name}.castable"
