"""A named launch plan from another %%flyte_fast cell, called by this cell's workflow, on the real
embedded sandbox through a real InteractiveShell.

Cell A registered its launch plan: cell B calls it as a child launch plan, by reference to the version
A registered, so re-running A after an edit and then B runs A's new code.
"""

from __future__ import annotations

import textwrap
import uuid

import pytest
from IPython.core.error import UsageError

CELL_A = textwrap.dedent(
    """
    from flytekit import task, workflow, LaunchPlan

    @task
    def scale(n: int) -> int:
        return n * {factor}

    @workflow
    def a_wf(n: int = 1) -> int:
        return scale(n=n)

    a_lp = LaunchPlan.get_or_create(a_wf, name="{lp}")
    """
)

CELL_B = textwrap.dedent(
    """
    from flytekit import workflow

    @workflow
    def b_wf(n: int = 3) -> int:
        return a_lp(n=n)
    """
)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def magic(shell, line, cell):
    return shell.run_cell_magic("flyte_fast", line, cell)


def test_a_launch_plan_from_another_cell_runs_as_a_child_of_this_cells_workflow(sandbox_shell, workdir):
    cell_a, cell_b, lp = unique("cella"), unique("cellb"), unique("a_named_lp")
    a = magic(sandbox_shell, f"-m {cell_a}", CELL_A.format(factor=2, lp=lp))
    b = magic(sandbox_shell, f"-m {cell_b}", CELL_B)
    assert any(lp in line and a.version in line for line in b.lifted), b.lifted
    run = b.launch("b_wf", n=3).wait(timeout=300)
    assert (run.phase, run.outputs, run.error) == ("SUCCEEDED", {"o0": 6}, None)

    # A edited and re-run, then B: B's workflow now calls A's new version.
    edited = magic(sandbox_shell, f"-m {cell_a}", CELL_A.format(factor=10, lp=lp))
    assert edited.version != a.version
    b_again = magic(sandbox_shell, f"-m {cell_b}", CELL_B)
    assert b_again.version != b.version
    run = b_again.launch("b_wf", n=3).wait(timeout=300)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 30})


def test_a_launch_plan_of_a_cell_not_registered_names_the_reference_to_write(sandbox_shell, workdir):
    cell_a, cell_b, lp = unique("cella"), unique("cellb"), unique("a_named_lp")
    magic(sandbox_shell, f"-m {cell_a} --dry-run", CELL_A.format(factor=2, lp=lp))
    with pytest.raises(UsageError) as refused:
        magic(sandbox_shell, f"-m {cell_b}", CELL_B)
    said = str(refused.value)
    assert f"`a_lp` is the launch plan {lp} of the %%flyte_fast cell {cell_a}" in said, said
    assert "has no registered version in this kernel" in said, said
    assert f"Run the cell {cell_a} without --dry-run or --serialize-to, then this one" in said, said
    assert f'@reference_launch_plan(project="flytesnacks", domain="development", name="{lp}", version=' in said, said
    assert "def a_lp(n: int) -> int: ..." in said, said
    # what the message names works: the reference, declared in cell B, with A's version once registered
    a = magic(sandbox_shell, f"-m {cell_a}", CELL_A.format(factor=2, lp=lp))
    reference = textwrap.dedent(
        f"""
        from flytekit import reference_launch_plan

        @reference_launch_plan(project="flytesnacks", domain="development", name="{lp}", version="{a.version}")
        def a_lp(n: int) -> int: ...
        """
    )
    b = magic(sandbox_shell, f"-m {cell_b}", reference + CELL_B)
    run = b.launch("b_wf", n=3).wait(timeout=300)
    assert (run.phase, run.outputs, run.error) == ("SUCCEEDED", {"o0": 6}, None)


def test_a_launch_plan_whose_types_come_from_its_cell_and_whose_input_has_a_default(sandbox_shell, workdir):
    """A's dataclass is carried over by its source, as the reference's input type; the launch plan's own
    default stands for an input the call leaves out."""
    cell_a, cell_b, lp = unique("cella"), unique("cellb"), unique("a_named_lp")
    magic(sandbox_shell, f"-m {cell_a}", textwrap.dedent(
        f"""
        import typing
        from dataclasses import dataclass
        from flytekit import task, workflow, LaunchPlan

        @dataclass
        class Box:
            size: int

        @task
        def total(box: Box, extra: typing.List[int], k: int) -> int:
            return box.size + sum(extra) + k

        @workflow
        def a_wf(box: Box, extra: typing.List[int], k: int = 1) -> int:
            return total(box=box, extra=extra, k=k)

        a_lp = LaunchPlan.get_or_create(a_wf, name="{lp}", default_inputs={{"k": 100}})
        """
    ))
    b = magic(sandbox_shell, f"-m {cell_b}", textwrap.dedent(
        """
        from flytekit import task, workflow

        @task
        def make(n: int) -> Box:
            return Box(size=n)

        @workflow
        def b_wf(n: int = 3) -> int:
            return a_lp(box=make(n=n), extra=[1, 2])
        """
    ))
    run = b.launch("b_wf", n=3).wait(timeout=300)
    assert (run.phase, run.outputs, run.error) == ("SUCCEEDED", {"o0": 106}, None)


