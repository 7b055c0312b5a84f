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
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    try:
        parent = kernel.get_parent() if kernel is not None else {}
    except Exception:  # an older kernel without get_parent(): fall back to the module
        parent = {}
    cell = ((parent or {}).get("metadata") or {}).get("cellId")
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
    """One run's live view in a Jupyter kernel; its state and URL as text elsewhere."""
    from IPython.display import display

    if widget_frontend():
        from fastreg_magic.widget_run import RunView

        display(RunView(run))
    else:
        display({"text/plain": run_text(run)}, raw=True)


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

