"""%%flyte_fast against the real embedded sandbox, read back with stock flytekit.

Create RPCs are counted with a real gRPC client interceptor on the registration client's channel.
"""

from __future__ import annotations

import os
import tarfile
from datetime import timedelta
import textwrap
import uuid

import fsspec
import pytest
from sandbox_support import counting_admin_calls
from IPython.core.error import UsageError

from fastreg_magic import config

CELL = textwrap.dedent(
    """
    from flytekit import task, workflow

    @task
    def double(n: int) -> int:
        return n * 2

    @task
    def describe(n: int) -> str:
        return f"value={n}"

    @workflow
    def pipeline(n: int = 3) -> str:
        return describe(n=double(n=n))
    """
)


@pytest.fixture(scope="module")
def shell(sandbox_shell):
    return sandbox_shell


@pytest.fixture(scope="module")
def backend(sandbox):
    return config.resolve_backend(config_file=str(sandbox.config_file))


@pytest.fixture
def counter(backend):
    """Counts every Admin RPC the kernel sends to the backend from now on (one shared client)."""
    with counting_admin_calls(backend) as counter:
        yield counter


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def magic(shell, line, cell):
    return shell.run_cell_magic("flyte_fast", line, cell)


def test_register_and_read_back_with_stock_flytekit(shell, remote, workdir, counter):
    mod = unique("rb")
    reg = magic(shell, f"-m {mod}", CELL)
    assert reg.registered and reg.uploaded
    assert reg.backend.is_sandbox and reg.backend.label.startswith("embedded sandbox")
    wf = remote.fetch_workflow(name=f"{mod}.pipeline", version=reg.version)
    assert wf.id.version == reg.version
    task = remote.fetch_task(name=f"{mod}.double", version=reg.version)
    args = list(task.template.container.args)
    assert args[:3] == ["pyflyte-fast-execute", "--additional-distribution", reg.archive_uri]
    assert [a for a in args if a.startswith(mod)] or mod in args
    lp = remote.fetch_launch_plan(name=f"{mod}.pipeline", version=reg.version)
    assert lp.id.name == f"{mod}.pipeline"
    assert sorted(counter.creates()) == ["CreateLaunchPlan", "CreateTask", "CreateTask", "CreateWorkflow"]
    assert {e.name for e in reg.entities} == {f"{mod}.double", f"{mod}.describe", f"{mod}.pipeline"}
    assert all(e.url is None for e in reg.entities)  # the sandbox has no console


