"""Launch plans a cell declares, on the real embedded sandbox through a real InteractiveShell.

An edited cell declares its named launch plans anew; an unchanged ``--activate`` cell makes its versions
the active ones again; an unknown domain is answered with the domains there are.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest
from sandbox_support import counting_admin_calls
from IPython.core.error import UsageError

from flytekit.configuration import Config
from flytekit.remote import FlyteRemote

from fastreg_magic import config, register, specs

CELL = textwrap.dedent(
    """
    from flytekit import task, workflow, LaunchPlan

    @task
    def train(n: int) -> float:
        return n * 1.0

    @workflow
    def pipeline(n: int = 10) -> float:
        return train(n=n)

    """
)

GET_OR_CREATE = 'small = LaunchPlan.get_or_create(pipeline, name="{lp}", default_inputs={{"n": 2}})'
CREATE = 'small = LaunchPlan.create("{lp}", pipeline, default_inputs={{"n": 2}})'


@pytest.fixture
def counter(sandbox):
    """Every Admin RPC the kernel sends to the sandbox from now on (its one shared client)."""
    with counting_admin_calls(config.resolve_backend(config_file=str(sandbox.config_file))) as counter:
        yield counter


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def magic(shell, line, cell):
    return shell.run_cell_magic("flyte_fast", line, cell)


def default_n(remote, lp: str, version: str) -> int:
    plan = remote.client.get_launch_plan(remote.fetch_launch_plan(name=lp, version=version).id)
    return plan.spec.default_inputs.parameters["n"].default.scalar.primitive.integer


# ---------------------------------------------------------------- an edited cell names its launch plans anew


@pytest.mark.parametrize("declared", [GET_OR_CREATE, CREATE], ids=["get_or_create", "create"])
def test_a_cell_naming_a_launch_plan_can_be_edited_and_run_again(sandbox_shell, remote, workdir, declared):
    mod, lp = unique("lpedit"), unique("small")
    cell = CELL + declared.format(lp=lp)
    first = magic(sandbox_shell, f"-m {mod}", cell)
    body_edited = magic(sandbox_shell, f"-m {mod}", cell.replace("n * 1.0", "n * 2.0"))
    inputs_edited = magic(sandbox_shell, f"-m {mod}", cell.replace("n * 1.0", "n * 2.0").replace('"n": 2', '"n": 3'))
    assert body_edited.registered and inputs_edited.registered
    assert len({first.version, body_edited.version, inputs_edited.version}) == 3
    assert default_n(remote, lp, body_edited.version) == 2
    assert default_n(remote, lp, inputs_edited.version) == 3
    assert magic(sandbox_shell, f"-m {mod}", cell).version == first.version  # and back again


def test_a_named_launch_plan_follows_its_workflow_renamed(sandbox_shell, remote, workdir):
    mod, lp = unique("lprename"), unique("small")
    cell = CELL + GET_OR_CREATE.format(lp=lp)
    magic(sandbox_shell, f"-m {mod}", cell)
    renamed = magic(sandbox_shell, f"-m {mod}", cell.replace("pipeline", "training"))
    plan = remote.fetch_launch_plan(name=lp, version=renamed.version)
    assert plan.workflow_id.name == f"{mod}.training"


def test_a_named_launch_plan_of_a_workflow_built_by_hand_can_be_edited(sandbox_shell, remote, workdir):
    mod, lp = unique("lpbuilt"), unique("by_hand")
    cell = textwrap.dedent(
        f"""
        from flytekit import task, Workflow, LaunchPlan

        @task
        def add(x: int) -> int:
            return x + 1

        built = Workflow(name="{mod}.built")
        built.add_workflow_input("x", int)
        node = built.add_entity(add, x=built.inputs["x"])
        built.add_workflow_output("out", node.outputs["o0"])
        by_hand = LaunchPlan.get_or_create(built, name="{lp}", default_inputs={{"x": 10}})
        """
    )
    magic(sandbox_shell, f"-m {mod}", cell)
    edited = magic(sandbox_shell, f"-m {mod}", cell.replace("x + 1", "x + 2"))
    assert edited.registered
    assert remote.fetch_launch_plan(name=lp, version=edited.version).id.version == edited.version


def test_a_local_module_naming_a_launch_plan_can_be_edited(sandbox_shell, remote, workdir):
    mod, lp, lib = unique("lplocal"), unique("lib_lp"), unique("lplib")  # a package name no other test imports
    (workdir / lib).mkdir()
    (workdir / lib / "__init__.py").write_text("")
    flows = textwrap.dedent(
        f"""
        from flytekit import task, workflow, LaunchPlan

        @task
        def bump(n: int) -> int:
            return n + 1

        @workflow
        def inner(n: int = 1) -> int:
            return bump(n=n)

        inner_lp = LaunchPlan.get_or_create(inner, name="{lp}", default_inputs={{"n": 1}})
        """
    )
    (workdir / lib / "flows.py").write_text(flows)
    cell = f"from flytekit import workflow\nfrom {lib}.flows import inner_lp\n\n" \
           "@workflow\ndef outer(n: int = 1) -> int:\n    return inner_lp(n=n)\n"
    first = magic(sandbox_shell, f"-m {mod}", cell)
    (workdir / lib / "flows.py").write_text(flows.replace("n + 1", "n + 2").replace('"n": 1', '"n": 5'))
    edited = magic(sandbox_shell, f"-m {mod}", cell)
    assert edited.registered and edited.version != first.version
    assert default_n(remote, lp, edited.version) == 5


def test_two_workflows_given_one_launch_plan_name_in_a_cell_are_still_refused(sandbox_shell, workdir):
    mod, lp = unique("lpclash"), unique("same")
    cell = CELL + textwrap.dedent(
        f"""
        @workflow
        def other(n: int = 10) -> float:
            return train(n=n)

        first = LaunchPlan.get_or_create(pipeline, name="{lp}")
        second = LaunchPlan.get_or_create(other, name="{lp}")
        """
    )
    for _ in range(2):  # the first run and the run after it: flytekit's refusal each time
        with pytest.raises(UsageError, match=f"two launch plans both named '{lp}'.*{mod}.other.*{mod}.pipeline"):
            magic(sandbox_shell, f"-m {mod}", cell)


# ---------------------------------------------------------------- --activate on an unchanged re-run


def active_version(remote, lp: str) -> str:
    from flytekit.models.common import NamedEntityIdentifier

    return remote.client.get_active_launch_plan(NamedEntityIdentifier("flytesnacks", "development", lp)).id.version


def test_an_unchanged_activate_cell_makes_its_version_active_again(sandbox_shell, remote, workdir, counter):
    """Another version of the cell's scheduled launch plan was activated since (the edited cell here; another
    kernel or `register-files --activate` alike): re-running the cell activates its version again, saying so;
    when its version is still the active one, it only looks."""
    mod, lp = unique("nightly"), unique("nightly")
    cell = CELL + f'nightly = LaunchPlan.get_or_create(pipeline, name="{lp}", ' \
                  'schedule=CronSchedule(schedule="0 3 * * *"))\n'
    cell = cell.replace("LaunchPlan\n", "LaunchPlan, CronSchedule\n", 1)
    first = magic(sandbox_shell, f"-m {mod} --activate", cell)
    other = magic(sandbox_shell, f"-m {mod} --activate", cell.replace("n * 1.0", "n * 7.0"))
    assert active_version(remote, lp) == other.version

    counter.calls.clear()
    again = magic(sandbox_shell, f"-m {mod} --activate", cell)
    assert again.version == first.version and not again.registered and not again.uploaded
    assert active_version(remote, lp) == first.version, counter.calls
    assert active_version(remote, f"{mod}.pipeline") == first.version  # the default launch plan too
    assert [c for c in counter.calls if c.startswith(("Create", "Update"))] == ["UpdateLaunchPlan"] * 2
    plans = [e.name for e in again.entities if e.kind == "launch_plan"]
    assert sorted(plans) == sorted([lp, f"{mod}.pipeline"])
    assert again.warnings[-1] == f"activated this cell's version {first.version} again for launch plans " \
                                 f"{', '.join(plans)} (version {other.version} was active)"

    counter.calls.clear()
    still = magic(sandbox_shell, f"-m {mod} --activate", cell)
    assert [c for c in counter.calls if c.startswith(("Create", "Update"))] == []
    assert sorted(c for c in counter.calls if c == "GetActiveLaunchPlan") == ["GetActiveLaunchPlan"] * 2
    assert not any("again" in w for w in still.warnings)


def test_an_activate_cell_in_a_new_kernel_says_it_made_its_version_active(sandbox_shell, remote, workdir):
    """The same line as the same kernel's re-run, when the kernel remembers nothing of the cell (a new
    kernel, as after a restart): its Creates find every entity there, and the activation says so, without
    "again": whether that version was ever the active one is not known there."""
    from fastreg_magic import api

    mod, lp = unique("nightly"), unique("nightly")
    cell = CELL + f'nightly = LaunchPlan.get_or_create(pipeline, name="{lp}", ' \
                  'schedule=CronSchedule(schedule="0 3 * * *"))\n'
    cell = cell.replace("LaunchPlan\n", "LaunchPlan, CronSchedule\n", 1)
    first = magic(sandbox_shell, f"-m {mod} --activate", cell)
    other = magic(sandbox_shell, f"-m {mod} --activate", cell.replace("n * 1.0", "n * 7.0"))
    assert active_version(remote, lp) == other.version

    api.forget_registrations()  # what a new kernel knows of the cell: nothing
    again = magic(sandbox_shell, f"-m {mod} --activate", cell)
    assert again.version == first.version and again.registered
    assert active_version(remote, lp) == first.version
    plans = sorted(e.name for e in again.entities if e.kind == "launch_plan")
    notes = [w for w in again.warnings if w.startswith("activated this cell's version")]
    assert len(notes) == 1, again.warnings
    assert notes[0].startswith(f"activated this cell's version {first.version} for launch plans ")
    assert sorted(notes[0].split(" for launch plans ")[1].split(" (")[0].split(", ")) == plans
    assert notes[0].endswith(f"(version {other.version} was active)")
    repeated = magic(sandbox_shell, f"-m {mod} --activate", cell)  # answered from memory: said once, not again
    assert not repeated.registered and not any(w.startswith("activated") for w in repeated.warnings), \
        repeated.warnings

    api.forget_registrations()  # its version is the active one already: nothing to say
    still = magic(sandbox_shell, f"-m {mod} --activate", cell)
    assert not any(w.startswith("activated") for w in still.warnings), still.warnings


def test_an_activate_release_the_backend_lost_is_registered_again(tmp_path):
    """A new sandbox behind the same address has none of the old one's launch plans: the unchanged
    re-run finds its version gone as it activates it, and registers it again, active."""
    from fastreg_magic import api
    from fastreg_magic import sandbox as sandbox_api

    config_file = tmp_path / "config.yaml"
    kwargs = dict(module=unique("lost"), source_root=tmp_path, config_file=str(config_file), activate=True)
    with sandbox_api.start(tmp_path / "first", port=0) as first:
        config_file.write_text(first.config_file.read_text())
        registered = api.fast_register(CELL, **kwargs)
    with sandbox_api.start(tmp_path / "second", port=first.port) as second:
        again = api.fast_register(CELL, **kwargs)
        assert again.registered and again.version == registered.version
        remote = FlyteRemote(Config.auto(config_file=str(second.config_file)), default_project="flytesnacks",
                             default_domain="development")
        assert active_version(remote, f"{kwargs['module']}.pipeline") == registered.version


def test_an_unchanged_cell_without_activate_asks_nothing(sandbox_shell, workdir, counter):
    mod = unique("plain")
    magic(sandbox_shell, f"-m {mod}", CELL)
    counter.calls.clear()
    magic(sandbox_shell, f"-m {mod}", CELL)
    assert counter.calls == []


# ---------------------------------------------------------------- an unknown domain


def test_an_unknown_domain_names_the_known_ones_not_a_project_to_create(sandbox_shell, workdir):
    with pytest.raises(UsageError) as refused:
        magic(sandbox_shell, f"-m {unique('dom')} -d prod", CELL)
    message = str(refused.value)
    assert "Domain 'prod' does not exist in project 'flytesnacks' (known: development, staging, production)" in message
    assert "Pick one of the known domains with -d on the %%flyte_fast line" in message
    assert "create-project" not in message and "flytectl" not in message


def test_register_files_into_an_unknown_domain_says_the_command_line_way(sandbox, tmp_path):
    module = tmp_path / "domain_files.py"
    module.write_text(CELL)
    fastreg = [sys.executable, "-m", "fastreg_magic.cli"]
    serialized = subprocess.run([*fastreg, "serialize", str(module), "-o", str(tmp_path / "out")],
                                capture_output=True, text=True, timeout=300)
    assert serialized.returncode == 0, serialized.stderr
    refused = subprocess.run([*fastreg, "register-files", str(tmp_path / "out"), "-d", "prod",
                              "--config", str(sandbox.config_file)], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1
    assert "Pick one of the known domains with -d." in refused.stderr
    assert "create-project" not in refused.stderr and "%config" not in refused.stderr


def test_flyteadmins_refusal_of_a_domain_names_the_known_ones(sandbox, tmp_path):
    """A Create refused for its domain (a backend that does not list projects) gets the domain's hint too."""
    from flytekit.clients.raw import RawSynchronousFlyteClient
    from flytekit.configuration import Config
    from flyteidl.admin import task_pb2
    from flyteidl.core import identifier_pb2, tasks_pb2

    client = RawSynchronousFlyteClient(Config.auto(str(sandbox.config_file)).platform)
    identifier = identifier_pb2.Identifier(resource_type=identifier_pb2.TASK, project="flytesnacks", domain="prod",
                                           name="t", version="v1")
    spec = specs.Spec("task", "t", task_pb2.TaskSpec(template=tasks_pb2.TaskTemplate(id=identifier)))
    with pytest.raises(Exception) as refused:
        client.create_task(task_pb2.TaskCreateRequest(id=identifier, spec=spec.proto))
    error = register.error_for(refused.value, spec)
    assert "domain [prod] is unrecognized" in error.message
    assert error.hint.startswith("Pick one of the known domains")
    assert "create-project" not in error.hint and "flytectl" not in error.hint


