"""``fast_register()``: a cell's source → a fast-registered Flyte release. The whole pipeline, no IPython.

    from fastreg_magic import fast_register
    reg = fast_register(open("pipeline.py").read(), module="pipeline", project="flytesnacks")
    reg.version, reg.archive_uri, [e.name for e in reg.entities]
    run = reg.launch(n=3).wait()
    reg.with_options(overwrite_cache=True, envs={"LOG_LEVEL": "debug"}).launch(n=3)   # see launch_options

Steps, each feeding the next a small immutable value: collect (cell → module source + files to
ship), load (the module executed as a real module, so ``<module>.<function>`` imports everywhere),
package (content-addressed archive), serialize (placeholders, no RPC: validates everything),
upload, register. The version is derived from content, so an unchanged re-run is answered from a
per-process memo without any upload or Create RPC.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.machinery
import importlib.util
import keyword
import sys
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, MutableMapping

from fastreg_magic import config as _config
from fastreg_magic.errors import CollectError, FastRegError, Interrupted, RunError
from fastreg_magic.lift_imports import GENERATED_MARK

DEFAULT_PROJECT = "flytesnacks"
DEFAULT_DOMAIN = "development"
DEFAULT_MODULE = "flyte_cell"
# Bump when the way a version is derived changes, so old and new derivations never collide.
_VERSION_SCHEME = "fastreg-1"


@dataclass(frozen=True)
class EntityRef:
    """One registered task, workflow or launch plan."""

    kind: str  # "task" | "workflow" | "launch_plan"
    name: str
    version: str
    project: str
    domain: str
    url: str | None
    entity: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Registration:
    """What one ``%%flyte_fast`` cell registered, where, and how long each step took."""

    module: str
    version: str
    project: str
    domain: str
    backend: _config.Backend | None
    images: tuple[str, ...]
    archive_uri: str
    archive_size: int
    files: tuple[str, ...]
    left_out: tuple
    lifted: tuple[str, ...]
    warnings: tuple[str, ...]
    entities: tuple[EntityRef, ...]
    uploaded: bool
    registered: bool
    timings: Mapping[str, float]
    remote: Any = field(default=None, compare=False, repr=False)
    runs: list = field(default_factory=list, compare=False, repr=False)
    # The widgets showing this release: a run launched from code joins each of them.
    _views: weakref.WeakSet = field(default_factory=weakref.WeakSet, init=False, compare=False, repr=False)

    def entity(self, name: str | None = None) -> EntityRef:
        """The workflow (or launch plan, or task) called ``name``; without a name, the cell's only workflow."""
        return pick_entity(self.entities, self.module, name)

    def launch(self, name: str | None = None, **inputs) -> Any:
        """Start a run of a registered workflow/launch plan/task; returns a ``Run`` (also kept in ``.runs``).
        Launch options (overwrite the cache, env vars, labels, ...): ``reg.with_options(...).launch(...)``."""
        return self.launch_with(None, name, inputs)

    def with_options(self, options: Any = None, /, **changes) -> "WithOptions":
        """This release, to launch with ``options`` (a `LaunchOptions`) and/or the options named in ``changes``:
        ``reg.with_options(overwrite_cache=True, envs={"LOG_LEVEL": "debug"}).launch("pipeline", n=3)``.

        Apart from ``launch(...)``, whose keywords are all the workflow's inputs (one may be called ``envs``).
        Every value is checked here, before anything is sent (`launch_options.LaunchOptionRefused`)."""
        from fastreg_magic.launch_options import combined

        return WithOptions(self, combined(options, changes))

    def launch_with(self, options: Any, name: str | None, inputs: Mapping[str, Any]) -> Any:
        """``launch(name, **inputs)`` with launch ``options`` (a `LaunchOptions`, or None for the defaults)."""
        if self.remote is None:
            raise RunError(
                f"Release {self.version} was not registered (dry run or --serialize-to), so it cannot be launched.",
                "Re-run the cell without --dry-run/--serialize-to.",
            )
        from fastreg_magic import runs

        target = self.entity(name)
        # On a worker thread, so that Ctrl-C either sends no CreateExecution or keeps the run it started.
        return runs.launch_stoppably(
            lambda execution_name, before_create: self.start_run(target, inputs, execution_name=execution_name,
                                                                 before_create=before_create, options=options),
            target.name, self._keep_run, name=options.name if options is not None else None,
        )

    def _keep_run(self, run) -> None:
        """``run`` joins ``.runs`` and every open view of them, the re-run cell's widget too."""
        try:
            from fastreg_magic.widget_registration import keep_run  # ipywidgets: imported only once a run starts

            keep_run(self, run)
        except KeyboardInterrupt:
            # Stopped before it joined: it is kept all the same (the Interrupted line names it reg.runs[-1]).
            if not any(kept is run for kept in self.runs):
                self.runs.append(run)
            raise

    def start_run(self, target: EntityRef, inputs: Mapping[str, Any], *, execution_name: str | None = None,
                  before_create: Callable[[], None] | None = None, options: Any = None) -> Any:
        """A new run of ``target``, not yet kept or shown anywhere (``launch`` and the widget do that);
        ``options`` are its `LaunchOptions` (None: the defaults)."""
        from fastreg_magic import runs, runs_errors

        try:
            return runs.launch(self.remote, target, inputs, console_url=self.console_url, on_lost=self._forget_backend,
                               execution_name=execution_name, before_create=before_create, options=options)
        except RunError as err:
            if not runs_errors.is_not_found(err.__cause__):
                raise
            raise self._lost(target) from err.__cause__

    def relaunch_run(self, run) -> Any:
        """``run`` (one of this release's) started again with the same inputs and options, not yet kept or shown
        anywhere; when the backend lost it, the same error as a launch of what it lost."""
        from fastreg_magic.runs import RunLost

        try:
            return run.relaunch()
        except RunLost as err:
            raise self._lost(self._target_of(run)) from err

    def _target_of(self, run) -> EntityRef:
        """What ``run`` runs, as this release registered it (launch plan, workflow, task), at the run's version."""
        version = run.version or self.version
        for kind in ("launch_plan", "workflow", "task"):
            for ref in self.entities:
                if ref.kind == kind and ref.name == run.label:
                    return replace(ref, version=version)
        return EntityRef("launch_plan", run.label or run.name, version, self.project, self.domain, None)

    def _lost(self, target: EntityRef) -> RunError:
        """The backend no longer has what this cell registered (a reset sandbox, another data dir
        behind the same address): forget having registered and uploaded there, so re-running the
        cell sends everything again instead of answering from the memo.

        Unless the rest of the release is still there: then the backend lost nothing, only ``target``
        is missing, and forgetting would only make every cell upload and register again for nothing."""
        endpoint = self.backend.endpoint if self.backend is not None else None
        if self._rest_still_registered(target):
            return RunError(
                f"{target.kind.replace('_', ' ')} {target.name} version {target.version} is not on "
                f"{endpoint or 'the backend'}, although the rest of this cell's release is: it was not registered.",
                "Launch one of the release's other entities (reg.entities lists them), or register this one "
                "with the cell that defines it.",
            )
        self._forget_backend()
        return RunError(
            f"{target.kind.replace('_', ' ')} {target.name} version {target.version} is not on "
            f"{endpoint or 'the backend'} any more: it lost what this cell registered there (a reset sandbox, or "
            "another one behind the same address).",
            "Re-run the %%flyte_fast cell: it uploads and registers the release again.",
        )

    def _rest_still_registered(self, missing: EntityRef) -> bool:
        """Whether the backend still has another task or workflow of this release than ``missing`` (one Get)."""
        from flyteidl.admin import common_pb2
        from flyteidl.core import identifier_pb2

        from fastreg_magic.runs_errors import rpc

        kinds = {"task": (identifier_pb2.TASK, "get_task"), "workflow": (identifier_pb2.WORKFLOW, "get_workflow")}
        other = next((ref for ref in self.entities if ref.kind in kinds and ref.name != missing.name), None)
        if other is None or self.remote is None:
            return False
        resource_type, method = kinds[other.kind]
        request = common_pb2.ObjectGetRequest(id=identifier_pb2.Identifier(
            resource_type=resource_type, project=other.project, domain=other.domain, name=other.name,
            version=other.version))
        try:
            rpc(self.remote.client, method, request, what=f"Looking up {other.kind} {other.name}", remote=self.remote)
        except FastRegError:
            return False
        return True

    def _forget_backend(self) -> None:
        """Forget what this process registered and uploaded on this release's backend, and the launch
        targets read from it: the backend lost a run, or something registered, so it lost the rest too."""
        from fastreg_magic import runs

        forget_registrations(self.backend.endpoint if self.backend is not None else None)
        runs.forget_targets(self.remote)

    @property
    def console_url(self) -> str | None:
        """The Flyte console of the backend it was registered to (None for the embedded sandbox)."""
        return self.backend.console_url if self.backend is not None else None

    @property
    def widget(self):
        from fastreg_magic import widget

        return widget.RegistrationWidget(self)

    def _ipython_display_(self) -> None:
        """The widget (Jupyter) or text (terminal). Ctrl-C as it is drawn says what the cell left: this
        release registered, not shown; not a wall of ipywidgets' or the kernel's frames."""
        try:
            from fastreg_magic import widget

            with taking_ctrl_c() as watch:
                widget.display_registration(self)
                if watch.presses:  # taken in a `__del__` as it was drawn, where Python drops it: shown all the same
                    raise interrupted_before_shown(self, shown=True)
        except Interrupted:
            raise
        except KeyboardInterrupt:
            raise interrupted_before_shown(self) from None

    def __str__(self) -> str:
        """What terminal IPython shows, for ``print(reg)`` in a script."""
        from fastreg_magic.widget_text import registration_text

        return registration_text(self)


