"""Names the code uses that nothing defines (a missing import on a path no other test takes), found by
reading the source with pyflakes rather than by waiting for a user to reach that path."""

from __future__ import annotations

from pathlib import Path

from pyflakes import api, messages, reporter

from conftest import ROOT


def test_no_module_uses_an_undefined_name():

    found = []

    class Collect(reporter.Reporter):
        def __init__(self):
            pass

        def flake(self, message):
            if isinstance(message, (messages.UndefinedName, messages.UndefinedLocal)):
                found.append(str(message))

        def syntaxError(self, filename, msg, lineno, offset, text):
            found.append(f"{filename}:{lineno}: {msg}")

        def unexpectedError(self, filename, msg):
            found.append(f"{filename}: {msg}")

    for path in sorted(Path(ROOT, "fastreg_magic").rglob("*.py")):
        api.checkPath(str(path), Collect())
    assert found == []
