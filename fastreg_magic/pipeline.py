"""The steps of ``fast_register`` in order, each a small function over the previous step's value.

    prepare_files (files to ship, digest, version)
      ├─ dry run / --serialize-to:  load → serialize → (show | write .pb files + archive)
      ├─ same version registered before in this process:  load → the remembered Registration
      │     (its archive stored again first if it is gone: see _store_again_if_gone; registered
      │     again when a file or directory its defaults name changed since: see default_data)
      └─ otherwise:  check project/domain → (package → upload) ∥ (load → serialize) → register

Kept apart from ``api.py`` (the public names and the Registration value) so each reads in one screen.
The version depends only on the shipped files and settings, so the upload can start before the
cell's module runs. No Create RPC is sent before every entity has been serialized, the
project/domain checked and the archive stored: a failure that can be foreseen leaves nothing
half-registered. Each registration shows the runs of its cell, which its re-runs share and other
cells do not (`_runs_of_the_cell`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, MutableMapping

from fastreg_magic import api, cell_errors, default_data, default_signatures, register, specs, version_check
from fastreg_magic import config as _config
from fastreg_magic.errors import CollectError, Interrupted, VersionConflict

MANIFEST_NAME = "fastreg-manifest.json"


@dataclass(frozen=True)
class Options:
    module: str
    project: str
    domain: str
    images: tuple[str, ...]
    source_root: Path
    copy: str
    version: str | None
    destination_dir: str
    service_account: str | None
    raw_output_prefix: str | None
    distribution_dir: str | None
    activate: bool
    max_archive_bytes: int | None = None
    progress: Callable[[int, int], None] | None = field(default=None, compare=False)
    notebook: Path | None = None  # the notebook this kernel runs: its cells ship as modules, not its file


@dataclass(frozen=True)
class Prepared:
    """Everything known before talking to a backend: the module, its files, its version, its specs."""

    module_source: Any  # collect.ModuleSource
    module: Any  # the executed module
    entities: tuple
    fileset: Any  # collect.FileSet
    measured: Any  # package.Measured: the files' digest and size, and what they were computed over
    images: tuple[str, ...]
    image_config: Any  # flytekit ImageConfig
    version: str
    content_version: str  # what the version would be without --version: the memo's key
    specs: tuple[specs.Spec, ...]
    warnings: tuple[str, ...] = ()  # found while the module ran (a local module imported by name, not shipped)
    said_once: tuple[str, ...] = ()  # what this registration did once (reactivated a launch plan): not remembered

    @property
    def digest(self) -> str:
        return self.measured.digest

    @property
    def raw_size(self) -> int:
        """Bytes of the files before compression."""
        return self.measured.raw_size


def run(
    source: str,
    options: Options,
    *,
    namespace: MutableMapping[str, Any] | None,
    dry_run: bool,
    serialize_to: Path | None,
    backend_fn: Callable[[], _config.Backend],
    first_line: int = 1,
) -> api.Registration:
    from fastreg_magic import collect

    timings: dict[str, float] = {}
    with api.timed(timings, "collect"), stopping("while reading the cell"):
        # Without a namespace the source must stand alone; an empty one makes collect report free names now.
        module_source = collect.module_from_cell(source, options.module, namespace if namespace is not None else {},
                                                 first_line=first_line)
    return run_module(module_source, options, namespace=namespace, dry_run=dry_run, serialize_to=serialize_to,
                      backend_fn=backend_fn, timings=timings)


def run_module(module_source, options: Options, *, namespace, dry_run, serialize_to, backend_fn, timings,
               module_file: Path | None = None) -> api.Registration:
    # Each step says what stopped it; this, a Ctrl-C between two of them.
    with stopping("before registering"):
        with stopping("while collecting the files to ship"):
            prepared = prepare_files(module_source, options, timings, module_file)
        if dry_run or serialize_to is not None:
            with stopping("while serializing"):
                return _serialize_only(prepared, options, namespace, timings, dry_run=dry_run,
                                       serialize_to=serialize_to, module_file=module_file)
        backend = _finding_backend(backend_fn)
        with stopping("while looking up what this kernel registered before"):
            key = api._memo_key(backend, options.project, options.domain, prepared.version,
                                prepared.content_version, options.activate)
            cached = api._memo.get(key)
            data_changed = default_signatures.paths_changed_since(key) if cached is not None else None
            if data_changed is not None:
                cached = None  # the same files, other data in a default: serialized and registered again below
                api.run_again(options.module)  # as a new kernel would: a launch plan reads its defaults as declared
            stored_again = (_store_again_if_gone(cached, prepared, options, backend, timings)
                            if cached is not None else None)
            if stored_again is not None and stored_again.uri != cached.archive_uri:
                cached = None  # stored under another name: register entities that point there
        if cached is not None and (options.activate or register.auto_activated(cached.entities)):
            # None: the backend lost this version, registered again below
            cached = _activated_again(cached, backend, options.activate)
        if cached is not None:  # same content, same place: nothing to create, nothing to upload unless it was gone
            computed = default_signatures.has_computed(key)
            if computed:  # data a default computes (a DataFrame read from a file) is read as the cell runs: run it
                api.run_again(options.module)
            with stopping("while running the cell"):
                answered, entities = _answered_from_memory(cached, stored_again, prepared, options, namespace,
                                                           timings, runs=_runs_of_the_cell(key, options, cached.entities))
            data_changed = default_signatures.values_changed_since(key, entities) if computed else None
            if data_changed is None:
                return answered
            api.run_again(options.module)  # registered below from a new run, its launch plans' data stored too
        with stopping(f"while connecting to {backend.label}"):
            backend = _config.ensure_reachable(backend)  # an --endpoint may turn out to be the embedded sandbox
            remote = _config.connect(backend, options.project, options.domain)
            client = _config.admin_client(backend)
            register.check_project_domain(client, options.project, options.domain, backend=backend)
        # The embedded sandbox runs tasks on this machine: an ImageSpec's image is never pulled there, so not built.
        with stopping("while uploading the archive and serializing the cell"):
            archive, stored, prepared = _store_while_loading(prepared, options, namespace, remote, timings,
                                                             build_images=not backend.is_sandbox)
    with _registering(options.module) as registered:
        with api.timed(timings, "register"):
            prepared = _register_as_versioned(client, prepared, options, stored.uri, timings,
                                              build_images=not backend.is_sandbox, remote=remote)
            registered.append(prepared.version)  # right as the Creates return: from here on, it is registered
        reg = _registration(prepared, options, backend, archive=archive, upload=stored, registered=True,
                            timings=timings, remote=remote)
        reg = dataclasses.replace(reg, runs=_runs_of_the_cell(key, options, reg.entities),
                                  warnings=reg.warnings + _unscheduled(prepared.specs, options, backend))
        api._memo[key] = reg
        default_signatures.remember(key, prepared.entities)
        # Said once, by this run: not by the unchanged re-runs answered from memory.
        said_once = prepared.said_once + ((data_changed,) if data_changed is not None else ())
        return dataclasses.replace(reg, warnings=reg.warnings + said_once) if said_once else reg


def _register_as_versioned(client, prepared: Prepared, options: Options, archive_uri: str, timings: dict, *,
                           build_images: bool, remote=None) -> Prepared:
    """Register ``prepared``; returns it as registered (under another version when its own holds another structure)."""
    try:
        return _register(client, prepared, options, archive_uri)
    except VersionConflict:
        if options.version:
            raise
    # Same files, yet another structure: a default computed when the module runs (a local
    # file uploaded under a new name, datetime.now()). The version then covers the structure too.
    with stopping("while serializing the cell again under a version of its structure"):
        prepared = serialized(_versioned_by_structure(prepared), options, timings, for_place=True,
                              build_images=build_images, remote=remote)
    return _register(client, prepared, options, archive_uri)


def _activated_again(cached, backend, activate: bool):
    """--activate, unchanged cell: its launch plans' versions (without --activate, those declared
    ``auto_activate=True``) made the active ones again where another version was activated since (see
    register.keep_active), with one line saying so. None when the backend no longer has this version."""
    auto = register.auto_activated(cached.entities)
    plans = [ref for ref in cached.entities if ref.kind == "launch_plan" and (activate or ref.name in auto)]
    with stopping("while checking which versions of the cell's launch plans are active"):
        reactivated = register.keep_active(_config.admin_client(_config.ensure_reachable(backend)), plans)
    if not reactivated:
        return None if reactivated is None else cached
    note = register.reactivated_note(reactivated, cached.version)
    return dataclasses.replace(cached, warnings=cached.warnings + (note,))


def _answered_from_memory(cached, stored_again, prepared: Prepared, options: Options, namespace, timings: dict, *,
                          runs: list):
    """The remembered Registration of an unchanged cell, pointing at the objects of the module just run
    and showing ``runs`` (the cell's: `_runs_of_the_cell`); and those objects."""
    prepared = load(prepared, options, namespace, timings)
    timings.setdefault("upload", 0.0)
    timings["register"] = 0.0
    uploaded = stored_again is not None and stored_again.uploaded
    warnings = cached.warnings + ((_stored_again_note(cached.archive_uri),) if uploaded else ())
    # The cell's runs are one list, shared by all its versions (`_runs_of_the_cell`): the re-run
    # cell's view shows the runs started from the one it replaces (those still going too, with
    # their Terminate button), and vice versa. Not the remembered release's own list: another cell
    # with the same code (a copy) registered it, and its runs are that cell's.
    answered = dataclasses.replace(cached, entities=_refresh(cached.entities, prepared.entities), uploaded=uploaded,
                                   registered=False, timings=dict(timings), lifted=prepared.module_source.lifted,
                                   runs=runs, warnings=warnings)
    return answered, prepared.entities


# The cell's failed runs whose failure has been answered by a look in the archive's store, by run
# name: a failure makes the next unchanged re-run look once, not every re-run after it.
_FAILURES_ANSWERED: set[str] = set()


def _store_again_if_gone(cached, prepared: Prepared, options: Options, backend, timings: dict):
    """The archive stored again (an `upload.Upload`) when the remembered one may be gone; else None.

    Where finding out is one look at this machine's disk (a file:// distribution dir, the embedded
    sandbox's own uploads), every unchanged re-run looks: microseconds. A remote store (s3://, a
    cluster's signed URL) is asked only after a run of this release failed, once per failed run: a
    missing archive shows first as a failed run (the sandbox's says to re-run the cell; a cluster's
    pyflyte-fast-execute words it its own way, so any failure counts), so the unchanged re-run stays
    free of network calls until then. Checking every few minutes instead would cost a round trip now
    and then and still miss a deletion made a minute ago. The uploader asks the store before sending.
    """
    from fastreg_magic import runs, upload

    sandbox_store = backend.is_sandbox and cached.remote is not None and runs.is_loopback(cached.remote)
    gone = upload.gone_from_this_machine(cached.archive_uri, sandbox_store=sandbox_store)
    failed = [] if gone is not None else _failures_to_answer(cached)
    if not (gone or failed):
        return None
    with stopping("while uploading the archive again"):
        archive = _package(prepared, options, timings)
        with api.timed(timings, "upload"):
            stored = upload_archive(archive, options, cached.remote)
    _FAILURES_ANSWERED.update(run.name for run in failed)
    return stored


def _failures_to_answer(cached) -> list:
    """The cell's failed runs of this release (its version, or its archive named in the error) whose
    failure no look in the archive's store has answered yet."""
    return [run for run in cached.runs
            if run.phase == "FAILED" and run.name not in _FAILURES_ANSWERED
            and (run.version == cached.version or cached.archive_uri in (run.error or ""))]


def _stored_again_note(uri: str) -> str:
    return (f"the archive was gone from {uri}: uploaded it again there; nothing registered (this version "
            "already points there)")


def _serialize_only(prepared: Prepared, options: Options, namespace, timings: dict, *, dry_run: bool,
                    serialize_to: Path | None, module_file: Path | None) -> api.Registration:
    """A dry run (what would ship and register) or --serialize-to (the .pb files and the archive)."""
    import tempfile

    where = module_file.name if module_file is not None else "the cell"
    if dry_run:
        loaded = load(prepared, options, namespace, timings, where=where)
        prepared = serialized(loaded, options, timings, build_images=False)
        return _registration(prepared, options, None, archive=None, upload=None, registered=False, timings=timings)
    # No backend to store the data defaults convert to: it is written to a folder of ours, and
    # write_serialized keeps it in the release, where register-files finds it on any machine.
    with tempfile.TemporaryDirectory(prefix="fastreg-data-") as data, _data_staged_in(Path(data)) as raw:
        loaded = load(prepared, options, namespace, timings, where=where)
        prepared = serialized(loaded, options, timings)
        archive = _package(prepared, options, timings)
        uri = write_serialized(prepared, options, archive, serialize_to, data=raw)
    api.run_again(options.module)  # its launch plans' literals name the folder just removed: converted anew next time
    return _registration(prepared, options, None, archive=archive, upload=_Stored(uri, False), registered=False,
                         timings=timings)


@contextlib.contextmanager
def _data_staged_in(folder: Path):
    """`_data_stored_by` for a serialization: the data goes under ``folder`` (see default_data.staged_in)."""
    default_data.forget_flytekit_conversions()  # a literal converted earlier in this process names another folder
    with default_data.staged_in(folder) as raw:
        yield raw


@contextlib.contextmanager
def stopping(step: str):
    """Ctrl-C during a step before any Create RPC: one line saying what stopped, and that nothing was
    registered. The cell's own code, interrupted as it ran, keeps its traceback: its frames are the user's."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt as exc:
        if getattr(exc, cell_errors.RAISED_BY_THE_CELL, None) is not None:
            raise
        raise Interrupted(f"Interrupted {step}: nothing was registered.") from exc


@contextlib.contextmanager
def _registering(module: str):
    """Ctrl-C from the first Create on. The Creates themselves say what they left (`register.register_specs`);
    once every one is answered (the version is added to the yielded list), the version is registered and
    the cell shows nothing; a Ctrl-C just before or after the Creates cannot tell which side it fell on."""
    registered: list[str] = []
    try:
        yield registered
    except Interrupted:
        raise
    except KeyboardInterrupt as exc:
        if registered:
            raise Interrupted(f"Interrupted after registering version {registered[-1]} of {module}: it is "
                              "registered, not shown.", "Re-run the cell to show it.") from exc
        raise Interrupted(f"Interrupted as {module} was being registered: it may be registered, or not yet.",
                          "Re-run the cell: it registers what is missing and shows it.") from exc


def _finding_backend(backend_fn):
    """``backend_fn()`` on a worker thread. With no backend configured it starts the embedded sandbox,
    a few seconds; Ctrl-C then lets the start finish, since a sandbox left starting would take the data
    dir from under the next cell's start. A second Ctrl-C stops waiting."""
    future = None
    try:
        future = register.worker_pool().submit(backend_fn)
        return register.result_of(future)
    except KeyboardInterrupt:
        if future is None:
            raise Interrupted("Interrupted while finding the Flyte backend: nothing was registered.") from None
    try:
        backend = register.result_of(future)
    except KeyboardInterrupt:
        raise Interrupted(
            "Interrupted while finding the Flyte backend (an embedded sandbox being started goes on starting in "
            "the background): nothing was registered.",
            "Re-run the cell (`fastreg sandbox --status` says whether the sandbox is running).",
        ) from None
    if backend.restarts_with_cell:  # the per-user sandbox, which this cell may have been starting
        raise Interrupted(f"Interrupted while finding the embedded sandbox: a start under way was let finish, and it "
                          f"runs at {backend.endpoint}; nothing was registered.")
    raise Interrupted(f"Interrupted while finding the Flyte backend ({backend.label}): nothing was registered.")


def _register(client, prepared: Prepared, options: Options, archive_uri: str) -> Prepared:
    """``prepared`` registered; with --activate, it says which launch plans it made active again."""
    with stopping("while preparing the registration"):
        hydrated = [_hydrate(spec, options, archive_uri) for spec in prepared.specs]
    if options.version:  # a content-derived version holds one structure, unless a default varies (above)
        with stopping(f"while checking that version {options.version} is free"):
            version_check.check_version_free(client, hydrated)
    if not (options.activate or register.auto_activated(hydrated)):
        register.register_specs(client, hydrated)
        return prepared
    # An unchanged cell in a new kernel takes its version back from another activated since, as the
    # same kernel's re-run does (`_activated_again`), and says so in the same words; without --activate,
    # for its launch plans declared `auto_activate=True`.
    reactivated = register.register_specs_active(client, hydrated, activate=options.activate)
    if not reactivated:
        return prepared
    return dataclasses.replace(prepared, said_once=prepared.said_once
                               + (register.reactivated_note(reactivated, prepared.version),))


def _versioned_by_structure(prepared: Prepared) -> Prepared:
    """``prepared`` under a version derived from its files and from what its specs hold."""
    import hashlib

    structure = hashlib.sha256()
    for spec in prepared.specs:
        structure.update(spec.proto.SerializeToString(deterministic=True))
    return dataclasses.replace(prepared, version=api.derive_version(prepared.version, structure.hexdigest()))


def _unscheduled(registered, options: Options, backend, auto_activate=None) -> tuple[str, ...]:
    """Activated launch plans (--activate, or declared ``auto_activate=True``: ``auto_activate`` names them
    for specs read from files) with a schedule, on the embedded sandbox, which runs no schedules."""
    if not backend.is_sandbox:
        return ()
    activated = register.activated_launch_plans(registered, options.activate, auto_activate)
    return tuple(
        f"launch plan {spec.name} is active with a schedule, but the embedded sandbox runs no schedules: "
        "launch it yourself, or register to a Flyte cluster"
        for spec in registered
        if spec.kind == "launch_plan" and spec.name in activated
        and spec.proto.spec.entity_metadata.HasField("schedule")
    )


def _store_while_loading(prepared: Prepared, options: Options, namespace, remote, timings: dict, *,
                         build_images: bool):
    """Package and upload the archive while the module runs and its entities are serialized.

    The version depends only on the files, so the archive need not wait for the module; the specs
    get the archive's URI once it is known. Any error in the module, its serialization or the
    archive is still raised before the first Create RPC. A big archive is packaged and uploaded
    first, on this thread, where its progress bar can be drawn in the cell's output.
    Returns ``(archive, stored, prepared)``.
    """
    from fastreg_magic import upload

    if prepared.raw_size > upload.PROGRESS_MIN_BYTES:
        archive = _package(prepared, options, timings)
        if archive.size > upload.PROGRESS_MIN_BYTES:
            with api.timed(timings, "upload"), stopping("while uploading the archive"):
                stored = upload_archive(archive, options, remote)
            return archive, stored, _loaded_and_serialized(prepared, options, namespace, remote, timings,
                                                           build_images=build_images)
    else:
        archive = None
    background: dict[str, float] = {}
    stored_future = register.worker_pool().submit(_package_and_upload, archive, prepared, options, remote, background)
    try:
        prepared = _loaded_and_serialized(prepared, options, namespace, remote, timings, build_images=build_images)
    except BaseException:
        concurrent.futures.wait([stored_future])  # let the upload settle; the cell's error is the news
        raise
    with stopping("while uploading the archive"):
        archive, stored = register.result_of(stored_future)
    for step, seconds in background.items():
        timings[step] = timings.get(step, 0.0) + seconds
    return archive, stored, prepared


def _loaded_and_serialized(prepared: Prepared, options: Options, namespace, remote, timings: dict, *,
                           build_images: bool) -> Prepared:
    """`load` then `serialized`, in one context storing data on ``remote``'s backend: flytekit converts a
    launch plan's default and fixed inputs when ``LaunchPlan.get_or_create`` runs, as the module loads,
    and a workflow's defaults as it is serialized."""
    with _data_stored_by(remote):
        loaded = load(prepared, options, namespace, timings)
        return serialized(loaded, options, timings, for_place=True, build_images=build_images)


def _package_and_upload(archive, prepared: Prepared, options: Options, remote, timings: dict):
    if archive is None:
        archive = _package(prepared, options, timings)
    with api.timed(timings, "upload"):
        return archive, upload_archive(archive, options, remote)


def prepare_files(module_source, options: Options, timings: dict, module_file: Path | None = None) -> Prepared:
    """The files to ship, their digest and the version. The module is not run yet; no network.

    ``module_file`` is the module's own file when it is not a cell (``fastreg serialize MODULE.py``).
    """
    from fastreg_magic import collect, package

    with api.timed(timings, "collect"):
        fileset = collect.files_to_ship(module_source, options.source_root, copy=options.copy, notebook=options.notebook)
        api.check_module_name_free(options.module, module_file, notebook=options.notebook)
    with api.timed(timings, "package"):
        measured = package.measure(fileset, max_bytes=options.max_archive_bytes)
        image_config = register.image_config(options.images)
        images = register.image_names(image_config)
        content_version = api.derive_version(
            measured.digest, images, options.destination_dir, options.service_account, options.raw_output_prefix,
            options.distribution_dir, register.flytekit_version(),
        )
    version = options.version or content_version
    return Prepared(module_source, None, (), fileset, measured, images, image_config, version, content_version, ())


def load(prepared: Prepared, options: Options, namespace, timings: dict, *, where: str = "the cell") -> Prepared:
    """Run the module in this process (as the container will) and put what it defines into ``namespace``.

    ``where`` names the source in messages: the cell, or the module file's name.
    """
    with api.timed(timings, "collect"):
        shipped = _local_module_files(prepared.fileset, options.module)
        forgotten = api.refresh_local_modules(shipped)
        imported_before = set(sys.modules)
        try:
            module = api.load_module(options.module, prepared.module_source.source, options.source_root,
                                     prepared.digest)
            entities = tuple(register.module_entities(module))
            register.compile_workflows(entities)  # their bodies are the cell's code too
            api.trust_module(module, prepared.module_source.source, prepared.digest)
        except KeyboardInterrupt as exc:  # stopped in the cell's own code: shown as a plain cell's would be
            cell_errors.mark_raised_by_the_cell(exc, prepared.module_source, where)
            raise
        except Exception as exc:
            refused = cell_errors.refused_definition(exc, prepared.module_source, where, Path(options.source_root))
            if refused is None:
                cell_errors.mark_raised_by_the_cell(exc, prepared.module_source, where)
                raise  # the cell's own code failed: its traceback is what to debug
            raise refused from exc
        finally:
            api.rebind_notebook_names(namespace, forgotten)
        api.remember_local_modules(shipped)
        unshipped = cell_errors.imported_but_not_shipped(set(sys.modules) - imported_before, shipped,
                                                          Path(options.source_root), prepared.fileset.warnings)
        unshipped += cell_errors.launch_plan_files_tasks_cannot_read(entities, prepared.fileset)
        unshipped += default_data.secret_looking_defaults(entities)
        if not entities:
            raise CollectError(
                f"The cell defines no Flyte task, workflow or launch plan (module {options.module!r}).",
                "Decorate a function with @task or @workflow in this cell.",
            )
        if namespace is not None:  # what the cell defines is the notebook's, as a plain cell's would be
            defined = vars(module)
            namespace.update({name: defined[name] for name in prepared.module_source.binds if name in defined})
            namespace.update({_local_name(module, e): e for e in entities})
    return dataclasses.replace(prepared, module=module, entities=entities, warnings=unshipped)


def serialized(prepared: Prepared, options: Options, timings: dict, *, for_place: bool = False,
               build_images: bool = True, remote=None) -> Prepared:
    """``prepared`` with its specs: every entity serialized (validated) for Flyte.

    ``for_place``: serialize straight for ``options``' project/domain (saves hydrating identifiers);
    otherwise the specs are place-independent, as ``--serialize-to`` writes them. Without
    ``build_images``, the ImageSpecs tasks run on are only named: never looked up in a registry or built.
    With ``remote``, data in defaults (a ``FlyteFile`` path, an array, a DataFrame) is uploaded to its
    backend, as ``pyflyte register`` does: a default must be readable where the run runs, not only in
    this kernel's temporary files.
    """
    with api.timed(timings, "serialize"), _data_stored_by(remote):
        place = {"project": options.project, "domain": options.domain} if for_place else {}
        settings = register.serialization_settings(prepared.image_config, prepared.version, options.destination_dir,
                                                   **place)
        specs = register.serialize(prepared.entities, settings, build_images=build_images)
        return dataclasses.replace(prepared, specs=specs)


@contextlib.contextmanager
def _data_stored_by(remote):
    """flytekit's context whose raw data goes to ``remote``'s backend (its DataProxy, ``flyte://``,
    bound to this remote: the last FlyteRemote built in the process would take it otherwise)."""
    if remote is None:
        yield
        return
    from flytekit.core.context_manager import FlyteContextManager

    from fastreg_magic.runs import uploads_through

    default_data.forget_flytekit_conversions()
    context = remote.context.new_builder().with_file_access(default_data.stored_by_content(remote))
    with uploads_through(remote), FlyteContextManager.with_context(context):
        yield


def _local_module_files(fileset, generated: str) -> dict[str, Path]:
    """Importable module name → file, for the shipped ``.py`` files other than the generated module."""
    found = {}
    for shipped in fileset.files:
        if shipped.path is None or not shipped.relpath.endswith(".py") or shipped.relpath == f"{generated}.py":
            continue
        parts = shipped.relpath[: -len(".py")].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and all(p.isidentifier() for p in parts):
            found[".".join(parts)] = Path(shipped.path)
    return found


def _local_name(module, entity) -> str:
    for name, value in vars(module).items():
        if value is entity:
            return name
    return entity.name.rsplit(".", 1)[-1]


def _package(prepared: Prepared, options: Options, timings: dict):
    from fastreg_magic import package

    kwargs = {} if options.max_archive_bytes is None else {"max_bytes": options.max_archive_bytes}
    with api.timed(timings, "package"):
        return package.build_archive(prepared.fileset, measured=prepared.measured, **kwargs)


@dataclass(frozen=True)
class _Stored:
    uri: str
    uploaded: bool


def upload_archive(archive, options: Options, remote) -> Any:
    """Store the archive: fsspec straight to --distribution-dir, else the backend's signed URL."""
    from fastreg_magic import upload

    if options.distribution_dir:
        uploader = upload.FsspecUploader(options.distribution_dir, _storage_options(options.distribution_dir, remote))
    else:
        uploader = upload.SignedUrlUploader(remote.client, options.project, options.domain)
    return uploader.upload(archive, progress=options.progress)


def _storage_options(url: str, remote) -> dict[str, Any]:
    """The backend config's own storage settings for the URL's protocol (its `storage:` section,
    e.g. a MinIO endpoint and keys), as flytekit itself applies them; and a fresh filesystem
    instance, so credentials or endpoints changed in the environment since the last upload count."""
    import fsspec.utils
    from flytekit.core.data_persistence import get_fsspec_storage_options

    data_config = remote.config.data_config if remote is not None else None
    options = get_fsspec_storage_options(fsspec.utils.get_protocol(url), data_config)
    return {**options, "skip_instance_cache": True}


def _hydrate(spec: specs.Spec, options: Options, archive_uri: str) -> specs.Spec:
    return specs.hydrate(
        spec,
        project=options.project,
        domain=options.domain,
        archive_uri=archive_uri,
        service_account=options.service_account,
        raw_output_prefix=options.raw_output_prefix,
    )


def _refresh(refs: tuple, entities: tuple) -> tuple:
    """The memo's entity refs pointing at this run's local objects (the module was executed again)."""
    local = register.local_objects(entities)
    return tuple(dataclasses.replace(r, entity=local.get((r.kind, r.name), r.entity)) for r in refs)


def _registration(prepared: Prepared, options: Options, backend, *, archive, upload, registered, timings, remote=None):
    refs = tuple(
        api.EntityRef(
            kind=spec.kind,
            name=spec.name,
            version=prepared.version,
            project=options.project,
            domain=options.domain,
            url=api.entity_url(backend, spec.kind, spec.name, prepared.version, options.project, options.domain),
            entity=spec.entity,
        )
        for spec in prepared.specs
    )
    fileset = prepared.fileset
    for step in ("collect", "package", "upload", "register"):
        timings.setdefault(step, 0.0)
    return api.Registration(
        module=options.module,
        version=prepared.version,
        project=options.project,
        domain=options.domain,
        backend=backend,
        images=prepared.images,
        archive_uri=upload.uri if upload is not None else "",
        archive_size=archive.size if archive is not None else 0,
        files=tuple(archive.members) if archive is not None else tuple(_fileset_names(fileset)),
        left_out=tuple(fileset.left_out),
        lifted=tuple(prepared.module_source.lifted),
        warnings=tuple(fileset.warnings) + prepared.warnings,
        entities=refs,
        uploaded=bool(upload.uploaded) if upload is not None else False,
        registered=registered,
        timings=dict(timings),
        remote=remote,
    )


@dataclass
class _Cell:
    """One cell of the notebook as the kernel saw it register: its runs, shared by its registrations."""

    place: tuple  # backend, project, domain, module
    cell_id: str | None  # the frontend's id of the cell; None when it sends none
    names: frozenset[str]  # what it launches (`_launchable_names`) as it last registered
    memo_keys: set  # the kernel's memo entries of its registrations (`api._memo`)
    runs: list = field(default_factory=list)


# The cells that registered in this kernel, oldest first.
_CELLS: list[_Cell] = []


def _runs_of_the_cell(key: tuple, options: Options, entities: tuple) -> list:
    """The list of runs of the cell registering now (under memo ``key``, ``entities`` its `api.EntityRef`s),
    which every registration of that cell shares.

    A changed cell registers a new version; the runs started from the versions it replaces (those still
    going too) stay in its widget, each marked with the version it runs, to be watched and terminated.
    Another cell has its own runs, even with the same module name (the default: the notebook's). A cell
    is known by the id the frontend sends with it (JupyterLab, Notebook 7, VS Code). Where none is sent
    (nbclient, nbconvert, papermill, terminal IPython, plain Python), it is the latest cell of the module
    that launches a workflow (or launch plan; a cell with neither, a task) of the same name: an edited
    cell keeps its workflow's name, and two cells defining different workflows are never one. A cell
    whose registrations the kernel forgot (its backend lost them) starts a new list: those runs are lost too.
    """
    place = (key[0], options.project, options.domain, options.module)
    cell_id, names = _frontend_cell_id(), _launchable_names(entities)
    remembered = set(api._memo)
    _CELLS[:] = [cell for cell in _CELLS if cell.memo_keys & remembered]
    for cell in reversed(_CELLS):
        if cell.place == place and _same_cell(cell, cell_id, names):
            cell.names = names
            cell.memo_keys.add(key)
            return cell.runs
    cell = _Cell(place, cell_id, names, {key})
    _CELLS.append(cell)
    return cell.runs


def _same_cell(cell: _Cell, cell_id: str | None, names: frozenset[str]) -> bool:
    if cell_id is not None or cell.cell_id is not None:
        return cell.cell_id == cell_id
    return bool(cell.names & names)


def _launchable_names(entities: tuple) -> frozenset[str]:
    """The names of the workflows and launch plans among ``entities``; of its tasks when it has neither.

    Tasks alone would join cells that share a task (a later cell calling an earlier cell's task lifts
    it into its own module)."""
    launched = frozenset(ref.name for ref in entities if ref.kind in ("workflow", "launch_plan"))
    return launched or frozenset(ref.name for ref in entities)


def _frontend_cell_id() -> str | None:
    """The id of the notebook cell being run, from the request the kernel is answering (``metadata.cellId``);
    None outside a kernel or when the frontend sends none."""
    if "IPython" not in sys.modules:
        return None
    from fastreg_magic.widget import _parent_message

    cell_id = (_parent_message().get("metadata") or {}).get("cellId")
    return str(cell_id) if cell_id else None


def _fileset_names(fileset) -> list[str]:
    return sorted(f.relpath for f in fileset.files)


# ---------------------------------------------------------------- the seed's serialize format


def write_serialized(prepared: Prepared, options: Options, archive, folder: Path, *, data: Path | None = None) -> str:
    """Write ``NN_<name>_<k>.pb`` files, the archive and a manifest into ``folder``; return the archive's URI.

    The data under ``data`` that the specs' literals name (a default file, an array) is kept in the
    release as ``data/<sha256>/<name>``, named by content so the release is the same bytes wherever and
    whenever it is serialized; the literals name it by that path, and the manifest lists it with its sha256.

    What earlier serializations wrote into ``folder`` (its release, its cellNNN folders' releases) is
    replaced, other files are left alone. The files are written to a staging folder first and moved
    in with the manifest last: a failure leaves no folder that ``register-files`` would accept.
    """
    import tempfile

    from fastreg_magic import files
    from fastreg_magic.errors import PackageError

    folder = Path(folder).expanduser().resolve()
    archive_name = f"fast{archive.digest}.tar.gz"
    staging = Path(tempfile.mkdtemp(prefix="fastreg-serialize-"))
    try:
        kept_specs, kept_data = default_data.keep_staged(prepared.specs, data, staging) if data is not None \
            else (prepared.specs, {})
        written = specs.write_specs(kept_specs, staging)
        shutil.copyfile(archive.path, staging / archive_name)
        manifest = {
            "module": options.module,
            "version": prepared.version,
            "archive": archive_name,
            "digest": archive.digest,
            "archive_sha256": files.archive_sha256(staging / archive_name),  # register-files refuses other bytes
            "destination_dir": options.destination_dir,
            # Part of the version: register-files stores the archive there too, and applies the launch-plan settings.
            "distribution_dir": options.distribution_dir,
            "service_account": options.service_account,
            "raw_output_prefix": options.raw_output_prefix,
            # Where the cell registers (-p/-d, --activate): register-files' defaults, as in the kernel.
            "project": None if options.project == specs.PROJECT_PLACEHOLDER else options.project,
            "domain": None if options.domain == specs.DOMAIN_PLACEHOLDER else options.domain,
            "activate": options.activate,
            # Launch plans declared `auto_activate=True`: the flag is flytekit's object's, not in the .pb files.
            "auto_activate": list(register.auto_activated(prepared.specs)),
            "images": list(prepared.images),
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "files": [path.name for path in written],  # so a later serialization removes exactly these
            "data": kept_data,  # relative path -> kind and sha256: register-files stores it, refusing other bytes
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        files.install(staging, folder, option="--serialize-to")
    except OSError as err:
        raise PackageError(f"cannot write the serialized files to {folder} ({err.strerror or err}).",
                           "Pass a directory you can write to.") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return (folder / archive_name).as_uri()