@dataclass(frozen=True)
class WithOptions:
    """A release and the options to launch its runs with (``reg.with_options(...)``); reusable."""

    registration: Registration
    options: Any  # a launch_options.LaunchOptions

    def launch(self, name: str | None = None, **inputs) -> Any:
        """As ``Registration.launch``, with these options; the run joins ``registration.runs``."""
        return self.registration.launch_with(self.options, name, inputs)

    def with_options(self, options: Any = None, /, **changes) -> "WithOptions":
        """These options with more on top (``options``, then ``changes``)."""
        from fastreg_magic.launch_options import combined

        given = combined(options, {})  # checks that `options` is a LaunchOptions (or None)
        return WithOptions(self.registration, self.options.merged({**given.changed(), **changes}))

    def __repr__(self) -> str:
        return f"<{self.registration.module} version {self.registration.version} with {self.options!r}>"


def pick_entity(entities, module: str, name: str | None) -> EntityRef:
    """The entity to launch: by (short or full) name, else the cell's only workflow, else its only task.

    A workflow is launched through its default launch plan (same name), as the console does.
    """
    if name is None:
        name = _only_launchable(entities, module)
    wanted = {name, f"{module}.{name}"}
    for kind in ("launch_plan", "workflow", "task"):
        for ref in entities:
            if ref.kind == kind and ref.name in wanted:
                return ref
    known = ", ".join(sorted({ref.name for ref in entities}))
    raise RunError(f"Nothing named {name!r} was registered by this cell.", f"Pick one of: {known}.")


