"""The widget a `Registration` displays: header, entities, launch forms, and its runs.

A Launch click parses the form, appends a run view showing "launching…", and returns; the
launch itself (one CreateExecution) happens on a background thread, after which the view
follows the run. Every run is appended to ``reg.runs`` as well, and shown by every open widget of
that list of runs (`keep_run`): the cell re-run while the run was launching has replaced this
widget by then, and it is the new one that must show the run.

A cell re-run many times keeps many runs in ``reg.runs``; its widget shows the latest `SHOWN_RUNS`
(the live ones first) and says how many earlier ones there are, so a re-run costs the same whatever
the history. "Show all" builds the views of the rest when asked.

Once ``run.wait()`` returns, every open view of the run shows how it ended (`show_ended`): drawn from
the waiting cell, so a notebook executed headless saves its views as they ended.

The widget's text version (text/plain, what the saved notebook keeps beside the widget) is written when
the widget is displayed. It is not sent again as runs join: JupyterLab would draw the widget anew each
time, taking the keyboard focus from a field being typed in and closing open sections. After a restart,
`%flyte_watch` with no run name lists the cell's runs.
"""

from __future__ import annotations

import logging
import threading
import weakref

import ipywidgets as widgets

from fastreg_magic.runs_watch import RunUpdate, ended_with, execution_key
from fastreg_magic.widget_form import LaunchForm
from fastreg_magic.widget_run import RunView, close_tree, describe_failure, in_background
from fastreg_magic.widget_text import (
    entities_html,
    esc,
    files_html,
    registration_header_html,
    registration_text,
    short_name,
)


log = logging.getLogger(__name__)

SHOWN_RUNS = 10  # run views a widget builds at first; the others are counted, and built on "Show all"

# Every registration widget not closed. A cell's registrations (one per re-run) share one list of runs
# but not one Registration, so a run is shown by the widgets of its list, whichever release they show.
_open: "weakref.WeakSet[RegistrationWidget]" = weakref.WeakSet()
_open_lock = threading.Lock()  # a run joins its list, and a widget reads that list, one at a time


def keep_run(reg, run, launched_in: tuple | None = None) -> None:
    """``run`` joins ``reg.runs`` and every open widget of that list: ``launched_in`` is the (widget, view)
    that showed it launching, whose view then follows it (if the widget is still open); the others
    (the re-run cell's widget) each build a view of it."""
    with _open_lock:
        reg.runs.append(run)
        showing = [w for w in _open if getattr(w.reg, "runs", None) is reg.runs]
    launcher, view = launched_in or (None, None)
    for widget in showing:
        if widget is launcher:
            widget._attach(view, run)
        else:
            widget.show_run(run)


def show_ended(run) -> None:
    """Draw ``run``'s end (phase, outputs or error, node table) in every open view of it, now, on this thread.

    `Run.wait` calls it once the run has ended, from the cell waiting. The views' background follower
    draws the end too, but on behalf of the cell that started following the run: a notebook executed
    headless (nbconvert, papermill: nbclient) keeps only the widget updates sent on behalf of the cell it
    is running, while it runs, so its saved views would show the run still going. The state of each
    view's widgets is sent again from here: what the follower drew already is not sent by drawing it again.
    """
    views = _open_views_of(run)
    if not views:
        return
    nodes = _ended_nodes(run)
    for view in views:
        view.stop()  # nothing more to follow: a poll read before the end must not draw the run going again
        view.run.take_in(run)
        if nodes is not None:
            ended_with(view.run, nodes)  # what its follower's last poll would have kept for later views
        view.apply(RunUpdate(view.run, nodes, None, True))
        _send_state_of_tree(view, set())


