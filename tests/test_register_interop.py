"""What a cell registers, read back with stock flytekit as a team's scripts and ``pyflyte`` users read it.

Every workflow registered has its default launch plan (one the cell imports too), as ``pyflyte register``
registers; a launch plan declared ``auto_activate=True`` is active after the cell and after ``fastreg
serialize`` + ``register-files``, as flytekit activates it; the ``--activate`` note says per launch plan what
was active, and "again" only when it was; the folder the cells' modules are written to is never reported
as code left outside the source root. All on the real embedded sandbox, through a real InteractiveShell.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import pytest
from flytekit.exceptions.user import FlyteEntityNotExistException
from flytekit.models.common import NamedEntityIdentifier
from flytekit.models.core.execution import WorkflowExecutionPhase

from fastreg_magic import api

TEAM_FLOWS = textwrap.dedent(
    """
    from flytekit import task, workflow

    @task
    def double(x: int) -> int:
        return x * 2

    @workflow
    def double_wf(x: int = 3) -> int:
        return double(x=x)
    """
)

CELL = textwrap.dedent(
    """
    from flytekit import task, workflow, LaunchPlan, CronSchedule

    @task
    def train(n: int) -> float:
        return n * 1.0

    @workflow
    def pipeline(n: int = 10) -> float:
        return train(n=n)

    """
)

FASTREG = [sys.executable, "-m", "fastreg_magic.cli"]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def magic(shell, line, cell):
    return shell.run_cell_magic("flyte_fast", line, cell)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def team_package(workdir) -> str:
    """A local package of the team's flows beside the notebook: ``<package>.core.double_wf``."""
    package = unique("teamflows")
    (workdir / package).mkdir()
    (workdir / package / "__init__.py").write_text("")
    (workdir / package / "core.py").write_text(TEAM_FLOWS)
    return package


def active_version(remote, name: str) -> str | None:
    """The version of launch plan ``name`` FlyteAdmin runs on schedule; None when none is active."""
    try:
        return remote.client.get_active_launch_plan(NamedEntityIdentifier("flytesnacks", "development", name)).id.version
    except FlyteEntityNotExistException:  # FlyteAdmin answers NOT_FOUND when no version is active
        return None


# ---------------------------------------------------------------- every workflow gets its default launch plan


def test_a_sub_workflow_the_cell_imports_can_be_run_the_flytekit_way(sandbox_shell, remote, workdir):
    """The cell registers the imported workflow at its version, its newest: a team's
    ``remote.execute(remote.fetch_workflow(name=...))`` runs that version through its launch plan."""
    package = team_package(workdir)
    imported = f"{package}.core.double_wf"
    cell = textwrap.dedent(
        f"""
        from flytekit import task, workflow
        from {package}.core import double, double_wf

        @task
        def plus_one(x: int) -> int:
            return x + 1

        @workflow
        def combo(x: int = 2) -> int:
            return plus_one(x=double_wf(x=double(x=x)))
        """
    )
    reg = magic(sandbox_shell, f"-m {unique('nbflows')}", cell)

    plan = remote.fetch_launch_plan(name=imported, version=reg.version)
    assert plan.id.version == reg.version
    execution = remote.execute(remote.fetch_workflow(name=imported), inputs={"x": 4}, wait=True)
    assert execution.closure.phase == WorkflowExecutionPhase.SUCCEEDED, execution.closure.error
    assert execution.outputs["o0"] == 8

    run = reg.launch(imported, x=5).wait(timeout=300)
    assert (run.phase, run.outputs, run.error) == ("SUCCEEDED", {"o0": 10}, None)
    combo = reg.launch("combo", x=1).wait(timeout=300)
    assert (combo.phase, combo.outputs) == ("SUCCEEDED", {"o0": 5})


def test_a_workflow_the_cell_declares_a_launch_plan_for_gets_its_default_one_too(sandbox_shell, remote, workdir):
    package = team_package(workdir)
    imported, plan = f"{package}.core.double_wf", unique("nb_double")
    cell = f"from flytekit import LaunchPlan\nfrom {package}.core import double_wf\n\n" \
           f'nb_double = LaunchPlan.get_or_create(double_wf, name="{plan}", default_inputs={{"x": 7}})\n'
    reg = magic(sandbox_shell, f"-m {unique('nblp')}", cell)

    assert remote.fetch_launch_plan(name=imported, version=reg.version).id.version == reg.version
    run = reg.launch(imported).wait(timeout=300)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 6}), run.error  # the workflow's own default
    declared = reg.launch(plan).wait(timeout=300)
    assert (declared.phase, declared.outputs) == ("SUCCEEDED", {"o0": 14}), declared.error


# ---------------------------------------------------------------- auto_activate=True


def test_an_auto_activate_launch_plan_is_active_after_the_cell(sandbox_shell, remote, workdir):
    """Only that launch plan: the workflow's default one stays inactive, as without --activate. Its schedule
    does not run on the embedded sandbox, which the cell says; an unchanged re-run takes the version back."""
    mod, lp = unique("autoact"), unique("nightly")
    cell = CELL + f'nightly = LaunchPlan.get_or_create(pipeline, name="{lp}", auto_activate=True, ' \
                  'schedule=CronSchedule(schedule="0 3 * * *"))\n'
    first = magic(sandbox_shell, f"-m {mod}", cell)
    assert active_version(remote, lp) == first.version
    assert active_version(remote, f"{mod}.pipeline") is None
    assert f"launch plan {lp} is active with a schedule, but the embedded sandbox runs no schedules: launch it " \
           "yourself, or register to a Flyte cluster" in first.warnings

    edited = magic(sandbox_shell, f"-m {mod}", cell.replace("n * 1.0", "n * 2.0"))
    assert active_version(remote, lp) == edited.version != first.version

    again = magic(sandbox_shell, f"-m {mod}", cell)
    assert again.version == first.version and not again.registered
    assert active_version(remote, lp) == first.version
    assert again.warnings[-1] == f"activated this cell's version {first.version} again for launch plan {lp} " \
                                 f"(version {edited.version} was active)"