def _only_launchable(entities, module: str) -> str:
    own = [ref for ref in entities if ref.name.startswith(f"{module}.")]
    for kind in ("workflow", "task"):
        candidates = [ref.name for ref in own if ref.kind == kind]
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            names = ", ".join(n.rsplit(".", 1)[-1] for n in candidates)
            raise RunError(f"This cell registered several {kind}s ({names}).", "Say which one: reg.launch('name', ...).")
    raise RunError("This cell registered no workflow or task to launch.", "Define a @workflow or @task in the cell.")


# ---------------------------------------------------------------- the per-process memo

_memo: dict[tuple, Registration] = {}


def _memo_key(backend, project: str, domain: str, version: str, content_version: str, activate: bool) -> tuple:
    return (backend, project, domain, version, content_version, activate)


def forget_registrations(endpoint: str | None = None) -> None:
    """Clear the memo and the record of uploaded archives (for one backend endpoint, or all), so the
    next call uploads and registers again (e.g. after a backend reset)."""
    from fastreg_magic import upload

    for key in [k for k in _memo if endpoint is None or getattr(k[0], "endpoint", None) == endpoint]:
        del _memo[key]
    upload.forget(endpoint)


# ---------------------------------------------------------------- the pipeline


def fast_register(
    source: str,
    *,
    module: str | None = None,
    namespace: MutableMapping[str, Any] | None = None,
    project: str = DEFAULT_PROJECT,
    domain: str = DEFAULT_DOMAIN,
    images: tuple[str, ...] | list[str] = (),
    source_root: str | Path | None = None,
    copy: str = "auto",
    version: str | None = None,
    destination_dir: str = ".",
    service_account: str | None = None,
    raw_output_prefix: str | None = None,
    distribution_dir: str | None = None,
    config_file: str | None = None,
    endpoint: str | None = None,
    activate: bool = False,
    dry_run: bool = False,
    serialize_to: str | Path | None = None,
    backend: _config.Backend | Callable[[], _config.Backend] | None = None,
    max_archive_bytes: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    first_line: int = 1,
    notebook: str | Path | None = None,
) -> Registration:
    """Turn ``source`` (a cell's code) into module ``module`` and fast-register its entities.

    ``backend`` (a Backend, or a function returning one) overrides ``endpoint``/``config_file``; it is
    resolved only once the cell and its files are collected, so a cell that does not compile (or
    imports a missing local module) never starts or contacts a backend.
    ``progress(sent, total)`` is called while a large archive uploads. ``first_line`` numbers
    ``source``'s first line in messages (2 for the body of a ``%%flyte_fast`` cell). ``notebook`` is
    the notebook ``source`` comes from, left out of ``copy="all"``: its cells ship as modules.
    """
    from fastreg_magic import pipeline
    from fastreg_magic import upload as _upload

    notices: list[str] = []  # said once the call returns, on this thread (see _warn_at_the_caller)
    with pipeline.stopping("while reading the options"):
        options = pipeline.Options(
            module=validate_module_name(module or DEFAULT_MODULE),
            project=_require("project", project),
            domain=_require("domain", domain),
            images=tuple(images or ()),
            source_root=Path(source_root or Path.cwd()).expanduser().resolve(),
            copy=copy,
            version=version,
            destination_dir=destination_dir,
            service_account=service_account,
            raw_output_prefix=raw_output_prefix,
            distribution_dir=_upload.distribution_dir(distribution_dir),
            activate=activate,
            max_archive_bytes=max_archive_bytes,
            progress=progress,
            notebook=Path(notebook) if notebook else None,
        )
    try:
        return pipeline.run(
            source,
            options,
            namespace=namespace,
            dry_run=dry_run,
            serialize_to=Path(serialize_to) if serialize_to else None,
            backend_fn=functools.partial(_resolve, backend, endpoint, config_file, notices.append),
            first_line=first_line,
        )
    finally:
        _warn_at_the_caller(notices)


