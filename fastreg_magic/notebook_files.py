"""Which files are a notebook: a Jupyter ``.ipynb``, or a jupytext text notebook, and the files paired with it.

jupytext keeps a notebook as a text file too (``.py`` in its percent or light format, ``.md`` as markdown or
MyST), often *paired* with the ``.ipynb`` (``jupytext.formats: ipynb,py:percent``: every save writes both).
Such a file is the notebook, not a module: ``fastreg serialize`` reads its ``%%flyte_fast`` cells as it reads
an ``.ipynb``'s, and the paired file neither clashes with the cell's module (``pipeline.ipynb`` and its
``pipeline.py`` make the module ``pipeline``) nor ships with ``--copy all``, as the ``.ipynb`` itself does not.

    is_text_notebook(Path("pipeline.py"))    # True: its "# ---\\n# jupyter:\\n#   jupytext: ..." header says so
    read_cells(Path("pipeline.md"))          # [{"cell_type": "code", "source": "%%flyte_fast ...", ...}, ...]
    paired_files(Path("pipeline.ipynb"))     # {.../pipeline.ipynb, .../pipeline.py}

A text notebook is told by its header, as jupytext writes it; a ``.py`` without one holding a ``# %%flyte_fast``
line (the magic as jupytext comments it) is one too: as a plain module, its cell's options would be lost.
Reading it needs the jupytext library (its parsers, not ours); without it, one error says to install it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastreg_magic.errors import CollectError

# The suffixes of the text notebooks jupytext reads that hold Python cells (jupytext.formats.NOTEBOOK_EXTENSIONS
# lists every language's: a notebook of another language has no %%flyte_fast cell to serialize).
TEXT_NOTEBOOK_SUFFIXES = (".py", ".md", ".markdown", ".Rmd", ".myst", ".mystnb", ".mnb")
_COMMENTED_MAGIC = re.compile(r"^# %%flyte_fast(\s|$)", re.MULTILINE)  # `%%flyte_fast` as jupytext writes it in a .py
_CODING = re.compile(r"^#.*coding[:=]")
_HEADER_MAX_BYTES = 1024 * 1024  # a header is at the top: no need to read a large data file whole


def is_text_notebook(path: Path) -> bool:
    """Whether ``path`` is a jupytext text notebook: its header says so (a ``.py`` may instead hold
    ``# %%flyte_fast``, which only a notebook's cell can mean)."""
    path = Path(path)
    if path.suffix not in TEXT_NOTEBOOK_SUFFIXES:
        return False
    text = _head(path)
    if text is None:
        return False
    return text_notebook_metadata(text, path.suffix) is not None or (
        path.suffix == ".py" and _COMMENTED_MAGIC.search(text) is not None)


def text_notebook_metadata(text: str, suffix: str) -> dict | None:
    """The notebook metadata of a jupytext header (``jupytext``, ``kernelspec``...), None without one.

    Written by hand rather than with jupytext's header reader so that a jupytext notebook is told as one
    when jupytext is not installed too, and refused saying so instead of being taken for a module: the
    YAML front matter between ``---`` lines (commented ``# `` in a ``.py``, after an optional ``#!`` and
    coding line; in a markdown file optionally inside ``<!-- -->``) holding ``jupyter:`` (the percent,
    light and markdown formats) or, at its top level, ``jupytext:`` (MyST).
    """
    import yaml  # PyYAML, which flytekit requires

    commented = suffix == ".py"
    lines = text.splitlines()
    start = 0
    if commented:
        if lines[:1] and lines[0].startswith("#!"):
            start = 1
        if len(lines) > start and _CODING.match(lines[start]):
            start += 1
    elif lines[:1] and lines[0].strip() == "<!--":
        start = 1
    body = [_uncommented(line) if commented else line for line in lines[start:]]
    if not body or body[0] is None or body[0].strip() != "---":
        return None
    try:
        end = next(i for i, line in enumerate(body[1:], 1) if line is None or line.strip() == "---")
    except StopIteration:
        return None
    if body[end] is None:
        return None
    try:
        front = yaml.safe_load("\n".join(body[1:end]))
    except yaml.YAMLError:
        return None
    if not isinstance(front, dict):
        return None
    if isinstance(front.get("jupyter"), dict):
        return front["jupyter"]
    if not commented and isinstance(front.get("jupytext"), dict):
        return front  # MyST keeps the notebook's metadata at the front matter's top level
    return None


def _uncommented(line: str) -> str | None:
    """A header line of a ``.py`` without its ``# ``; None for a line that is no comment (the header ended)."""
    if not line.startswith("#"):
        return None
    return line[2:] if line.startswith("# ") else line[1:]


def _head(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read(_HEADER_MAX_BYTES)
    except (OSError, UnicodeDecodeError):
        return None


def read_cells(notebook: Path) -> list:
    """The notebook's cells (``cell_type``, ``source``...): an ``.ipynb``'s JSON, or a text notebook as jupytext
    reads it (its magics, ``# %%flyte_fast``, back as ``%%flyte_fast``)."""
    notebook = Path(notebook)
    if notebook.suffix != ".ipynb":
        return _text_notebook_cells(notebook)
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CollectError(f"{notebook} is not a readable notebook: {exc}", "Pass a Jupyter .ipynb file.") from exc
    if not isinstance(cells, list):
        raise CollectError(f"{notebook} is not a readable notebook: its cells are not a list.",
                           "Pass a Jupyter .ipynb file.")
    return cells


def _text_notebook_cells(notebook: Path) -> list:
    try:
        import jupytext
    except ImportError as exc:
        raise CollectError(f"{notebook.name} is a jupytext notebook, and jupytext is not installed here.",
                           f"pip install jupytext to serialize it, or pass the .ipynb "
                           f"({notebook.with_suffix('.ipynb').name}).") from exc
    try:
        return list(jupytext.read(notebook).cells)
    except Exception as exc:  # noqa: BLE001 - jupytext's parsers raise many kinds; each is the file's fault
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CollectError(f"{notebook} is not a readable jupytext notebook: {reason}",
                           "Open it in Jupyter (with jupytext) to fix it, or pass the .ipynb.") from exc


# ---------------------------------------------------------------- pairing


def paired_files(notebook: Path | None) -> set[Path]:
    """The files that are ``notebook``: itself and the files jupytext pairs with it, resolved.

    A file of the same name beside it is paired when it is a text notebook (its jupytext header), when it is the
    ``.ipynb`` of a text notebook, or when either's ``jupytext.formats`` names its extension; with jupytext
    installed, the paired paths ``jupytext.formats`` gives elsewhere (``notebooks///ipynb,scripts///py:percent``)
    too. A plain ``pipeline.py`` beside ``pipeline.ipynb`` is no pair: it is a module of its own.
    """
    if notebook is None:
        return set()
    notebook = Path(notebook).expanduser().resolve()
    paired = {notebook}
    own_formats = _formats_of(notebook)
    for suffix in (".ipynb", *TEXT_NOTEBOOK_SUFFIXES):
        sibling = notebook.with_suffix(suffix)
        if sibling == notebook or not sibling.is_file():
            continue
        named = _names_extension(own_formats, suffix) or _names_extension(_formats_of(sibling), notebook.suffix)
        if named or is_text_notebook(sibling) or (suffix == ".ipynb" and is_text_notebook(notebook)):
            paired.add(sibling)
    return paired | _declared_pairs(notebook, own_formats)


def _formats_of(path: Path) -> str:
    """The notebook's ``jupytext.formats`` (``"ipynb,py:percent"``), "" when it has none or is no notebook."""
    if path.suffix == ".ipynb":
        try:
            metadata = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
        except (OSError, ValueError, AttributeError):
            return ""
    else:
        text = _head(path)
        metadata = text_notebook_metadata(text, path.suffix) if text is not None else None
    jupytext_metadata = metadata.get("jupytext") if isinstance(metadata, dict) else None
    formats = jupytext_metadata.get("formats") if isinstance(jupytext_metadata, dict) else None
    return formats if isinstance(formats, str) else ""


def _names_extension(formats: str, suffix: str) -> bool:
    """Whether ``formats`` pairs a file of ``suffix`` beside the notebook (``py:percent``, ``ipynb``, ``.md``)."""
    for entry in formats.split(","):
        extension = entry.split(":", 1)[0].strip()
        if extension and "/" not in extension and "." + extension.lstrip(".") == suffix:
            return True
    return False


def _declared_pairs(notebook: Path, formats: str) -> set[Path]:
    """The paths jupytext pairs the notebook with by its ``formats`` (prefixes, suffixes), when jupytext is here."""
    if not formats:
        return set()
    try:
        from jupytext.formats import long_form_one_format
        from jupytext.paired_paths import paired_paths

        current = long_form_one_format(notebook.suffix.lstrip("."))
        return {Path(path).resolve() for path, _ in paired_paths(str(notebook), current, formats)}
    except Exception:  # noqa: BLE001 - no jupytext, or formats it refuses (then it pairs nothing either)
        return set()