def test_serialize_and_register_files_activate_an_auto_activate_launch_plan(sandbox, remote, workdir):
    """The flag is flytekit's object's, not in the .pb files: the manifest records it. An imported workflow's
    default launch plan is in the files too. A manifest of an earlier fastreg, without it, still registers."""
    package = team_package(workdir)
    mod, lp = unique("autofiles"), unique("nightly")
    source = CELL.replace("from flytekit import", f"from {package}.core import double_wf\nfrom flytekit import") \
        + f'nightly = LaunchPlan.get_or_create(pipeline, name="{lp}", auto_activate=True, ' \
          'schedule=CronSchedule(schedule="0 3 * * *"))\n' \
        + f'doubled = LaunchPlan.get_or_create(double_wf, name="{unique("nb_double")}")\n'
    (workdir / f"{mod}.py").write_text(source)

    def serialize_and_register(text: str, folder: str, drop_key: bool = False):
        (workdir / f"{mod}.py").write_text(text)
        subprocess.run([*FASTREG, "serialize", f"{mod}.py", "-o", folder], cwd=workdir, check=True,
                       capture_output=True, timeout=300)
        manifest_path = workdir / folder / "fastreg-manifest.json"
        manifest = json.loads(manifest_path.read_text())
        if drop_key:
            del manifest["auto_activate"]
            manifest_path.write_text(json.dumps(manifest))
        registered = subprocess.run([*FASTREG, "register-files", folder, "--config", str(sandbox.config_file)],
                                    cwd=workdir, check=True, capture_output=True, text=True, timeout=300)
        return manifest["version"], sorted(p.name for p in (workdir / folder).glob("*.pb")), registered

    version, files, registered = serialize_and_register(source, "out")
    assert any(name.endswith(f"_{package}.core.double_wf_3.pb") for name in files), files
    assert active_version(remote, lp) == version
    assert active_version(remote, f"{mod}.pipeline") is None
    assert remote.fetch_launch_plan(name=f"{package}.core.double_wf", version=version)
    assert f"warning: launch plan {lp} is active with a schedule, but the embedded sandbox runs no schedules" \
        in registered.stderr

    older, _, registered = serialize_and_register(source.replace("n * 1.0", "n * 3.0"), "older", drop_key=True)
    assert older != version and "registered" in registered.stdout
    assert active_version(remote, lp) == version  # nothing recorded, nothing activated, as before


# ---------------------------------------------------------------- the --activate note


def test_the_activate_note_says_what_was_active_for_each_launch_plan(sandbox_shell, remote, workdir):
    """The edited cell's version was active for one launch plan, none for the other (deactivated since)."""
    from flytekit.models.core.identifier import Identifier, ResourceType
    from flytekit.models.launch_plan import LaunchPlanState

    mod, lp = unique("notes"), unique("nightly")
    cell = CELL + f'nightly = LaunchPlan.get_or_create(pipeline, name="{lp}", default_inputs={{"n": 2}})\n'
    first = magic(sandbox_shell, f"-m {mod} --activate", cell)
    other = magic(sandbox_shell, f"-m {mod} --activate", cell.replace("n * 1.0", "n * 7.0"))
    remote.client.update_launch_plan(Identifier(ResourceType.LAUNCH_PLAN, "flytesnacks", "development", lp,
                                                other.version), LaunchPlanState.INACTIVE)
    assert active_version(remote, lp) is None

    again = magic(sandbox_shell, f"-m {mod} --activate", cell)
    assert active_version(remote, lp) == active_version(remote, f"{mod}.pipeline") == first.version
    assert again.warnings[-1] == (f"activated this cell's version {first.version} again for launch plans "
                                  f"{mod}.pipeline (version {other.version} was active) and {lp} "
                                  "(no version was active)")


def test_the_activate_note_says_again_only_of_a_version_that_was_active(sandbox_shell, remote, workdir):
    """Registered first without --activate, the cell's version was never the active one: activating it
    takes over from the other version, not "again"."""
    mod = unique("never")
    other = magic(sandbox_shell, f"-m {mod} --activate", CELL.replace("n * 1.0", "n * 7.0"))
    plain = magic(sandbox_shell, f"-m {mod}", CELL)
    assert active_version(remote, f"{mod}.pipeline") == other.version

    activated = magic(sandbox_shell, f"-m {mod} --activate", CELL)
    assert activated.version == plain.version
    assert active_version(remote, f"{mod}.pipeline") == plain.version
    assert activated.warnings[-1] == (f"activated this cell's version {plain.version} for launch plan "
                                      f"{mod}.pipeline (version {other.version} was active)")


# ---------------------------------------------------------------- the cells' own module folder


def test_a_source_root_holding_the_cells_module_folder_warns_of_nothing(sandbox, monkeypatch):
    """The working directory is the temporary folder (a kernel started in /tmp): the folder the cell's module
    is written to lies under the source root, yet it is the cell's module, shipped as such."""
    folder = api.module_dir()
    monkeypatch.chdir(folder.parent)
    reg = api.fast_register(CELL, module=unique("tmpcwd"), config_file=str(sandbox.config_file))
    assert reg.registered
    assert not [w for w in reg.warnings if str(folder) in w or "not shipped" in w], reg.warnings
    run = reg.launch("pipeline", n=3).wait(timeout=300)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 3.0}), run.error