def import_flytekit_keeping_ctrl_c() -> None:
    """Import flytekit without letting it take over Ctrl-C.

    Its import installs a SIGINT handler that calls ``exit(1)`` (``FlyteContextManager.initialize`` in
    flytekit/core/context_manager.py): a command would end with status 1 and not a word, and a kernel,
    where IPython hides ``exit`` while a cell runs, with "NameError: name 'exit' is not defined".
    Putting the handler back after the import would leave the import's own second or so for a Ctrl-C
    to land in flytekit's handler; so while flytekit imports, SIGINT's handler cannot be replaced.
    """
    if "flytekit" in sys.modules:
        return
    import signal

    replace_handler = signal.signal

    def keeping_ctrl_c(signum, handler):
        if signum == signal.SIGINT:
            return signal.getsignal(signum)
        return replace_handler(signum, handler)

    signal.signal = keeping_ctrl_c
    try:
        import flytekit  # noqa: F401
    finally:
        signal.signal = replace_handler


class CtrlCWatch:
    """Every Ctrl-C from :meth:`start` to :meth:`stop`: over a whole ``%%flyte_fast`` cell, or one block.

    Inside :meth:`taking` blocks (the magic, the drawing of its result) a press raises KeyboardInterrupt
    at once, as Python's own handler does, and is counted in ``presses``, even one that lands in a
    ``__del__`` or a weakref callback: Python drops those ("Exception ignored in: ..."), garbage
    collection runs them at any moment (ipywidgets' ``Widget.__del__``), and the cell would go on as if
    Stop had not been pressed. Outside them (IPython's own code running the cell, before and between)
    a press is held, and the next block raises it as it starts: IPython's frames are no one's to read.
    Only on the main thread, while Python's own handler takes Ctrl-C (a kernel running a cell, a
    script): another handler (flytekit's, a caller's) is left alone.
    """

    def __init__(self):
        self.presses = 0
        self._taking = 0
        self._held = False
        self._active = False
        self._previous_hook = None

    def start(self) -> CtrlCWatch:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous_hook = sys.unraisablehook
            sys.unraisablehook = self._unraisable
            signal.signal(signal.SIGINT, self._pressed)
            self._active = True
        return self

    def stop(self) -> None:
        import signal

        if not self._active:
            return
        self._active = False
        if signal.getsignal(signal.SIGINT) == self._pressed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if sys.unraisablehook == self._unraisable:
            sys.unraisablehook = self._previous_hook

    @contextlib.contextmanager
    def taking(self):
        self._taking += 1
        try:
            if self._held:  # pressed as IPython ran the cell's first lines
                self._held = False
                raise KeyboardInterrupt
            yield self
        finally:
            self._taking -= 1

    def _pressed(self, signum, frame) -> None:
        self.presses += 1
        if not self._taking:
            self._held = True
            return
        raise KeyboardInterrupt

    def _unraisable(self, info) -> None:
        """A KeyboardInterrupt dropped where Python drops it: counted, and said by the block; not shown twice."""
        if not (self.presses and isinstance(info.exc_value, KeyboardInterrupt)):
            self._previous_hook(info)


