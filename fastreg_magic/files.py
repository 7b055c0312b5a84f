"""The seed's two-step flow as commands, on the same code as the magic.

    fastreg serialize analysis.ipynb -o _pb_output/        # every %%flyte_fast cell, as the magic builds it
    fastreg serialize pipeline.py -o _pb_output/ -i ghcr.io/acme/ml:2024-06
    fastreg register-files _pb_output/ -p flytesnacks -d development [--additional-distribution-dir s3://...]

``serialize`` writes, per cell or module, numbered ``NN_<name>_<1|2|3>.pb`` files (task, workflow,
launch plan, in registration order), the archive ``fast<digest>.tar.gz`` and ``fastreg-manifest.json``;
it registers nothing. A notebook with several ``%%flyte_fast`` cells gets one sub-directory per cell.
For a notebook, the cells before each ``%%flyte_fast`` cell are executed in a real IPython shell
first, so names the cell borrows from earlier cells resolve exactly as they do in Jupyter.
``register-files`` uploads each archive and registers the files.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

from fastreg_magic import register, specs, version_check
from fastreg_magic.errors import CollectError, FastRegError, RegistrationError

MAGIC_PREFIX = "%%flyte_fast"


# ---------------------------------------------------------------- fastreg serialize


def add_serialize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="NOTEBOOK.ipynb (its %%%%flyte_fast cells) or MODULE.py")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the .pb files and the archive")
    parser.add_argument("-i", "--image", action="append", default=[], metavar="[NAME=]FQN", help="image (module only; notebooks use each cell's -i)")
    parser.add_argument("--source-root", help="directory of the local modules to ship (default: the source's directory)")
    parser.add_argument("--copy", choices=("auto", "all"), default="auto")
    parser.add_argument("--version", help="version to register under (default: derived from the content)")
    parser.add_argument("--destination-dir", default=".", help="where the code is unpacked in the container")


def run_serialize(args) -> int:
    source = Path(args.source).expanduser().resolve()
    if not source.is_file():
        raise CollectError(f"{args.source} does not exist.", "Pass a notebook (.ipynb) or a Python module (.py).")
    output = Path(args.output).expanduser().resolve()
    if source.suffix == ".ipynb":
        results = serialize_notebook(source, output)
    elif source.suffix == ".py":
        results = [serialize_module(source, output, args)]
    else:
        raise CollectError(f"{source.name} is neither a notebook nor a Python module.", "Pass a .ipynb or a .py file.")
    for folder, reg in results:
        print(f"{folder}: module {reg.module}, version {reg.version}, {len(reg.entities)} entities, {len(reg.files)} files")
    return 0


def serialize_module(path: Path, output: Path, args):
    from fastreg_magic import api, collect, pipeline

    source_root = Path(args.source_root).expanduser().resolve() if args.source_root else path.parent
    options = pipeline.Options(
        module=api.validate_module_name(path.stem),
        project=specs.PROJECT_PLACEHOLDER,
        domain=specs.DOMAIN_PLACEHOLDER,
        images=tuple(args.image),
        source_root=source_root,
        copy=args.copy,
        version=args.version,
        destination_dir=args.destination_dir,
        service_account=None,
        raw_output_prefix=None,
        distribution_dir=None,
        activate=False,
    )
    module_source = collect.module_from_file(path)
    reg = pipeline.run_module(module_source, options, namespace=None, dry_run=False, serialize_to=output,
                              backend_fn=_no_backend, timings={}, module_file=path)
    return output, reg


def _no_backend():  # pragma: no cover - serialize never asks for a backend
    raise AssertionError("serialize does not talk to a backend")


def magic_cells(notebook: Path) -> list[tuple[int, str, str]]:
    """``(index, options line, body)`` of every ``%%flyte_fast`` code cell, and the code cells before them."""
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError) as exc:
        raise CollectError(f"{notebook} is not a readable notebook: {exc}", "Pass a Jupyter .ipynb file.") from exc
    found = []
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        text = "".join(cell.get("source", "")) if isinstance(cell.get("source"), list) else cell.get("source", "")
        first, _, body = text.lstrip().partition("\n")
        if first.startswith(MAGIC_PREFIX) and (len(first) == len(MAGIC_PREFIX) or first[len(MAGIC_PREFIX)].isspace()):
            found.append((index, first[len(MAGIC_PREFIX):].strip(), body))
        else:
            found.append((index, None, text))
    return found


def serialize_notebook(notebook: Path, output: Path) -> list:
    """Run the notebook's code cells up to its last ``%%flyte_fast`` cell; serialize each of those cells."""
    cells = magic_cells(notebook)
    magic_indexes = [i for i, (_, line, _) in enumerate(cells) if line is not None]
    if not magic_indexes:
        raise CollectError(f"{notebook.name} has no %%flyte_fast cell.", "Start a code cell with %%flyte_fast.")
    shell, magics = _notebook_shell(notebook)
    results = []
    for index, line, body in cells[: magic_indexes[-1] + 1]:
        if line is None:
            shell.run_cell(body, silent=True, store_history=True)  # earlier cells: their names feed lifting
            continue
        folder = output if len(magic_indexes) == 1 else output / f"cell{index:03d}"
        results.append((folder, _serialize_cell(magics, line, body, folder, notebook, index)))
    return results


