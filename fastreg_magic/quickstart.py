"""`fastreg quickstart`: the newcomer's first run, headless.

Runs ``notebooks/quickstart.ipynb`` top to bottom in a real Jupyter kernel (nbclient) against
the embedded sandbox, then prints what the notebook produced: the registered version, what
the re-runs cost, and the outputs of the run it launched. A failing cell stops the run with
the cell's number, its first line and the error, and the command exits non-zero.

The example notebooks come with the package (the wheel carries the project's ``notebooks/``
folder as ``fastreg_magic/notebooks``). From a clone they run where they are; from an installed
package they are first copied to a folder of the user's own (``~/.local/share/fastreg/notebooks``),
so they can be opened and edited in JupyterLab; a copy already there is kept as the user left it.

    $ fastreg quickstart
    embedded sandbox: 127.0.0.1:40123 (started, data in ~/.local/share/fastreg/sandbox)
    running notebooks/quickstart.ipynb in a Jupyter kernel:
    [ 1/10] %load_ext fastreg_magic
    ...
    registered version: ec541f840af277dbc9f4
      reg        greetings d927c5f71baf2795a32f  uploaded and registered in collect 32 ms, ...
      again      greetings ec541f840af277dbc9f4  unchanged: nothing uploaded or registered
    run a6c8lvgumqvi0p7ytkbm (version d927c5f71baf2795a32f): SUCCEEDED
      letters = 10
      text = 'HELLO, FLYTE'

The same runner executes every example notebook in the test suite (``execute_notebook``).
"""

from __future__ import annotations

import argparse
import importlib.resources
import importlib.util
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fastreg_magic.errors import NotebookRunError

QUICKSTART = "quickstart.ipynb"
# The clone's notebooks/ folder: the one source of the notebooks the wheel carries as fastreg_magic/notebooks.
CLONE_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# What running a notebook headless imports; all are dependencies of the package.
NOTEBOOK_RUNNER = ("nbformat", "nbclient", "ipykernel")
# A run on the sandbox costs about two seconds per task; the slowest quickstart cell waits for one
# workflow run. Five minutes per cell leaves room for a loaded CI machine without hiding a hang.
DEFAULT_CELL_TIMEOUT_S = 300
KERNEL_START_TIMEOUT_S = 120
# Environment that would point the kernel's `%%flyte_fast` at some other Flyte than the sandbox.
FLYTE_ENV_PREFIXES = ("FLYTE_", "FLYTECTL_")
REPORT_MARKER = "FASTREG-QUICKSTART-REPORT "
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Appended to the quickstart as a last cell: finds the notebook's registrations (by type, in the
# order they were assigned) and every run launched from them, waits for the runs to end, and
# prints all of it as one JSON line for `read_report`.
REPORT_CELL = f"""
def _fastreg_quickstart_report():
    import json
    from fastreg_magic.api import Registration

    releases, runs, seen = [], [], set()
    for name, value in list(globals().items()):
        if isinstance(value, Registration) and not name.startswith("_") and id(value) not in seen:
            seen.add(id(value))
            releases.append(dict(name=name, module=value.module, version=value.version, uploaded=value.uploaded,
                                 registered=value.registered, timings=dict(value.timings or {{}})))
            for run in value.runs:  # a cell's versions share one list of runs: each once, with its own version
                if run.name in seen:
                    continue
                seen.add(run.name)
                run.wait(timeout={DEFAULT_CELL_TIMEOUT_S})
                runs.append(dict(name=run.name, release=run.version or value.version, phase=str(run.phase), error=run.error,
                                 outputs={{key: repr(item) for key, item in (run.outputs or {{}}).items()}}))
    return json.dumps(dict(releases=releases, runs=runs), default=str)
print({REPORT_MARKER!r} + _fastreg_quickstart_report())
"""


@dataclass(frozen=True)
class QuickstartReport:
    """What the quickstart produced, read back from its kernel: its releases and their runs."""

    releases: list[dict]
    runs: list[dict]

    @property
    def succeeded(self) -> bool:
        return bool(self.runs) and all(run["phase"] == "SUCCEEDED" for run in self.runs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--notebook", type=Path, default=None,
        help="notebook to run (default: the quickstart notebook that comes with fastreg)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="the embedded sandbox's data dir (default: a per-user directory)"
    )
    parser.add_argument(
        "--timeout", type=int, default=DEFAULT_CELL_TIMEOUT_S, help="seconds one cell may take (default: %(default)s)"
    )
    parser.add_argument(
        "--save-executed", type=Path, default=None, metavar="FILE", help="also write the executed notebook, outputs included, to FILE"
    )


