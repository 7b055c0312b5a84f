"""The ``%%flyte_fast`` cell magic and ``%flyte_watch`` line magic: arguments, defaults, the error boundary.

    %load_ext fastreg_magic
    %config FlyteFast.project = "flytesnacks"

    %%flyte_fast -d development -i ghcr.io/acme/ml:2024-06
    from flytekit import task, workflow
    ...

The magic maps its options and traitlets defaults onto :func:`fastreg_magic.api.fast_register` and
is the one place where our typed errors become a one-line ``UsageError`` (the cell is marked failed).
Importing this module must stay cheap: flytekit is imported on the first cell, not on ``%load_ext``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Enum, Int, List, Unicode, observe

from fastreg_magic import errors
from fastreg_magic.errors import FastRegError

_FALLBACK_MODULE = "flyte_cell"


@magics_class
class FlyteFast(Magics):
    """Fast-register the Flyte tasks and workflows of a cell. Defaults are settable with ``%config FlyteFast.x``."""

    project = Unicode("flytesnacks", help="Flyte project to register into (-p).").tag(config=True)
    domain = Unicode("development", help="Flyte domain to register into (-d).").tag(config=True)
    images = List(Unicode(), default_value=[], help="Images as pyflyte takes them: 'fqn' or 'name=fqn' (-i).").tag(config=True)
    module = Unicode("", help="Module name for the cell; empty: from the notebook's file name when the kernel "
                     "knows it, else flyte_cell (-m).").tag(config=True)
    source_root = Unicode("", help="Directory whose local modules are shipped; empty: the notebook's directory.").tag(config=True)
    copy = Enum(["auto", "all"], default_value="auto", help="'auto': imported local modules; 'all': every file.").tag(config=True)
    destination_dir = Unicode(".", help="Where the archive is unpacked in the container.").tag(config=True)
    service_account = Unicode("", help="Kubernetes service account of the runs.").tag(config=True)
    raw_output_prefix = Unicode("", help="Where runs write their raw outputs (e.g. s3://bucket/raw).").tag(config=True)
    distribution_dir = Unicode("", help="fsspec URL to store archives in, instead of the backend's signed URL.").tag(config=True)
    config_file = Unicode("", help="flytekit/flytectl config file of the backend (--config).").tag(config=True)
    endpoint = Unicode("", help="FlyteAdmin endpoint HOST:PORT (--endpoint).").tag(config=True)
    activate = Bool(False, help="Activate the registered launch plans.").tag(config=True)
    max_archive_mib = Int(100, help="Refuse archives larger than this many MiB.").tag(config=True)
    show_traceback = Bool(False, help="Show full tracebacks instead of one-line errors.").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        errors.SHOW_TRACEBACKS = self.show_traceback

    @observe("show_traceback")
    def _show_traceback_changed(self, change) -> None:
        errors.SHOW_TRACEBACKS = change["new"]

    # IPython's usage line puts one `%` before this name: a cell magic's usage shows its own two.
    @magic_arguments("%flyte_fast")
    @argument("-p", "--project", help="Flyte project (default: FlyteFast.project).")
    @argument("-d", "--domain", help="Flyte domain (default: FlyteFast.domain).")
    @argument("-i", "--image", action="append", metavar="[NAME=]FQN", help="Image, repeatable: 'fqn' or 'name=fqn'.")
    @argument("-m", "--module", help="Module name of the cell (default: the notebook's file name when the kernel "
              "knows its notebook, else flyte_cell; see above).")
    @argument("--source-root", help="Directory of the local modules to ship (default: the notebook's directory, "
              "else the kernel's working directory).")
    @argument("--copy", choices=("auto", "all"), help="auto: imported local modules; all: every file under the "
              "source root, but the notebook when the kernel knows it (its cells ship as modules).")
    @argument("--version", help="Version to register (default: derived from the content).")
    @argument("--destination-dir", help="Where the code is unpacked in the container (default: '.').")
    @argument("--service-account", help="Kubernetes service account for runs.")
    @argument("--raw-output-prefix", help="Raw output location of runs, e.g. s3://bucket/raw.")
    @argument("--distribution-dir", help="fsspec URL to store the archive in (s3://, gs://, abfs://, file://).")
    @argument("--config", help="Flyte config file.")
    @argument("--endpoint", help="FlyteAdmin endpoint HOST:PORT.")
    @argument("--activate", action="store_true", default=None, help="Activate the launch plans.")
    @argument("--dry-run", action="store_true", help="Show what would be archived and registered; send nothing.")
    @argument("--serialize-to", metavar="DIR", help="Write protobuf files and the archive to DIR; register nothing.")
    @cell_magic
    def flyte_fast(self, line: str, cell: str):
        """Turn this cell and its local modules into a fast-registered Flyte release; returns a Registration.

        The kernel knows its notebook in JupyterLab, Jupyter Notebook 7, VS Code, `fastreg quickstart`
        and `fastreg serialize NOTEBOOK.ipynb`. Elsewhere (nbclient, `jupyter nbconvert --execute`,
        papermill, terminal IPython) the module is named flyte_cell: pass -m NAME (or
        `%config FlyteFast.module = "NAME"`); and `--copy all` ships the notebook file too: list it
        in a .flyteignore in the source root to leave it out.
        """
        return self._guarded(lambda: self._register(_parse_options(self.flyte_fast, "%%flyte_fast", line), cell),
                             registering=True)

    @magic_arguments()
    @argument("execution", nargs="?", help="Execution name or console URL. Without it: list the recent runs "
              "of this notebook's cells, to find the one to watch.")
    @argument("-p", "--project", help="Flyte project (default: FlyteFast.project).")
    @argument("-d", "--domain", help="Flyte domain (default: FlyteFast.domain).")
    @argument("--config", help="Flyte config file.")
    @argument("--endpoint", help="FlyteAdmin endpoint HOST:PORT.")
    @argument("-n", "--last", type=int, metavar="N", help="With no execution: how many runs to list, newest first "
              "(default 10, at most 100).")
    @argument("-m", "--module", action="append", help="With no execution: list the runs of the cells registered "
              "with -m MODULE (repeatable; default: FlyteFast.module, else the notebook's module, and those this kernel "
              "registered).")
    @line_magic
    def flyte_watch(self, line: str):
        """Show the live view of a Flyte execution started elsewhere; returns its Run.

        With no execution, list the recent runs of this notebook's cells on the backend the cells
        register to (name, workflow or launch plan, phase, started, duration; newest first), so a run
        launched before a kernel restart can be found and watched again: `%flyte_watch NAME`.
        """
        args = _parse_options(self.flyte_watch, "%flyte_watch", line)
        if args.execution is None:
            return self._guarded(lambda: self._list_runs(args))
        if args.last is not None or args.module:
            raise UsageError("%flyte_watch: -n and -m list runs; give them without a run name "
                             "(`%flyte_watch -n 20`), or give only the run name to watch it.")
        return self._guarded(lambda: self._watch(args))

    # ------------------------------------------------------------ engine calls

    def _register(self, args, cell: str):
        _import_flytekit_keeping_the_shell(self.shell)  # Ctrl-C during it: nothing was registered
        try:
            from fastreg_magic import api

            options = self._options(args)
            _keep_from_autoreload(self.shell, options["module"])
        except KeyboardInterrupt:
            raise errors.Interrupted("Interrupted while reading the cell's options: nothing was registered.") from None
        registering = not (args.dry_run or args.serialize_to)
        # Resolved only when the cell is sound: a syntax error must not start the embedded sandbox.
        backend = (lambda: self._backend(args)) if registering else None
        progress = UploadProgress()
        try:
            return api.fast_register(
                cell,
                namespace=self.shell.user_ns,
                dry_run=args.dry_run,
                serialize_to=args.serialize_to,
                backend=backend,
                progress=progress,
                first_line=2,  # the editor's line 1 is %%flyte_fast: messages number lines as it does
                **options,
            )
        except KeyboardInterrupt:
            progress.stopped()  # a bar left at 20 % would look like an upload still going
            raise
        finally:
            progress.close()

    def _options(self, args) -> dict:
        notebook = notebook_path(self.shell)
        source_root = args.source_root or self.source_root or (str(notebook.parent) if notebook else os.getcwd())
        max_bytes = self.max_archive_mib * 1024 * 1024
        return dict(
            module=args.module or self.module or module_name_for(notebook),
            project=args.project or self.project,
            domain=args.domain or self.domain,
            images=tuple(args.image or self.images),
            source_root=source_root,
            copy=args.copy or self.copy,
            version=args.version,
            destination_dir=args.destination_dir or self.destination_dir,
            service_account=args.service_account or self.service_account or None,
            raw_output_prefix=args.raw_output_prefix or self.raw_output_prefix or None,
            distribution_dir=args.distribution_dir or self.distribution_dir or None,
            activate=self.activate if args.activate is None else args.activate,
            max_archive_bytes=max_bytes,
            notebook=notebook,  # never shipped itself, not even by --copy all: its cells are the code
        )

    def _backend(self, args):
        from fastreg_magic import config

        backend, notice = config.resolve_backend_with_notice(
            endpoint=args.endpoint or self.endpoint or None, config_file=args.config or self.config_file or None
        )
        if notice:
            print(notice)  # the one line a newcomer needs: where their code went, and how to change it
        return backend

    def _watch(self, args):
        """With --config/--endpoint (or their defaults set), the run is looked for there. Else on the
        backends this kernel's cells registered to, the latest first, then on the configured one: a
        kernel whose cells all pass --config finds their runs, and no sandbox is started just to look."""
        _import_flytekit_keeping_the_shell(self.shell)
        from fastreg_magic import api, config, runs

        project = args.project or self.project
        domain = args.domain or self.domain
        if args.endpoint or self.endpoint or args.config or self.config_file:
            backends = [self._backend(args)]
        else:
            registered = [key[0] for key in reversed(list(api._memo)) if key[0] is not None]
            try:
                backends = [*registered, config.resolve_backend(start_sandbox=False)]
            except FastRegError:  # nothing configured and no sandbox running: only where the cells went
                if not registered:
                    raise
                backends = registered
            by_endpoint: dict = {}
            for backend in backends:  # each once, where it first comes
                by_endpoint.setdefault(backend.endpoint, backend)
            backends = list(by_endpoint.values())

        def attach_on(backend):
            backend = config.ensure_reachable(backend)
            runs.refuse_other_backend(args.execution, backend)  # not a same-named run here, under that cluster's link
            remote = config.connect(backend, project, domain)
            return runs.attach(remote, args.execution, project=project, domain=domain,
                               console_url=backend.console_url, has_console=backend.console_url is not None)

        # The Run is the cell's value: Jupyter displays it as its live view (Run._ipython_display_),
        # so displaying it here too would show the view twice.
        return runs.attach_first([(b.label or b.endpoint, lambda b=b: attach_on(b)) for b in backends],
                                 args.execution, project=project, domain=domain)

    def _list_runs(self, args):
        """The recent runs of this notebook's modules: where this kernel registered last, else on the
        backend a %%flyte_fast cell would use (the embedded sandbox keeps yesterday's runs)."""
        _import_flytekit_keeping_the_shell(self.shell)
        from fastreg_magic import api, config, runs_recent

        limit = runs_recent.DEFAULT_LIMIT if args.last is None else args.last
        if not 1 <= limit <= runs_recent.MAX_LIMIT:
            raise UsageError(f"%flyte_watch: -n {limit}: list between 1 and {runs_recent.MAX_LIMIT} runs.")
        project = args.project or self.project
        domain = args.domain or self.domain
        registered = [reg for reg in reversed(list(api._memo.values())) if reg.backend is not None
                      and (reg.project, reg.domain) == (project, domain)]
        modules = args.module or [self.module or module_name_for(notebook_path(self.shell)),
                                  *(reg.module for reg in registered)]
        explicit = args.endpoint or self.endpoint or args.config or self.config_file
        backend = registered[0].backend if registered and not explicit else self._backend(args)
        remote = config.connect(backend, project, domain)
        rows = runs_recent.recent_runs(remote, project, domain, modules, limit)
        of_anything = not rows and not args.module  # the cells' module names guessed: show what there is
        if of_anything:
            rows = runs_recent.latest_runs(remote, project, domain, limit)
        return runs_recent.RecentRuns(tuple(rows), project, domain, tuple(dict.fromkeys(modules)),
                                      backend.label or backend.endpoint, of_anything=of_anything)

    def _guarded(self, action, registering: bool = False):
        """The error boundary: our typed errors become one line; anything else keeps its traceback,
        from the cell's own code on when the cell raised it.

        ``registering`` (a ``%%flyte_fast`` cell): Stop at any moment is one line saying the state it
        left, never a wall of our frames or a library's, and never lost (see `_interrupted_registering`).
        """
        remembered = None  # what the kernel had registered when the cell started
        try:
            from fastreg_magic import api

            with api.taking_ctrl_c() as watch:
                remembered = dict(api._memo)
                result = action()
                if watch.presses and registering:  # taken where Python drops it (a `__del__`): the cell went on
                    raise api.interrupted_before_shown(result)
            return result
        except FastRegError as err:
            if self.show_traceback:
                raise
            raise UsageError(str(err)) from None
        except Exception as exc:
            if not self.show_traceback:
                _show_from_the_cell(self.shell, exc)
            raise
        except KeyboardInterrupt as exc:
            # `errors.Interrupted` shows itself as one line; the cell's own code stopped as it ran shows
            # as a plain cell's would, with the state it leaves.
            if not self.show_traceback:
                _show_from_the_cell(self.shell, exc, state="Interrupted as the cell ran: nothing was registered.")
            told = _interrupted_registering(exc, remembered) if registering and not self.show_traceback else exc
            if told is not exc:
                raise told from None
            raise


def _interrupted_registering(exc: KeyboardInterrupt, remembered: dict | None) -> KeyboardInterrupt:
    """``exc`` as the cell shows it: as it is when it says the state it left (`errors.Interrupted`) or is
    the cell's own code stopped; else one line. That is Ctrl-C before the pipeline's steps, between them
    or once they are done, each of which says its own state: what the kernel remembers having registered
    since ``remembered`` (its registrations when the cell started) says which it was."""
    from fastreg_magic.cell_errors import RAISED_BY_THE_CELL

    if isinstance(exc, errors.Interrupted) or getattr(exc, RAISED_BY_THE_CELL, None) is not None:
        return exc
    from fastreg_magic import api

    registered = [reg for key, reg in api._memo.items() if remembered is not None and remembered.get(key) is not reg]
    if registered:
        return api.interrupted_before_shown(registered[-1])
    return errors.Interrupted("Interrupted as the cell started: nothing was registered.")


def _show_from_the_cell(shell, exc: BaseException, state: str | None = None) -> None:
    """Show an error the cell's code raised as IPython shows a plain cell's: the frames of the user's
    code only (not the magic's, the pipeline's and importlib's that ran it), then the cell's line as
    the editor numbers it (the module's own numbers count code carried over from earlier cells), then
    ``state`` (what the interruption left) when given."""
    from fastreg_magic.cell_errors import RAISED_BY_THE_CELL

    raised = getattr(exc, RAISED_BY_THE_CELL, None)
    if raised is None:
        return

    where = raised.traceback
    if isinstance(exc, KeyboardInterrupt):
        where = _down_to_the_cell(where)

    def render():
        # IPython's own formatter (colours, source context) on the trimmed traceback.
        # tb_offset=0: the trimmed traceback starts at the cell's frame, which IPython 8's default offset of 1 drops.
        lines = shell.InteractiveTB.structured_traceback(type(exc), exc, where, tb_offset=0)
        return [*lines, f"({raised.place})", *([state] if state else [])]

    exc._render_traceback_ = render  # IPython's hook for how an exception shows in a cell


def _down_to_the_cell(tb):
    """``tb`` (from the cell's module on) down to the cell's last frame: Ctrl-C stops the cell where it
    was, often deep in a library it called (flytekit's decorators, ``inspect``), whose frames the user
    neither wrote nor asked to see."""
    import types

    frames = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    cell = frames[0].tb_frame.f_code.co_filename
    last = max(i for i, frame in enumerate(frames) if frame.tb_frame.f_code.co_filename == cell)
    kept = None
    for frame in reversed(frames[: last + 1]):
        kept = types.TracebackType(kept, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    return kept


def _parse_options(magic, usage: str, line: str):
    """argparse's one-line complaint, plus where the options are listed."""
    try:
        return magic.parser.parse_args(_split_line(line))
    except ValueError as err:  # shlex: an unbalanced quote
        raise UsageError(f"{usage}: {err} in `{line.strip()}`. Quote a path with spaces as a shell would: "
                         f"--source-root \"my dir\".") from None
    except UsageError as err:
        raise UsageError(f"{usage}: {err}. Run `{usage}?` to see its options.") from None


def _split_line(line: str) -> list[str]:
    """The words of a magic's line as a shell splits them: ``"my dir"``, ``'my dir'`` and ``my\\ dir`` are
    one word without its quotes. IPython's own splitting (``parse_argstring``) keeps the quotes, and a path
    with a space then names another place. On Windows a backslash separates folders, so there only the
    quotes are taken off."""
    import shlex

    if os.name != "nt":
        return shlex.split(line)
    return [word[1:-1] if len(word) > 1 and word[0] == word[-1] and word[0] in "\"'" else word
            for word in shlex.split(line, posix=False)]


class UploadProgress:
    """Upload progress of a big archive, drawn in the cell's output and updated in place.

    The uploader calls it only for archives of several MiB; in a terminal each step is a line, so
    updates are limited to every 10 %.
    """

    STEP = 0.1

    def __init__(self):
        self.handle = None
        self.shown = -1.0

    def __call__(self, sent: int, total: int) -> None:
        from IPython.display import DisplayHandle

        fraction = sent / total if total else 1.0
        if fraction < 1.0 and fraction - self.shown < self.STEP:
            return
        self.shown = fraction
        mib = 1024 * 1024
        text = f"Uploading the archive: {fraction:.0%} ({sent / mib:.1f} of {total / mib:.1f} MiB)"
        bundle = {"text/plain": text, "text/html": f"<progress value='{sent}' max='{total}'></progress> {text}"}
        if self.handle is None:
            self.handle = DisplayHandle()  # kept before it is drawn: a Ctrl-C as it draws can still update it
            self.handle.display(bundle, raw=True)
        else:
            self.handle.update(bundle, raw=True)

    def stopped(self) -> None:
        """The upload was interrupted: the bar says so, rather than stay at its last step."""
        if self.handle is not None:
            text = f"Upload of the archive stopped at {self.shown:.0%}."
            self.handle.update({"text/plain": text, "text/html": text}, raw=True)

    def close(self) -> None:
        self.handle = None


# ---------------------------------------------------------------- the notebook the kernel runs


def notebook_path(shell) -> Path | None:
    """The notebook's file when the frontend tells the kernel (VS Code, JupyterLab/Notebook 7), else None.
    A jupytext text notebook (``pipeline.py`` opened as a notebook) is one too."""
    from fastreg_magic.notebook_files import is_text_notebook

    candidates = [
        shell.user_ns.get("__vsc_ipynb_file__") if shell is not None else None,
        os.environ.get("JPY_SESSION_NAME"),
    ]
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(candidate) if Path(candidate).is_absolute() else Path.cwd() / candidate
        if path.suffix == ".ipynb" or is_text_notebook(path):
            return path
    return None


def module_name_for(notebook: Path | None) -> str:
    """``My Pipeline (v2).ipynb`` → ``my_pipeline_v2``; a fixed name when the notebook is unknown.

    A name Python cannot import is made one: ``2024 runs.ipynb`` → ``nb_2024_runs``, and a keyword
    (``class.ipynb``, ``import.ipynb``) → ``nb_class``, ``nb_import``."""
    import keyword

    if notebook is None:
        return _FALLBACK_MODULE
    stem = re.sub(r"\W+", "_", notebook.stem.lower())
    # \w takes characters no identifier may hold (``²``, ``½``): each of those is a ``_`` too.
    name = "".join(char if f"a{char}".isidentifier() else "_" for char in stem).strip("_")
    if not name:
        return _FALLBACK_MODULE
    return name if name.isidentifier() and not keyword.iskeyword(name) else f"nb_{name}"


# ---------------------------------------------------------------- extension hooks


# What importing flytekit changes in the notebook's shell, to be put back: its traceback display (rich's,
# which ignores IPython's `_render_traceback_` hook and shows every later error in every cell as a rich
# panel). Its Ctrl-C handler is never let in (`api.import_flytekit_keeping_ctrl_c`).
_SHELL_HOOKS = ("showtraceback", "_showtraceback", "showsyntaxerror")


def _import_flytekit_keeping_the_shell(shell) -> None:
    """Import flytekit (the first cell does), then undo what its import does to the notebook."""
    from fastreg_magic import api

    if "flytekit" in sys.modules:
        _drop_rich_tracebacks(shell)  # imported in a plain cell: its display may be in the shell already
        return
    before = {name: shell.__dict__.get(name) for name in _SHELL_HOOKS}
    excepthook = sys.excepthook
    try:
        api.import_flytekit_keeping_ctrl_c()
    except KeyboardInterrupt:
        raise errors.Interrupted("Interrupted while importing flytekit: nothing was registered.") from None
    finally:  # an import stopped half-way has changed the shell too
        for name, value in before.items():
            if value is None:
                shell.__dict__.pop(name, None)  # the class's own method again
            else:
                shell.__dict__[name] = value
        sys.excepthook = excepthook


def _drop_rich_tracebacks(shell) -> None:
    """Take out rich's traceback display, which flytekit's import puts into the shell when a plain cell
    imported it first: it ignores IPython's ``_render_traceback_`` hook, so the magic's one-line errors and
    the cell's own trimmed tracebacks would show as full panels of our frames."""
    for name in _SHELL_HOOKS:
        hook = shell.__dict__.get(name)
        if hook is not None and (getattr(hook, "__module__", None) or "").startswith("rich."):
            del shell.__dict__[name]


def _keep_from_autoreload(shell, module: str) -> None:
    """IPython's autoreload (``%autoreload 2``) would run the cell's module again at the next cell,
    since every run rewrites its file; the magic is what runs it."""
    autoreload = shell.magics_manager.registry.get("AutoreloadMagics")
    reloader = getattr(autoreload, "_reloader", None)
    if reloader is not None and hasattr(reloader, "mark_module_skipped"):
        reloader.mark_module_skipped(module)


def _watch_ctrl_c_in_flyte_fast_cells(info) -> None:
    """From IPython's first line running a ``%%flyte_fast`` cell, Ctrl-C is the magic's to say (see
    `api.CtrlCWatch`): pressed before the magic starts, as IPython runs the cell, it is one line too."""
    if info.raw_cell.lstrip().startswith("%%flyte_fast"):
        from fastreg_magic import api

        api.watch_the_cell()


def _unwatch_ctrl_c(result) -> None:
    api = sys.modules.get("fastreg_magic.api")
    if api is not None:
        api.unwatch_the_cell()


def load_into(ipython) -> None:
    if not any(isinstance(m, FlyteFast) for m in ipython.configurables):
        ipython.register_magics(FlyteFast(shell=ipython))
    if _watch_ctrl_c_in_flyte_fast_cells not in ipython.events.callbacks["pre_run_cell"]:
        ipython.events.register("pre_run_cell", _watch_ctrl_c_in_flyte_fast_cells)
        ipython.events.register("post_run_cell", _unwatch_ctrl_c)


def unload_from(ipython) -> None:
    for kind, name in (("cell", "flyte_fast"), ("line", "flyte_watch")):
        ipython.magics_manager.magics[kind].pop(name, None)
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, FlyteFast)]
    for event, callback in (("pre_run_cell", _watch_ctrl_c_in_flyte_fast_cells), ("post_run_cell", _unwatch_ctrl_c)):
        if callback in ipython.events.callbacks[event]:
            ipython.events.unregister(event, callback)
