"""register.py: serialization to placeholder protos, hydration, the .pb file format (no backend); and
the order and overlap of the Create RPCs against the sandbox."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import threading
import time
import uuid

import pytest

from fastreg_magic import register, specs
from fastreg_magic.errors import RegistrationError

SOURCE = textwrap.dedent(
    """
    from flytekit import LaunchPlan, task, workflow

    @task
    def double(n: int) -> int:
        return n * 2

    @task
    def shout(s: str) -> str:
        return s.upper()

    @workflow
    def inner(n: int) -> int:
        return double(n=n)

    @workflow
    def outer(n: int = 2, s: str = "hi") -> str:
        m = inner(n=n)
        return shout(s=s)

    fixed = LaunchPlan.get_or_create(outer, name="reg_ents.fixed", fixed_inputs={"n": 5})
    """
)


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    path = tmp_path_factory.mktemp("mods") / "reg_ents.py"
    path.write_text(SOURCE)
    spec = importlib.util.spec_from_file_location("reg_ents", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["reg_ents"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("reg_ents", None)


@pytest.fixture(scope="module")
def serialized(module):
    config = register.image_config(["ghcr.io/acme/ml:1"])
    settings = register.serialization_settings(config, "v1", "/root")
    return register.serialize(register.module_entities(module), settings)


def test_module_entities_are_what_the_module_defines(module):
    names = [getattr(e, "name", None) for e in register.module_entities(module)]
    assert names == ["reg_ents.double", "reg_ents.shout", "reg_ents.inner", "reg_ents.outer", "reg_ents.fixed"]


def test_serialize_covers_closure_and_default_launch_plans(serialized):
    kinds = {(s.kind, s.name) for s in serialized}
    assert kinds == {
        ("task", "reg_ents.double"), ("task", "reg_ents.shout"),
        ("workflow", "reg_ents.inner"), ("workflow", "reg_ents.outer"),
        ("launch_plan", "reg_ents.inner"), ("launch_plan", "reg_ents.outer"), ("launch_plan", "reg_ents.fixed"),
    }
    # tasks come before the workflows that use them (flytekit's translator order)
    order = [s.name for s in serialized]
    assert order.index("reg_ents.double") < order.index("reg_ents.inner")


def test_serialized_protos_are_project_independent(serialized):
    task = next(s for s in serialized if s.kind == "task")
    assert task.proto.template.id.project == specs.PROJECT_PLACEHOLDER
    assert task.proto.template.id.version == "v1"
    args = list(task.proto.template.container.args)
    assert args[:5] == ["pyflyte-fast-execute", "--additional-distribution", specs.ARCHIVE_PLACEHOLDER, "--dest-dir", "/root"]
    assert "reg_ents" in args and "double" in args
    assert task.proto.template.container.image == "ghcr.io/acme/ml:1"


def test_hydrate_fills_every_identifier_and_the_archive(serialized):
    hydrated = [
        specs.hydrate(s, project="p1", domain="d1", archive_uri="s3://b/fastabc.tar.gz", service_account="sa",
                         raw_output_prefix="s3://b/raw")
        for s in serialized
    ]
    text = b"".join(h.proto.SerializeToString() for h in hydrated)
    assert b"registration.project" not in text and b"registration.domain" not in text
    assert b"remote_package_path" not in text
    outer = next(h for h in hydrated if h.kind == "workflow" and h.name == "reg_ents.outer")
    refs = [n.task_node.reference_id for n in outer.proto.template.nodes if n.HasField("task_node")]
    assert refs and all((r.project, r.domain, r.version) == ("p1", "d1", "v1") for r in refs)
    lp = next(h for h in hydrated if h.kind == "launch_plan" and h.name == "reg_ents.fixed")
    assert lp.proto.spec.workflow_id.project == "p1"
    assert lp.proto.spec.security_context.run_as.k8s_service_account == "sa"
    assert lp.proto.spec.raw_output_data_config.output_location_prefix == "s3://b/raw"
    task = next(h for h in hydrated if h.kind == "task")
    assert "s3://b/fastabc.tar.gz" in task.proto.template.container.args
    # the input serialized are untouched (hydrate copies)
    assert serialized[0].proto.template.id.project == specs.PROJECT_PLACEHOLDER


def test_dependencies_order_launch_plans_after_workflows(serialized):
    hydrated = [specs.hydrate(s, project="p", domain="d", archive_uri="x") for s in serialized]
    by_name = {(h.kind, h.name): h for h in hydrated}
    outer_deps = specs.dependencies(by_name[("workflow", "reg_ents.outer")])
    assert specs.identity_key(by_name[("task", "reg_ents.shout")].identifier) in outer_deps
    lp_deps = specs.dependencies(by_name[("launch_plan", "reg_ents.fixed")])
    assert specs.identity_key(by_name[("workflow", "reg_ents.outer")].identifier) in lp_deps


def test_pb_files_round_trip(serialized, tmp_path):
    written = specs.write_specs(serialized, tmp_path)
    assert [p.name for p in written][0].startswith("0_reg_ents.")
    assert {p.name[-5:] for p in written} == {"_1.pb", "_2.pb", "_3.pb"}
    back = specs.read_specs(tmp_path)
    assert [(s.kind, s.name) for s in back] == [(s.kind, s.name) for s in serialized]
    assert [s.proto for s in back] == [s.proto for s in serialized]


def test_read_specs_refuses_foreign_files(tmp_path):
    (tmp_path / "notes.pb").write_bytes(b"xx")
    with pytest.raises(RegistrationError, match="not a serialized entity file"):
        specs.read_specs(tmp_path)


def test_bad_image_names_the_value():
    with pytest.raises(RegistrationError, match="spark="):
        register.image_config(["spark="])


def test_unserializable_entity_is_refused_before_any_rpc(tmp_path):
    path = tmp_path / "reg_bad.py"
    path.write_text(textwrap.dedent(
        """
        from flytekit import task, workflow
        from flytekit.core.base_task import PythonTask

        @task
        def t(n: int) -> int:
            return n

        @workflow
        def wf(n: int) -> int:
            return t(n=n)
        """
    ))
    spec = importlib.util.spec_from_file_location("reg_bad", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["reg_bad"] = mod
    spec.loader.exec_module(mod)
    config = register.image_config([])
    settings = register.serialization_settings(config, "v1", ".")
    settings.image_config = None  # an image config that flytekit cannot serialize with
    with pytest.raises(RegistrationError, match="cannot be serialized"):
        register.serialize(register.module_entities(mod), settings)


WIDE = """
from flytekit import task, workflow