def test_register_files_activate_says_when_it_made_its_version_active_again(sandbox, remote, workdir):
    """`fastreg register-files --activate` of a release whose launch plan another version took over since:
    the release's version is active again, and the command says so, as the magic does."""
    mod, lp = unique("nightly"), unique("nightly")
    source = CELL + f'nightly = LaunchPlan.get_or_create(pipeline, name="{lp}", default_inputs={{"n": 2}})\n'
    fastreg = [sys.executable, "-m", "fastreg_magic.cli"]

    def serialized_and_registered(folder, text):
        (workdir / folder).mkdir(exist_ok=True)
        (workdir / folder / f"{mod}.py").write_text(text)
        subprocess.run([*fastreg, "serialize", f"{folder}/{mod}.py", "-o", f"{folder}/out"], cwd=workdir,
                       check=True, capture_output=True)
        return subprocess.run([*fastreg, "register-files", f"{folder}/out", "--activate", "--config",
                               str(sandbox.config_file)], cwd=workdir, check=True, capture_output=True, text=True)

    first = serialized_and_registered("mine", source)
    assert "activated" not in first.stdout, first.stdout
    version = active_version(remote, lp)
    serialized_and_registered("theirs", source.replace("n * 1.0", "n * 7.0"))
    other = active_version(remote, lp)
    assert other != version

    again = serialized_and_registered("mine", source)
    assert active_version(remote, lp) == version
    lines = [line for line in again.stdout.splitlines() if "activated" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{workdir / 'mine' / 'out'}: activated version {version} "
                                                   "for launch plans "), again.stdout
    assert lines[0].endswith(f"(version {other} was active)")


def test_a_cell_declaring_a_launch_plan_for_an_imported_workflow_registers_it_and_can_be_edited(
        sandbox_shell, remote, workdir):
    """The plan is the cell's though its workflow is a local module's: it was dropped without a word (or the
    cell said it defined nothing), and editing its inputs met flytekit's two-plans refusal until a restart."""
    mod, lp, lib = unique("lpimported"), unique("nightly"), unique("wflib")
    (workdir / lib).mkdir()
    (workdir / lib / "__init__.py").write_text("")
    (workdir / lib / "flows.py").write_text(CELL)
    cell = f"from flytekit import LaunchPlan\nfrom {lib}.flows import pipeline\n\n" \
           f'nightly = LaunchPlan.get_or_create(pipeline, name="{lp}", default_inputs={{"n": 5}})\n'
    first = magic(sandbox_shell, f"-m {mod}", cell)
    assert lp in [e.name for e in first.entities if e.kind == "launch_plan"]
    run = first.launch(lp).wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": 5.0}

    edited = magic(sandbox_shell, f"-m {mod}", cell.replace('"n": 5', '"n": 6'))
    assert edited.registered and edited.version != first.version
    assert default_n(remote, lp, edited.version) == 6
