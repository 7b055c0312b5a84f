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


def display_registration(reg) -> None:
    """The registration widget in a Jupyter kernel, readable text elsewhere."""
    from IPython.display import display

    if widget_frontend():
        from fastreg_magic.widget_registration import RegistrationWidget

        display(RegistrationWidget(reg))
    else:
        display({"text/plain": registration_text(reg)}, raw=True)


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

