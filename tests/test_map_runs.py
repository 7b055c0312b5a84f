"""A map task whose element fails, as the notebook shows it: the error names the element and its
exception before anything else, and every element's row has its duration.

The cell runs through a real InteractiveShell on the session sandbox.
"""

from __future__ import annotations

import os
import re
import textwrap
import uuid

import pytest

pytestmark = pytest.mark.slow

CELL = textwrap.dedent(
    """
    from flytekit import task, workflow, map_task

    @task
    def square(v: int) -> int:
        if v == 13:
            raise ValueError("unlucky 13")
        return v * v

    @workflow
    def map_wf(vs: list[int] = [1, 2, 3, 4]) -> list[int]:
        return map_task(square)(v=vs)
    """
)


@pytest.fixture(scope="module")
def reg(sandbox_shell, tmp_path_factory):
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("map-runs"))
    try:
        yield sandbox_shell.run_cell_magic("flyte_fast", f"-m mapmod_{uuid.uuid4().hex[:8]}", CELL)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def failed_run(reg):
    return reg.launch("map_wf", vs=[2, 13]).wait(timeout=240)


def test_a_failed_element_is_named_with_its_exception_first(failed_run):
    run = failed_run
    assert run.phase == "FAILED"
    lines = run.error.splitlines()
    assert lines[0] == "square (node n0[1]) failed: ValueError: unlucky 13", run.error
    # element 0 may have been stopped once element 1 failed: it is not needed any more
    (counted,) = [n for n, line in enumerate(lines) if re.fullmatch(r"[01] of 2 elements succeeded, 2 needed\.", line)]
    assert counted > lines.index("ValueError: unlucky 13"), run.error
    assert "Traceback (most recent call last):" in run.error
    assert re.search(r'File ".*mapmod_\w+\.py", line \d+, in square', run.error), run.error
    assert "flytekit" not in run.error  # none of flytekit's frames
    assert "Message:" not in run.error and "Trace:" not in run.error
    assert "arraynode" not in run.error
    assert run.error.count("ValueError: unlucky 13") == 2  # the headline and the traceback's last line
    assert run.error_headline == lines[0]


def test_the_backend_error_summarises_the_failed_elements_as_flytepropeller_does(failed_run):
    # propeller's array node: "<element ranges>: <the element's error>" per distinct error
    assert failed_run.backend_error.startswith("Node [n0] failed: [1]: "), failed_run.backend_error
    assert "unlucky 13" in failed_run.backend_error


def test_each_element_row_has_a_duration(reg, failed_run):
    ok = reg.launch("map_wf", vs=[1, 2, 3, 4]).wait(timeout=240)
    for run, count in ((ok, 4), (failed_run, 2)):
        (mapped,) = run.nodes()
        assert mapped.duration is not None
        assert [e.label for e in mapped.children] == [f"n0[{i}]" for i in range(count)]
        for element in mapped.children:
            assert element.started is not None, element
            assert element.duration is not None and 0 <= element.duration <= mapped.duration, element