def _send_state_of_tree(widget, sent: set) -> None:
    """Send the state of every widget inside ``widget``, changed or not: what a view draws as its run
    goes on (texts, buttons, choices, whether a part shows). A box's own children and a layout's other
    settings are set as the view is built, by the cell that builds it, and not sent again: each widget
    sent is one message. ``sent``: the ids of those sent already (a layout widgets share)."""
    layout = getattr(widget, "layout", None)
    if isinstance(layout, widgets.Layout) and layout.display is not None and id(layout) not in sent:
        sent.add(id(layout))
        layout.send_state("display")
    if isinstance(widget, widgets.Box):
        for child in widget.children:
            _send_state_of_tree(child, sent)
    elif isinstance(widget, widgets.DOMWidget) and id(widget) not in sent:
        sent.add(id(widget))
        widget.send_state()


def _open_views_of(run) -> list[RunView]:
    """The open views of ``run``'s execution: in registration widgets, and those a cell displayed
    (`%flyte_watch`, a `Run` as a cell's value) with the runs relaunched from them."""
    from fastreg_magic import widget

    with _open_lock:
        registration_widgets = list(_open)
    views = [view for shown in registration_widgets for view in list(shown.run_views)]
    views += [ref() for _, refs in list(widget._runs_shown_by_cell.values()) for ref in refs]
    key = execution_key(run)
    found, seen = [], set()
    while views:
        view = views.pop()
        if not isinstance(view, RunView) or id(view) in seen:
            continue
        seen.add(id(view))
        views.extend(view.relaunches.children)
        if view.run is not None and not view._closed and execution_key(view.run) == key:
            found.append(view)
    return found


def _ended_nodes(run):
    """The node table ``run`` ended with; None when it cannot be read (its view then keeps the one it has)."""
    try:
        return run.nodes()
    except Exception:  # the phase and outputs are known: only the node table is not redrawn
        log.debug("reading the nodes of ended run %s failed", run.name, exc_info=True)
        return None


def latest_runs(runs, limit: int = SHOWN_RUNS) -> list:
    """The runs a widget shows: the newest live ones, then the newest ended ones, ``limit`` in all, in launch order."""
    newest_first = list(reversed(list(runs)))
    live = [run for run in newest_first if not _ended(run)]
    ended = [run for run in newest_first if _ended(run)]
    kept = {id(run) for run in (live + ended)[:limit]}
    return [run for run in runs if id(run) in kept]


def _ended(run) -> bool:
    return run.done or run.lost


def launch_targets(reg) -> list:
    """Workflows, and launch plans other than a workflow's default one (which would be a duplicate form)."""
    workflows = {ref.name for ref in reg.entities if ref.kind == "workflow"}
    return [
        ref
        for ref in reg.entities
        if ref.kind == "workflow" or (ref.kind == "launch_plan" and ref.name not in workflows)
    ]