def run(args: argparse.Namespace) -> int:
    require_notebook_runner()  # before anything starts: a missing piece must not leave a sandbox running
    notebook = Path(args.notebook).expanduser().resolve() if args.notebook else default_notebook()
    if not notebook.is_file():
        raise NotebookRunError(f"Notebook {notebook} does not exist.", "Pass --notebook with the path of a notebook.")
    info, env = sandbox_kernel_env(args.data_dir)
    state = "started" if info.started else "already running"
    print(f"embedded sandbox: {info.endpoint} ({state}, data in {info.data_dir})", flush=True)
    print(f"running {notebook} in a Jupyter kernel:", flush=True)
    try:
        executed = execute_notebook(
            notebook, env=env, timeout=args.timeout, extra_cells=[REPORT_CELL], on_cell=_print_progress
        )
    except NotebookRunError as err:
        if err.traceback:
            print(err.traceback, file=sys.stderr)
        raise
    if args.save_executed:
        import nbformat

        nbformat.write(executed, str(args.save_executed))
    report = read_report(executed)
    print(format_report(report))
    print(next_steps(notebook, info))
    if not report.succeeded:
        print("fastreg quickstart: the notebook ran, but not every run it launched succeeded (see above).", file=sys.stderr)
        return 1
    return 0


def require_notebook_runner() -> None:
    """NotebookRunError naming what is missing to run a notebook headless, and how to install it here."""
    missing = [name for name in NOTEBOOK_RUNNER if importlib.util.find_spec(name) is None]
    if missing:
        raise NotebookRunError(
            f"Running notebooks headless needs nbformat, nbclient and ipykernel ({', '.join(missing)} missing "
            f"from the Python environment at {sys.prefix}).",
            f"Install them there: `{sys.executable} -m pip install {' '.join(missing)}`.",
        )


def default_notebook() -> Path:
    """The quickstart notebook: the clone's, or a user's copy of the one the installed package carries."""
    packaged = packaged_notebooks()
    if packaged is None:
        return CLONE_NOTEBOOKS / QUICKSTART
    return copy_notebooks(packaged, user_notebooks_dir()) / QUICKSTART


def packaged_notebooks():
    """The notebooks folder inside the installed package (a Traversable); None in a clone or editable install."""
    folder = importlib.resources.files("fastreg_magic") / "notebooks"
    return folder if folder.joinpath(QUICKSTART).is_file() else None


def user_notebooks_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("fastreg")) / "notebooks"


