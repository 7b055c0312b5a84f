"""Tasks whose image is an ``ImageSpec``: built (flytekit's way) only where the image will be pulled.

A recording image builder, registered with flytekit's own ``ImageBuildEngine``, tells whether
flytekit was asked to check or build the image.
"""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest
from flytekit.image_spec.image_spec import ImageBuildEngine, ImageSpecBuilder


class RecordingBuilder(ImageSpecBuilder):
    """Says every image exists, and remembers which ones it was asked about."""

    def __init__(self):
        self.asked: list[str] = []

    def should_build(self, image_spec) -> bool:
        self.asked.append(image_spec.image_name())
        return False

    def build_image(self, image_spec):
        raise AssertionError("no image is built in these tests")


# Registered for good: flytekit keeps every task ever defined in the process, and serializing any
# dynamic task later (stock pyflyte code in other tests) builds the ImageSpecs of all of them.
RECORDER = RecordingBuilder()
ImageBuildEngine.register("fastreg-recorder", RECORDER)


@pytest.fixture
def builder():
    RECORDER.asked.clear()
    return RECORDER


@pytest.fixture(scope="module")
def shell(sandbox_shell):
    return sandbox_shell


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def image_spec_cell(image_name: str) -> str:
    return textwrap.dedent(
        f"""
        from flytekit import ImageSpec, task, workflow

        image = ImageSpec(name={image_name!r}, registry="registry.example.com/acme", packages=["numpy"],
                          builder="fastreg-recorder")

        @task(container_image=image)
        def shout(word: str) -> str:
            return word.upper()

        @workflow
        def loud(word: str = "hi") -> str:
            return shout(word=word)
        """
    )


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_on_the_sandbox_an_image_spec_is_only_named_and_the_task_runs(shell, remote, workdir, builder):
    name = unique("img")
    reg = shell.run_cell_magic("flyte_fast", f"-m {unique('spec')}", image_spec_cell(name))
    expected = sys.modules[reg.module].image.image_name()
    assert builder.asked == [], "the sandbox runs no image: flytekit must not check or build it"
    task = remote.fetch_task(name=f"{reg.module}.shout", version=reg.version)
    assert task.template.container.image == expected
    assert expected.startswith(f"registry.example.com/acme/{name}:")
    run = reg.launch("loud", word="abc").wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs == {"o0": "ABC"}


def test_a_dry_run_does_not_build_the_image(shell, workdir, builder, capsys):
    reg = shell.run_cell_magic("flyte_fast", f"-m {unique('dry')} --dry-run", image_spec_cell(unique("img")))
    assert builder.asked == []
    assert not reg.registered


def test_serializing_for_a_cluster_asks_flytekit_for_the_image_as_pyflyte_does(shell, workdir, builder, tmp_path):
    """--serialize-to writes what a cluster registers: there the image must exist, so flytekit checks it."""
    module = unique("ser")
    shell.run_cell_magic("flyte_fast", f"-m {module} --serialize-to {tmp_path / 'out'}", image_spec_cell(unique("img")))
    expected = sys.modules[module].image.image_name()
    assert builder.asked == [expected]


def test_a_workflow_that_does_not_compile_is_one_message_every_time(shell, workdir):
    """flytekit compiles a workflow on first use, and only then: looking for images must not be that first use."""
    from IPython.core.error import UsageError

    cell = textwrap.dedent(
        """
        from flytekit import task, workflow

        @task
        def count(word: str) -> int:
            return len(word)

        @workflow
        def wrong(word: str = "hi") -> int:
            return "not a promise"
        """
    )
    for _ in range(2):
        with pytest.raises(UsageError, match=r"wrong cannot be serialized for Flyte: .*Failed to bind output o0"):
            shell.run_cell_magic("flyte_fast", f"-m {unique('broken')}", cell)


