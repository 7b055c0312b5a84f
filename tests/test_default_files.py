"""A data file a workflow's default names is part of what the cell ships: editing it, then re-running
the unchanged cell, stores the new content and registers it; an untouched file sends nothing."""

from __future__ import annotations

import os
import textwrap
import uuid

CELL = textwrap.dedent(
    """
    from flytekit import task, workflow
    from flytekit.types.file import FlyteFile

    @task
    def read(f: FlyteFile) -> str:
        with open(f) as handle:
            return handle.read().strip()

    @workflow
    def wf(f: FlyteFile = FlyteFile({path!r})) -> str:
        return read(f=f)
    """
)


def _launched(reg) -> str:
    run = reg.launch("wf").wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    return run.outputs["o0"]


def test_editing_a_default_file_then_re_running_the_cell_registers_the_new_data(sandbox_shell, tmp_path):
    default = tmp_path / "def.txt"
    default.write_text("OLD\n")
    module = f"default_file_{uuid.uuid4().hex[:8]}"
    line, cell = f"-m {module} --source-root {tmp_path}", CELL.format(path=str(default))
    first = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert _launched(first) == "OLD"

    default.write_text("NEWER\n")
    stat = default.stat()
    os.utime(default, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # an editor saving within the same tick
    edited = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert edited.registered and edited.version != first.version
    assert any(f"the default file {default} changed" in w for w in edited.warnings), edited.warnings
    assert _launched(edited) == "NEWER"

    untouched = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert not untouched.registered and not untouched.uploaded
    assert untouched.version == edited.version
    assert not any("default file" in w for w in untouched.warnings), untouched.warnings


DIRECTORY_CELL = textwrap.dedent(
    """
    import os
    from flytekit import task, workflow
    from flytekit.types.directory import FlyteDirectory

    @task
    def names(d: FlyteDirectory) -> str:
        root = d.download()
        return ",".join(sorted(os.path.relpath(os.path.join(folder, name), root)
                               for folder, _, names in os.walk(root) for name in names))

    @workflow
    def wf(d: FlyteDirectory = {path!r}) -> str:
        return names(d=d)
    """
)


def test_a_file_added_to_a_default_directory_is_registered_on_the_re_run(sandbox_shell, tmp_path):
    """A directory given as a plain path for a FlyteDirectory input: its files are part of its signature."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("1\n")
    (data / "b.csv").write_text("2\n")
    module = f"default_dir_{uuid.uuid4().hex[:8]}"
    line, cell = f"-m {module} --source-root {tmp_path}", DIRECTORY_CELL.format(path=str(data))
    first = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert _launched(first) == "a.csv,b.csv"

    (data / "c.csv").write_text("3\n")
    edited = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert edited.registered and edited.version != first.version
    assert any(f"the default directory {data} changed" in w for w in edited.warnings), edited.warnings
    assert _launched(edited) == "a.csv,b.csv,c.csv"


def test_editing_a_file_a_launch_plans_default_names_is_registered_on_the_re_run(sandbox_shell, tmp_path):
    """A named launch plan's defaults are read as it is declared: the re-run declares it anew."""
    default, planned = tmp_path / "def.txt", tmp_path / "planned.txt"
    default.write_text("OLD\n")
    planned.write_text("PLANNED\n")
    module, plan = f"default_lp_{uuid.uuid4().hex[:8]}", f"plan_{uuid.uuid4().hex[:8]}"
    cell = CELL.format(path=str(default)) + (
        "from flytekit import LaunchPlan\n"
        f"plan = LaunchPlan.get_or_create(wf, name={plan!r}, default_inputs={{'f': FlyteFile({str(planned)!r})}})\n"
    )
    line = f"-m {module} --source-root {tmp_path}"
    first = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert first.launch(plan).wait(timeout=300).outputs == {"o0": "PLANNED"}

    planned.write_text("PLANNED AGAIN\n")
    edited = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert edited.registered and edited.version != first.version
    assert any(f"the default file {planned} changed" in w for w in edited.warnings), edited.warnings
    assert edited.launch(plan).wait(timeout=300).outputs == {"o0": "PLANNED AGAIN"}
    assert _launched(edited) == "OLD"


def test_a_default_directory_of_one_file_is_stored_as_a_directory(sandbox_shell, tmp_path):
    """flytekit names a stored directory of one file by that file: the run's `FlyteDirectory` would be a file."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "only.csv").write_text("1\n")
    module = f"default_dir_{uuid.uuid4().hex[:8]}"
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-m {module} --source-root {tmp_path}",
                                       DIRECTORY_CELL.format(path=str(data)))
    assert _launched(reg) == "only.csv"


def test_a_directory_of_one_file_given_at_launch_is_a_directory_in_the_run(sandbox_shell, tmp_path):
    data = tmp_path / "given"
    data.mkdir()
    (data / "given.csv").write_text("1\n")
    module = f"input_dir_{uuid.uuid4().hex[:8]}"
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-m {module} --source-root {tmp_path}",
                                       DIRECTORY_CELL.format(path=str(tmp_path)))
    run = reg.launch("wf", d=str(data)).wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs["o0"] == "given.csv"


def test_a_dataset_directory_keeps_its_layout_as_a_default_and_as_an_input(sandbox_shell, tmp_path):
    """flytekit stores a directory's files flat, by name: `train/data.csv` and `val/data.csv` were refused
    as one file stored twice, and a directory holding the same bytes as another was merged with it."""
    data, twin = tmp_path / "ds", tmp_path / "twin"
    for folder, name in ((data / "train", "data.csv"), (data / "val", "data.csv"), (twin, "other.csv")):
        folder.mkdir(parents=True)
    (data / "train" / "data.csv").write_text("1\n")
    (data / "val" / "data.csv").write_text("2\n")
    (data / "README").write_text("1\n")
    (twin / "other.csv").write_text("1\n")  # the README's bytes, under another name
    module = f"dataset_{uuid.uuid4().hex[:8]}"
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-m {module} --source-root {tmp_path}",
                                       DIRECTORY_CELL.format(path=str(data)))
    assert _launched(reg) == "README,train/data.csv,val/data.csv"
    for given, listed in ((data, "README,train/data.csv,val/data.csv"), (twin, "other.csv")):
        run = reg.launch("wf", d=str(given)).wait(timeout=300)
        assert run.phase == "SUCCEEDED", run.error
        assert run.outputs["o0"] == listed


LIST_CELL = textwrap.dedent(
    """
    from typing import List
    from flytekit import task, workflow
    from flytekit.types.file import FlyteFile

    @task
    def read_all(fs: List[FlyteFile]) -> str:
        return ",".join(open(f).read().strip() for f in fs)

    @workflow
    def wf(fs: List[FlyteFile] = [FlyteFile({path!r})]) -> str:
        return read_all(fs=fs)
    """
)


def test_a_file_in_a_list_default_is_watched_too(sandbox_shell, tmp_path):
    default = tmp_path / "in_list.txt"
    default.write_text("A\n")
    line = f"-m list_default_{uuid.uuid4().hex[:8]} --source-root {tmp_path}"
    cell = LIST_CELL.format(path=str(default))
    first = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    default.write_text("B\n")
    edited = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert edited.registered and edited.version != first.version
    assert _launched(edited) == "B"


def test_a_default_path_that_leads_elsewhere_now_registers_again(sandbox_shell, tmp_path, monkeypatch):
    """A symbolic link re-pointed, or a relative path read from another working directory: the same cell
    text names other data."""
    for version in ("V1", "V2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "data.txt").write_text(f"{version}\n")
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "V1")
    line = f"-m moved_default_{uuid.uuid4().hex[:8]} --source-root {tmp_path}"
    cell = CELL.format(path=str(current / "data.txt"))
    first = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert _launched(first) == "V1"
    current.unlink()
    current.symlink_to(tmp_path / "V2")
    repointed = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert repointed.registered and any("now leads to" in w for w in repointed.warnings), repointed.warnings
    assert _launched(repointed) == "V2"

    monkeypatch.chdir(tmp_path / "V1")
    relative = CELL.format(path="data.txt")
    line = f"-m relative_default_{uuid.uuid4().hex[:8]} --source-root {tmp_path}"
    assert _launched(sandbox_shell.run_cell_magic("flyte_fast", line, relative)) == "V1"
    monkeypatch.chdir(tmp_path / "V2")
    assert _launched(sandbox_shell.run_cell_magic("flyte_fast", line, relative)) == "V2"


def test_a_dataframe_default_read_from_a_file_registers_again_when_the_file_changed(sandbox_shell, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("x\n1\n2\n")
    cell = textwrap.dedent(
        f"""
        import pandas as pd
        from flytekit import task, workflow

        @task
        def total(df: pd.DataFrame) -> int:
            return int(df["x"].sum())

        @workflow
        def wf(df: pd.DataFrame = pd.read_csv({str(data)!r})) -> int:
            return total(df=df)
        """
    )
    line = f"-m computed_default_{uuid.uuid4().hex[:8]} --source-root {tmp_path}"
    first = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert not sandbox_shell.run_cell_magic("flyte_fast", line, cell).registered  # the same data: from memory
    data.write_text("x\n1\n2\n10\n")
    edited = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert edited.registered and edited.version != first.version
    assert any("data a default holds" in w for w in edited.warnings), edited.warnings
    assert _launched(edited) == 13
    assert not sandbox_shell.run_cell_magic("flyte_fast", line, cell).registered


def test_a_file_added_to_a_large_default_directory_is_noticed(sandbox_shell, tmp_path):
    data = tmp_path / "parts"
    data.mkdir()
    for i in range(1000):
        (data / f"part-{i:05d}.txt").write_text(str(i))
    line = f"-m many_parts_{uuid.uuid4().hex[:8]} --source-root {tmp_path}"
    cell = DIRECTORY_CELL.format(path=str(data))
    sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    (data / "part-01000.txt").write_text("1000")
    again = sandbox_shell.run_cell_magic("flyte_fast", line, cell)
    assert again.registered and any("changed since" in w for w in again.warnings), again.warnings


def test_launching_again_after_editing_an_input_file_sends_its_new_content(sandbox_shell, tmp_path):
    """flytekit remembers a converted value by its path for the life of the process: the second launch sent
    the first content."""
    given, folder = tmp_path / "input.txt", tmp_path / "inputs"
    given.write_text("first\n")
    folder.mkdir()
    (folder / "a.csv").write_text("1\n")
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-m relaunch_{uuid.uuid4().hex[:8]} --source-root {tmp_path}",
                                       CELL.format(path=str(given)) + DIRECTORY_CELL.format(path=str(folder))
                                       .replace("def names", "def dir_names").replace("def wf", "def dir_wf")
                                       .replace("names(d=d)", "dir_names(d=d)"))
    for text in ("first", "second, longer"):
        given.write_text(text + "\n")
        run = reg.launch("wf", f=str(given)).wait(timeout=300)
        assert run.phase == "SUCCEEDED", run.error
        assert run.outputs["o0"] == text
    for listed in ("a.csv", "a.csv,b.csv"):
        (folder / listed.split(",")[-1]).write_text("1\n")
        run = reg.launch("dir_wf", d=str(folder)).wait(timeout=300)
        assert run.phase == "SUCCEEDED", run.error
        assert run.outputs["o0"] == listed


def test_a_default_file_given_by_a_symbolic_link_is_stored_as_the_file_it_leads_to(sandbox_shell, tmp_path):
    """flytekit refuses to upload a link ("is a symlink, can't upload")."""
    (tmp_path / "real.txt").write_text("REAL\n")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-m linked_{uuid.uuid4().hex[:8]} --source-root {tmp_path}",
                                       CELL.format(path=str(tmp_path / "link.txt")))
    assert _launched(reg) == "REAL"