def test_archive_members_are_the_shipped_files(shell, workdir):
    (workdir / "mylib").mkdir()
    (workdir / "mylib" / "__init__.py").write_text("")
    (workdir / "mylib" / "ops.py").write_text("def inc(x):\n    return x + 1\n")
    (workdir / "notes.txt").write_text("not imported\n")
    mod = unique("arch")
    cell = "from mylib.ops import inc\n" + CELL + "\n@task\ndef plus(n: int) -> int:\n    return inc(n)\n"
    reg = magic(shell, f"-m {mod}", cell)
    with fsspec.open(reg.archive_uri, "rb") as f, tarfile.open(fileobj=f, mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert sorted(members) == sorted(["mylib/__init__.py", "mylib/ops.py", f"{mod}.py"])
    assert members["mylib/ops.py"] == b"def inc(x):\n    return x + 1\n"
    assert b"def plus" in members[f"{mod}.py"]
    assert sorted(members) == sorted(reg.files)


def test_unchanged_rerun_sends_nothing(shell, workdir, counter):
    mod = unique("same")
    first = magic(shell, f"-m {mod}", CELL)
    counter.calls.clear()
    again = magic(shell, f"-m {mod}", CELL)
    assert counter.calls == []
    assert (again.uploaded, again.registered) == (False, False)
    assert again.version == first.version and again.archive_uri == first.archive_uri
    assert again.entities == first.entities and again.files == first.files
    assert again.timings["upload"] == 0.0 and again.timings["register"] == 0.0


def test_changed_rerun_registers_a_new_version(shell, remote, workdir, counter):
    mod = unique("chg")
    first = magic(shell, f"-m {mod}", CELL)
    counter.calls.clear()
    changed = magic(shell, f"-m {mod}", CELL.replace("n * 2", "n * 4"))
    assert changed.version != first.version and changed.uploaded and changed.registered
    assert len(counter.creates()) == 4
    assert remote.fetch_task(name=f"{mod}.double", version=changed.version).id.version == changed.version


def test_activate(shell, remote, workdir):
    mod = unique("act")
    reg = magic(shell, f"-m {mod} --activate", CELL)
    lp = remote.client.get_launch_plan(remote.fetch_launch_plan(name=f"{mod}.pipeline", version=reg.version).id)
    assert lp.closure.state == 1  # ACTIVE


def test_activating_a_scheduled_launch_plan_on_the_sandbox_says_it_will_not_run_by_itself(shell, workdir):
    scheduled = CELL + textwrap.dedent(
        """
        from flytekit import CronSchedule, LaunchPlan

        nightly = LaunchPlan.get_or_create(pipeline, name="nightly", schedule=CronSchedule(schedule="0 3 * * *"))
        """
    )
    mod = unique("cron")
    reg = magic(shell, f"-m {mod} --activate", scheduled)
    assert reg.warnings == ("launch plan nightly is active with a schedule, but the embedded sandbox runs no "
                            "schedules: launch it yourself, or register to a Flyte cluster",)
    assert magic(shell, f"-m {mod}", scheduled).warnings == ()  # not activated: nothing to say


def test_distribution_dir_file_url(shell, workdir, tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    mod = unique("fsdist")
    reg = magic(shell, f"-m {mod} --distribution-dir {dist.as_uri()}", CELL)
    assert reg.archive_uri.startswith(dist.as_uri())
    with fsspec.open(reg.archive_uri, "rb") as f:
        assert tarfile.open(fileobj=f, mode="r:gz").getnames()
    again = magic(shell, f"-m {mod} -d staging --distribution-dir {dist.as_uri()}", CELL)
    assert again.uploaded is False  # content-addressed object already there


def test_distribution_dir_s3(shell, workdir, s3_endpoint):
    import s3fs

    s3 = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    s3.mkdir("dists")
    mod = unique("s3dist")
    reg = magic(shell, f"-m {mod} --distribution-dir s3://dists/fast", CELL)
    assert reg.archive_uri.startswith("s3://dists/fast/") and reg.uploaded
    with s3.open(reg.archive_uri, "rb") as f:
        names = tarfile.open(fileobj=f, mode="r:gz").getnames()
    assert f"{mod}.py" in names


def test_unknown_project_registers_nothing(shell, workdir, counter):
    with pytest.raises(UsageError, match="Project 'no-such-project' does not exist"):
        magic(shell, f"-m {unique('proj')} -p no-such-project", CELL)
    assert counter.creates() == []


def test_unknown_domain(shell, workdir, counter):
    with pytest.raises(UsageError, match="Domain 'nowhere'"):
        magic(shell, f"-m {unique('dom')} -d nowhere", CELL)
    assert counter.creates() == []


def test_version_conflict_shows_flyteadmins_refusal(shell, workdir):
    mod = unique("conf")
    magic(shell, f"-m {mod} --version pinned-1", CELL)
    with pytest.raises(UsageError, match="different structure"):
        magic(shell, f"-m {mod} --version pinned-1", CELL.replace("-> str:\n    return f", "-> str:\n    return 'x' + f"))


def test_backend_unreachable_names_the_endpoint(shell, workdir):
    with pytest.raises(UsageError, match=r"127\.0\.0\.1:1 is unreachable.*--endpoint"):
        magic(shell, f"-m {unique('down')} --endpoint 127.0.0.1:1", CELL)


def test_missing_config_file(shell, workdir):
    with pytest.raises(UsageError, match="does-not-exist.yaml does not exist"):
        magic(shell, f"-m {unique('cfg')} --config does-not-exist.yaml", CELL)


def test_archive_too_large(shell, workdir):
    (workdir / "blob.bin").write_bytes(os.urandom(2 * 1024 * 1024))  # incompressible
    shell.run_line_magic("config", "FlyteFast.max_archive_mib = 1")
    try:
        with pytest.raises(UsageError, match="blob.bin"):
            magic(shell, f"-m {unique('big')} --copy all", CELL)
    finally:
        shell.run_line_magic("config", "FlyteFast.max_archive_mib = 100")


def test_launch_returns_outputs(shell, workdir):
    mod = unique("run")
    reg = magic(shell, f"-m {mod}", CELL)
    run = reg.launch(n=5).wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert list(run.outputs.values()) == ["value=10"]
    assert reg.runs == [run]


def test_an_imperative_workflow_and_a_reference_launch_plan_in_cells(shell, workdir):
    """`Workflow("name")` records no module, and a reference launch plan has no workflow: the first
    is registered with its launch plan, the second is left to the backend that has it."""
    source = magic(shell, f"-m {unique('imp')}", textwrap.dedent(
        """
        from flytekit import task, Workflow, LaunchPlan

        @task
        def inc(x: int) -> int:
            return x + 1

        built = Workflow(name="built_by_hand")
        built.add_workflow_input("x", int)
        node = built.add_entity(inc, x=built.inputs["x"])
        built.add_workflow_output("out", node.outputs["o0"])
        by_hand = LaunchPlan.get_or_create(built, name="by_hand_lp", default_inputs={"x": 10})
        """
    ))
    assert {(e.kind, e.name) for e in source.entities} >= {("workflow", "built_by_hand"), ("launch_plan", "by_hand_lp")}
    run = source.launch("built_by_hand", x=1).wait(timeout=120)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"out": 2}), run.error

    user = magic(shell, f"-m {unique('ref')}", textwrap.dedent(
        f"""
        from typing import NamedTuple
        from flytekit import workflow, reference_launch_plan

        @reference_launch_plan(project="flytesnacks", domain="development", name="by_hand_lp",
                               version="{source.version}")
        def by_hand(x: int) -> NamedTuple("Built", [("out", int)]):
            ...

        @workflow
        def through_reference(x: int = 5) -> int:
            return by_hand(x=x)  # its one output, `out`
        """
    ))
    assert not any(e.name == "by_hand_lp" for e in user.entities)
    run = user.launch("through_reference").wait(timeout=120)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 6}), run.error


