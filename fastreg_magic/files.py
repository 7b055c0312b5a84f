"""The seed's two-step flow as commands, on the same code as the magic.

    fastreg serialize analysis.ipynb -o _pb_output/        # every %%flyte_fast cell, as the magic builds it
    fastreg serialize analysis.py -o _pb_output/           # a jupytext notebook (.py, .md): read as the notebook it is
    fastreg serialize pipeline.py -o _pb_output/ -i ghcr.io/acme/ml:2024-06
    fastreg register-files _pb_output/ -p flytesnacks -d development [--additional-distribution-dir s3://...]

``serialize`` writes, per cell or module, numbered ``NN_<name>_<1|2|3>.pb`` files (task, workflow,
launch plan, in registration order), the archive ``fast<digest>.tar.gz``, the data its defaults name
(``data/<sha256>/<name>``: see default_data.keep_staged) and ``fastreg-manifest.json``; it registers
nothing; what it left out (secrets, ignored files) and its warnings (large files) go to
stderr, as the magic lists them. A notebook with several ``%%flyte_fast`` cells gets one sub-directory
per cell. A module inside a package (``src/pkg/mod.py`` beside ``src/pkg/__init__.py``) is ``pkg.mod``,
shipped from ``src`` with its package, as ``pyflyte register`` names it.
For a notebook, the cells before each ``%%flyte_fast`` cell are executed in a real IPython shell
first, so names the cell borrows from earlier cells resolve exactly as they do in Jupyter; a cell's
options are expanded as Jupyter expands them (``$NAME``, ``{expr}``) and a ``%%flyte_fast`` cell's value
is ``_``, as there. A plain cell that fails (one that launches a run: nothing was registered) is
reported on stderr and skipped; a ``%%flyte_fast`` cell that fails stops it, naming the plain cells
that failed before it.

Serializing into DIR leaves exactly what that run wrote: everything is written to a staging folder,
and only once every cell has serialized does it replace what earlier serializations wrote there
(their .pb files, archive and manifest, and their cellNNN folders; files fastreg did not write stay).
A failure leaves DIR as it was. ``register-files`` checks every folder first (a damaged manifest or
archive, .pb files its manifest does not list, a release next to cell folders are refused), then
uploads each archive (to the cell's own ``--distribution-dir``, which its version covers, unless
``--additional-distribution-dir`` says otherwise) and each release's data (where the magic stores it, the
literals then pointing there), all before the first Create, and registers the files, activating the launch
plans the cell declared ``auto_activate=True`` (the manifest names them: the flag is not in the .pb files) as
``pyflyte register`` does, or every launch plan with ``--activate``. Every failure is one line naming the file
(and line).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path

from fastreg_magic import register, specs, version_check
from fastreg_magic.errors import CollectError, FastRegError, PackageError, RegistrationError, VersionConflict

MAGIC_PREFIX = "%%flyte_fast"
MANIFEST = "fastreg-manifest.json"  # pipeline.MANIFEST_NAME, without importing the pipeline (and flytekit)
CELL_FOLDER = re.compile(r"cell\d{3,}")  # serialize's folder per %%flyte_fast cell: cell000, cell001, ...
ARCHIVE_NAME = re.compile(r"fast[0-9a-f]+\.tar\.gz")  # the archive write_serialized names
PB_NAME = re.compile(r"\d+_.+_[123]\.pb")  # specs.write_specs' file names
# default_data.keep_staged's paths: data/<sha256> (a directory) or data/<sha256>/<name> (a file)
DATA_PATH = re.compile(r"data/[0-9a-f]{64}(/(?!\.\.?$)[^/\\\0]+)?")
DONE_HINT = "Nothing was written; fix it and re-run `fastreg serialize`."
DEFAULT_PROJECT, DEFAULT_DOMAIN = "flytesnacks", "development"  # api's defaults, without importing it (and flytekit)


# ---------------------------------------------------------------- fastreg serialize


def add_serialize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="NOTEBOOK.ipynb (its %%%%flyte_fast cells), a jupytext notebook "
                                       "(.py, .md), or MODULE.py")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the .pb files and the archive")
    # For a notebook, each of these given here applies to every %%flyte_fast cell, over the cell's own.
    parser.add_argument("-i", "--image", action="append", default=[], metavar="[NAME=]FQN",
                        help="image (repeatable; for a notebook: a plain FQN replaces each cell's default image, "
                             "NAME=FQN its image of that name; its other images stay)")
    parser.add_argument("--source-root", help="directory of the local modules to ship (default: the source's directory; "
                                              "for a module in a package, the folder above the package)")
    parser.add_argument("--copy", choices=("auto", "all"), help="auto (default): imported local modules; all: every file")
    parser.add_argument("--version", help="version to register under (default: derived from the content)")
    parser.add_argument("--destination-dir", help="where the code is unpacked in the container (default: .)")
    parser.add_argument("--max-archive-mib", type=_positive_int, metavar="N",
                        help="refuse archives larger than N MiB "
                             "(default: 100, or the notebook's FlyteFast.max_archive_mib)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number of MiB")
    return value


def run_serialize(args) -> int:
    source = Path(args.source).expanduser().resolve()
    is_notebook = _is_notebook(source, args.source)
    output = Path(args.output).expanduser().resolve()
    # Everything is written to a staging folder first and moved into DIR only once every cell has
    # serialized: a failing cell leaves DIR as it was, never half-written.
    with staged_output(output, args.output) as staging:
        skipped: list[str] = []
        if is_notebook:
            results = serialize_notebook(source, staging, max_archive_mib=getattr(args, "max_archive_mib", None),
                                         overrides=_cell_overrides(args), skipped=skipped)
        else:
            results = [serialize_module(source, staging, args)]
    for failure in skipped:
        print(f"{failure} Skipped it: nothing is registered while serializing.", file=sys.stderr)
    for folder, reg in results:
        shown = output / folder.relative_to(staging)
        for notice in notices(reg):  # what the magic shows under its summary: on stderr, apart from the result
            print(f"{shown}: {notice}", file=sys.stderr)
        print(f"{shown}: module {reg.module}, version {reg.version}, {len(reg.entities)} entities, {len(reg.files)} files")
    return 0


_SOURCES = "a notebook (.ipynb, or a jupytext notebook: .py or .md with its jupytext header) or a Python module (.py)"


def _is_notebook(source: Path, given: str) -> bool:
    """Whether ``source`` is a notebook (an .ipynb, a jupytext text notebook) rather than a module; refuses
    anything else. A jupytext notebook is one even when jupytext is not installed: read as a module, its
    cells' options (``-i``, ``-p``, ``-m``) would be lost, and the wrong release serialized without a word."""
    from fastreg_magic import notebook_files

    if not source.is_file():
        raise CollectError(f"{given} does not exist.", f"Pass {_SOURCES}.")
    if source.suffix == ".ipynb" or notebook_files.is_text_notebook(source):
        return True
    if source.suffix == ".py":
        return False
    raise CollectError(f"{source.name} is neither a notebook nor a Python module.", f"Pass {_SOURCES}.")