def test_a_dynamic_task_does_not_build_the_image_specs_of_other_tasks_on_the_sandbox(shell, workdir, builder):
    """flytekit serializes a dynamic task with the image of every task defined in the kernel."""
    shell.run_cell_magic("flyte_fast", f"-m {unique('spec')} --dry-run", image_spec_cell(unique("img")))
    cell = textwrap.dedent(
        """
        from flytekit import dynamic, task, workflow

        @task
        def inc(n: int) -> int:
            return n + 1

        @dynamic
        def fan(n: int) -> list[int]:
            return [inc(n=i) for i in range(n)]

        @workflow
        def fanned(n: int = 2) -> list[int]:
            return fan(n=n)
        """
    )
    reg = shell.run_cell_magic("flyte_fast", f"-m {unique('dyn')}", cell)
    assert builder.asked == []
    assert reg.launch("fanned", n=3).wait(timeout=300).outputs == {"o0": [1, 2, 3]}


# --- a workflow's body is the cell's code: its error is the cell's --------------------------
# Looking for a workflow's images reads its nodes, which runs its body. flytekit marks the workflow
# compiled before the body runs, so an error swallowed there left a workflow with no nodes that
# registered its task and was then refused by FlyteAdmin ("Parameter not bound").

BODY_FAILS = textwrap.dedent(
    """\
    from flytekit import task, workflow
    import flytekit

    @task
    def plus(x: int) -> int:
        return x + 1

    @workflow
    def broken(x: int = 1) -> int:
        return flytekit.nosuch(plus)(x=x)
    """
)


def registered_versions(remote, name: str) -> list:
    from flytekit.models.common import NamedEntityIdentifier

    tasks, _ = remote.client.list_tasks_paginated(NamedEntityIdentifier("flytesnacks", "development", name), limit=10)
    return [t.id.version for t in tasks]


@pytest.mark.parametrize("options", ["", "--dry-run"], ids=["sandbox", "dry-run"])
def test_an_error_in_a_workflow_body_is_shown_at_its_line_and_nothing_is_registered(shell, remote, workdir, options):
    module = unique("body")
    with pytest.raises(AttributeError, match="module 'flytekit' has no attribute 'nosuch'") as raised:
        shell.run_cell_magic("flyte_fast", f"-m {module} {options}", BODY_FAILS)
    shown = raised.value._render_traceback_()
    assert shown[-1] == "(raised at line 11 of the cell)"  # the %%flyte_fast line is line 1
    assert registered_versions(remote, f"{module}.plus") == []


def test_a_workflow_body_calling_a_task_wrongly_is_one_line_naming_the_cells_line(shell, workdir):
    from IPython.core.error import UsageError

    cell = BODY_FAILS.replace("flytekit.nosuch(plus)(x=x)", "plus(y=x)")
    with pytest.raises(UsageError, match=r"^Line 11 of the cell: Received unexpected keyword argument 'y'"):
        shell.run_cell_magic("flyte_fast", f"-m {unique('body')} --dry-run", cell)


def test_a_dry_run_does_not_build_the_image_of_a_task_run_only_in_a_branch_or_on_failure(shell, workdir, builder):
    """The branch's tasks come after the workflow in the cell, so it is serialized before them; the
    failure task is a local module's, which is serialized only as part of the workflow."""
    module = unique("branch")
    (workdir / f"{module}_steps.py").write_text(textwrap.dedent(
        f"""
        from flytekit import ImageSpec, task

        image = ImageSpec(name={unique("img")!r}, registry="registry.example.com/acme", packages=["numpy"],
                          builder="fastreg-recorder")
        cleanup_image = ImageSpec(name={unique("img")!r}, registry="registry.example.com/acme",
                                  builder="fastreg-recorder")

        @task(container_image=cleanup_image)
        def cleanup(word: str, loud_please: bool) -> None:
            print("cleaning up after", word)
        """
    ))
    cell = textwrap.dedent(
        f"""
        from flytekit import conditional, task, workflow
        from {module}_steps import cleanup, image

        @workflow(on_failure=cleanup)
        def branched(word: str = "hi", loud_please: bool = True) -> str:
            return conditional("loudness").if_(loud_please.is_true()).then(shout(word=word)).else_().then(
                quiet(word=word))

        @task(container_image=image)
        def shout(word: str) -> str:
            return word.upper()

        @task(container_image=image)
        def quiet(word: str) -> str:
            return word.lower()
        """
    )
    shell.run_cell_magic("flyte_fast", f"-m {module} --dry-run", cell)
    assert builder.asked == []