def copy_notebooks(source, target: Path) -> Path:
    """Copy the files of ``source`` (a Traversable folder) under ``target`` that are not there yet:
    a notebook the user has edited in their copy is theirs, and stays as it is."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name == "__pycache__":
            continue
        if item.is_dir():
            copy_notebooks(item, target / item.name)
        elif not (target / item.name).exists():
            (target / item.name).write_bytes(item.read_bytes())
    return target


def next_steps(notebook: Path, info) -> str:
    fastreg = Path(sys.executable).parent / "fastreg"
    stop = f"stop it with `{fastreg} sandbox --stop --data-dir {info.data_dir}`"
    jupyter = Path(sys.executable).parent / "jupyter"
    if importlib.util.find_spec("jupyterlab") is not None and jupyter.exists():
        open_it = f"Open it in JupyterLab: {jupyter} lab {notebook}"
    else:
        open_it = f"To open it in JupyterLab: `{sys.executable} -m pip install jupyterlab`, then `jupyter lab {notebook}`"
    return f"The sandbox keeps running in the background for your notebooks; {stop}.\n{open_it}"


def sandbox_kernel_env(data_dir: Path | None):
    """The embedded sandbox (started or reused) and the kernel's environment pointing at it.

    The environment is this one minus anything that points Flyte elsewhere, plus the sandbox's
    config file in ``FLYTECTL_CONFIG``: otherwise a ``~/.flyte/config.yaml`` on the machine would
    send the quickstart to the user's real cluster.
    """
    from fastreg_magic import sandbox

    info = sandbox.ensure_running(data_dir=data_dir)
    env = {key: value for key, value in os.environ.items() if not key.startswith(FLYTE_ENV_PREFIXES)}
    env["FLYTECTL_CONFIG"] = str(info.config_file)
    return info, env


def execute_notebook(
    path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: int = DEFAULT_CELL_TIMEOUT_S,
    extra_cells: list[str] = (),
    on_cell: Callable[[int, int, str], None] | None = None,
):
    """Run every cell of ``path`` in a fresh python3 kernel; return the executed notebook.

    ``cwd`` (default: the notebook's folder) is the kernel's working directory, as in Jupyter.
    ``extra_cells`` are appended and run after the notebook's own cells. ``on_cell(number, total,
    first_line)`` is called before each of the notebook's own code cells. A cell that raises stops the run with
    :class:`NotebookRunError` naming the cell; its traceback is on ``err.traceback``.
    """
    require_notebook_runner()
    import nbformat
    from nbclient import NotebookClient
    from traitlets.config import Config

    nb = nbformat.read(str(path), as_version=4)
    own_cells = sum(cell.cell_type == "code" for cell in nb.cells)
    nb.cells.extend(nbformat.v4.new_code_cell(source) for source in extra_cells)
    with tempfile.TemporaryDirectory(prefix="fastreg-kernel-") as sockets:
        # IPC sockets in a private folder: local only, and ipykernel 7 does not warn about them as it
        # does about unencrypted TCP.
        config = Config()
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = str(Path(sockets) / "kernel")
        client = NotebookClient(  # owns its kernel manager, so the kernel is shut down however the run ends
            nb,
            config=config,
            timeout=timeout,
            startup_timeout=KERNEL_START_TIMEOUT_S,
            kernel_name="python3",
            resources={"metadata": {"path": str(cwd or path.parent)}},
        )
        return _execute(client, nb, path, env, timeout, own_cells, on_cell)


def _execute(client, nb, path: Path, env, timeout: int, own_cells: int, on_cell):
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    code_cells = [index for index, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    current = {"number": 0, "cell": nb.cells[0] if nb.cells else None}

    def cell_started(cell, cell_index):
        number = code_cells.index(cell_index) + 1 if cell_index in code_cells else 0
        current.update(number=number, cell=cell)
        if on_cell is not None and 0 < number <= own_cells:
            on_cell(number, own_cells, _first_line(cell.source))

    client.on_cell_start = cell_started
    try:
        return client.execute(env=kernel_env(path, env))
    except CellExecutionError as exc:
        raise NotebookRunError(
            f"{path.name}: cell {_describe(current)} failed: {exc.ename}: {exc.evalue}",
            f"Open {path} in JupyterLab and run it cell by cell to see the full output.",
            traceback=_ANSI.sub("", exc.traceback or ""),
        ) from exc
    except CellTimeoutError as exc:
        raise NotebookRunError(
            f"{path.name}: cell {_describe(current)} did not finish within {timeout}s.",
            "Pass a larger --timeout if the machine is busy, or open the notebook in JupyterLab to see where it waits.",
        ) from exc
    except DeadKernelError as exc:
        raise NotebookRunError(
            f"{path.name}: the kernel died while running the notebook ({exc}).",
            "Check that ipykernel works in this environment: `python -m ipykernel --version`.",
        ) from exc


def kernel_env(notebook: Path, env: dict[str, str] | None) -> dict[str, str]:
    """The kernel's environment, telling it which notebook it runs as jupyter_server does
    (``JPY_SESSION_NAME``): ``%%flyte_fast`` then names the cell's module after the notebook and
    leaves the notebook out of ``--copy all``, as it does in JupyterLab. nbclient says nothing of it."""
    return {**(dict(os.environ) if env is None else env), "JPY_SESSION_NAME": str(Path(notebook).resolve())}


def _describe(current: dict) -> str:
    """``3 ('%%flyte_fast -m greetings')``: the code cell's number and its first line."""
    cell = current["cell"]
    return f"{current['number']} ({_first_line(cell.source if cell else '')!r})"


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line.strip()[:70]
    return ""


def _print_progress(number: int, total: int, first_line: str) -> None:
    print(f"[{number:>2}/{total}] {first_line}", file=sys.stderr, flush=True)


def read_report(executed) -> QuickstartReport:
    """The JSON line the report cell printed, as a :class:`QuickstartReport`."""
    for output in executed.cells[-1].get("outputs", []):
        for line in str(output.get("text", "")).splitlines():
            if line.startswith(REPORT_MARKER):
                return QuickstartReport(**json.loads(line[len(REPORT_MARKER):]))
    raise NotebookRunError(
        "The quickstart ran, but its last cell printed no report.",
        "This is a bug in `fastreg quickstart`; please report it with the output above.",
    )


def _cost_of(release: dict) -> str:
    uploaded, registered = release["uploaded"], release["registered"]
    if not uploaded and not registered:
        return "unchanged: nothing uploaded or registered"
    done = {(True, True): "uploaded and registered", (False, True): "registered (archive already stored)",
            (True, False): "uploaded (entities already registered)"}[(uploaded, registered)]
    timings = ", ".join(f"{step} {seconds * 1000:.0f} ms" for step, seconds in release["timings"].items())
    return f"{done} in {timings}" if timings else done


def format_report(report: QuickstartReport) -> str:
    lines = []
    for release in report.releases:
        status = _cost_of(release)
        lines.append(f"  {release['name']:<10} {release['module']} {release['version']}  {status}")
    if report.releases:
        lines.insert(0, f"registered version: {report.releases[-1]['version']}")
    for run in report.runs:
        lines.append(f"run {run['name']} (version {run['release']}): {run['phase']}")
        lines += [f"  {name} = {value}" for name, value in run["outputs"].items()]
        if run.get("error"):
            lines.append(f"  error: {run['error']}")
    if not report.runs:
        lines.append("the notebook launched no run")
    return "\n".join(lines)



