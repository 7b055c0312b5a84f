"""jupytext notebooks: a notebook kept as text (``.py`` percent, ``.md`` markdown or MyST) is the notebook it is.

``fastreg serialize flows.py`` on a jupytext notebook reads its ``%%flyte_fast`` cells, with their options, as
``fastreg serialize flows.ipynb`` does, giving the same release; without jupytext installed it says so instead of
serializing the file as a plain module. A notebook paired with its ``.py`` (``jupytext.formats: ipynb,py:percent``)
registers under its default module name, in the kernel (a real InteractiveShell told its notebook as JupyterLab
tells it) and in CI; a plain module of that name is still refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap
import uuid
from pathlib import Path

import pytest

from fastreg_magic.pipeline import MANIFEST_NAME

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")

FASTREG = [sys.executable, "-m", "fastreg_magic.cli"]
IMAGE = "ghcr.io/acme/ml:2024-06"

FLOW_CELL = textwrap.dedent(
    """\
    %%flyte_fast -i {IMAGE}
    from flytekit import task, workflow
    from helpers.text import shout

    @task
    def greet(name: str) -> str:
        return shout(PREFIX + name)

    @workflow
    def hello(name: str = "world") -> str:
        return greet(name=name)"""
)


def _notebook(cells: list[str], formats: str | None = None):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if formats:
        nb.metadata["jupytext"] = {"formats": formats}
    return nb


def _flows_notebook():
    return _notebook(["%load_ext fastreg_magic", f"IMAGE = {IMAGE!r}\nPREFIX = 'dear '", FLOW_CELL])


def _project(folder: Path) -> Path:
    helpers = folder / "helpers"
    helpers.mkdir(parents=True)
    (helpers / "__init__.py").write_text("")
    (helpers / "text.py").write_text("def shout(s):\n    return s.upper()\n")
    return folder


def run_cli(*args, check=True, python_code=None):
    command = [sys.executable, "-c", python_code, *map(str, args)] if python_code else [*FASTREG, *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"fastreg {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _release(folder: Path) -> dict:
    """What a serialized folder holds: its manifest, .pb files and archive, by content."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    with tarfile.open(folder / manifest["archive"]) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return {"manifest": manifest, "members": members,
            "pb": {p.name: p.read_bytes() for p in sorted(folder.glob("*.pb"))}}


# -- fastreg serialize on a text notebook -------------------------------------------------------------------


@pytest.mark.parametrize("fmt, name, header", [("py:percent", "flows.py", True), ("py:light", "flows.py", True),
                                               ("md", "flows.md", True), ("md:myst", "flows.md", True),
                                               ("py:percent", "flows.py", False)])
def test_a_jupytext_notebook_serializes_as_its_ipynb(tmp_path, fmt, name, header):
    as_ipynb = _project(tmp_path / "ipynb") / "flows.ipynb"
    nbformat.write(_flows_notebook(), as_ipynb)
    as_text = _project(tmp_path / "text") / name
    text_notebook = _flows_notebook()
    if not header:  # jupytext writes no header: the `# %%flyte_fast` line tells the notebook
        text_notebook.metadata["jupytext"] = {"notebook_metadata_filter": "-all"}
    jupytext.write(text_notebook, as_text, fmt=fmt)
    assert ("jupytext" in as_text.read_text()) is header
    assert "%%flyte_fast" in as_text.read_text()

    run_cli("serialize", as_ipynb, "-o", tmp_path / "out-ipynb")
    result = run_cli("serialize", as_text, "-o", tmp_path / "out-text")

    from_text, from_ipynb = _release(tmp_path / "out-text"), _release(tmp_path / "out-ipynb")
    assert from_text["manifest"]["module"] == "flows"  # the notebook's name, as in Jupyter
    assert from_text["manifest"]["images"] == [f"default={IMAGE}"]  # the cell's own -i {IMAGE}, expanded
    assert from_text == from_ipynb  # the same release: version, specs, archive
    assert f"module flows, version {from_ipynb['manifest']['version']}" in result.stdout