_cell_watch: CtrlCWatch | None = None  # the %%flyte_fast cell running now, if any


def watch_the_cell() -> None:
    """Watch Ctrl-C over the notebook cell starting now (IPython's ``pre_run_cell``), until :func:`unwatch_the_cell`."""
    global _cell_watch
    unwatch_the_cell()
    _cell_watch = CtrlCWatch().start()


def unwatch_the_cell() -> None:
    global _cell_watch
    if _cell_watch is not None:
        _cell_watch.stop()
        _cell_watch = None


@contextlib.contextmanager
def taking_ctrl_c():
    """A block that takes Ctrl-C (see :class:`CtrlCWatch`); yields the watch, whose ``presses`` counts
    them, dropped ones included. Within the cell's watch when a ``%%flyte_fast`` cell runs, else its own."""
    watch = _cell_watch if _cell_watch is not None else CtrlCWatch().start()
    try:
        with watch.taking():
            yield watch
    finally:
        if watch is not _cell_watch:
            watch.stop()


def interrupted_before_shown(reg: Registration, *, shown: bool = False):
    """The one line for Ctrl-C once ``reg`` is done: what it left (registered, or only checked or
    written), and whether re-running the cell is needed to see it."""
    if reg.remote is not None:
        done = f"version {reg.version} of {reg.module} is registered"
    elif reg.archive_uri:
        done = f"version {reg.version} of {reg.module} was written to {reg.archive_uri.rsplit('/', 1)[0]}"
    else:
        done = f"the dry run of {reg.module} (version {reg.version}) is done"
    if shown:
        return Interrupted(f"Interrupted as the cell's result was shown: {done}.")
    return Interrupted(f"Interrupted before the cell's result was shown: {done}.", "Re-run the cell to show it.")