def test_a_cell_builds_on_a_task_of_an_earlier_cell_of_the_same_module(shell, workdir):
    """Two %%flyte_fast cells of one notebook share its module name; the second calls the first's
    task, which reads a helper and a constant kept in the first cell's module, not the notebook's."""
    mod = unique("steps")
    first = magic(shell, f"-m {mod}", textwrap.dedent(
        """
        from flytekit import task

        OFFSET = 10

        def shifted(n):
            return n + OFFSET

        @task
        def shift(n: int) -> int:
            return shifted(n)
        """
    ))
    assert shell.user_ns["shifted"](1) == 11  # what the cell defines is the notebook's, as after a plain cell
    second = magic(shell, f"-m {mod}", textwrap.dedent(
        """
        from flytekit import task, workflow

        @task
        def double(n: int) -> int:
            return n * 2

        @workflow
        def steps(n: int = 1) -> int:
            return double(n=shift(n=n))
        """
    ))
    assert second.version != first.version
    assert "def shifted (defined in an earlier cell)" in second.lifted
    run = second.launch("steps", n=3).wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert list(run.outputs.values()) == [26]
    assert shell.user_ns["steps"](n=3) == 26  # and the same locally


def test_an_eager_workflow_reaches_this_sandbox_whatever_cluster_the_user_configured(shell, workdir, monkeypatch):
    """An eager workflow's task calls FlyteAdmin from inside its own process to run each task. The
    sandbox points it at itself, even when the user's environment names another cluster."""
    elsewhere = workdir / "elsewhere.yaml"
    elsewhere.write_text("admin:\n  endpoint: dns:///127.0.0.1:1\n  insecure: true\n")  # nothing listens there
    monkeypatch.setenv("FLYTECTL_CONFIG", str(elsewhere))
    monkeypatch.setenv("_FLYTECTL_CONFIG_PYFLYTE_OVERRIDE", str(elsewhere))
    reg = magic(shell, f"-m {unique('eager')}", textwrap.dedent(
        """
        from flytekit import eager, task

        @task
        def add_one(x: int) -> int:
            return x + 1

        @eager
        async def twice_plus_one(x: int = 1) -> int:
            return add_one(x=add_one(x=x))
        """
    ))
    run = reg.launch("twice_plus_one", x=3).wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert list(run.outputs.values()) == [5]


