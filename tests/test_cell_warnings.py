"""What Python says about a cell's code as it compiles it (``invalid escape sequence``) is said once,
numbered as the editor numbers the cell's lines, as a plain cell says it."""

from __future__ import annotations

import warnings

import pytest

CELL = 'from flytekit import task\n\nPAT = "\\d+"\n\n@task\ndef t(n: int) -> int:\n    return n\n'


@pytest.fixture(scope="module")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "fastreg_magic")
    return ip


def test_an_invalid_escape_is_warned_once_at_the_cells_line(shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shell.run_cell_magic("flyte_fast", "--dry-run -m escapes", CELL)
    said = [(w.filename, w.lineno) for w in caught if "invalid escape sequence" in str(w.message)]
    # %%flyte_fast is line 1, so the PAT line is line 4 in the editor
    assert said == [("<cell>", 4)]
    assert shell.user_ns["PAT"] == "\\d+"
