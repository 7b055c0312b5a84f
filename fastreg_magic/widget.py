"""The execution widget: what a `%%flyte_fast` cell registered, a launch form per workflow, live runs.

    reg                         # in Jupyter, the cell's value displays RegistrationWidget(reg)
    reg.widget                  # the same widget, to place elsewhere
    display_run(run)            # one run's live view (what `%flyte_watch` shows)

Widgets are built once; afterwards only trait values change, from background threads that
follow the runs (`runs_watch`), so the cell, the Launch click and a kernel busy with
``await asyncio.sleep(...)`` all stay responsive. Without a widget frontend (terminal
IPython, plain ``python``) the same information is displayed as text.
"""

from __future__ import annotations

from fastreg_magic.widget_text import registration_text, run_text

__all__ = ["RegistrationWidget", "RunView", "display_registration", "display_run", "widget_frontend"]


def widget_frontend() -> bool:
    """Whether this process is a Jupyter kernel, whose frontend can draw widgets."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


# The widget each cell shows last: re-running the cell replaces it, so the old one is closed (its runs'
# views stop following them) instead of living on, unseen, in the kernel.
_shown_by_cell: dict = {}


def display_registration(reg) -> None:
    """The registration widget in a Jupyter kernel, readable text elsewhere."""
    from IPython.display import display

    if widget_frontend():
        from fastreg_magic.widget_registration import RegistrationWidget

        widget = RegistrationWidget(reg)
        _replace(_cell_key(reg), widget)
        display(widget)
    else:
        display({"text/plain": registration_text(reg)}, raw=True)


def _cell_key(reg):
    """What identifies the cell showing ``reg``: the frontend's cell id (JupyterLab, Notebook 7 and VS Code
    send it), else the cell's module on its backend, whose registrations share one list of runs."""
    cell = (_parent_message().get("metadata") or {}).get("cellId")
    return ("cell", cell) if cell else ("runs", id(reg.runs))


def _replace(key, widget) -> None:
    import weakref

    old = _shown_by_cell.get(key)
    old = old() if old is not None else None
    replaced = old is not None and (key[0] == "cell" or old.reg.runs is widget.reg.runs)
    if replaced and old is not widget:
        old.close()
    _shown_by_cell[key] = weakref.ref(widget)


def display_run(run) -> None:
    """One run's live view in a Jupyter kernel; its state and URL as text elsewhere. The views the
    cell showed when it last ran (a `%flyte_watch` cell re-run) are closed: they stop polling."""
    from IPython.display import display

    if widget_frontend():
        from fastreg_magic.widget_run import RunView

        view = RunView(run)
        _replace_run_views(_run_key(run), view)
        display(view)
    else:
        display({"text/plain": run_text(run)}, raw=True)


# The run views each cell showed, with the execution of the cell that showed them: a later execution
# of the cell closes them, as a %%flyte_fast cell re-run closes the widget it showed.
_runs_shown_by_cell: dict = {}


def _run_key(run):
    """What identifies the cell showing ``run`` and the execution of it: the frontend's cell id, else
    the run itself (frontends that send no cell id: a cell re-run shows the same run again, and one
    view of a run is left open in the kernel), and the request that executes the cell."""
    parent = _parent_message()
    cell = (parent.get("metadata") or {}).get("cellId")
    execution = (parent.get("header") or {}).get("msg_id")
    if cell:
        return ("cell", cell), execution
    from fastreg_magic.runs_watch import execution_key

    return ("run", *execution_key(run)), execution


def _parent_message() -> dict:
    """The request the kernel is answering (the cell's execute_request); {} outside a kernel."""
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    try:
        return (kernel.get_parent() if kernel is not None else None) or {}
    except Exception:  # an older kernel without get_parent()
        return {}


def _replace_run_views(key, view) -> None:
    """Close the views shown under ``key`` by an earlier execution; keep those of this one (a cell may
    display several runs)."""
    import weakref

    where, execution = key
    shown_by, refs = _runs_shown_by_cell.get(where, (None, []))
    if shown_by != execution or execution is None:
        for ref in refs:
            old = ref()
            if old is not None and old is not view:
                old.close()
        refs = []
    refs = [ref for ref in refs if ref() is not None]
    for gone in [k for k, (_, rs) in _runs_shown_by_cell.items() if not any(r() is not None for r in rs)]:
        del _runs_shown_by_cell[gone]  # views the kernel let go of: a cell long deleted, a run shown once
    _runs_shown_by_cell[where] = (execution, [*refs, weakref.ref(view)])


def __getattr__(name: str):
    # The widget classes import ipywidgets; load them only when asked for.
    if name == "RunView":
        from fastreg_magic.widget_run import RunView

        return RunView
    if name == "RegistrationWidget":
        from fastreg_magic.widget_registration import RegistrationWidget

        return RegistrationWidget
    raise AttributeError(f"module 'fastreg_magic.widget' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "RunView", "RegistrationWidget"])