def counting_task(ran, cache_version: str) -> str:
    """A cached task `count(x) = 10 x` that appends x to the file ``ran`` each time it really runs."""
    return textwrap.dedent(
        f"""
        from flytekit import task, workflow

        @task(cache=True, cache_version={cache_version!r})
        def count(x: int) -> int:
            with open({str(ran)!r}, "a") as log:
                log.write(f"{{x}}\\n")
            return x * 10
        """
    )


def test_a_cached_task_runs_once_per_input_until_its_cache_version_changes(shell, remote, workdir):
    """As Flyte's datacatalog does: the second run with the same input takes the outputs without
    running the task (CACHE_HIT); another input, overwrite_cache or a new cache_version runs it."""
    from flyteidl.core.catalog_pb2 import CatalogCacheStatus

    ran = workdir / "ran.txt"
    mod = unique("cached")
    flow = textwrap.dedent(
        """
        @workflow
        def flow(x: int = 1) -> int:
            return count(x=x)
        """
    )

    def run(reg, x, **options):
        if options:
            lp = remote.fetch_launch_plan(name=f"{mod}.flow", version=reg.version)
            execution = remote.wait(remote.execute(lp, inputs={"x": x}, **options), timeout=timedelta(minutes=5))
            name = execution.id.name
        else:
            launched = reg.launch("flow", x=x).wait(timeout=300)
            assert launched.phase == "SUCCEEDED", launched.error
            name = launched.name
        execution = remote.sync_execution(remote.fetch_execution(name=name), sync_nodes=True)
        node = execution.node_executions["n0"]
        status = node.closure.task_node_metadata.cache_status
        if not options:  # the run's node table says so too
            rows = {row.node: row for row in launched.nodes()}
            assert rows["n0"].cached == (status == CatalogCacheStatus.CACHE_HIT)
        return execution.outputs["o0"], status

    first = magic(shell, f"-m {mod}", counting_task(ran, "1") + flow)
    assert run(first, 2) == (20, CatalogCacheStatus.CACHE_POPULATED)
    assert run(first, 2) == (20, CatalogCacheStatus.CACHE_HIT)
    assert ran.read_text().split() == ["2"]  # the hit did not run the task
    assert run(first, 3) == (30, CatalogCacheStatus.CACHE_POPULATED)
    assert run(first, 2, overwrite_cache=True) == (20, CatalogCacheStatus.CACHE_POPULATED)
    bumped = magic(shell, f"-m {mod}", counting_task(ran, "2") + flow)
    assert run(bumped, 2) == (20, CatalogCacheStatus.CACHE_POPULATED)
    assert ran.read_text().split() == ["2", "3", "2", "2"]