def _cell_overrides(args) -> dict:
    """The command line's options that apply to every cell of a notebook, over the cell's own."""
    overrides = {"image_overrides": tuple(args.image) or None, "copy": args.copy, "version": args.version,
                 "destination_dir": args.destination_dir,
                 "source_root": str(Path(args.source_root).expanduser().resolve()) if args.source_root else None}
    return {name: value for name, value in overrides.items() if value}


def with_images_replaced(own, given) -> tuple[str, ...]:
    """The cell's own ``-i`` images with the command line's over them, name by name: a plain FQN replaces
    the default image, ``NAME=FQN`` the image of that name; the cell's other images stay."""
    images = {_image_name(entry): entry for entry in own}
    images.update({_image_name(entry): entry for entry in given or ()})
    return tuple(images.values())


def _image_name(entry: str) -> str:
    name, sep, _ = entry.partition("=")
    return name.strip() if sep else "default"


def notices(reg) -> list[str]:
    """What was left out and why (secrets, ignored files), and the warnings (large files, modules the
    image must provide), as the magic lists them."""
    left_out = [f"left out {item.relpath}: {item.reason}" for item in reg.left_out]
    return left_out + [f"warning: {warning}" for warning in reg.warnings]


def serialize_module(path: Path, output: Path, args):
    from fastreg_magic import collect, pipeline

    # A file in a package is `pkg.mod`, shipped from the folder above the package, as pyflyte names it.
    name, source_root = collect.file_module(path, Path(args.source_root) if args.source_root else None)
    options = pipeline.Options(
        module=name,
        project=specs.PROJECT_PLACEHOLDER,
        domain=specs.DOMAIN_PLACEHOLDER,
        images=tuple(args.image),
        source_root=source_root,
        copy=args.copy or "auto",
        version=args.version,
        destination_dir=args.destination_dir or ".",
        service_account=None,
        raw_output_prefix=None,
        distribution_dir=None,
        activate=False,
        max_archive_bytes=args.max_archive_mib * 1024 * 1024 if getattr(args, "max_archive_mib", None) else None,
    )
    module_source = collect.module_from_file(path, name)
    try:
        reg = pipeline.run_module(module_source, options, namespace=None, dry_run=False, serialize_to=output,
                                  backend_fn=_no_backend, timings={}, module_file=path)
    except FastRegError as err:
        missing = _named_image_missing(err, "to `fastreg serialize`")
        if missing is None:
            raise
        raise missing from err
    except Exception as exc:
        raised = _raised_by_module(exc, module_source, path.name, source_root)
        if raised is None:
            raise
        raise raised from exc
    return output, reg


_NO_IMAGE_NAMED = re.compile(r"Image Config with name (\S+) not found")  # flytekit's words (python_auto_container)


def _named_image_missing(err: FastRegError, where: str) -> RegistrationError | None:
    """A task running on a named image (``{{.image.gpu.fqn}}``) that no ``-i`` gives, as one line naming
    the image and the option that gives it; None for any other error."""
    found = _NO_IMAGE_NAMED.search(str(err.__cause__ or ""))
    if found is None:
        return None
    name = found.group(1)
    entity = err.message.split(" cannot be serialized", 1)[0]
    return RegistrationError(f"{entity} runs on the image named {name!r}, which no -i option gives.",
                             f"Pass -i {name}=REGISTRY/IMAGE:TAG {where}.")


def _no_backend():  # pragma: no cover - serialize never asks for a backend
    raise AssertionError("serialize does not talk to a backend")