def _notebook_shell(notebook: Path):
    from IPython.core.interactiveshell import InteractiveShell

    from fastreg_magic.magic import FlyteFast

    shell = InteractiveShell.instance()
    shell.user_ns["__vsc_ipynb_file__"] = str(notebook)  # the module name defaults to the notebook's, as in Jupyter
    magics = next((m for m in shell.configurables if isinstance(m, FlyteFast)), None)
    if magics is None:
        magics = FlyteFast(shell=shell)
        shell.register_magics(magics)
    return shell, magics


def _serialize_cell(magics, line: str, body: str, folder: Path, notebook: Path, index: int):
    from IPython.core.error import UsageError
    from IPython.core.magic_arguments import parse_argstring

    from fastreg_magic import api

    try:
        args = parse_argstring(magics.flyte_fast, line)
    except UsageError as exc:
        raise CollectError(f"Cell {index} of {notebook.name}: bad %%flyte_fast options {line!r}: {exc}", "Fix the cell's options.") from exc
    options = magics._options(args)
    options["source_root"] = args.source_root or magics.source_root or str(notebook.parent)
    try:
        return api.fast_register(body, namespace=magics.shell.user_ns, serialize_to=folder, **options)
    except FastRegError as err:
        raise type(err)(f"Cell {index} of {notebook.name}: {err.message}", err.hint) from err


# ---------------------------------------------------------------- fastreg register-files


def add_register_files_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="output of `fastreg serialize -o DIR`")
    parser.add_argument("-p", "--project", default="flytesnacks")
    parser.add_argument("-d", "--domain", default="development")
    parser.add_argument("--service-account", help="Kubernetes service account of the runs")
    parser.add_argument("--raw-output-prefix", help="where runs write raw outputs, e.g. s3://bucket/raw")
    parser.add_argument("--additional-distribution-dir", help="fsspec URL to upload archives to (default: the backend's signed URL)")
    parser.add_argument("--config", help="Flyte config file")
    parser.add_argument("--endpoint", help="FlyteAdmin endpoint HOST:PORT")
    parser.add_argument("--activate", action="store_true", help="activate the launch plans")


def run_register_files(args) -> int:
    from fastreg_magic import config

    folders = serialized_folders(Path(args.directory))
    backend = config.ensure_reachable(config.resolve_backend(endpoint=args.endpoint, config_file=args.config))
    for folder in folders:
        version, count = register_folder(
            folder, backend, project=args.project, domain=args.domain, service_account=args.service_account,
            raw_output_prefix=args.raw_output_prefix, distribution_dir=args.additional_distribution_dir,
            activate=args.activate,
        )
        print(f"{folder}: registered {count} entities as version {version} in {args.project}/{args.domain} on {backend.label}")
    return 0


def serialized_folders(directory: Path) -> list[Path]:
    from fastreg_magic.pipeline import MANIFEST_NAME

    directory = directory.expanduser().resolve()
    if (directory / MANIFEST_NAME).is_file():
        return [directory]
    found = sorted(p.parent for p in directory.glob(f"*/{MANIFEST_NAME}"))
    if not found:
        raise RegistrationError(
            f"{directory} holds no serialized release ({MANIFEST_NAME} not found).",
            "Create it with `fastreg serialize NOTEBOOK.ipynb|MODULE.py -o DIR`.",
        )
    return found


def register_folder(folder: Path, backend, *, project, domain, service_account=None, raw_output_prefix=None,
                    distribution_dir=None, activate=False) -> tuple[str, int]:
    """Validate, upload and register one serialized release; nothing is created if anything is off."""
    from fastreg_magic import config, pipeline

    manifest = json.loads((folder / pipeline.MANIFEST_NAME).read_text())
    serialized = specs.read_specs(folder)
    if not serialized:
        raise RegistrationError(f"{folder} holds no .pb files.", "Re-run `fastreg serialize`.")
    archive = _archive_of(folder / manifest["archive"], manifest["digest"])
    remote = config.connect(backend, project, domain)
    client = config.admin_client(backend)
    register.check_project_domain(client, project, domain)
    options = pipeline.Options(
        module=manifest["module"], project=project, domain=domain, images=tuple(manifest.get("images", ())),
        source_root=folder, copy="auto", version=manifest["version"], destination_dir=manifest["destination_dir"],
        service_account=service_account, raw_output_prefix=raw_output_prefix, distribution_dir=distribution_dir,
        activate=activate,
    )
    stored = pipeline.upload_archive(archive, options, remote)
    hydrated = [pipeline._hydrate(spec, options, stored.uri) for spec in serialized]
    # The folder's version may have been given to `fastreg serialize --version`: check it is free first.
    version_check.check_version_free(client, hydrated)
    register.register_specs(client, hydrated, activate=activate)
    return manifest["version"], len(hydrated)


def _archive_of(path: Path, digest: str):
    from fastreg_magic import package

    if not path.is_file():
        raise RegistrationError(f"The archive {path} is missing.", "Re-run `fastreg serialize` into this directory.")
    with tarfile.open(path, "r:gz") as tar:
        members = tuple(m.name for m in tar.getmembers() if m.isfile())
    return package.Archive(path=path, digest=digest, size=path.stat().st_size, members=members)