def test_a_map_task_over_a_cached_task_runs_only_the_elements_not_seen_before(shell, remote, workdir):
    from flyteidl.core.catalog_pb2 import CatalogCacheStatus

    ran = workdir / "ran.txt"
    mod = unique("cachedmap")
    reg = magic(shell, f"-m {mod}", counting_task(ran, "1") + textwrap.dedent(
        """
        from typing import List

        from flytekit import map_task

        @workflow
        def each(xs: List[int]) -> List[int]:
            return map_task(count)(x=xs)
        """
    ))

    def run(xs):
        launched = reg.launch("each", xs=xs).wait(timeout=300)
        assert launched.phase == "SUCCEEDED", launched.error
        execution = remote.sync_execution(remote.fetch_execution(name=launched.name), sync_nodes=True)
        elements = execution.node_executions["n0"].task_executions[-1].closure.metadata.external_resources
        statuses = [e.cache_status for e in sorted(elements, key=lambda e: e.index)]
        rows = {row.node: row for row in launched.nodes()}
        assert [e.cached for e in rows["n0"].children] == [s == CatalogCacheStatus.CACHE_HIT for s in statuses]
        return launched.outputs["o0"], statuses

    populated, hit = CatalogCacheStatus.CACHE_POPULATED, CatalogCacheStatus.CACHE_HIT
    assert run([5, 6]) == ([50, 60], [populated, populated])
    assert run([5, 6, 7]) == ([50, 60, 70], [hit, hit, populated])
    assert sorted(ran.read_text().split()) == ["5", "6", "7"]


def test_terminal_shows_a_text_summary(shell, workdir, capsys):
    mod = unique("txt")
    capsys.readouterr()
    shell.run_cell(f"%%flyte_fast -m {mod}\n{CELL}", store_history=True)
    shown = capsys.readouterr().out
    reg = shell.user_ns["_"]
    assert reg.version in shown and mod in shown


def test_flyte_watch_attaches_to_a_run_started_elsewhere(shell, remote, workdir):
    mod = unique("watch")
    reg = magic(shell, f"-m {mod}", CELL)
    lp = remote.fetch_launch_plan(name=f"{mod}.pipeline", version=reg.version)
    execution = remote.execute(lp, inputs={"n": 2})
    run = shell.run_line_magic("flyte_watch", execution.id.name)
    assert run.wait(timeout=300).phase == "SUCCEEDED", run.error
    assert list(run.outputs.values()) == ["value=4"]


def test_flyte_watch_unknown_execution(shell, workdir):
    with pytest.raises(UsageError, match="no-such-run"):
        shell.run_line_magic("flyte_watch", "no-such-run")


def test_big_archive_shows_upload_progress(shell, workdir, capsys):
    (workdir / "weights.bin").write_bytes(os.urandom(6 * 1024 * 1024))  # incompressible, over the progress threshold
    capsys.readouterr()
    reg = magic(shell, f"-m {unique('bigup')} --copy all", CELL)
    shown = capsys.readouterr().out
    assert reg.uploaded and "weights.bin" in reg.files
    assert "Uploading the archive: 100%" in shown


def test_upload_refused_registers_nothing(shell, workdir, counter, s3_endpoint):
    with pytest.raises(UsageError, match="no-such-bucket"):
        magic(shell, f"-m {unique('refused')} --distribution-dir s3://no-such-bucket/fast", CELL)
    assert counter.creates() == []


def with_fixed_launch_plan(mod: str, workflows: str) -> str:
    """CELL plus a launch plan `fixed` of `pipeline` (n=7), plus the workflows given (which may call it)."""
    return CELL + textwrap.dedent(
        f"""
        from flytekit import LaunchPlan

        fixed = LaunchPlan.get_or_create(pipeline, name="{mod}.fixed", fixed_inputs={{"n": 7}})
        """
    ) + textwrap.dedent(workflows)


def test_workflow_calling_a_launch_plan_registers_in_dependency_order(shell, remote, workdir):
    mod = unique("lpnode")
    cell = with_fixed_launch_plan(mod, """
        @workflow
        def outer() -> str:
            return fixed()
        """)
    reg = magic(shell, f"-m {mod}", cell)
    names = {(e.kind, e.name) for e in reg.entities}
    assert ("launch_plan", f"{mod}.fixed") in names and ("workflow", f"{mod}.outer") in names
    wf = remote.fetch_workflow(name=f"{mod}.outer", version=reg.version)
    assert wf.id.version == reg.version