{tasks}

@workflow
def gather(n: int = 1) -> int:
    results = [{calls}]
    return results[0]
"""


class SlowClient:
    """flytekit's raw client one simulated network round trip away; records when each Create ran."""

    ROUND_TRIP_S = 0.2  # long beside starting a dozen threads, even on a loaded machine

    def __init__(self, client):
        self.client = client
        self.spans: list[tuple[str, str, float, float]] = []
        self._lock = threading.Lock()

    def _timed(self, kind: str, call, request):
        start = time.monotonic()
        time.sleep(self.ROUND_TRIP_S)
        try:
            return call(request)
        finally:
            with self._lock:
                self.spans.append((kind, request.id.name, start, time.monotonic()))

    def create_task(self, request):
        return self._timed("task", self.client.create_task, request)

    def create_workflow(self, request):
        return self._timed("workflow", self.client.create_workflow, request)

    def create_launch_plan(self, request):
        return self._timed("launch_plan", self.client.create_launch_plan, request)


def test_creates_go_out_in_dependency_waves_each_wave_at_once(sandbox, tmp_path):
    """12 independent tasks are created side by side, then their workflow, then its launch plan: three
    round trips to a distant backend, not fourteen; and nothing waits less than what it needs."""
    from flytekit.clients.raw import RawSynchronousFlyteClient
    from flytekit.configuration import Config

    name = f"wide_{uuid.uuid4().hex[:8]}"
    tasks = "\n".join(f"@task\ndef t{i}(n: int) -> int:\n    return n + {i}\n" for i in range(12))
    (tmp_path / f"{name}.py").write_text(WIDE.format(tasks=tasks, calls=", ".join(f"t{i}(n=n)" for i in range(12))))
    spec = importlib.util.spec_from_file_location(name, tmp_path / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
        settings = register.serialization_settings(register.image_config(["ghcr.io/acme/ml:1"]), "v1", ".",
                                                   project="flytesnacks", domain="development")
        serialized = register.serialize(register.module_entities(mod), settings)
    finally:
        sys.modules.pop(name, None)
    hydrated = [specs.hydrate(s, project="flytesnacks", domain="development", archive_uri="file:///w.tar.gz")
                for s in serialized]
    client = SlowClient(RawSynchronousFlyteClient(Config.auto(str(sandbox.config_file)).platform))

    assert register.register_specs(client, hydrated) == 14

    by_kind = {kind: [(start, end) for k, _, start, end in client.spans if k == kind]
               for kind in ("task", "workflow", "launch_plan")}
    assert [len(v) for v in by_kind.values()] == [12, 1, 1]
    last_task_done = max(end for _, end in by_kind["task"])
    assert by_kind["workflow"][0][0] >= last_task_done  # compiled against tasks that exist
    assert by_kind["launch_plan"][0][0] >= by_kind["workflow"][0][1]
    # every task was in flight at once: each started before any had finished
    assert max(start for start, _ in by_kind["task"]) < min(end for _, end in by_kind["task"])