def _resolve(backend, endpoint: str | None, config_file: str | None, notice_to) -> _config.Backend:
    if callable(backend):
        return backend()
    if backend:
        return backend
    resolved, notice = _config.resolve_backend_with_notice(
        endpoint=endpoint, config_file=config_file,
        how_to_configure="Pass endpoint=/config_file= to fast_register()")
    if notice:  # nothing configured: a script learns where its release went, and that a sandbox now runs
        notice_to(notice)
    return resolved


def _warn_at_the_caller(notices: list[str]) -> None:
    """Warn about each notice on the calling thread, pointing at the line that called fast_register():
    the backend is found on a worker thread, where a warning would point into threading.py."""
    import warnings

    for notice in notices:
        warnings.warn(notice, stacklevel=3)  # 1: here, 2: fast_register, 3: its caller


def validate_module_name(name: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise CollectError(
            f"Module name {name!r} is not a valid Python module name.",
            "Pass -m NAME with letters, digits and underscores, not starting with a digit.",
        )
    return name


def _require(what: str, value: str) -> str:
    if not value or not str(value).strip():
        raise CollectError(f"No {what} given.", f"Pass --{what} NAME or set %config FlyteFast.{what} = 'NAME'.")
    return str(value)


def derive_version(digest: str, *parts: Any) -> str:
    """A version from the archive digest and what else changes behaviour. Never from absolute paths."""
    hasher = hashlib.sha256(_VERSION_SCHEME.encode())
    for part in (digest, *parts):
        hasher.update(b"\0" + repr(part).encode())
    return hasher.hexdigest()[:20]


def timed(timings: dict, step: str):
    """Context manager adding the elapsed seconds of a step to ``timings[step]``."""
    return _Timer(timings, step)


class _Timer:
    def __init__(self, timings: dict, step: str):
        self.timings, self.step = timings, step

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.step] = self.timings.get(self.step, 0.0) + time.perf_counter() - self.start
        return False


# ---------------------------------------------------------------- the cell as a real module


_module_dir: Path | None = None


def module_dir() -> Path:
    """This process's directory of generated modules, first on ``sys.path`` so pickles and workers import them."""
    global _module_dir
    if _module_dir is None:
        import atexit
        import shutil
        import tempfile

        _module_dir = Path(tempfile.mkdtemp(prefix="fastreg-modules-"))
        atexit.register(shutil.rmtree, _module_dir, True)
    if str(_module_dir) not in sys.path:
        sys.path.insert(0, str(_module_dir))
    return _module_dir


def check_module_name_free(name: str, module_file: Path | None = None, notebook: Path | None = None) -> None:
    """Refuse a module name an installed module already uses (local clashes are collect's to report; the
    notebook's own jupytext file, ``pipeline.py`` beside ``pipeline.ipynb``, is none: the generated module,
    first on ``sys.path``, is the one imported)."""
    if "." in name:
        # A module file's package (`pkg` of `pkg.mod`) is imported from the source root, which load_module puts
        # ahead of installed packages, as PYTHONPATH does in the container; looking `pkg.mod` up would import `pkg`.
        return
    existing = sys.modules.get(name)
    if existing is not None and _is_generated(existing):
        return
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and not _is_generated_path(spec.origin) and not _same_file(spec.origin, module_file) \
            and not _is_notebook_file(spec.origin, notebook):
        raise CollectError(
            f"The cell's module `{name}` clashes with the existing module {spec.origin or name}, which Python "
            "would import instead.",
            "Pass --module OTHER to name the cell's module differently.",
        )