def test_runs_link_to_the_backends_console(shell, remote, workdir, sandbox):
    """With a console configured, launched and watched runs carry its execution URL."""
    import dataclasses

    reg = magic(shell, f"-m {unique('console')}", CELL)
    console = "http://console.example:8088/console"
    # Entity URLs stay None here, so the run's URL can only come from the backend's console.
    elsewhere = dataclasses.replace(reg, backend=dataclasses.replace(reg.backend, console_url=console))
    run = elsewhere.launch(n=1)
    assert run.url == f"{console}/projects/flytesnacks/domains/development/executions/{run.name}"

    cluster = workdir / "cluster.yaml"
    cluster.write_text(
        f"admin:\n  endpoint: dns:///{sandbox.endpoint}\n  insecure: true\n"
        "console:\n  endpoint: http://console.example:8088\n"
    )
    watched = shell.run_line_magic("flyte_watch", f"{run.name} --config {cluster}")
    assert watched.url == f"{console}/projects/flytesnacks/domains/development/executions/{run.name}"
    assert watched.wait(timeout=300).phase == "SUCCEEDED", watched.error


def test_explicit_version_conflict_registers_nothing_new(shell, remote, workdir, counter):
    """New entities plus a changed one under a taken --version: refused before any Create, naming the changed one."""
    mod = unique("pinned")
    magic(shell, f"-m {mod} --version v1", CELL)
    counter.calls.clear()
    grown = CELL.replace("n * 2", "n * 3") + "\n@task\ndef extra(n: int) -> int:\n    return n - 1\n"
    with pytest.raises(UsageError, match=rf"'v1'.*different structure.*task '{mod}\.double'.*--version") as info:
        magic(shell, f"-m {mod} --version v1", grown)
    # Every task's command names the new archive, so both tasks differ; the workflow's graph did not change.
    assert f"task '{mod}.describe'" in str(info.value) and "pipeline" not in str(info.value)
    assert counter.creates() == []
    assert {"GetTask", "GetWorkflow", "GetLaunchPlan"} <= set(counter.calls)
    with pytest.raises(Exception, match="extra"):
        remote.fetch_task(name=f"{mod}.extra", version="v1")


def test_explicit_version_workflow_change_is_refused_first(shell, workdir, counter):
    mod = unique("pinwf")
    magic(shell, f"-m {mod} --version v1", CELL)
    counter.calls.clear()
    rewired = CELL.replace("return describe(n=double(n=n))", "return describe(n=n)")
    with pytest.raises(UsageError, match=rf"workflow '{mod}\.pipeline'"):
        magic(shell, f"-m {mod} --version v1", rewired + "\n@task\ndef extra(n: int) -> int:\n    return n\n")
    assert counter.creates() == []


def test_explicit_version_identical_rerun_is_idempotent(shell, workdir, counter):
    """The same cell under the same --version after a memo reset (a kernel restart) is accepted."""
    from fastreg_magic import api

    mod = unique("pinsame")
    cell = with_fixed_launch_plan(mod, """
        @workflow
        def outer(m: int = 2) -> str:
            return fixed()

        @workflow
        def nested(k: int = 1) -> str:
            return pipeline(n=double(n=k))
        """)
    first = magic(shell, f"-m {mod} --version v1", cell)
    api.forget_registrations()
    counter.calls.clear()
    again = magic(shell, f"-m {mod} --version v1", cell)
    assert again.registered and again.version == first.version == "v1"
    assert counter.creates()  # sent again; FlyteAdmin answers ALREADY_EXISTS, which is success


