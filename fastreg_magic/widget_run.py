"""The live view of one run: phase badge, elapsed time, graph, node table, logs, outputs or error, buttons.

Built once; afterwards only trait values change, from the background follower
(`runs_watch`) or from the buttons' background work. Nothing here blocks the kernel: a click
hands its RPC (or its read of a log file) to a thread and returns.

Log links to a log service open in the browser. A ``file://`` link does not: browsers refuse to
open local files from a page served over http (JupyterLab's), and JupyterLab serves only files under
its root, which the sandbox's data dir is usually not. So a log in a file on this machine is shown in
the view itself, its last lines read by the kernel, which runs where the file is.

A task's deck (``@task(enable_deck=True)``) is shown in the view too, on request, in a sandboxed
frame (`runs_decks`): no console needed.

A view costs few widget models: each is a comm, a model the browser keeps, and an entry in a saved
notebook's widget state. What only shows text (inputs, graph, node table, log links, outputs, error,
notes) is drawn in a few `Panel`s (``HTML`` widgets) of `Part`s; the interactive parts (buttons, the
log and deck choosers, the texts they show) are widgets; the widgets of a view share one plain layout
and one style of each kind.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import threading
from types import SimpleNamespace
from typing import Callable

import ipywidgets as widgets
from ipywidgets.widgets.widget_description import DescriptionStyle
from ipywidgets.widgets.widget_string import HTMLStyle

from fastreg_magic import runs_watch
from fastreg_magic.errors import FastRegError
from fastreg_magic.launch_options import options_html
from fastreg_magic.runs_data import RUN_TERMINAL, NodeStatus
from fastreg_magic.runs_decks import deck_html, fetch_deck
from fastreg_magic.runs_logs import local_path, tail
from fastreg_magic.runs_tree import flatten
from fastreg_magic.widget_graph import graph_svg
from fastreg_magic.widget_text import (
    LOST,
    badge_html,
    connection_html,
    duration_text,
    error_html,
    inputs_html,
    live_caption_html,
    live_note_text,
    log_links_html,
    log_tail_html,
    node_task,
    nodes_html,
    outputs_html,
    run_text,
    shown_phase,
    size_text,
    title_html,
)

log = logging.getLogger(__name__)


def in_background(fn: Callable, *args, name: str = "fastreg-action") -> threading.Thread:
    """Run ``fn`` on a thread, inside a copy of the caller's context (the click's parent message)."""
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(fn, *args), name=name, daemon=True)
    thread.start()
    return thread


def close_tree(widget) -> None:
    """Close ``widget`` and the widgets inside it: ipywidgets keeps every open widget (and its comm)
    alive until it is closed, and closing a box leaves its children open."""
    for child in getattr(widget, "children", ()):
        if isinstance(child, RunView):  # a relaunch's view follows its own run: stop that too
            child.close()
        else:
            close_tree(child)
    for part in ("layout", "style"):  # widgets of their own, kept open like the others
        owned = getattr(widget, part, None)
        if isinstance(owned, widgets.Widget):
            owned.close()
    widgets.Widget.close(widget)


class Part:
    """One part of a `Panel`: what used to be a widget of its own, read and set the same way (``.value``;
    ``.layout.display`` "none" leaves it out), drawn as a piece of its panel's HTML."""

    def __init__(self, panel: "Panel"):
        self._panel = panel
        self._value = ""
        self.layout = SimpleNamespace(display=None)

    @property
    def value(self) -> str:
        return self._value

    @value.setter
    def value(self, value: str) -> None:
        with self._panel.batch():
            self._value = value or ""

    def show(self, shown: bool) -> None:
        with self._panel.batch():
            self.layout.display = None if shown else "none"

    @property
    def shown(self) -> bool:
        return bool(self._value) and self.layout.display != "none"

    @property
    def model_id(self) -> str:
        """The widget model that draws it: its panel's."""
        return self._panel.model_id