def _one_line(exc: BaseException) -> str:
    """``RuntimeError: boom.``, on one line whatever the message holds, ended as a sentence."""
    text = " ".join(str(exc.msg if isinstance(exc, SyntaxError) and exc.msg else exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if line.endswith((".", "!", "?")) else line + "."


def _raised_by_module(exc: Exception, module_source, where: str, source_root: Path,
                      in_cell: bool = False) -> CollectError | None:
    """The module's own code failing while it runs (``raise`` at module level, a failing import, a
    local module raising as it is imported) as one line naming the file and line; None when the
    error did not come from running the module (a bug of ours, which keeps its traceback).

    ``where`` names the module's source (``flows.py``, ``Cell 3 of nb.ipynb``, ``in_cell``).
    """
    from fastreg_magic import api
    from fastreg_magic.cell_errors import is_users_file, shown_path

    generated = str(api.module_dir() / f"{module_source.name}.py")
    frames = [(frame.f_code.co_filename, lineno) for frame, lineno in traceback.walk_tb(exc.__traceback__)]
    root = str(Path(source_root).resolve())

    def is_users(filename: str) -> bool:
        return filename == generated or is_users_file(filename, root)

    does_not_compile = isinstance(exc, SyntaxError) and bool(exc.filename) and is_users(exc.filename)
    # The module's package (`pkg` of `pkg.mod`) is imported before the module runs: its failure is the user's too.
    if not (does_not_compile or any(is_users(filename) for filename, _ in frames)):
        return None
    place = None
    if does_not_compile and exc.filename != generated:
        place = f"{shown_path(exc.filename, root)} line {exc.lineno}"  # a local module that does not compile
    else:
        filename, lineno = [(f, n) for f, n in frames if is_users(f)][-1]
        if filename != generated:
            place = f"{shown_path(filename, root)} line {lineno} (imported by {where})"
        else:
            line = module_source.cell_line(lineno)
            place = f"{where}{',' if in_cell else ''} line {line}" if line is not None \
                else f"{where} (in code carried over from an earlier cell)"
    return CollectError(f"{place}: {_one_line(exc)}", DONE_HINT)


def magic_cells(notebook: Path) -> list[tuple[int, str, str]]:
    """``(index, options line, body)`` of every ``%%flyte_fast`` code cell, and the code cells before them."""
    from fastreg_magic import notebook_files

    cells = notebook_files.read_cells(notebook)  # an .ipynb's, or a jupytext notebook's as jupytext reads it
    found = []
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        text = "".join(cell.get("source", "")) if isinstance(cell.get("source"), list) else cell.get("source", "")
        first, _, body = text.lstrip().partition("\n")
        if first.startswith(MAGIC_PREFIX) and (len(first) == len(MAGIC_PREFIX) or first[len(MAGIC_PREFIX)].isspace()):
            found.append((index, first[len(MAGIC_PREFIX):].strip(), body))
        else:
            found.append((index, None, text))
    return found


def serialize_notebook(notebook: Path, output: Path, max_archive_mib: int | None = None, *,
                       overrides: dict | None = None, skipped: list[str] | None = None) -> list:
    """Run the notebook's code cells up to its last ``%%flyte_fast`` cell; serialize each of those cells.

    ``max_archive_mib`` (``--max-archive-mib``) is the archive limit, as ``%config
    FlyteFast.max_archive_mib`` sets it in a notebook (a ``%config`` in the notebook's own cells still
    has the last word, as it would in Jupyter). ``overrides`` (the command line's ``--copy``...)
    replace every cell's own options; its ``-i`` images (``image_overrides``) replace the cell's images
    of their names. A plain cell that fails is skipped, its failure appended to
    ``skipped``: in a notebook that launches runs between its cells those cells cannot work here, where
    nothing is registered; a ``%%flyte_fast`` cell failing after it names it as a likely cause.
    """
    cells = magic_cells(notebook)
    magic_indexes = [i for i, (_, line, _) in enumerate(cells) if line is not None]
    if not magic_indexes:
        raise CollectError(f"{notebook.name} has no %%flyte_fast cell.", "Start a code cell with %%flyte_fast.")
    shell, magics = _notebook_shell(notebook)
    if max_archive_mib:
        magics.max_archive_mib = max_archive_mib
    failed = skipped if skipped is not None else []
    results = []
    with _in_notebook_folder(notebook):
        for index, line, body in cells[: magic_indexes[-1] + 1]:
            if line is None:  # earlier cells: their names feed lifting
                failure = _run_earlier_cell(shell, body, notebook, index)
                if failure is not None:
                    failed.append(failure)
                continue
            folder = output if len(magic_indexes) == 1 else output / f"cell{index:03d}"
            try:
                reg = _serialize_cell(magics, line, body, folder, notebook, index, overrides or {})
            except FastRegError as err:
                if not failed:
                    raise
                earlier = " ".join(failed)
                raise type(err)(err.message, f"{earlier} That may be why: it may define what this cell needs. "
                                             f"{err.hint or ''}".strip()) from err
            shell.displayhook.update_user_ns(reg)  # `reg = _` in the next cell, as in Jupyter
            results.append((folder, reg))
    return results


@contextlib.contextmanager
def _in_notebook_folder(notebook: Path):
    """Where Jupyter runs a notebook's cells: in its folder, which is also first on sys.path, so a
    plain cell's ``from mylib import x`` and ``open("data.csv")`` work as they do there."""
    folder = str(notebook.parent)
    before = os.getcwd()
    os.chdir(folder)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        os.chdir(before)
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


_SHOW_ERROR = ("showtraceback", "showsyntaxerror", "showindentationerror")


def _run_earlier_cell(shell, body: str, notebook: Path, index: int) -> str | None:
    """Run a plain cell as Jupyter would; its failure as one line naming the cell, line and error."""
    for name in _SHOW_ERROR:  # the error is reported by the caller, once, rather than as IPython's traceback
        setattr(shell, name, lambda *args, **kwargs: None)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the result lines a script may read
            result = shell.run_cell(body, silent=True, store_history=True)
    finally:
        for name in _SHOW_ERROR:
            shell.__dict__.pop(name, None)
    error = result.error_before_exec or result.error_in_exec
    if error is None:
        return None
    if isinstance(error, KeyboardInterrupt):  # Ctrl-C stops the command, not just this cell
        raise error
    line = _cell_line(error)
    at = f", line {line}," if line else ""
    return f"Cell {index} of {notebook.name}{at} failed: {_one_line(error)}"


def _cell_line(error: BaseException) -> int | None:
    """The line of the cell's own code where ``error`` arose (its call into other code, if it was raised there)."""
    if isinstance(error, SyntaxError):
        return error.lineno
    import IPython

    ipython_dir = str(Path(IPython.__file__).parent)
    frames = [(frame.f_code.co_filename, lineno) for frame, lineno in traceback.walk_tb(error.__traceback__)]
    cell = next((f for f, _ in frames if not f.startswith(ipython_dir)), None)
    lines = [n for f, n in frames if f == cell]
    return lines[-1] if lines else None


def _notebook_shell(notebook: Path):
    from IPython.core.interactiveshell import InteractiveShell

    from fastreg_magic.magic import FlyteFast

    from IPython.terminal.ipapp import load_default_config

    # The user's IPython profile (ipython_config.py), as their kernel reads it: `c.FlyteFast.images` there
    # must give the same release here as in Jupyter.
    shell = InteractiveShell.instance(config=load_default_config())
    shell.user_ns["__vsc_ipynb_file__"] = str(notebook)  # the module name defaults to the notebook's, as in Jupyter
    magics = next((m for m in shell.configurables if isinstance(m, FlyteFast)), None)
    if magics is None:
        magics = FlyteFast(shell=shell)
        shell.register_magics(magics)
    return shell, magics


def _serialize_cell(magics, line: str, body: str, folder: Path, notebook: Path, index: int, overrides: dict):
    from IPython.core.error import UsageError
    from IPython.core.magic_arguments import parse_argstring
    from IPython.utils.text import DollarFormatter

    from fastreg_magic import api

    try:  # `--config $CONFIG`, `-i {IMAGE}`: expanded from the notebook's names, as Jupyter does
        line = DollarFormatter().vformat(line, args=[], kwargs=magics.shell.user_ns)
    except Exception:  # noqa: BLE001 - as IPython: a line that does not expand is taken as written
        pass
    try:
        args = parse_argstring(magics.flyte_fast, line)
    except UsageError as exc:
        raise CollectError(f"Cell {index} of {notebook.name}: bad %%flyte_fast options {line!r}: {exc}", "Fix the cell's options.") from exc
    options = magics._options(args)
    options["source_root"] = args.source_root or magics.source_root or str(notebook.parent)
    overrides = dict(overrides)
    options["images"] = with_images_replaced(options.get("images") or (), overrides.pop("image_overrides", ()))
    options.update(overrides)
    try:
        return api.fast_register(body, namespace=magics.shell.user_ns, serialize_to=folder, first_line=2, **options)
    except FastRegError as err:
        err = _named_image_missing(err, "on the %%flyte_fast line or to `fastreg serialize`") or err
        raise type(err)(f"Cell {index} of {notebook.name}: {err.message}", err.hint) from err
    except Exception as exc:
        raised = _cell_raised(exc, body, options, magics.shell.user_ns, f"Cell {index} of {notebook.name}")
        if raised is None:
            raise
        raise raised from exc


def _cell_raised(exc: Exception, body: str, options: dict, namespace, where: str) -> CollectError | None:
    """The cell's module failing as it runs, as one line (see ``_raised_by_module``)."""
    from fastreg_magic import collect

    try:  # the module the cell became, again: it maps the module's lines back to the cell's
        # The cell's body starts on its second line, below %%flyte_fast.
        module_source = collect.module_from_cell(body, options["module"], namespace, first_line=2)
    except Exception:  # noqa: BLE001 - it was built once already; without it, no line number
        return CollectError(f"{where}: {_one_line(exc)}", DONE_HINT)
    return _raised_by_module(exc, module_source, where, Path(options["source_root"]), in_cell=True)


# ---------------------------------------------------------------- the output folder


@contextlib.contextmanager
def staged_output(output: Path, shown: str | None = None):
    """A fresh staging folder to serialize into; on success its content replaces what earlier
    serializations left in ``output``; on any failure ``output`` is left as it was.

    Checked before anything runs: ``output`` can be created and written, and holds no ``.pb`` files
    that a serialization of fastreg did not write (they would be registered with ours).
    """
    shown = shown or str(output)
    created = _make_folder(output, shown)
    try:
        _refuse_foreign_files(output)
        staging = Path(tempfile.mkdtemp(prefix="fastreg-serialize-"))
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield staging
        install(staging, output)
    except BaseException:
        _remove_empty(created)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _make_folder(output: Path, shown: str) -> list[Path]:
    """Create ``output`` (and its missing parents); returns the folders created, innermost first."""
    created = [p for p in [output, *output.parents] if not p.exists() and not p.is_symlink()]
    if output.exists() and not output.is_dir():
        raise PackageError(f"-o {shown} is a file, not a directory.",
                           "Pass a directory to -o; it is created if missing.")
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as err:
        _remove_empty(created)
        raise PackageError(f"cannot write to the output directory {shown} ({_reason(err)}).",
                           "Pass -o a directory you can write to.") from err
    return created


def _reason(err: OSError) -> str:
    if isinstance(err, (FileExistsError, NotADirectoryError)) and err.filename:
        return f"{err.filename} is a file"
    return err.strerror or str(err)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # innermost first
        try:
            folder.rmdir()
        except OSError:
            return


def release_files(folder: Path) -> list[Path] | None:
    """The files of the serialized release in ``folder`` (its .pb files, archive, manifest last), as
    far as they can be told from files fastreg did not write; None if it holds no manifest."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = None
    manifest = manifest if isinstance(manifest, dict) else {}
    listed = manifest.get("files")
    if isinstance(listed, list):  # the manifest names its .pb files
        pbs = [folder / name for name in listed if isinstance(name, str) and PB_NAME.fullmatch(name)]
    else:  # written before manifests listed them, when every .pb beside the manifest was the release's
        pbs = [p for p in folder.glob("*.pb") if PB_NAME.fullmatch(p.name)]
    archive = manifest.get("archive")
    archives = [folder / archive] if isinstance(archive, str) and ARCHIVE_NAME.fullmatch(archive) else []
    return [p for p in pbs + archives + _kept_data_files(folder, manifest) if p.is_file()] + [manifest_path]


def _kept_data_files(folder: Path, manifest: dict) -> list[Path]:
    """The files of the data a release keeps (``data/<sha256>/...``, as its manifest lists them)."""
    kept = manifest.get("data")
    found = []
    for relative in kept if isinstance(kept, dict) else ():
        if isinstance(relative, str) and DATA_PATH.fullmatch(relative):
            path = folder / relative
            found += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return found


def _remove_empty_data_folders(folder: Path) -> None:
    """The ``data`` folder's sub-folders left empty once a release's files are removed, and it too."""
    data = folder / "data"
    if not data.is_dir() or data.is_symlink():
        return
    for sub in sorted((p for p in data.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        data.rmdir()


def clear_releases(output: Path) -> None:
    """Remove what earlier serializations wrote into ``output``: its release, and its cellNNN
    folders' releases (a folder left empty goes too). Files fastreg did not write stay."""
    for path in release_files(output) or ():
        path.unlink(missing_ok=True)
    _remove_empty_data_folders(output)
    for sub in sorted(output.iterdir()) if output.is_dir() else ():
        if CELL_FOLDER.fullmatch(sub.name) and sub.is_dir() and not sub.is_symlink():
            for path in release_files(sub) or ():
                path.unlink(missing_ok=True)
            _remove_empty_data_folders(sub)
            with contextlib.suppress(OSError):
                sub.rmdir()


def _refuse_foreign_files(output: Path) -> None:
    """``.pb`` files in ``output`` (or a cellNNN folder of it) that no release of fastreg wrote."""
    for folder in [output, *(p for p in sorted(output.iterdir()) if CELL_FOLDER.fullmatch(p.name) and p.is_dir())]:
        ours = set(release_files(folder) or ())
        foreign = sorted(p.name for p in folder.glob("*.pb") if p not in ours)
        if foreign:
            names = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise PackageError(
                f"{folder} holds .pb files that `fastreg serialize` did not write ({names}); they would be "
                "registered with this release.",
                "Pass -o a new or empty directory, or remove them.",
            )


def install(staged: Path, output: Path, option: str = "-o") -> None:
    """Replace what earlier serializations left in ``output`` with the release(s) in ``staged``
    (its files, and its sub-folders' files). Each folder's manifest is moved last, so an
    interrupted install leaves no folder that register-files would take for a release.
    ``option`` names where the user gave ``output`` (``--serialize-to`` in the magic)."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        clear_releases(output)
        # Every file, at any depth (a release's kept data is data/<sha256>/...), each manifest after all the rest.
        files = sorted((p for p in staged.rglob("*") if p.is_file()), key=lambda p: (p.name == MANIFEST, p.parts))
        for path in files:
            target = output / path.relative_to(staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            _move(path, target)
    except OSError as err:
        raise PackageError(f"cannot write the serialized files to {output} ({_reason(err)}).",
                           f"Pass {option} a directory you can write to.") from err


def _move(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError:  # another file system: copy next to the target, then rename over it
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(source, partial)
        os.replace(partial, target)


# ---------------------------------------------------------------- fastreg register-files


def add_register_files_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="output of `fastreg serialize -o DIR`")
    parser.add_argument("-p", "--project", help=f"project (default: the cell's -p, else {DEFAULT_PROJECT})")
    parser.add_argument("-d", "--domain", help=f"domain (default: the cell's -d, else {DEFAULT_DOMAIN})")
    parser.add_argument("--service-account", help="Kubernetes service account of the runs")
    parser.add_argument("--raw-output-prefix", help="where runs write raw outputs, e.g. s3://bucket/raw")
    parser.add_argument("--additional-distribution-dir",
                        help="fsspec URL to upload archives to (default: the --distribution-dir the cell "
                             "was serialized with, else the backend's signed URL)")
    parser.add_argument("--config", help="Flyte config file")
    parser.add_argument("--endpoint", help="FlyteAdmin endpoint HOST:PORT")
    parser.add_argument("--activate", action="store_true",
                        help="activate the launch plans (default: as the cell's --activate said)")


def run_register_files(args) -> int:
    from fastreg_magic import config

    # Every folder is checked before the backend is asked anything: a damaged one registers nothing.
    releases = [load_release(folder) for folder in serialized_folders(Path(args.directory))]
    # Nothing configured: the embedded sandbox only if it is running already. A CI job whose Flyte config
    # went missing must fail, not register into a sandbox it started and leave behind.
    backend, notice = config.resolve_backend_with_notice(endpoint=args.endpoint, config_file=args.config,
                                                         start_sandbox=False, in_kernel=False)
    if notice:  # nothing configured: the running embedded sandbox
        print(notice, file=sys.stderr)
    backend = _reachable(backend)
    # Then everything that can refuse a release (its project and domain, its upload, a taken version) is
    # done for every folder before the first Create: a notebook's cells register all together or not at all.
    planned = [plan_release(release, backend, **_place(args, release)) for release in releases]
    registered: list[str] = []
    for plan in planned:
        try:
            # As flytekit registers: every launch plan made active with --activate, else those declared
            # `auto_activate=True` (the manifest names them).
            reactivated = register.register_specs_active(plan.client, plan.specs, activate=plan.activate,
                                                         auto_activate=plan.auto_activate)
        except FastRegError as err:
            if not registered:
                raise
            raise type(err)(f"{plan.folder}: {err.message}",
                            f"{err.hint} Registered before it: {', '.join(registered)}.".strip()) from err
        registered.append(str(plan.folder))
        print(f"{plan.folder}: {_what_was_new(plan)} as version {plan.version} in {plan.project}/{plan.domain} "
              f"on {backend.label}")
        if reactivated:  # another version had been activated since: said, as the magic says it
            print(f"{plan.folder}: {register.reactivated_note(reactivated, plan.version, whose='')}")
        for notice in _unscheduled(plan, backend):  # as the magic lists it under its summary
            print(f"{plan.folder}: warning: {notice}", file=sys.stderr)
    return 0


_UNREACHABLE_HINT = (
    "Check that FlyteAdmin runs there, or point elsewhere: pass --endpoint HOST:PORT or --config FILE, or set "
    "FLYTECTL_CONFIG. register-files never starts the embedded sandbox: with no Flyte configuration it uses one "
    "already running (`fastreg sandbox`)."
)


def _reachable(backend):
    """``config.ensure_reachable``, whose general hint says how the magic picks a backend: here, the command's way."""
    from fastreg_magic import config
    from fastreg_magic.errors import BackendError

    try:
        return config.ensure_reachable(backend)
    except BackendError as err:
        if err.hint != config._CONFIGURE_HINT:
            raise
        raise BackendError(err.message, _UNREACHABLE_HINT) from err


def _what_was_new(plan: "PlannedRelease") -> str:
    """What the Creates added, so that a CI log tells a re-run that changed nothing from a registration."""
    total, before = len(plan.specs), plan.registered_before
    if before == 0:
        return f"registered {total} entities"
    if before == total:
        return f"already registered: nothing new ({total} entities)"
    return f"registered {total - before} new entities ({before} of {total} were already registered)"


def _unscheduled(plan: "PlannedRelease", backend) -> tuple[str, ...]:
    """The magic's notice for launch plans activated with a schedule on the embedded sandbox, which runs none."""
    from fastreg_magic import pipeline

    return pipeline._unscheduled(plan.specs, plan.options, backend, plan.auto_activate)


def _place(args, release: "Release") -> dict:
    """Where and how one release registers: the command line's options, else what its cell said.

    The cell's own --distribution-dir, --service-account and --raw-output-prefix are part of its version:
    registered with others, the same version would name another archive or other settings.
    """
    manifest = release.manifest
    return dict(
        project=args.project or manifest.get("project") or DEFAULT_PROJECT,
        domain=args.domain or manifest.get("domain") or DEFAULT_DOMAIN,
        service_account=args.service_account or manifest.get("service_account"),
        raw_output_prefix=args.raw_output_prefix or manifest.get("raw_output_prefix"),
        activate=args.activate or bool(manifest.get("activate")),
        distribution_dir=args.additional_distribution_dir or manifest.get("distribution_dir"),
    )


def serialized_folders(directory: Path) -> list[Path]:
    directory = directory.expanduser().resolve()
    if not directory.is_dir():
        raise RegistrationError(
            f"{directory} {'is not a directory' if directory.exists() else 'does not exist'}.",
            "Pass the directory written by `fastreg serialize NOTEBOOK.ipynb|MODULE.py -o DIR`.",
        )
    # Hidden folders are no releases (a copy in progress, an editor's backup).
    found = sorted(p.parent for p in directory.glob(f"*/{MANIFEST}") if not p.parent.name.startswith("."))
    if (directory / MANIFEST).is_file():
        if found:
            names = ", ".join(p.name for p in found[:3]) + (" ..." if len(found) > 3 else "")
            raise RegistrationError(
                f"{directory} holds both a serialized release ({MANIFEST}) and folders of releases ({names}); "
                "it is unclear which to register.",
                f"Re-run `fastreg serialize ... -o {directory}` (it clears what earlier runs left there), "
                "or pass one of the folders.",
            )
        return [directory]
    if not found:
        raise RegistrationError(
            f"{directory} holds no serialized release ({MANIFEST} not found).",
            "Create it with `fastreg serialize NOTEBOOK.ipynb|MODULE.py -o DIR`.",
        )
    return found


_SHA256 = re.compile(r"[0-9a-f]{64}")
_MANIFEST_KEYS = {"module": str, "version": str, "archive": str, "digest": str, "destination_dir": str}


def read_manifest(folder: Path) -> dict:
    """The folder's manifest, checked: a damaged one is a one-line RegistrationError."""
    path = folder / MANIFEST

    def damaged(why: str) -> RegistrationError:
        return RegistrationError(f"{path} is damaged ({why}).", "Re-run `fastreg serialize` into this directory.")

    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise RegistrationError(f"cannot read {path} ({err.strerror or err}).", "Check its permissions.") from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise damaged(f"not valid JSON: {err}") from err
    if not isinstance(manifest, dict):
        raise damaged("not a JSON object")
    missing = sorted(k for k, kind in _MANIFEST_KEYS.items()
                     if not isinstance(manifest.get(k), kind) or (not manifest[k] and k != "destination_dir"))
    if missing:
        raise damaged(f"missing {', '.join(missing)}")
    if not ARCHIVE_NAME.fullmatch(manifest["archive"]):
        raise damaged(f"the archive {manifest['archive']!r} is not one `fastreg serialize` writes")
    images = manifest.get("images", [])
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise damaged("images is not a list of names")
    for key in ("distribution_dir", "service_account", "raw_output_prefix", "project", "domain"):
        if not isinstance(manifest.get(key), (str, type(None))):
            raise damaged(f"{key} is not a string")
    if not isinstance(manifest.get("activate"), (bool, type(None))):
        raise damaged("activate is not true or false")
    auto_activate = manifest.get("auto_activate", [])  # absent from the manifests of earlier fastregs: none
    if not isinstance(auto_activate, list) or not all(isinstance(name, str) for name in auto_activate):
        raise damaged("auto_activate is not a list of launch plan names")
    if "archive_sha256" not in manifest:
        raise RegistrationError(f"{path} was written by an earlier fastreg: it does not record the archive's bytes, "
                                "so a change to them since could not be told.",
                                "Re-run `fastreg serialize` into this directory.")
    if not (isinstance(manifest["archive_sha256"], str) and _SHA256.fullmatch(manifest["archive_sha256"])):
        raise damaged("archive_sha256 is not a sha256")
    if not _is_data_listing(manifest.get("data", {})):
        raise damaged("data is not a list of data/<sha256>[/<name>] paths, each with its kind and sha256")
    listed = manifest.get("files")
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise damaged("files is not a list of names")
        present = sorted(p.name for p in folder.glob("*.pb"))
        if present != sorted(listed):
            extra = sorted(set(present) - set(listed))
            gone = sorted(set(listed) - set(present))
            what = f"{', '.join(extra)} not written by it" if extra else f"{', '.join(gone)} missing"
            raise RegistrationError(
                f"{folder} does not hold the .pb files its manifest lists ({what}).",
                "Re-run `fastreg serialize` into this directory, or remove the files it did not write.",
            )
    return manifest


def _is_data_listing(kept) -> bool:
    """``{"data/<sha256>/<name>": {"kind": "file", "sha256": <sha256>},
    "data/<sha256>": {"kind": "directory", "sha256": <sha256>}}``, as default_data.keep_staged lists them."""
    if not isinstance(kept, dict):
        return False
    for relative, entry in kept.items():
        match = DATA_PATH.fullmatch(relative) if isinstance(relative, str) else None
        if match is None or not isinstance(entry, dict) or entry.get("sha256") != relative.split("/")[1]:
            return False
        if entry.get("kind") != ("file" if match.group(1) else "directory"):
            return False
    return True


def _check_kept_data(folder: Path, kept: dict) -> None:
    """Each data file or directory the manifest lists is there, with the bytes ``serialize`` wrote."""
    from fastreg_magic import default_data

    for relative, entry in kept.items():
        path = folder / relative
        present = path.is_dir() if entry["kind"] == "directory" else path.is_file()
        if not present:
            raise RegistrationError(f"The data {path} is missing (a default of the release names it).",
                                    "Copy the whole folder `fastreg serialize` wrote, or re-run it into this "
                                    "directory.")
        try:
            held = default_data.content_sha256(path, entry["kind"])
        except OSError as err:
            raise RegistrationError(f"cannot read the data {path} ({_reason(err)}).", "Check its permissions.") from err
        if path.is_symlink() or held != entry["sha256"]:
            raise RegistrationError(
                f"The data {path} was changed since `fastreg serialize` wrote it (its bytes are not those "
                f"{MANIFEST} records).",
                "Re-run `fastreg serialize` into this directory.",
            )


@dataclass(frozen=True)
class Release:
    """A serialized folder, read and checked: its manifest, entity specs and archive."""

    folder: Path
    manifest: dict
    specs: tuple
    archive: object  # package.Archive
    data: dict  # the data its defaults name, kept in it: relative path -> kind and sha256


def load_release(folder: Path) -> Release:
    """Read and check a serialized folder; a damaged one is a one-line RegistrationError."""
    manifest = read_manifest(folder)
    serialized = specs.read_specs(folder)
    if not serialized:
        raise RegistrationError(f"{folder} holds no .pb files.", "Re-run `fastreg serialize`.")
    _refuse_empty_specs(folder, serialized)
    archive = _archive_of(folder / manifest["archive"], manifest["digest"], manifest["archive_sha256"])
    kept = manifest.get("data", {})
    _check_kept_data(folder, kept)
    return Release(folder, manifest, serialized, archive, kept)


def _refuse_empty_specs(folder: Path, serialized) -> None:
    """A .pb file that parses yet names no entity (an empty file parses as an empty message): FlyteAdmin
    would refuse it with a riddle ("unexpected resource type unspecified")."""
    for path, spec in zip(sorted(folder.glob("*.pb")), serialized):
        if not spec.identifier.name:
            what = "it is empty" if path.stat().st_size == 0 else "it names no entity"
            raise RegistrationError(f"{path} is not a valid {spec.kind.replace('_', ' ')} protobuf: {what}.",
                                    "Re-run `fastreg serialize`.")


@dataclass(frozen=True)
class PlannedRelease:
    """A release ready to be created: checked against the backend, its archive stored, its specs hydrated."""

    folder: Path
    client: object
    specs: list
    version: str
    project: str
    domain: str
    activate: bool
    options: object  # pipeline.Options it was planned with
    registered_before: int = 0  # of its entities, those the backend held already (with this structure)
    auto_activate: tuple[str, ...] = ()  # its launch plans declared `auto_activate=True`: activated all the same


def plan_release(release: Release, backend, *, project, domain, service_account=None, raw_output_prefix=None,
                 distribution_dir=None, activate=False) -> PlannedRelease:
    """Everything short of the Creates: the project and domain exist, the archive is stored, the
    version is free (or holds exactly this). Nothing is created."""
    from fastreg_magic import config, default_data, pipeline

    manifest = release.manifest
    remote = config.connect(backend, project, domain)
    client = config.admin_client(backend)
    register.check_project_domain(client, project, domain, backend=backend, via="command")
    options = pipeline.Options(
        module=manifest["module"], project=project, domain=domain, images=tuple(manifest.get("images", ())),
        source_root=release.folder, copy="auto", version=manifest["version"],
        destination_dir=manifest["destination_dir"], service_account=service_account,
        raw_output_prefix=raw_output_prefix, distribution_dir=distribution_dir, activate=activate,
    )
    stored = pipeline.upload_archive(release.archive, options, remote)
    # The data its defaults name, stored as the magic stores it: the same cell, the same structure.
    pointed = default_data.point_at(release.specs, default_data.store_kept(remote, release.folder, release.data)) \
        if release.data else release.specs
    hydrated = [pipeline._hydrate(spec, options, stored.uri) for spec in pointed]
    try:
        # The folder's version may have been given to `fastreg serialize --version`: check it is free first.
        version_check.check_version_free(client, hydrated)
    except VersionConflict as err:
        # Here the version is the folder's, fixed by `fastreg serialize`: only a new serialization changes it.
        raise VersionConflict(
            f"{release.folder}: {err.message}",
            "A registered version is immutable, and this folder's version comes from `fastreg serialize`. If the "
            "code changed since that version was registered (a version given with --version stays the same), "
            "re-run `fastreg serialize` with a new --version (or none: then it follows the content); if only "
            "the settings differ, register it with the same --additional-distribution-dir, --service-account "
            "and --raw-output-prefix as before.",
        ) from err
    return PlannedRelease(release.folder, client, hydrated, manifest["version"], project, domain, activate, options,
                          registered_before=_registered_already(client, hydrated),
                          auto_activate=tuple(manifest.get("auto_activate", ())))


def _registered_already(client, hydrated) -> int:
    """How many of the entities the backend holds under this version (the same ones: the version was checked)."""
    lookups = [register.worker_pool().submit(version_check._registered, client, spec) for spec in hydrated]
    return sum(1 for lookup in lookups if register.result_of(lookup) is not None)


def archive_sha256(path: Path) -> str:
    """The sha256 of an archive's bytes: recorded by ``serialize`` in the manifest, checked by ``register-files``."""
    from fastreg_magic.hashing import file_digest

    return file_digest(path, "sha256").hexdigest()


def _archive_of(path: Path, digest: str, sha256: str):
    """The release's archive, checked: the members its version names, in the bytes ``serialize`` wrote.

    The members alone would let through bytes appended after them: ``tarfile`` stops at the end-of-archive
    blocks, but every run's ``tar`` fails on them ("trailing garbage").
    """
    from fastreg_magic import package

    if not path.is_file():
        raise RegistrationError(f"The archive {path} is missing.", "Re-run `fastreg serialize` into this directory.")
    try:
        held, members = package.read_archive(path)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise RegistrationError(f"The archive {path} is damaged ({err or type(err).__name__}).",
                                "Re-run `fastreg serialize` into this directory.") from err
    if held != digest:
        # The version names this content: registered, other code would run under it.
        raise RegistrationError(
            f"The archive {path} does not hold what `fastreg serialize` put in it (it was changed since).",
            "Re-run `fastreg serialize` into this directory.",
        )
    if archive_sha256(path) != sha256:
        raise RegistrationError(
            f"The archive {path} was changed since `fastreg serialize` wrote it (its bytes are not those "
            f"{MANIFEST} records).",
            "Re-run `fastreg serialize` into this directory.",
        )
    return package.Archive(path=path, digest=digest, size=path.stat().st_size, members=members)
