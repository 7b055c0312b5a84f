"""The launch form of one workflow or launch plan, generated from its typed interface.

One row per input: the input's name as the field's description, an editor fitting its type
(text, checkbox, dropdown, JSON area), the type, and a place for the problem with what was
typed. Under them, an "Options" section, collapsed until opened: recompute cached tasks (overwrite
the cache), env vars, labels (KEY=VALUE lines) and tags, read by `launch_options.parse_form_options`.
"Launch" parses every field first (`run_inputs.parse_inputs`); if any is wrong, the problems are
shown next to their fields and nothing starts.
"""

from __future__ import annotations

from typing import Callable

import ipywidgets as widgets

from fastreg_magic.launch_options import FORM_FIELDS, parse_form_options
from fastreg_magic.run_inputs import Field, entity_fields, parse_inputs
from fastreg_magic.widget_text import esc

# Sizes are ceilings, not demands: in a narrow notebook (600 px) every part of a row shrinks or wraps
# to the next line instead of running past the form's right edge.
_EDITOR_WIDTH = "420px"
_LABEL_STYLE = {"description_width": "140px"}
_SECONDARY = "color:var(--jp-content-font-color2,#757575)"
# Widget HTML inherits the tall, single-line box of widget rows; a note or a message wraps instead.
_WRAPPING = "display:block;white-space:normal;overflow-wrap:anywhere;line-height:1.35"


def _editor_layout() -> widgets.Layout:
    return widgets.Layout(width=_EDITOR_WIDTH, max_width="100%", min_width="0", flex="0 1 auto")


def _row_layout() -> widgets.Layout:
    return widgets.Layout(align_items="center", flex_flow="row wrap", width="100%", max_width="100%", min_width="0")


def _note_layout(*, whole_line: bool = False) -> widgets.Layout:
    """A type label beside its editor; a problem on a line of its own under it (hidden while empty)."""
    if whole_line:
        return widgets.Layout(flex="1 1 100%", max_width="100%", min_width="0", display="none")
    return widgets.Layout(flex="0 1 auto", max_width="100%", min_width="0", margin="0 0 0 6px")


def field_widget(field: Field) -> widgets.Widget:
    """The editor for one field, prefilled with its default (read-only when fixed)."""
    common = dict(description=field.name, style=_LABEL_STYLE, layout=_editor_layout(), description_allow_html=False)
    tooltip = f"{field.name}: {field.type_label}"
    if field.fixed:
        editor = widgets.Text(value=field.text, disabled=True, **common)
    elif field.kind == "bool" and not field.optional:
        editor = widgets.Checkbox(value=bool(field.default) if field.has_default else False, indent=True, **common)
    elif field.kind in ("bool", "enum"):
        choices = [("True", "true"), ("False", "false")] if field.kind == "bool" else [(c, c) for c in field.choices]
        if field.optional:
            choices = [("None", ""), *choices]
        value = field.text.lower() if field.kind == "bool" else field.text
        if value not in {v for _, v in choices}:
            value = choices[0][1]
        editor = widgets.Dropdown(options=choices, value=value, **common)
    elif field.kind == "json":
        editor = widgets.Textarea(value=field.text, placeholder=field.placeholder, rows=3, **common)
    elif field.kind == "unsupported" and field.has_default:  # shown, but no editor can change it
        editor = widgets.Text(value=default_text(field), disabled=True, **common)
    elif field.kind == "unsupported":
        editor = widgets.Text(value="", placeholder="cannot be typed here: launch from code", disabled=True, **common)
    else:
        editor = widgets.Text(value=field.text, placeholder=field.placeholder, continuous_update=False, **common)
    editor.tooltip = tooltip
    return editor


def default_text(field: Field) -> str:
    """A default the form has no editor for, as Python writes it: ``'s'`` (a str), ``3``, ``None``."""
    return repr(field.default)


def field_note(field: Field, entity_name: str) -> str:
    """What shows beside a field: its type, and how to change a value the form cannot edit."""
    if field.fixed:
        return "fixed by the launch plan"
    if field.kind == "unsupported" and field.has_default:
        short = entity_name.rsplit(".", 1)[-1]
        return (f"{field.type_label}: to change it, start the run from a code cell: "
                f"reg.launch({short!r}, {field.name}=...)")
    return field.type_label


def option_widgets() -> dict[str, widgets.Widget]:
    """The editors of the form's Options section, by launch option name (`launch_options.FORM_FIELDS`)."""
    common = dict(style=_LABEL_STYLE, layout=_editor_layout(), description_allow_html=False)
    return {
        "overwrite_cache": widgets.Checkbox(value=False, indent=True, description="recompute cached tasks",
                                            tooltip="Run cache=True tasks again and store their new outputs "
                                                    "(overwrite cache)", **common),
        "envs": widgets.Textarea(value="", description="env vars", placeholder="KEY=VALUE, one a line", rows=2,
                                 tooltip="Environment variables of every task of the run", **common),
        "labels": widgets.Textarea(value="", description="labels", placeholder="key=value, one a line", rows=2,
                                   tooltip="Labels of the run (Kubernetes label keys and values)", **common),
        "tags": widgets.Text(value="", description="tags", placeholder="nightly, v2", continuous_update=False,
                             tooltip="Tags of the run, separated by commas", **common),
    }


_OPTION_NOTES = {"overwrite_cache": "overwrite cache", "envs": "KEY=VALUE lines", "labels": "key=value lines",
                 "tags": "separated by commas"}