class Panel(widgets.HTML):
    """An ``HTML`` widget showing its `Part`s one after the other (``inline``: side by side).

    Written here because ipywidgets composes only widgets: several texts in one model are one comm
    and one entry of a saved notebook's widget state instead of one each (with a layout and a style).
    A part set redraws the panel; `batch` sets several and sends the panel once.
    """

    def __init__(self, count: int, *, inline: bool = False, **kwargs):
        self._parts_lock = threading.RLock()  # parts are set from the kernel, the follower and button threads
        self._parts_held = 0
        self._inline = inline
        self.parts = [Part(self) for _ in range(count)]
        super().__init__(**kwargs)

    @contextlib.contextmanager
    def batch(self):
        with self._parts_lock:
            self._parts_held += 1
            try:
                yield self
            finally:
                self._parts_held -= 1
                if not self._parts_held:
                    self._redraw()

    def _redraw(self) -> None:
        tag = "span" if self._inline else "div"
        shown = [f"<{tag}>{part.value}</{tag}>" for part in self.parts if part.shown]
        value = " ".join(shown) if self._inline else "".join(shown)
        if value != self.value:
            self.value = value


def view_kit() -> SimpleNamespace:
    """The layout and styles a view's widgets share: a widget's own layout and style are two more
    models each, all alike for most of them. (ipywidgets lets widgets share a layout or a style.)"""
    return SimpleNamespace(plain=widgets.Layout(), html=HTMLStyle(), button=widgets.ButtonStyle(),
                           choice=DescriptionStyle(), fit=widgets.Layout(width="auto", max_width="100%"))