def _same_file(origin: str | None, module_file: Path | None) -> bool:
    return origin is not None and module_file is not None and Path(origin).resolve() == Path(module_file).resolve()


def _is_notebook_file(origin: str | None, notebook: Path | None) -> bool:
    from fastreg_magic.notebook_files import paired_files

    return origin is not None and notebook is not None and Path(origin).resolve() in paired_files(notebook)


def _is_generated(module) -> bool:
    return _is_generated_path(getattr(module, "__file__", None))


def _is_generated_path(path: str | None) -> bool:
    return path is not None and _module_dir is not None and Path(path).parent == _module_dir


def load_module(name: str, source: str, source_root: Path, digest: str | None = None):
    """Execute ``source`` as module ``name`` from ``<module_dir>/<name>.py``; returns the module.

    When the module already loaded under that name came from the same source and the same shipped
    files (``digest``), and its load was completed (:func:`trust_module`), it is returned as is: like
    ``import``, an unchanged module is not run twice. One whose load was stopped or failed after it
    ran (a workflow body interrupted as flytekit compiled it) is run again.
    """
    loaded = sys.modules.get(name)
    if digest is not None and loaded is not None and _is_generated(loaded) and getattr(loaded, _FINGERPRINT, None) == (source, digest):
        return loaded
    path = module_dir() / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    if str(source_root) not in sys.path:
        sys.path.insert(1, str(source_root))  # the cell's local imports resolve as they will in the container
        importlib.invalidate_caches()
    parent = _import_parent_package(name)
    spec = importlib.util.spec_from_file_location(name, path, loader=_GeneratedModuleLoader(name, str(path)))
    module = importlib.util.module_from_spec(spec)  # `pkg.mod` gets __package__ `pkg`: its relative imports work
    sys.modules[name] = module
    _forget_launch_plans_of(loaded)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if loaded is not None:
            sys.modules[name] = loaded
        else:
            sys.modules.pop(name, None)
        raise
    if parent is not None:  # as `import pkg.mod` leaves it: `pkg.mod` is an attribute of `pkg`
        setattr(parent, name.rpartition(".")[2], module)
    setattr(module, _FINGERPRINT, _NOT_TRUSTED_YET)
    return module


def _forget_launch_plans_of(replaced: ModuleType | None) -> None:
    """The module's new load may name the launch plans its previous load named (see register)."""
    from fastreg_magic import register

    register.forget_launch_plans_of(replaced)


def trust_module(module: ModuleType, source: str, digest: str | None) -> None:
    """Let an unchanged re-run reuse ``module``: its load is complete (it ran, and flytekit compiled its
    workflows). Until then it is run again: flytekit marks a workflow compiled before running its body,
    so one stopped half-way would keep no nodes, and FlyteAdmin refuse it ("Parameter not bound")."""
    setattr(module, _FINGERPRINT, (source, digest))


def run_again(name: str) -> None:
    """Make the next load of the generated module ``name`` run it again, though unchanged: data its
    launch plans' defaults name is converted as they are declared (flytekit's ``LaunchPlan.create``)."""
    loaded = sys.modules.get(name)
    if loaded is not None and _is_generated(loaded):
        setattr(loaded, _FINGERPRINT, _NOT_TRUSTED_YET)


def _import_parent_package(name: str) -> ModuleType | None:
    """The package of a dotted module (``pkg`` of ``pkg.mod``), imported from the source root first, as
    ``import pkg.mod`` does in the container: its ``__init__`` runs before the module."""
    package = name.rpartition(".")[0]
    return importlib.import_module(package) if package else None


class _GeneratedModuleLoader(importlib.machinery.SourceFileLoader):
    """Compiles the generated module from its source every time, without the bytecode cache: its
    source changes with nearly every run, so a ``.pyc`` would be checked and rewritten each time
    and read never."""

    def get_code(self, fullname):
        from fastreg_magic.collect import compile_warnings_silenced

        with compile_warnings_silenced():  # said where the code was written (the cell, the file), not here
            return self.source_to_code(self.get_data(self.path), self.path)


