"""The launch form of one workflow or launch plan, generated from its typed interface.

One row per input: the input's name as the field's description, an editor fitting its type
(text, checkbox, dropdown, JSON area), the type, and a place for the problem with what was
typed. "Launch" parses every field first (`run_inputs.parse_inputs`); if any is wrong,
the problems are shown next to their fields and nothing starts.
"""

from __future__ import annotations

from typing import Callable

import ipywidgets as widgets

from fastreg_magic.run_inputs import Field, entity_fields, parse_inputs
from fastreg_magic.widget_text import esc

_WIDE = widgets.Layout(width="420px")
_LABEL_STYLE = {"description_width": "140px"}


def field_widget(field: Field) -> widgets.Widget:
    """The editor for one field, prefilled with its default (read-only when fixed)."""
    common = dict(description=field.name, style=_LABEL_STYLE, layout=_WIDE, description_allow_html=False)
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
    elif field.kind == "unsupported":
        shown = "registered default" if field.has_default else "cannot be typed here: launch from code"
        editor = widgets.Text(value="", placeholder=shown, disabled=True, **common)
    else:
        editor = widgets.Text(value=field.text, placeholder=field.placeholder, continuous_update=False, **common)
    editor.tooltip = tooltip
    return editor


class LaunchForm(widgets.VBox):
    """Inputs of ``ref`` (an `api.EntityRef`) and a Launch button calling ``on_launch(ref, values)``."""

    def __init__(self, ref, on_launch: Callable[[object, dict], None], **kwargs):
        self.ref = ref
        self.fields = entity_fields(ref.entity)
        self._on_launch = on_launch
        self.editors: dict[str, widgets.Widget] = {}
        self.problems: dict[str, widgets.HTML] = {}
        rows = []
        for field in self.fields:
            editor = field_widget(field)
            note = "fixed by the launch plan" if field.fixed else field.type_label
            problem = widgets.HTML()
            self.editors[field.name] = editor
            self.problems[field.name] = problem
            rows.append(
                widgets.HBox(
                    [editor, widgets.HTML(f"<span style='color:var(--jp-content-font-color2,#757575)'>{esc(note)}</span>"), problem],
                    layout=widgets.Layout(align_items="center"),
                )
            )
        if not self.fields:
            rows.append(widgets.HTML("<i style='color:var(--jp-content-font-color2,#757575)'>no inputs</i>"))
        self.launch_button = widgets.Button(description="Launch", button_style="primary", tooltip="Start a run with these inputs")
        self.launch_button.on_click(self.launch_clicked)
        self.message = widgets.HTML()
        super().__init__([*rows, widgets.HBox([self.launch_button, self.message])], **kwargs)
        self.add_class("fastreg-launch-form")

    def raw_values(self) -> dict:
        return {name: editor.value for name, editor in self.editors.items()}

    def launch_clicked(self, _button=None) -> dict | None:
        """Check every field; launch (in the background, via ``on_launch``) only if all are valid."""
        values, problems = parse_inputs(self.fields, self.raw_values())
        for name, box in self.problems.items():
            box.value = f"<span class='fastreg-problem' style='color:#c62828'>{esc(problems[name])}</span>" if name in problems else ""
        if problems:
            count = len(problems)
            self.message.value = f"<span style='color:#c62828'>{count} input{'s' if count > 1 else ''} to fix: nothing launched</span>"
            return None
        self.message.value = ""
        self._on_launch(self.ref, values)
        return values