class RegistrationWidget(widgets.VBox):
    def __init__(self, reg, **kwargs):
        self.reg = reg
        self.header = widgets.HTML(
            f"<div style='font-size:110%'><b>{esc(reg.module)}</b> registered as version "
            f"<code>{esc(reg.version)}</code></div>" + registration_header_html(reg)
        )
        self.files = widgets.HTML(files_html(reg))
        self.entities = widgets.HTML(entities_html(reg))
        launchable = getattr(reg, "remote", None) is not None
        self.forms = [LaunchForm(ref, self.launch) for ref in launch_targets(reg)] if launchable else []
        self.runs_box = widgets.VBox()
        self.run_views: list[RunView] = []
        self.showing_all = False
        self._views_lock = threading.RLock()  # views come and go from the kernel and from launch threads
        self._closed = False
        self.earlier = widgets.HTML()
        self.show_all_button = widgets.Button(description="Show all", tooltip="Show every run of this cell here")
        self.show_all_button.on_click(self.show_all)
        self.earlier_bar = widgets.HBox([self.earlier, self.show_all_button], layout=widgets.Layout(display="none"))
        children = [self.header, self.files, self.entities]
        if self.forms:
            children.append(self._forms_panel())
        elif not launchable:
            children.append(widgets.HTML("<i style='color:var(--jp-content-font-color2,#757575)'>not registered (dry run or --serialize-to): nothing to launch</i>"))
        children += [self.earlier_bar, self.runs_box]
        super().__init__(children, **kwargs)
        self.add_class("fastreg-registration")
        with self._views_lock:  # a run launched meanwhile is shown once it is built (`keep_run`)
            with _open_lock:
                runs = list(getattr(reg, "runs", ()) or ())
                _open.add(self)
            for run in latest_runs(runs):
                self.show_run(run)
        self._count_earlier()
        views = getattr(reg, "_views", None)
        if views is not None:
            views.add(self)  # reg.launch(...) from code shows its run here too

    def show_run(self, run) -> None:
        """Append a live view of a run started elsewhere (``reg.launch`` in a later cell, or from a
        version of the cell this one replaced); a run shown already is left as it is."""
        with self._views_lock:
            if self._closed or any(view.run is run for view in self.run_views):
                return
            self._add_view(self._view_of(run))

    def _view_of(self, run) -> RunView:
        return RunView(run, on_new_run=self._relaunched,
                       **{"relaunch": self.reg.relaunch_run, **self._previous_version(run)})

    def _previous_version(self, run) -> dict:
        """For a run of another version of the cell: a note saying which, and a Relaunch that starts this
        version's workflow of the same name with the run's inputs when both are known (else the same run
        again, on its own version); the button says which."""
        if run.version in (None, self.reg.version):
            return {}
        note = f"v {run.version[:8]}… (previous version)"
        target = self._same_target(run.label)
        if target is None or run.inputs is None:
            why = "its inputs are not known here" if target is not None else f"{short_name(run.label)} is not in this version"
            return dict(note=note, relaunch_as=("Relaunch (previous version)",
                                                f"Start it again on version {run.version}: {why}"))
        inputs, options = dict(run.inputs), run.options.without_name()
        return dict(
            note=note,
            relaunch=lambda _run: self.reg.start_run(target, inputs, options=options),
            relaunch_as=("Relaunch on this version",
                         f"Start {short_name(target.name)} of version {self.reg.version} with the same inputs"),
        )

    def _same_target(self, name: str | None):
        """What this version registered under ``name``, as a launch picks it (launch plan, workflow, task)."""
        for kind in ("launch_plan", "workflow", "task"):
            for ref in self.reg.entities:
                if ref.kind == kind and ref.name == name:
                    return ref
        return None

    def _forms_panel(self) -> widgets.Widget:
        if len(self.forms) == 1:
            title = widgets.HTML(f"<b>Launch {esc(short_name(self.forms[0].ref.name))}</b>")
            return widgets.VBox([title, self.forms[0]])
        panel = widgets.Accordion(children=self.forms, selected_index=0)
        for i, form in enumerate(self.forms):
            kind = "launch plan" if form.ref.kind == "launch_plan" else "workflow"
            panel.set_title(i, f"Launch {short_name(form.ref.name)} ({kind})")
        return panel

    def form(self, name: str | None = None) -> LaunchForm:
        """The launch form of workflow / launch plan ``name`` (short or full); the only one without a name."""
        if name is None and len(self.forms) == 1:
            return self.forms[0]
        for form in self.forms:
            if name in (form.ref.name, short_name(form.ref.name)):
                return form
        raise KeyError(f"no launch form for {name!r}; forms: {[f.ref.name for f in self.forms]}")

    # -- launching ---------------------------------------------------------------------------
    def launch(self, ref, values: dict, options=None) -> RunView:
        """Append a view for a new run of ``ref`` (with `LaunchOptions` ``options``) and start it in the background."""
        view = RunView(None, label=ref.name, on_new_run=self._relaunched, relaunch=self.reg.relaunch_run)
        self._add_view(view)
        in_background(self._start, ref, values, view, options, name="fastreg-launch")
        return view

    def _start(self, ref, values: dict, view: RunView, options=None) -> None:
        from fastreg_magic.runs import InputRefused

        try:
            run = self.reg.start_run(ref, values, options=options)
        except InputRefused as exc:  # a value only the conversion could refuse: shown by its field too
            self._input_refused(ref, exc)
            view.launch_failed(describe_failure(exc))
            return
        except Exception as exc:  # shown in the run's view: the click has long returned
            view.launch_failed(describe_failure(exc))
            return
        keep_run(self.reg, run, launched_in=(self, view))

    def _attach(self, view: RunView, run) -> None:
        """``view``, which showed ``run`` launching here, follows it now."""
        if view.run is None:
            view.attach(run)  # a view closed meanwhile stays closed
        self._count_earlier()

    def _input_refused(self, ref, exc) -> None:
        form = next((f for f in self.forms if f.ref.name == ref.name), None)
        if form is not None:
            form.show_problems({exc.input: exc.problem})

    def _relaunched(self, run, view: RunView) -> None:
        """A Relaunch click: ``run`` is None as it starts (``view`` says "launching…"), then the new run."""
        if run is None:
            self._add_view(view)
        else:
            keep_run(self.reg, run, launched_in=(self, view))

    def _add_view(self, view: RunView) -> None:
        with self._views_lock:
            if self._closed:  # closed as the view was built: it must not follow its run for nobody
                view.close()
                return
            self.run_views.append(view)
            self.runs_box.children = (*self.runs_box.children, view)
            self._keep_latest()
        self._count_earlier()

    def _keep_latest(self) -> None:
        """Past `SHOWN_RUNS` views (unless all were asked for), close the oldest ended one, else the oldest
        live one: its run is still in ``reg.runs``. A view still launching stays."""
        while not self.showing_all and len(self.run_views) > SHOWN_RUNS:
            started = [v for v in self.run_views if v.run is not None]
            oldest = next((v for v in started if _ended(v.run)), started[0] if started else None)
            if oldest is None:
                return
            self.run_views.remove(oldest)
            self.runs_box.children = tuple(v for v in self.runs_box.children if v is not oldest)
            oldest.close()

    def _count_earlier(self) -> None:
        """The line saying how many of the cell's runs have no view here, and where they are."""
        with self._views_lock:
            shown = {id(view.run) for view in self.run_views if view.run is not None}
            hidden = sum(1 for run in list(getattr(self.reg, "runs", ()) or ()) if id(run) not in shown)
        if hidden and not self.showing_all:
            runs = "run" if hidden == 1 else "runs"
            self.earlier.value = f"<i>{hidden} earlier {runs}: <code>reg.runs</code></i>"
            self.earlier_bar.layout.display = "flex"
        else:
            self.earlier_bar.layout.display = "none"

    def show_all(self, _button=None) -> None:
        """Build a view of every run of the cell not shown yet (the "Show all" button), before the others."""
        with self._views_lock:
            self.showing_all = True
            shown = {id(view.run) for view in self.run_views if view.run is not None}
            earlier = [run for run in list(self.reg.runs) if id(run) not in shown]
            views = [self._view_of(run) for run in earlier]
            self.run_views[:0] = views
            self.runs_box.children = (*views, *self.runs_box.children)
        self._count_earlier()

    def close(self) -> None:
        """Stop following the runs and close every widget inside (a re-run of the cell replaced this one)."""
        if getattr(self, "_views_lock", None) is None:  # Stop as it was built, then garbage: only ipywidgets' part
            return super().close()
        views = getattr(self.reg, "_views", None)
        if views is not None:
            views.discard(self)
        with _open_lock:
            _open.discard(self)
        with self._views_lock:
            self._closed = True
            shown = list(self.run_views)
        for view in shown:
            view.close()
        close_tree(self)

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = registration_text(self.reg)
        return bundle