def test_endpoint_of_the_sandbox_is_recognised(shell, sandbox, workdir, capsys):
    """`--endpoint HOST:PORT` of a running sandbox: shown as the sandbox, with no console links that lead nowhere."""
    capsys.readouterr()
    shell.run_cell(f"%%flyte_fast -m {unique('ep')} --endpoint {sandbox.endpoint}\n{CELL}", store_history=True)
    shown = capsys.readouterr().out
    reg = shell.user_ns["_"]
    assert reg.registered
    assert f"embedded sandbox ({sandbox.endpoint})" in shown and "/console" not in shown
    assert reg.backend.is_sandbox and reg.backend.console_url is None
    assert reg.backend.label == f"embedded sandbox ({sandbox.endpoint})"
    assert all(e.url is None for e in reg.entities)
    run = reg.launch(n=1)
    assert run.url is None
    assert run.wait(timeout=300).phase == "SUCCEEDED", run.error


def test_hand_written_config_of_the_sandbox_is_recognised(shell, sandbox, workdir):
    handmade = workdir / "handmade.yaml"
    handmade.write_text(f"admin:\n  endpoint: dns:///{sandbox.endpoint}\n  insecure: true\n")
    reg = magic(shell, f"-m {unique('cfg')} --config {handmade}", CELL)
    assert reg.backend.is_sandbox and reg.backend.console_url is None
    assert reg.backend.label == f"embedded sandbox ({sandbox.endpoint})"
    assert all(e.url is None for e in reg.entities)



@pytest.mark.parametrize("stamp", [False, True], ids=["file default", "file and a stamp taken as it runs"])
def test_a_default_that_differs_in_every_kernel_still_registers_in_a_new_kernel(sandbox, tmp_path, stamp):
    """A workflow default computed when the module runs (a time stamp): the same cell in a second kernel
    serializes another launch plan for the same files. It gets a version of its own instead of
    FlyteAdmin's "different structure" refusal, and runs. A default file alone is stored by its content,
    so both kernels register one version."""
    import json
    import subprocess
    import sys

    (tmp_path / "greeting.txt").write_text("hello from a default file")
    extra = ", stamp: str = str(time.time_ns())" if stamp else ""
    code = textwrap.dedent(
        f"""
        import json
        from fastreg_magic import fast_register
        source = '''
        import time
        from flytekit import task, workflow
        from flytekit.types.file import FlyteFile

        @task
        def head(ff: FlyteFile) -> str:
            with open(ff) as handle:
                return handle.read()

        @workflow
        def first_line(ff: FlyteFile = {str(tmp_path / "greeting.txt")!r}{extra}) -> str:
            return head(ff=ff)
        '''
        reg = fast_register(source, module="default_file_flow", config_file={str(sandbox.config_file)!r},
                            source_root={str(tmp_path)!r})
        run = reg.launch("first_line").wait(timeout=300)
        print(json.dumps([reg.version, run.phase, run.outputs]))
        """
    )
    kernels = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
               for _ in range(2)]
    results = []
    for kernel in kernels:
        assert kernel.returncode == 0, kernel.stderr[-3000:]
        results.append(json.loads(kernel.stdout.strip().splitlines()[-1]))
    (first, *ran_first), (second, *ran_second) = results
    assert ran_first == ran_second == ["SUCCEEDED", {"o0": "hello from a default file"}]
    assert (first != second) if stamp else (first == second)


def test_a_workflow_returning_a_list_or_dict_of_task_outputs_registers_and_runs(shell, workdir):
    """Outputs bound to a collection of promises: FlyteAdmin compiles them; so must the sandbox."""
    reg = magic(shell, f"-m {unique('fan')}", textwrap.dedent(
        """
        from flytekit import task, workflow

        @task
        def step(a: int) -> int:
            return a + 2

        @workflow
        def fan(a: int = 0, b: int = 0) -> list[int]:
            return [step(a=a), step(a=b)]

        @workflow
        def named(a: int = 0, b: int = 0) -> dict[str, int]:
            return {"x": step(a=a), "y": step(a=b)}
        """
    ))
    assert reg.launch("fan", a=1, b=2).wait(timeout=300).outputs == {"o0": [3, 4]}
    assert reg.launch("named", a=1, b=2).wait(timeout=300).outputs == {"o0": {"x": 3, "y": 4}}
