"""Two `%%flyte_fast` cells of one notebook keep their runs apart; a re-run of one cell keeps its own.

Every cell of a notebook gets the same module name by default (the notebook's, or ``flyte_cell``), so
the module does not tell cells apart. In JupyterLab, Notebook 7 and VS Code the frontend sends each
cell's id with it: a real kernel, driven as they drive it, is used for that. Without one (terminal
IPython, nbclient), a cell is known by the workflows it defines: a real InteractiveShell for that.
Both register and run on the session sandbox. A notebook named like a Python keyword gets a module.
"""

from __future__ import annotations

import uuid

import pytest

from kernel_driver import KernelDriver

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 240

CELL_TEMPLATE = """
from flytekit import task, workflow

@task
def {task}(n: int) -> int:
    return n + {step}

@workflow
def {workflow}(n: int = 1) -> int:
    return {task}(n=n)
"""


def cell(workflow: str, step: int = 1) -> str:
    return CELL_TEMPLATE.format(task=f"{workflow}_task", workflow=workflow, step=step)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)  # no notebook known: the module is flyte_cell
    return tmp_path


# -- without cell ids: terminal IPython, nbclient ----------------------------------------------------------


def test_two_cells_with_the_default_module_keep_their_runs_apart(sandbox_shell, workdir):
    from fastreg_magic.widget_registration import RegistrationWidget
    from fastreg_magic.widget_text import registration_text

    tag = uuid.uuid4().hex[:8]
    first = sandbox_shell.run_cell_magic("flyte_fast", "", cell(f"train_{tag}"))
    second = sandbox_shell.run_cell_magic("flyte_fast", "", cell(f"score_{tag}"))
    assert first.module == second.module == "flyte_cell"  # the same module: only the cells differ
    second_widget = RegistrationWidget(second)
    try:
        run = first.launch(n=2).wait(timeout=RUN_TIMEOUT_S)
        assert run.phase == "SUCCEEDED" and run.outputs == {"o0": 3}
        assert first.runs == [run]
        assert second.runs == []
        assert second_widget.run_views == []  # not shown as a "(previous version)" run of the other cell
        assert run.name not in registration_text(second)
        assert run.name in registration_text(first)

        edited = sandbox_shell.run_cell_magic("flyte_fast", "", cell(f"train_{tag}", step=5))
        assert edited.version != first.version
        assert edited.runs == [run]  # the cell re-run after an edit keeps its runs in view
        assert f"(previous version {first.version})" in registration_text(edited)
        again = sandbox_shell.run_cell_magic("flyte_fast", "", cell(f"score_{tag}"))
        assert not again.registered and again.runs == []  # unchanged re-run: its own runs, none
    finally:
        second_widget.close()


# -- with cell ids: JupyterLab, Notebook 7, VS Code ---------------------------------------------------------


class Frontend(KernelDriver):
    """A kernel driven as JupyterLab drives it: each execute request names its cell (``metadata.cellId``)."""

    def run_cell(self, code: str, cell_id: str) -> dict:
        def execute(code, user_expressions=None, **_):
            content = {"code": code, "silent": False, "store_history": True, "allow_stdin": False,
                       "user_expressions": user_expressions or {}, "stop_on_error": True}
            message = self.kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
            self.kc.shell_channel.send(message)
            return message["header"]["msg_id"]

        self.kc.execute = execute
        try:
            return self.run(code, timeout=RUN_TIMEOUT_S)
        finally:
            del self.kc.execute


@pytest.fixture
def frontend(sandbox, workdir):
    kernel = Frontend(cwd=workdir)
    try:
        kernel.run_cell(f"%load_ext fastreg_magic\n%config FlyteFast.config_file = {str(sandbox.config_file)!r}",
                        "setup")
        yield kernel
    finally:
        kernel.close()


def test_cells_the_frontend_names_keep_their_runs_apart_whatever_they_define(frontend):
    tag = uuid.uuid4().hex[:8]
    workflow = f"flow_{tag}"
    frontend.run_cell(f"%%flyte_fast\n{cell(workflow)}", "cell-a")
    frontend.run_cell("reg_a = _", "cell-a-next")
    frontend.run_cell(f"%%flyte_fast\n{cell(workflow)}", "cell-copy")  # a copy of the cell: the same release
    frontend.run_cell("reg_copy = _", "cell-copy-next")
    frontend.run_cell(f"%%flyte_fast\n{cell(workflow, step=2)}", "cell-b")  # another cell, same workflow name
    frontend.run_cell("reg_b = _", "cell-b-next")
    out = frontend.run_cell(f"run = reg_a.launch(n=1).wait(timeout={RUN_TIMEOUT_S})\nprint(run.phase)", "launch")
    assert out["stdout"].strip() == "SUCCEEDED"

    assert frontend.eval("reg_copy.version == reg_a.version") is True
    assert frontend.eval("[r.name for r in reg_a.runs] == [run.name]") is True
    assert frontend.eval("[r.name for r in reg_copy.runs]") == []
    assert frontend.eval("[r.name for r in reg_b.runs]") == []
    shown = ("[v.run.name for v in __import__('fastreg_magic.widget').widget._shown_by_cell[('cell', {!r})]()"
             ".run_views]")
    assert frontend.eval(shown.format("cell-b")) == []  # cell B's widget does not show cell A's run
    assert frontend.eval(shown.format("cell-a")) == [frontend.eval("run.name")]

    frontend.run_cell(f"%%flyte_fast\n{cell(workflow, step=7)}", "cell-a")  # cell A edited and re-run
    frontend.run_cell("reg_a2 = _", "cell-a-next")
    assert frontend.eval("reg_a2.version != reg_a.version and reg_a2.runs is reg_a.runs") is True
    assert frontend.eval(shown.format("cell-a")) == [frontend.eval("run.name")]


# -- the module a notebook's cells get -----------------------------------------------------------------------


@pytest.mark.parametrize("notebook, module", [("class.ipynb", "nb_class"), ("Import.ipynb", "nb_import"),
                                              ("2024 runs.ipynb", "nb_2024_runs")])
def test_a_notebook_named_like_a_keyword_gets_a_module_it_can_import(sandbox_shell, workdir, monkeypatch,
                                                                    notebook, module):
    monkeypatch.setenv("JPY_SESSION_NAME", str(workdir / notebook))  # how JupyterLab tells the kernel its notebook
    (workdir / notebook).write_text("{}")
    reg = sandbox_shell.run_cell_magic("flyte_fast", "--dry-run", cell(f"plan_{uuid.uuid4().hex[:8]}"))
    assert reg.module == module
    assert all(ref.name.startswith(f"{module}.") for ref in reg.entities)
