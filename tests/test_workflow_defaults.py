"""Data in a workflow's defaults (a file, an array) is stored on the backend when the cell registers,
as ``pyflyte register`` stores it: the registered launch plan must not point into this kernel's
temporary files, which a run elsewhere (or after the kernel is gone) cannot read."""

from __future__ import annotations

import tempfile
import textwrap
import uuid
from pathlib import Path

from flytekit.configuration import Config
from flytekit.remote import FlyteRemote

from fastreg_magic import config

CELL = textwrap.dedent(
    """
    from flytekit import task, workflow
    from flytekit.types.file import FlyteFile
    import numpy as np

    @task
    def read(f: FlyteFile, a: np.ndarray) -> str:
        with open(f) as handle:
            return handle.read().strip() + " " + str(a.sum())

    @workflow
    def wf(f: FlyteFile = FlyteFile({path!r}), a: np.ndarray = np.array([1.0, 2.0])) -> str:
        return read(f=f, a=a)
    """
)


def test_file_and_array_defaults_are_stored_on_the_backend_and_read_by_the_run(sandbox, sandbox_shell, remote,
                                                                                tmp_path):
    default = tmp_path / "default.txt"
    default.write_text("from-the-default\n")
    module = f"defaults_{uuid.uuid4().hex[:8]}"
    # The user's own FlyteRemote for another backend, built after the cell's: flytekit binds the process's
    # `flyte://` uploads to the last one built, yet the cell's defaults go to the cell's backend.
    config.connect(config.resolve_backend(config_file=str(sandbox.config_file)), "flytesnacks", "development")
    FlyteRemote(Config.for_endpoint("127.0.0.1:9", insecure=True), interactive_mode_enabled=False)
    reg = sandbox_shell.run_cell_magic(
        "flyte_fast", f"-m {module} --source-root {tmp_path}", CELL.format(path=str(default))
    )

    plan = remote.fetch_launch_plan(name=f"{module}.wf", version=reg.version)
    uris = {name: p.default.scalar.blob.uri for name, p in plan.default_inputs.parameters.items()}
    kernel_temp = Path(tempfile.gettempdir()).resolve()
    for name, uri in uris.items():
        # The sandbox's uploads, never the file the cell named nor flytekit's local scratch space.
        assert uri and not uri.startswith(str(tmp_path)), (name, uri)
        assert not Path(uri).resolve().is_relative_to(kernel_temp / "flyte") and "/flyte-" not in uri, (name, uri)
        assert "uploads" in uri, (name, uri)

    default.unlink()  # the kernel's copy is gone: the run reads the stored one
    run = reg.launch("wf").wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": "from-the-default 3.0"}


def test_a_named_launch_plans_file_default_is_stored_on_the_backend(sandbox_shell, remote, tmp_path):
    """flytekit converts a launch plan's defaults as the cell's module runs (`LaunchPlan.get_or_create`),
    not as it serializes: they too must be stored on the backend, not left as this kernel's path."""
    planned = tmp_path / "planned.txt"
    planned.write_text("PLANNED\n")
    module, name = f"lp_default_{uuid.uuid4().hex[:8]}", f"plan_{uuid.uuid4().hex[:8]}"
    cell = textwrap.dedent(
        f"""
        from flytekit import LaunchPlan, task, workflow
        from flytekit.types.file import FlyteFile

        @task
        def read(f: FlyteFile) -> str:
            with open(f) as handle:
                return handle.read().strip()

        @workflow
        def wf(f: FlyteFile) -> str:
            return read(f=f)

        plan = LaunchPlan.get_or_create(wf, name={name!r}, default_inputs={{"f": FlyteFile({str(planned)!r})}})
        """
    )
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-m {module} --source-root {tmp_path}", cell)

    stored = remote.fetch_launch_plan(name=name, version=reg.version)
    uri = stored.default_inputs.parameters["f"].default.scalar.blob.uri
    assert "uploads" in uri and not uri.startswith(str(tmp_path)), uri

    # (The file stays: the task's container imports the module, which declares the plan again.)
    run = reg.launch(name).wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": "PLANNED"}


def test_an_array_default_is_stored_by_content_so_a_new_kernel_registers_the_same_version(sandbox_shell, tmp_path):
    """flytekit writes an array to a randomly named file before storing it: stored by that name, each new
    kernel would register another version of the same cell."""
    from fastreg_magic import api

    cell = textwrap.dedent(
        """
        from flytekit import task, workflow
        import numpy as np

        @task
        def total(a: np.ndarray) -> float:
            return float(a.sum())

        @workflow
        def wf(a: np.ndarray = np.arange(5.0)) -> float:
            return total(a=a)
        """
    )
    line = f"-m arrays_{uuid.uuid4().hex[:8]} --source-root {tmp_path}"
    first = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    api.forget_registrations()  # what a new kernel knows of the cell: nothing
    again = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert again.registered and again.version == first.version
    run = again.launch("wf").wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": 10.0}


def test_a_launch_plan_holding_a_file_its_tasks_cannot_read_is_named(sandbox_shell, tmp_path, monkeypatch):
    """A task's container imports the cell's module, where flytekit converts the plan's inputs again: a file
    that is not there fails every task of the cell. Shipped, at a path relative to the source root, it is."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "edit.txt").write_text("EDIT\n")
    name = f"plan_{uuid.uuid4().hex[:8]}"
    cell = textwrap.dedent(
        f"""
        from flytekit import LaunchPlan, task, workflow
        from flytekit.types.file import FlyteFile

        @task
        def read(f: FlyteFile) -> str:
            with open(f) as handle:
                return handle.read().strip()

        @workflow
        def files(f: FlyteFile = FlyteFile("edit.txt")) -> str:
            return read(f=f)

        nightly = LaunchPlan.get_or_create(files, name={name!r})
        """
    )
    line = f"-m lp_file_{uuid.uuid4().hex[:8]} --source-root {tmp_path}"
    reg = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    notes = [w for w in reg.warnings if w.startswith(f"launch plan {name} holds the local file edit.txt")]
    assert len(notes) == 1, reg.warnings
    assert reg.launch("files").wait(timeout=300).phase == "FAILED"  # what the note warns of

    shipped = sandbox_shell.run_cell_magic("flyte_fast", line + " --copy all", cell)
    assert "edit.txt" in shipped.files
    assert not any("holds the local file" in w for w in shipped.warnings), shipped.warnings
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "s.txt").write_text("S\n")
    folder = cell + textwrap.dedent(
        f"""
        import os
        from flytekit.types.directory import FlyteDirectory

        @task
        def listed(d: FlyteDirectory) -> str:
            return ",".join(sorted(os.listdir(d.download())))

        @workflow
        def folders(d: FlyteDirectory) -> str:
            return listed(d=d)

        folder_plan = LaunchPlan.get_or_create(folders, name="{name}_dir", default_inputs={{"d": FlyteDirectory("sub")}})
        """
    )
    in_folder = sandbox_shell.run_cell_magic("flyte_fast", line + " --copy all", folder)
    assert not any("holds the local file" in w for w in in_folder.warnings), in_folder.warnings
    run = in_folder.launch(f"{name}_dir").wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": "s.txt"}
    run = shipped.launch("files").wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": "EDIT"}