class LaunchForm(widgets.VBox):
    """Inputs of ``ref`` (an `api.EntityRef`), launch options, and a Launch button calling
    ``on_launch(ref, values)``, or ``on_launch(ref, values, options)`` when an option is set."""

    def __init__(self, ref, on_launch: Callable[..., None], **kwargs):
        self.ref = ref
        self.fields = entity_fields(ref.entity)
        self._on_launch = on_launch
        self.editors: dict[str, widgets.Widget] = {}
        self.problems: dict[str, widgets.HTML] = {}
        rows = [self._row(field) for field in self.fields]
        if not self.fields:
            rows.append(widgets.HTML(f"<i style='{_SECONDARY}'>no inputs</i>"))
        self.option_editors = option_widgets()
        self.option_problems: dict[str, widgets.HTML] = {}
        self.options_panel = widgets.Accordion(
            children=[widgets.VBox([self._option_row(name) for name in self.option_editors],
                                   layout=widgets.Layout(max_width="100%", min_width="0"))],
            selected_index=None, titles=("Options",), layout=widgets.Layout(max_width="100%", min_width="0"))
        self.options_panel.add_class("fastreg-launch-options")
        for editor in self.option_editors.values():
            editor.observe(self._retitle_options, names="value")
        rows.append(self.options_panel)
        self.launch_button = widgets.Button(description="Launch", button_style="primary", tooltip="Start a run with these inputs")
        self.launch_button.on_click(self.launch_clicked)
        self.message = widgets.HTML(layout=widgets.Layout(flex="1 1 200px", min_width="0", max_width="100%"))
        super().__init__([*rows, widgets.HBox([self.launch_button, self.message], layout=_row_layout())],
                         layout=widgets.Layout(max_width="100%", min_width="0"), **kwargs)
        self.add_class("fastreg-launch-form")

    def _row(self, field: Field) -> widgets.HBox:
        """Editor, type label, and the problem with what was typed (on its own line, when there is one)."""
        editor = field_widget(field)
        note = field_note(field, self.ref.name)
        type_note = widgets.HTML(f"<span class='fastreg-type' style='{_SECONDARY};{_WRAPPING}'>{esc(note)}</span>",
                                 layout=_note_layout())
        problem = widgets.HTML(layout=_note_layout(whole_line=True))
        problem.add_class("fastreg-problem-box")
        self.editors[field.name] = editor
        self.problems[field.name] = problem
        row = widgets.HBox([editor, type_note, problem], layout=_row_layout())
        row.add_class("fastreg-input-row")
        return row

    def _option_row(self, name: str) -> widgets.HBox:
        """An option's editor, what it takes, and its problem (on its own line, when there is one)."""
        note = widgets.HTML(f"<span class='fastreg-type' style='{_SECONDARY};{_WRAPPING}'>{esc(_OPTION_NOTES[name])}</span>",
                            layout=_note_layout())
        problem = widgets.HTML(layout=_note_layout(whole_line=True))
        problem.add_class("fastreg-problem-box")
        self.option_problems[name] = problem
        row = widgets.HBox([self.option_editors[name], note, problem], layout=_row_layout())
        row.add_class("fastreg-option-row")
        return row

    def _retitle_options(self, _change=None) -> None:
        """The collapsed section says what is set in it: "Options: overwrite cache, env vars"."""
        chosen = [FORM_FIELDS[name] for name, editor in self.option_editors.items() if editor.value not in (False, "")]
        self.options_panel.set_title(0, "Options" + (f": {', '.join(chosen)}" if chosen else ""))

    def raw_values(self) -> dict:
        return {name: editor.value for name, editor in self.editors.items()}

    def raw_options(self) -> dict:
        return {name: editor.value for name, editor in self.option_editors.items()}

    def launch_clicked(self, _button=None) -> dict | None:
        """Check every field and option; launch (in the background, via ``on_launch``) only if all are valid."""
        values, problems = parse_inputs(self.fields, self.raw_values())
        options, option_problems = parse_form_options(self.raw_options())
        self.show_problems(problems, option_problems)
        if problems or option_problems:
            return None
        if options:
            self._on_launch(self.ref, values, options)
        else:  # as before there were options: an `on_launch(ref, values)` keeps working
            self._on_launch(self.ref, values)
        return values

    def show_problems(self, problems: dict[str, str], option_problems: dict[str, str] | None = None) -> None:
        """Each problem under its field or option (whose section opens to show it), and a summary naming
        them beside the Launch button."""
        option_problems = option_problems or {}
        for boxes, found in ((self.problems, problems), (self.option_problems, option_problems)):
            for name, box in boxes.items():
                problem = found.get(name)
                box.value = (
                    f"<span class='fastreg-problem' style='color:#c62828;{_WRAPPING}'>{esc(problem)}</span>" if problem else ""
                )
                box.layout.display = "flex" if problem else "none"
        if option_problems:
            self.options_panel.selected_index = 0
        if not problems and not option_problems:
            self.message.value = ""
            return
        counts = [f"{len(found)} {what if len(found) == 1 else what + 's'}"
                  for found, what in ((problems, "input"), (option_problems, "option")) if found]
        names = ", ".join([*problems, *(FORM_FIELDS[name] for name in option_problems)])
        self.message.value = (
            f"<span class='fastreg-summary' style='color:#c62828;{_WRAPPING}'>{' and '.join(counts)} to fix "
            f"({esc(names)}): nothing launched</span>"
        )
