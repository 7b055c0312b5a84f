"""The widget a `Registration` displays: header, entities, launch forms, and its runs.

A Launch click parses the form, appends a run view showing "launching…", and returns; the
launch itself (one CreateExecution) happens on a background thread, after which the view
follows the run. Every run is appended to ``reg.runs`` as well.
"""

from __future__ import annotations

import ipywidgets as widgets

from fastreg_magic.widget_form import LaunchForm
from fastreg_magic.widget_run import RunView, describe_failure, in_background
from fastreg_magic.widget_text import (
    entities_html,
    esc,
    files_html,
    registration_header_html,
    registration_text,
    short_name,
)


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
        children = [self.header, self.files, self.entities]
        if self.forms:
            children.append(self._forms_panel())
        elif not launchable:
            children.append(widgets.HTML("<i style='color:var(--jp-content-font-color2,#757575)'>not registered (dry run or --serialize-to): nothing to launch</i>"))
        children.append(self.runs_box)
        super().__init__(children, **kwargs)
        self.add_class("fastreg-registration")
        for run in list(getattr(reg, "runs", ()) or ()):
            self.show_run(run)
        views = getattr(reg, "_views", None)
        if views is not None:
            views.add(self)  # reg.launch(...) from code shows its run here too

    def show_run(self, run) -> None:
        """Append a live view of a run started elsewhere (``reg.launch`` in a later cell, or from a
        version of the cell this one replaced)."""
        self._add_view(RunView(run, on_new_run=self._relaunched,
                               **{"relaunch": self.reg.relaunch_run, **self._previous_version(run)}))

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
        inputs = dict(run.inputs)
        return dict(
            note=note,
            relaunch=lambda _run: self.reg.start_run(target, inputs),
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
    def launch(self, ref, values: dict) -> RunView:
        """Append a view for a new run of ``ref`` and start it in the background."""
        view = RunView(None, label=ref.name, on_new_run=self._relaunched, relaunch=self.reg.relaunch_run)
        self._add_view(view)
        in_background(self._start, ref, values, view, name="fastreg-launch")
        return view

    def _start(self, ref, values: dict, view: RunView) -> None:
        from fastreg_magic.runs import InputRefused

        try:
            run = self.reg.start_run(ref, values)
        except InputRefused as exc:  # a value only the conversion could refuse: shown by its field too
            self._input_refused(ref, exc)
            view.launch_failed(describe_failure(exc))
            return
        except Exception as exc:  # shown in the run's view: the click has long returned
            view.launch_failed(describe_failure(exc))
            return
        self.reg.runs.append(run)
        view.attach(run)

    def _input_refused(self, ref, exc) -> None:
        form = next((f for f in self.forms if f.ref.name == ref.name), None)
        if form is not None:
            form.show_problems({exc.input: exc.problem})

    def _relaunched(self, run, view: RunView) -> None:
        if run is None:
            self._add_view(view)
        else:
            self.reg.runs.append(run)

    def _add_view(self, view: RunView) -> None:
        self.run_views.append(view)
        self.runs_box.children = (*self.runs_box.children, view)

    def close(self) -> None:
        views = getattr(self.reg, "_views", None)
        if views is not None:
            views.discard(self)
        for view in self.run_views:
            view.stop()
        super().close()

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = registration_text(self.reg)
        return bundle