_FINGERPRINT = GENERATED_MARK  # collect tells generated modules from local ones by the same attribute
_NOT_TRUSTED_YET = None  # a generated module (the mark is there) that no re-run may reuse
_local_stamps: dict[str, tuple] = {}  # local module name -> (file, mtime_ns, size) when we last saw it loaded


def refresh_local_modules(shipped: dict[str, Path]) -> dict[str, ModuleType]:
    """Forget the imported local modules when any of them may be out of date, so the cell's next
    execution imports what the archive ships: the same code locally as in the container.

    One stale module makes all of them stale: another local module may hold what it bound from it at
    import time (``from mylib.helpers import g``, a package re-exporting a submodule's names). A
    module is stale when its file changed since the magic last saw it loaded, when it was loaded from
    another file, or when the magic has never seen it loaded (it was imported in a plain cell, maybe
    before an edit). ``shipped`` maps module names (``mylib.features``) to their file under the
    source root. Returns the modules forgotten, by name (see :func:`rebind_notebook_names`).
    """
    loaded = {name: sys.modules[name] for name in shipped if name in sys.modules}
    if not any(_is_stale(name, module, shipped[name]) for name, module in loaded.items()):
        return {}
    forgotten = {}
    for name in loaded:
        for other in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            forgotten[other] = sys.modules.pop(other)
            _local_stamps.pop(other, None)
    importlib.invalidate_caches()  # a new file under the source root must be found by the next import
    return forgotten


def rebind_notebook_names(namespace: MutableMapping[str, Any] | None, forgotten: dict[str, ModuleType]) -> None:
    """Point the notebook's names at the local modules imported anew, and at what they define.

    Names bound in plain cells (``import mylib.features as F``, ``from mylib.features import clean``)
    still hold the forgotten modules' objects: plain cells would run the old code while the cell
    ships the new, ``%autoreload`` would no longer see those modules, and the next cell could not
    carry ``clean`` over as an import (it is no longer what its module holds). A module the cell did
    not import again is imported here, so none is left out of ``sys.modules``.
    """
    if namespace is None or not forgotten:
        return
    fresh = {}
    for name in forgotten:
        try:
            fresh[name] = sys.modules.get(name) or importlib.import_module(name)
        except Exception:  # noqa: BLE001 - it no longer imports (deleted, broken): its names stay as they were
            continue
    by_id = {id(module): fresh[name] for name, module in forgotten.items() if name in fresh}
    for key, value in list(namespace.items()):
        if id(value) in by_id:
            namespace[key] = by_id[id(value)]
            continue
        home = fresh.get(getattr(value, "__module__", None) or "") if callable(value) else None
        qualname = getattr(value, "__qualname__", None)
        if home is None or not isinstance(qualname, str) or "<locals>" in qualname:
            continue
        current = home
        for part in qualname.split("."):
            current = getattr(current, part, None)
        if current is not None and type(current) is type(value):
            namespace[key] = current


def _is_stale(name: str, module, path: Path) -> bool:
    current = getattr(module, "__file__", None)
    if current is None or (current != str(path) and Path(current).resolve() != path.resolve()):
        return True
    return _local_stamps.get(name) != _stamp(path)


def remember_local_modules(shipped: dict[str, Path]) -> None:
    for name, path in shipped.items():
        if name in sys.modules:
            _local_stamps[name] = _stamp(path)


def _stamp(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None, None)
    return (str(path), st.st_mtime_ns, st.st_size)


def entity_url(backend, kind: str, name: str, version: str, project: str, domain: str) -> str | None:
    if backend is None or backend.console_url is None:
        return None
    return f"{backend.console_url}/projects/{project}/domains/{domain}/{kind}/{name}/version/{version}"