def describe_failure(exc: BaseException) -> str:
    from fastreg_magic.runs import InputRefused

    if isinstance(exc, InputRefused):  # its hint is for code (launch(n=...)); here the form is at hand
        return f"{exc.message} Correct it in the launch form and launch again."
    if isinstance(exc, FastRegError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class RunView(widgets.VBox):
    """One run, kept up to date in the background. ``RunView(None, label=...)`` waits for `attach`."""

    def __init__(self, run=None, *, label: str = "", on_new_run: Callable | None = None, note: str = "",
                 relaunch: Callable | None = None, relaunch_as: tuple[str, str] | None = None, **kwargs):
        """``note`` follows the title (a run of a previous version says so); ``relaunch(run)`` starts the
        run the Relaunch button starts, given this view's run (default: the same launch plan again,
        ``Run.relaunch``), and ``relaunch_as`` is that button's (text, tooltip)."""
        self.run = None
        self.label = label
        self.note = note
        self._relaunch_run = relaunch
        self.nodes: list[NodeStatus] = []
        self.connection_problem: str | None = None
        self.updates = 0  # how many background updates were drawn (tests and benchmarks read it)
        self._watch = None
        self._closed = False
        self._following = threading.Lock()  # a launch thread attaches while the kernel may close the view
        self._shown_phase = "LAUNCHING"
        self._on_new_run = on_new_run
        kit = self._kit = view_kit()
        # May shrink below its text's width (which it then cuts with "…"), so the phase beside it stays in sight.
        self.title = widgets.HTML(layout=widgets.Layout(max_width="100%", min_width="0", flex="0 1 auto"),
                                  style=kit.html)
        status = Panel(2, inline=True, layout=kit.plain, style=kit.html)
        self.badge, self.elapsed = status.parts
        self.badge.value = badge_html("LAUNCHING")
        self.connection = widgets.HTML(layout=kit.plain, style=kit.html)
        # Its own line: a poll redraws `connection`, and this must stay until a terminate succeeds or the run ends.
        # Says the view is live only while this kernel runs: its saved state outlives the kernel.
        notes = Panel(2, layout=kit.plain, style=kit.html)
        self.live_note, self.terminate_problem = notes.parts
        self.live_note.show(False)
        self.terminate_problem.show(False)
        self.terminate_button = widgets.Button(description="Terminate", button_style="danger", disabled=True,
                                               layout=kit.plain, style=kit.button)
        text, tooltip = relaunch_as or ("Relaunch", "Start it again with the same inputs")
        self.relaunch_button = widgets.Button(description=text, tooltip=tooltip, disabled=True, style=kit.button,
                                              layout=widgets.Layout(width="auto", min_width="148px"))
        self.terminate_button.on_click(self._terminate_clicked)
        self.relaunch_button.on_click(self._relaunch_clicked)
        body = Panel(4, layout=kit.plain, style=kit.html)
        self.inputs, self.graph, self.node_table, log_links = body.parts
        self.logs = LogsPanel(log_links, kit)
        self.decks = DecksPanel(kit)
        tail = Panel(2, layout=kit.plain, style=kit.html)
        self.outputs, self.error = tail.parts
        self._relaunches = None  # a VBox once a Relaunch click shows its run here
        self._panels = (status, notes, body, tail)
        bar = widgets.HBox(
            [self.title, status, self.terminate_button, self.relaunch_button, self.connection],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
        )
        super().__init__(
            [bar, notes, body, self.logs, self.decks, tail],
            layout=widgets.Layout(border="1px solid var(--jp-border-color2,#e0e0e0)", padding="4px 8px", margin="4px 0"),
            **kwargs,
        )
        self.add_class("fastreg-run")
        self.title.value = title_html(label, None, None, note)
        if run is not None:
            self.attach(run)

    # -- feeding the view -------------------------------------------------------------------
    def attach(self, run) -> None:
        """Show ``run`` and follow it in the background until it ends. A view closed meanwhile (its
        widget was replaced by the re-run cell's while the run was launching) stays closed: nobody
        would see it, and following the run would poll it for nobody."""
        with self._following:
            if self._closed:
                return
            self.run = run
            self.label = self.label or run.label or ""
            self.title.value = title_html(self.label, run.name, run.url, self.note)
            with self._drawing():
                self.inputs.value = inputs_html(getattr(run, "inputs", None)) + options_html(getattr(run, "options", None))
                self._draw_run(run)
            self._watch = runs_watch.watch(run, self.apply)

    def launch_failed(self, message: str) -> None:
        with self._drawing():
            self.badge.value = badge_html("LAUNCH FAILED")
            self.error.value = error_html(message)
        self.title.value = title_html(self.label, None, None).replace("launching…", "not launched")
        self._shown_phase = "LAUNCH FAILED"

    def apply(self, update: runs_watch.RunUpdate) -> None:
        """Draw what a background poll learnt (called from the follower's thread)."""
        self.connection_problem = update.connection
        self.connection.value = connection_html(update.connection)
        with self._drawing():
            if update.nodes is not None:
                self.nodes = update.nodes
                self._draw_nodes(update.run, update.nodes)
            self._draw_run(update.run)
        self.updates += 1

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    def close(self) -> None:
        """Stop following the run and close every widget of the view, so the kernel lets go of them all."""
        following = getattr(self, "_following", None)
        if following is None:  # stopped as it was built, then garbage: nothing follows its run yet
            return close_tree(self)
        with following:
            self._closed = True
            self.stop()
        close_tree(self)

    @property
    def phase(self) -> str:
        """The phase the badge shows (LAUNCHING / LAUNCH FAILED before there is a run).

        Set last when drawing, so once it reads SUCCEEDED the outputs and nodes are on screen too.
        """
        return self._shown_phase

    @property
    def relaunches(self):
        """The views of the runs its Relaunch button started (when no registration widget shows them)."""
        return self._relaunches if self._relaunches is not None else _NO_RELAUNCHES

    # -- drawing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _drawing(self):
        """Several parts drawn at once: each panel is sent once, with all of them."""
        with contextlib.ExitStack() as stack:
            for panel in self._panels:
                stack.enter_context(panel.batch())
            yield

    def _draw_run(self, run) -> None:
        phase = shown_phase(run)  # read once: the run may be refreshed meanwhile
        # a lost run is over for this view: nothing to terminate, and Relaunch says what to do
        done = phase in RUN_TERMINAL or phase == LOST
        self.badge.value = badge_html(phase)
        self.elapsed.value = (f"<span class='fastreg-elapsed' style='color:var(--jp-content-font-color2,#616161)'>"
                              f"{duration_text(run.elapsed) or '0s'}</span>")
        self.outputs.value = outputs_html(run.outputs) if phase == "SUCCEEDED" else ""
        self.error.value = error_html(run.error, getattr(run, "error_headline", None))
        if done:  # a terminate that failed no longer matters
            self._show_terminate_problem("")
        self._show_live_note(run, live=not done)
        stopping = phase == "ABORTING"  # terminated already: the backend is ending it
        self.terminate_button.disabled = done or stopping or self.terminate_button.description != "Terminate"
        self.relaunch_button.disabled = not done
        self._shown_phase = phase

    def _draw_nodes(self, run, rows: list[NodeStatus]) -> None:
        self.node_table.value = nodes_html(rows)
        self.logs.show(rows)
        self.decks.show(run, rows)
        graph = run.graph()
        phases = {r.node: r.phase for r in rows}
        self.graph.value = graph_svg([(r.node, node_task(r)) for r in rows], graph.edges, phases)

    # -- buttons ----------------------------------------------------------------------------
    def _terminate_clicked(self, _button=None) -> None:
        if self.run is None or self.run.done:
            return
        self.terminate_button.disabled = True
        self.terminate_button.description = "Terminating…"
        in_background(self._terminate, name="fastreg-terminate")

    def _terminate(self) -> None:
        try:
            self.run.terminate()
        except Exception as exc:  # shown in the view: a background failure has no cell to raise in
            self._show_terminate_problem(f"Terminate failed, the run goes on: {describe_failure(exc)} "
                                         "Click Terminate to try again.")
            self.terminate_button.disabled = False
        else:
            self._show_terminate_problem("")
        finally:
            self.terminate_button.description = "Terminate"
            with self._drawing():
                self._draw_run(self.run)

    def _show_live_note(self, run, live: bool) -> None:
        """While the run goes on, the view says until when it was true and how to see it after a restart
        (after which ipywidgets cannot update it). An ended run's view is true for good: no note."""
        text = live_caption_html(run.name, _now()) if live else ""
        if text != self.live_note.value:  # the clock reads to the second: at most one update a second
            self.live_note.value = text
        self.live_note.show(live)

    def _show_terminate_problem(self, problem: str) -> None:
        """Its line takes no room while there is nothing to say."""
        self.terminate_problem.value = connection_html(problem)
        self.terminate_problem.show(bool(problem))

    def _relaunch_clicked(self, _button=None) -> None:
        if self.run is None:
            return
        placeholder = RunView(None, label=self.label, on_new_run=self._on_new_run, relaunch=self._relaunch_run)
        if self._on_new_run is None:
            if self._relaunches is None:
                self._relaunches = widgets.VBox(layout=self._kit.plain)
                self.children = (*self.children, self._relaunches)
            self._relaunches.children = (*self._relaunches.children, placeholder)
        in_background(self._relaunch, placeholder, name="fastreg-relaunch")
        if self._on_new_run is not None:
            self._on_new_run(None, placeholder)

    def _relaunch(self, placeholder: "RunView") -> None:
        try:
            run = self._relaunch_run(self.run) if self._relaunch_run is not None else self.run.relaunch()
        except Exception as exc:
            placeholder.launch_failed(describe_failure(exc))
            return
        if self._on_new_run is not None:  # the widget shows it: in the placeholder, if it is still open
            self._on_new_run(run, placeholder)
        else:
            placeholder.attach(run)

    # -- text for frontends without widgets -------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict) and self.run is not None:
            text = run_text(self.run, self.nodes)
            if not (self.run.done or self.run.lost):  # saved in the notebook, read after the kernel is gone
                text += "\n" + live_note_text(self.run.name, _now())
            bundle["text/plain"] = text
        return bundle


_NO_RELAUNCHES = SimpleNamespace(children=())


def _now() -> str:
    """The kernel's wall-clock time, to the second, as a view says when it was last updated."""
    return dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()


class LogsPanel(widgets.VBox):
    """The run's log links by node, and the end of a log file on this machine, shown on request.

    Empty (and taking no room) until a node has logs; the links are a part of the view's text
    (``links``). Choosing a local log and clicking Show reads its last lines on a thread; the text is
    bounded (`runs_logs.tail`), however much the task printed.

    Its widgets are built with it, not when a log comes: a notebook executed headless (nbclient) keeps
    only the widgets created on behalf of the cell it is running, so one built later by the thread
    following the run would be missing from the saved notebook.
    """

    def __init__(self, links: Part | None = None, kit: SimpleNamespace | None = None):
        kit = kit or view_kit()
        own = []
        if links is None:  # on its own, outside a run view: its links in an HTML of its own
            own = [Panel(1, layout=kit.plain, style=kit.html)]
            links = own[0].parts[0]
        self.links = links
        self.choice = widgets.Dropdown(layout=kit.fit, style=kit.choice)
        self.show_button = widgets.Button(description="Show log", tooltip="Show the last lines of the chosen log",
                                          layout=kit.plain, style=kit.button)
        self.show_button.on_click(self._show_clicked)
        self.text = widgets.HTML(layout=kit.plain, style=kit.html)
        self.reader = widgets.HBox([self.choice, self.show_button], layout=widgets.Layout(display="none"))
        self._logs: tuple = ()
        super().__init__([*own, self.reader, self.text], layout=kit.plain)
        self.add_class("fastreg-logs")

    def show(self, rows: list[NodeStatus]) -> None:
        """Draw the links of ``rows`` (a node tree); unchanged links leave the panel (and the choice) alone."""
        logs = tuple((row.label, name, uri) for _, row in flatten(rows) for name, uri in row.logs)
        if logs == self._logs:
            return
        self._logs = logs
        self.links.value = log_links_html(logs)
        local = [(f"{node} · {name}", (node, name, uri)) for node, name, uri in logs if local_path(uri) is not None]
        if [label for label, _ in local] != [label for label, _ in self.choice.options]:
            chosen = self.choice.label
            self.choice.options = local
            if local:  # the log shown last stays chosen; else the first (setting options chooses none)
                self.choice.label = chosen if chosen in dict(local) else local[0][0]
        self.reader.layout.display = "flex" if local else "none"

    def _show_clicked(self, _button=None) -> None:
        if self.choice.value is None:
            return
        self.show_button.disabled = True
        in_background(self._read, self.choice.value, name="fastreg-log")

    def _read(self, chosen: tuple[str, str, str]) -> None:
        node, name, uri = chosen
        try:
            self.text.value = log_tail_html(node, name, tail(uri))
        except Exception as exc:  # shown in the panel: a background read has no cell to raise in
            self.text.value = connection_html(describe_failure(exc))
        finally:
            self.show_button.disabled = False


class DecksPanel(widgets.VBox):
    """The decks of the run's nodes (``@task(enable_deck=True)``), shown in the view on request.

    Empty (and taking no room) until a node has one. Choosing a node and clicking "Show deck" reads
    its deck on a thread and shows it in a sandboxed frame (`runs_decks.deck_html`); "Hide deck"
    takes it away. A deck too large to send to the browser says how to save it instead. Built whole
    at once, as `LogsPanel` is.
    """

    def __init__(self, kit: SimpleNamespace | None = None):
        kit = kit or view_kit()
        self.choice = widgets.Dropdown(layout=kit.fit, style=kit.choice)
        self.show_button = widgets.Button(description="Show deck", tooltip="Show the chosen node's deck (its task's HTML report)",
                                          layout=kit.plain, style=kit.button)
        self.hide_button = widgets.Button(description="Hide deck", layout=widgets.Layout(display="none"), style=kit.button)
        self.show_button.on_click(self._show_clicked)
        self.hide_button.on_click(self._hide_clicked)
        self.frame = widgets.HTML(layout=kit.plain, style=kit.html)
        label = widgets.HTML("<b>decks</b>", layout=kit.plain, style=kit.html)
        self.picker = widgets.HBox([label, self.choice, self.show_button, self.hide_button],
                                   layout=widgets.Layout(display="none", align_items="center", flex_flow="row wrap"))
        self._run = None
        self._rows: dict[str, NodeStatus] = {}  # by the choice's label
        super().__init__([self.picker, self.frame], layout=kit.plain)
        self.add_class("fastreg-decks")

    def show(self, run, rows: list[NodeStatus]) -> None:
        """Offer the nodes of ``rows`` (a node tree) whose task wrote a deck; the chosen one stays chosen."""
        self._run = run
        self._rows = {f"{row.label} · {node_task(row)}": row for _, row in flatten(rows) if row.deck_uri}
        labels = list(self._rows)
        if labels != [label for label, _ in self.choice.options]:
            chosen = self.choice.label
            self.choice.options = [(label, label) for label in labels]
            if labels:
                self.choice.label = chosen if chosen in self._rows else labels[0]
        self.picker.layout.display = "flex" if labels else "none"

    def _show_clicked(self, _button=None) -> None:
        row = self._rows.get(self.choice.value)
        if row is None or self._run is None:
            return
        self.show_button.disabled = True
        in_background(self._read, self._run, row, name="fastreg-deck")

    def _read(self, run, row: NodeStatus) -> None:
        try:
            deck = fetch_deck(run, row)
            if len(deck.html) > MAX_DECK_SHOWN:
                self.frame.value = connection_html(
                    f"The deck of node {row.label} is {size_text(len(deck.html))}, too large to show here: "
                    f"run.deck({row.label!r}).save('deck.html') writes it to open in a browser.")
            else:
                self.frame.value = deck_html(deck)
            self.hide_button.layout.display = ""
        except Exception as exc:  # shown in the panel: a background read has no cell to raise in
            self.frame.value = connection_html(describe_failure(exc))
        finally:
            self.show_button.disabled = False

    def _hide_clicked(self, _button=None) -> None:
        self.frame.value = ""
        self.hide_button.layout.display = "none"


# The largest deck the view sends to the browser (a plot library inlined is a few MiB; more would
# stall the notebook's page): a larger one is saved to a file instead.
MAX_DECK_SHOWN = 16 * 1024 * 1024