def test_without_jupytext_a_text_notebook_is_refused_saying_so(tmp_path):
    as_text = _project(tmp_path) / "flows.py"
    jupytext.write(_flows_notebook(), as_text, fmt="py:percent")
    without_jupytext = ("import sys; sys.modules['jupytext'] = None; "  # `import jupytext` fails, as when not installed
                        "from fastreg_magic.cli import main; sys.exit(main(sys.argv[1:]))")

    result = run_cli("serialize", as_text, "-o", tmp_path / "out", check=False, python_code=without_jupytext)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "fastreg serialize: flows.py is a jupytext notebook, and jupytext is not installed here. "
        "pip install jupytext to serialize it, or pass the .ipynb (flows.ipynb)."]
    assert not (tmp_path / "out").exists()  # nothing serialized as a plain module


def test_a_markdown_file_that_is_no_notebook_is_still_refused(tmp_path):
    readme = tmp_path / "notes.md"
    readme.write_text("# Notes\n\n```python\nprint('hi')\n```\n")

    result = run_cli("serialize", readme, "-o", tmp_path / "out", check=False)

    assert result.returncode == 1
    assert "notes.md is neither a notebook nor a Python module" in result.stderr
    assert "jupytext notebook" in result.stderr  # which text files are notebooks


# -- a notebook paired with its .py -------------------------------------------------------------------------


def _paired(folder: Path, cells: list[str]) -> tuple[Path, Path]:
    """``pipeline.ipynb`` and ``pipeline.py`` as jupytext writes a notebook paired ``ipynb,py:percent``."""
    nb = _notebook(cells, formats="ipynb,py:percent")
    nbformat.write(nb, folder / "pipeline.ipynb")
    jupytext.write(nb, folder / "pipeline.py", fmt="py:percent")
    return folder / "pipeline.ipynb", folder / "pipeline.py"


def test_a_paired_notebook_serializes_under_its_name_from_either_file(tmp_path):
    ipynb, text = _paired(_project(tmp_path / "project"), ["%load_ext fastreg_magic", f"IMAGE = {IMAGE!r}\nPREFIX = 'dear '",
                                                            FLOW_CELL])

    from_ipynb = run_cli("serialize", ipynb, "-o", tmp_path / "from-ipynb", "--copy", "all")
    run_cli("serialize", text, "-o", tmp_path / "from-py", "--copy", "all")

    release = _release(tmp_path / "from-ipynb")
    assert release["manifest"]["module"] == "pipeline"
    assert sorted(release["members"]) == ["helpers/__init__.py", "helpers/text.py", "pipeline.py"]
    assert b"def greet" in release["members"]["pipeline.py"]  # the cell's module, not the jupytext file
    assert b"# %%" not in release["members"]["pipeline.py"]
    assert "left out pipeline.ipynb: the notebook this kernel runs" in from_ipynb.stderr
    assert _release(tmp_path / "from-py") == release


@pytest.mark.parametrize("opened", ["pipeline.ipynb", "pipeline.py"])
def test_a_paired_notebook_registers_with_its_default_module_and_a_real_clash_is_refused(
        sandbox_shell, remote, tmp_path, monkeypatch, opened):
    from IPython.core.error import UsageError

    tag = uuid.uuid4().hex[:8]
    body = f"from flytekit import task\n\n@task\ndef paired_{tag}(n: int) -> int:\n    return n + 1\n"
    folder = tmp_path / "project"
    folder.mkdir()
    _paired(folder, ["%load_ext fastreg_magic", f"%%flyte_fast\n{body}"])
    monkeypatch.chdir(folder)
    monkeypatch.setenv("JPY_SESSION_NAME", str(folder / opened))  # how JupyterLab tells the kernel its notebook

    reg = sandbox_shell.run_cell_magic("flyte_fast", "", body)

    assert reg.module == "pipeline"
    task = remote.fetch_task(name=f"pipeline.paired_{tag}", version=reg.version)
    assert task.id.version == reg.version

    # A plain module of the notebook's name, beside a notebook jupytext does not pair, would be shadowed: refused.
    nbformat.write(_notebook(["%load_ext fastreg_magic", f"%%flyte_fast\n{body}"]), folder / "pipeline.ipynb")
    (folder / "pipeline.py").write_text("def helper():\n    return 1\n")
    monkeypatch.setenv("JPY_SESSION_NAME", str(folder / "pipeline.ipynb"))
    with pytest.raises(UsageError, match=r"The cell's module `pipeline` clashes with the local module .*pipeline\.py"):
        sandbox_shell.run_cell_magic("flyte_fast", "--dry-run", body)