def test_a_launch_plan_whose_type_cannot_be_written_names_the_reference_at_its_version(sandbox_shell, workdir):
    cell_a, cell_b, lp = unique("cella"), unique("cellb"), unique("a_named_lp")
    a = magic(sandbox_shell, f"-m {cell_a}", textwrap.dedent(
        f"""
        import typing
        from flytekit import task, workflow, LaunchPlan

        @task
        def scale(n: typing.Annotated[int, "metres"]) -> int:
            return n * 2

        @workflow
        def a_wf(n: typing.Annotated[int, "metres"]) -> int:
            return scale(n=n)

        a_lp = LaunchPlan.get_or_create(a_wf, name="{lp}")
        """
    ))
    with pytest.raises(UsageError) as refused:
        magic(sandbox_shell, f"-m {cell_b}", CELL_B)
    said = str(refused.value)
    assert f"`a_lp` is the launch plan {lp} of the %%flyte_fast cell {cell_a} (version {a.version})" in said, said
    assert "cannot be written here as source: typing.Annotated[int, 'metres']" in said, said
    assert (f'@reference_launch_plan(project="flytesnacks", domain="development", name="{lp}", '
            f'version="{a.version}")` over `def a_lp(n: typing.Annotated[int, \'metres\']) -> int: ...`') in said, said


def test_a_launch_plan_called_without_its_list_and_dataclass_defaults_runs_with_them(sandbox_shell, workdir):
    """Any input A's launch plan has a default for may be left out, whatever its type: the child
    launch plan starts with A's defaults, as FlyteAdmin starts it."""
    cell_a, cell_b, lp = unique("cella"), unique("cellb"), unique("agg_lp")
    magic(sandbox_shell, f"-m {cell_a}", textwrap.dedent(
        f"""
        from dataclasses import dataclass
        from flytekit import task, workflow, LaunchPlan

        @dataclass
        class Cfg:
            k: int

        @task
        def agg(xs: list[int], c: Cfg) -> int:
            return sum(xs) * c.k

        @workflow
        def agg_wf(xs: list[int], c: Cfg) -> int:
            return agg(xs=xs, c=c)

        agg_lp = LaunchPlan.get_or_create(agg_wf, "{lp}", default_inputs={{"xs": [1, 2, 3], "c": Cfg(k=2)}})
        """
    ))
    b = magic(sandbox_shell, f"-m {cell_b}", textwrap.dedent(
        """
        from flytekit import workflow

        @workflow
        def all_defaults() -> int:
            return agg_lp()

        @workflow
        def one_given() -> int:
            return agg_lp(c=Cfg(k=3))

        @workflow
        def both_given() -> int:
            return agg_lp(xs=[10], c=Cfg(k=5))
        """
    ))
    for workflow_name, expected in (("all_defaults", 12), ("one_given", 18), ("both_given", 50)):
        run = b.launch(workflow_name).wait(timeout=300)
        outcome = (workflow_name, run.phase, run.outputs, run.error)
        assert outcome == (workflow_name, "SUCCEEDED", {"o0": expected}, None)


def test_a_launch_plan_a_cell_declared_for_a_workflow_of_a_local_module_is_called_by_a_later_cell(
    sandbox_shell, workdir
):
    cell_c, cell_d, lp = unique("cellc"), unique("celld"), unique("five")
    library = unique("mylib")
    (workdir / f"{library}.py").write_text(textwrap.dedent(
        """
        from flytekit import task, workflow

        @task
        def double(x: int) -> int:
            return x * 2

        @workflow
        def libwf(x: int) -> int:
            return double(x=x)
        """
    ))
    c = magic(sandbox_shell, f"-m {cell_c}", textwrap.dedent(
        f"""
        from flytekit import LaunchPlan
        from {library} import libwf

        five = LaunchPlan.get_or_create(libwf, "{lp}", default_inputs={{"x": 5}})
        """
    ))
    d = magic(sandbox_shell, f"-m {cell_d}", textwrap.dedent(
        """
        from flytekit import workflow

        @workflow
        def d_wf() -> int:
            return five()
        """
    ))
    assert any(lp in line and cell_c in line and c.version in line for line in d.lifted), d.lifted
    run = d.launch("d_wf").wait(timeout=300)
    assert (run.phase, run.outputs, run.error) == ("SUCCEEDED", {"o0": 10}, None)
