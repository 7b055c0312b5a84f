"""What the widget shows, as plain data, HTML fragments and terminal text: no ipywidgets here.

Every string that came from the user, the code or the backend goes through `esc`
(``html.escape``) before it is put into HTML, so a task name or an error message such as
``<img src=x onerror=alert(1)>`` is shown as text, never run.

    run_summary(run)        -> {"name": ..., "phase": "RUNNING", "elapsed": "12s", ...}
    run_text(run)           -> the same, readable in a terminal
    badge_html("FAILED")    -> '<span style="background:#c62828;...">FAILED</span>'
"""

from __future__ import annotations

import html
import pprint
import re
from typing import Any, Iterable

from fastreg_magic.launch_options import options_text
from fastreg_magic.runs_data import NOT_STARTED, NodeStatus
from fastreg_magic.runs_tree import flatten
from fastreg_magic.runs_values import Unreadable, shown

# Phase colours, the console's palette in spirit: grey waiting, blue working, green done, red failed.
PHASE_COLOURS = {
    "UNDEFINED": "#9e9e9e",
    NOT_STARTED: "#bdbdbd",
    "LAUNCHING": "#9e9e9e",
    "QUEUED": "#78909c",
    "INITIALIZING": "#5c6bc0",
    "WAITING_FOR_RESOURCES": "#5c6bc0",
    "RUNNING": "#1e88e5",
    "DYNAMIC_RUNNING": "#1e88e5",
    "SUCCEEDING": "#43a047",
    "SUCCEEDED": "#2e7d32",
    "RECOVERED": "#2e7d32",
    "FAILING": "#e53935",
    "FAILED": "#c62828",
    "TIMED_OUT": "#c62828",
    "ABORTING": "#ef6c00",
    "ABORTED": "#ef6c00",
    "SKIPPED": "#9e9e9e",
    "RETRYABLE_FAILED": "#e53935",
    "LAUNCH FAILED": "#c62828",
    "LOST": "#6d4c41",
}

# What a run's badge says once the backend answers that it no longer has the run (`runs.RunLost`).
LOST = "LOST"

# Each level of nesting in the node table is indented by this much.
INDENT_PX = 16


# Widget HTML inherits the tall line height of widget rows; tables read better compact.
TABLE = "border-collapse:collapse;line-height:1.45"


def esc(value: Any) -> str:
    """Text safe to place inside HTML (elements and quoted attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def phase_colour(phase: str) -> str:
    return PHASE_COLOURS.get(phase, "#9e9e9e")


def badge_html(phase: str) -> str:
    return (
        f'<span class="fastreg-phase" data-phase="{esc(phase)}" style="background:{phase_colour(phase)};color:white;'
        f'padding:2px 8px;border-radius:10px;font-weight:600;font-size:90%;white-space:nowrap">{esc(phase)}</span>'
    )


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def size_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


_MAP_TASK = re.compile(r"map_(?P<task>.+)_[0-9a-f]{32}-arraynode")


def short_name(name: str | None) -> str:
    """``pipeline.train`` -> ``train``: the module is the same for every node of a cell; flytekit's
    ``pipeline.map_square_<hash>-arraynode`` -> ``map_task(square)``."""
    short = (name or "").rsplit(".", 1)[-1]
    mapped = _MAP_TASK.fullmatch(short)
    return f"map_task({mapped.group('task')})" if mapped else short


# ---------------------------------------------------------------------------------------------
# runs


def shown_phase(run) -> str:
    """The phase a run is shown in: the backend's last word, or LOST once the backend lost it."""
    return LOST if getattr(run, "lost", False) else run.phase


def run_summary(run) -> dict:
    """The run's visible state as plain values (what the run view and the terminal show)."""
    return {
        "name": run.name,
        "project": run.project,
        "domain": run.domain,
        "label": getattr(run, "label", None) or "",
        "phase": shown_phase(run),
        "done": run.done,
        "elapsed": duration_text(run.elapsed),
        "url": run.url,
        "outputs": run.outputs,
        "error": run.error,
    }


def run_text(run, nodes: list[NodeStatus] | None = None) -> str:
    """A run as terminal text: phase, elapsed, where to look, outputs or error."""
    s = run_summary(run)
    lines = [f"Run {s['name']} ({s['label']}) in {s['project']}/{s['domain']}: {s['phase']}, {s['elapsed'] or '0s'}"]
    if inputs_text(getattr(run, "inputs", None)):
        lines.append(f"  inputs: {inputs_text(run.inputs)}")
    if options_text(getattr(run, "options", None)):
        lines.append(f"  options: {options_text(run.options)}")
    if s["url"]:
        lines.append(f"  console: {s['url']}")
    for depth, row in flatten(nodes or ()):
        node = "  " * depth + row.label
        lines.append(
            f"  {node:<16} {node_task(row):<24} {row.phase:<12} {duration_text(row.duration):>8}"
            + ("  from the cache" if row.cached else "")
            + (f"  retries {row.retries}" if row.retries else "")
            + (f"  run {row.child_run} (%flyte_watch {row.child_run})" if row.child_run else "")
            + ("  (deeper nodes not shown)" if row.truncated else "")
        )
        if row.gate_hint:
            lines.append(f"  {'  ' * depth}  to go on: {row.gate_hint}")
        lines.extend(f"  {'  ' * depth}  log {name}: {uri}" for name, uri in row.logs)
        if row.deck_uri:
            lines.append(f"  {'  ' * depth}  deck: run.deck({row.label!r})")
    if s["outputs"]:
        lines.append("  outputs:")
        for name, value in s["outputs"].items():
            lines.append(f"    {name} = {_short_repr(value)}")
    if s["error"]:
        lines.append("  error:")
        lines.extend(f"    {line}" for line in str(s["error"]).splitlines())
    if not s["done"] and not s["url"] and s["phase"] != LOST:
        lines.append("  follow it with run.wait() or run.refresh()")
    return "\n".join(lines)


def _short_repr(value: Any, limit: int = 2000) -> str:
    text = pprint.pformat(shown(value), width=100, compact=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def title_html(run_label: str, name: str | None, url: str | None, note: str = "") -> str:
    """"train run abc123 ↗", cut with "…" where the view is too narrow (the whole of it in the tooltip).

    ``note`` follows in grey: "(previous version 3d74…)" for a run of the version a re-run replaced.
    """
    label = short_name(run_label) or run_label
    what = f"<b>{esc(label)}</b>"
    tail = f" <span style='color:var(--jp-content-font-color2,#757575)'>{esc(note)}</span>" if note else ""
    if not name:
        body = f"{what} <span style='color:var(--jp-content-font-color2,#757575)'>launching…</span>"
        return _fitted_title(body + tail, f"{label} launching… {note}".strip())
    ident = f"<code>{esc(name)}</code>"
    if url:
        ident = f'<a href="{esc(url)}" target="_blank" rel="noopener">{ident} ↗</a>'
    return _fitted_title(f"{what} run {ident}{tail}", f"{label} run {name} {note}".strip())


def _fitted_title(body: str, whole: str) -> str:
    return f"<div class='fastreg-title' style='{_CUT}' title='{esc(whole)}'>{body}</div>"


def nodes_html(rows: Iterable[NodeStatus]) -> str:
    """The node table; the nodes inside a sub-workflow, dynamic task or map task are indented under it."""
    rows = list(rows)
    if not rows:
        return "<i style='color:var(--jp-content-font-color2,#757575)'>no nodes yet</i>"
    head = "".join(f"<th style='text-align:left;padding:2px 8px;{_CUT}'>{h}</th>" for h in ("node", "task", "phase", "duration", "retries"))
    body = [_node_row(depth, r) for depth, r in flatten(rows)]
    return (
        f"<table class='fastreg-nodes' style='{TABLE};{_FITTED_TABLE}'>{_NODE_COLUMNS}<tr>{head}</tr>{''.join(body)}</table>"
    )


# The table takes the run view's width and no more: the task column gives way (its long names end in
# "…", whole in the tooltip), so phase and duration stay in sight in a narrow notebook.
_FITTED_TABLE = "table-layout:fixed;width:100%;max-width:64em"
_NODE_COLUMNS = (
    "<colgroup><col style='width:20%'><col><col style='width:10em'><col style='width:7em'>"
    "<col style='width:5em'></colgroup>"
)
_CUT = "overflow:hidden;text-overflow:ellipsis;white-space:nowrap"
_WRAP = "overflow-wrap:anywhere"


_CACHED_HTML = " <span class='fastreg-cached' style='color:var(--jp-content-font-color2,#757575)' title='outputs from the task cache'>cached</span>"


def node_task(row: NodeStatus) -> str:
    """The task column (and a graph box's label): the task's short name; for a gate, what it is."""
    return row.gate or short_name(row.task)


def _node_row(depth: int, r: NodeStatus) -> str:
    task = esc(node_task(r))
    if r.gate_hint:  # a waiting gate: how to let it pass
        task += f"<br><span class='fastreg-gate-hint' style='color:var(--jp-content-font-color2,#757575)'>to go on: <code>{esc(r.gate_hint)}</code></span>"
    if r.child_run:  # a launch-plan node: name the run it started, and how to watch it
        task += f" → run <code>{esc(r.child_run)}</code> <span style='color:var(--jp-content-font-color2,#757575)'>(<code>%flyte_watch {esc(r.child_run)}</code>)</span>"
    if r.truncated:
        task += " <i style='color:var(--jp-content-font-color2,#757575)'>(deeper nodes not shown)</i>"
    error = f" title='{esc(r.error)}'" if r.error else ""
    # A launch-plan node's cell says how to watch its run: that wraps rather than being cut.
    task_fit = _WRAP if r.child_run or r.truncated or r.gate_hint else _CUT
    return (
        f"<tr class='fastreg-node' data-depth='{depth}' data-path='{esc(r.label)}' data-phase='{esc(r.phase)}'>"
        f"<td style='padding:2px 8px 2px {8 + INDENT_PX * depth}px;{_CUT}' title='{esc(r.label)}'><code>{esc(r.label)}</code></td>"
        f"<td style='padding:2px 8px;{task_fit}' title='{esc(r.gate or r.task)}'>{task}</td>"
        f"<td style='padding:2px 8px;{_WRAP}'{error}>{badge_html(r.phase)}{_CACHED_HTML if r.cached else ''}</td>"
        f"<td style='padding:2px 8px;text-align:right'>{esc(duration_text(r.duration))}</td>"
        f"<td style='padding:2px 8px;text-align:right'>{r.retries}</td>"
        "</tr>"
    )


def inputs_text(inputs: dict | None, limit: int = 60) -> str:
    """``n=3, name='x'``: what a run was launched with, each value cut short; "" when not known."""
    if not inputs:
        return ""
    return ", ".join(f"{name}={_short_repr(value, limit)}" for name, value in inputs.items())


def inputs_html(inputs: dict | None) -> str:
    text = inputs_text(inputs)
    if not text:
        return ""
    return f"<div class='fastreg-inputs' style='color:var(--jp-content-font-color2,#616161);line-height:1.45;overflow-wrap:anywhere'>inputs <code>{esc(text)}</code></div>"


def outputs_html(outputs: dict | None) -> str:
    if outputs is None:
        return ""
    if not outputs:
        return "<div><b>outputs:</b> <i>none</i></div>"
    rows = []
    for name, value in outputs.items():
        rows.append(
            f"<tr><td style='padding:2px 8px;vertical-align:top'><code>{esc(name)}</code></td>"
            f"<td style='padding:2px 8px'>{_value_html(value)}</td></tr>"
        )
    return f"<div><b>outputs</b><table class='fastreg-outputs' style='{TABLE}'>{''.join(rows)}</table></div>"


# Long values wrap instead of stretching the run view sideways.
_WRAPPED = "margin:0;white-space:pre-wrap;overflow-wrap:anywhere"


def _value_html(value: Any) -> str:
    if isinstance(value, Unreadable):  # one line saying why, where its value would be
        return f"<span class='fastreg-unreadable' style='color:var(--jp-error-color1,#c62828);{_WRAPPED}'>{esc(value.line)}</span>"
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return f'<a href="{esc(value)}" target="_blank" rel="noopener">{esc(value)}</a>'
    text = _shown_text(value)
    if "\n" in text or len(text) > 100:
        return f"<pre style='{_WRAPPED}'>{esc(text)}</pre>"
    return f"<code>{esc(text)}</code>"


def _shown_text(value: Any, limit: int = 2000) -> str:
    """A long or multi-line string as itself (copied, it is the value: pprint would cut it into
    quoted pieces with escaped line breaks); anything else, short strings included, as its repr."""
    if isinstance(value, str) and ("\n" in value or len(value) > 100):
        return value if len(value) <= limit else value[: limit - 1] + "…"
    return _short_repr(value, limit)


def error_html(error: str | None, headline: str | None = None) -> str:
    """The error's one-line cause first, then the whole text; readable in light and dark themes.

    ``headline`` is that cause when the caller knows it (`Run.error_headline`): a run's error ends with
    the task's stderr, whose lines may look like exceptions too."""
    if not error:
        return ""
    summary = headline or error_summary(error)
    cause = f" <span class='fastreg-error-summary'>{esc(summary)}</span>" if summary and summary != error.strip() else ""
    return (
        f"<div class='fastreg-error'><b style='color:var(--jp-error-color1,#c62828)'>error</b>{cause}"
        "<pre style='white-space:pre-wrap;color:var(--jp-content-font-color1,#212121);"
        "background:var(--jp-rendermime-error-background,#fff5f5);border-left:3px solid var(--jp-error-color1,#c62828);"
        f"padding:6px;max-height:24em;overflow:auto'>{esc(error)}</pre></div>"
    )


_STDERR_TAIL = "\n\nLast lines of "  # how `runs_logs.failure_tail` starts, after the backend's error
_EXCEPTION_LINE = re.compile(r"(?m)^\s*((?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Warning)\b.*)$")


def error_summary(error: str) -> str:
    """What went wrong in one line: the last exception line of a traceback, else the last line. The
    task's stderr that may follow a run's error ("Last lines of stderr.log …") is not looked at: a
    warning printed there is not what failed."""
    error = error.split(_STDERR_TAIL, 1)[0]
    found = _EXCEPTION_LINE.findall(error)
    if found:
        return found[-1].strip()
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def log_links_html(logs) -> str:
    """Each node's log links, as the backend names them: ``(node, name, uri)`` triples. A log service's
    link opens in a new tab; a local file is named, its path in the tooltip (a browser will not open
    it from the notebook's page: "Show log" reads it)."""
    by_node: dict[str, list[str]] = {}
    for node, name, uri in logs:
        if uri.startswith(("http://", "https://")):
            link = f'<a href="{esc(uri)}" target="_blank" rel="noopener">{esc(name)} ↗</a>'
        else:
            link = f"<span class='fastreg-log-file' title='{esc(uri)}'>{esc(name)}</span>"
        by_node.setdefault(node, []).append(link)
    if not by_node:
        return ""
    rows = "".join(
        f"<div class='fastreg-log-links' data-node='{esc(node)}' style='{_WRAP}'><code>{esc(node)}</code> "
        + " · ".join(links) + "</div>"
        for node, links in by_node.items()
    )
    return f"<div style='line-height:1.45'><b>logs</b>{rows}</div>"


def log_tail_html(node: str, name: str, found) -> str:
    """The end of a log file (a `runs_logs.LogTail`), scrolled within the view, saying how much it shows."""
    what = "all of it" if found.complete else f"its last {plural(found.lines, 'line')} of {size_text(found.size)}"
    head = (f"<div style='color:var(--jp-content-font-color2,#616161);{_WRAP}'><code>{esc(node)}</code> "
            f"{esc(name)}: {what} (<code>{esc(found.path)}</code>)</div>")
    body = found.text or "(empty)"
    return (f"<div class='fastreg-log'>{head}<pre style='{_WRAPPED};max-height:24em;overflow:auto;"
            f"background:var(--jp-layout-color2,#f5f5f5);padding:6px'>{esc(body)}</pre></div>")


def connection_html(problem: str | None) -> str:
    if not problem:
        return ""
    return f"<span class='fastreg-connection' style='color:#ef6c00'>⚠ {esc(problem)}</span>"


# ---------------------------------------------------------------------------------------------
# the registration header


def registration_facts(reg) -> list[tuple[str, str]]:
    """(label, plain text) pairs for the header, in reading order."""
    backend = getattr(reg, "backend", None)
    facts = [
        ("module", reg.module),
        ("version", reg.version),
        ("project/domain", f"{reg.project}/{reg.domain}"),
        ("backend", getattr(backend, "label", None) or "none (not registered)"),
        ("images", ", ".join(reg.images) or "default"),
        ("archive", _archive_text(reg)),
        ("timings", timings_text(reg.timings)),
    ]
    mode = _mode(reg)
    if mode == "dry run":
        facts.append(("status", "dry run: nothing built, uploaded or registered"))
    elif mode == "serialized":
        facts.append(("status", f"written to {_serialized_folder(reg)}: nothing uploaded or registered"))
    elif not reg.uploaded and not reg.registered:
        facts.append(("status", "unchanged: nothing uploaded or registered"))
    elif not reg.uploaded:
        facts.append(("status", "archive already stored: not uploaded again"))
    return facts


def _mode(reg) -> str:
    """"registered" (now or earlier, on a backend), "serialized" (--serialize-to) or "dry run"."""
    if getattr(reg, "backend", None) is not None:
        return "registered"
    return "serialized" if reg.archive_uri else "dry run"


def _archive_text(reg) -> str:
    files = plural(len(reg.files), "file")
    return f"not built; {files} would ship" if _mode(reg) == "dry run" else f"{size_text(reg.archive_size)}, {files}"


def _serialized_folder(reg) -> str:
    return reg.archive_uri.removeprefix("file://").rpartition("/")[0] or reg.archive_uri


def timings_text(timings) -> str:
    parts = [f"{step} {seconds * 1000:.0f} ms" for step, seconds in dict(timings or {}).items()]
    return ", ".join(parts)


def registration_header_html(reg) -> str:
    rows = "".join(
        f"<tr><td style='padding:1px 8px;color:var(--jp-content-font-color2,#616161)'>{esc(k)}</td><td style='padding:1px 8px'>{esc(v)}</td></tr>"
        for k, v in registration_facts(reg)
        if k not in ("module", "version")  # the title line shows them
    )
    return f"<table class='fastreg-header' style='{TABLE}'>{rows}</table>"


def files_html(reg) -> str:
    shipped = "".join(f"<li><code>{esc(f)}</code></li>" for f in reg.files)
    html_parts = [f"<details><summary>{plural(len(reg.files), 'file')} shipped</summary><ul>{shipped}</ul></details>"]
    if reg.left_out:
        items = "".join(
            f"<li><code>{esc(getattr(x, 'relpath', x))}</code>: {esc(getattr(x, 'reason', ''))}</li>" for x in reg.left_out
        )
        html_parts.append(f"<details><summary>{len(reg.left_out)} left out</summary><ul>{items}</ul></details>")
    notes = [*(f"lifted from earlier cells: {x}" for x in reg.lifted), *reg.warnings]
    if notes:
        html_parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    return f"<div style='line-height:1.45'>{''.join(html_parts)}</div>"


def entities_html(reg) -> str:
    rows = []
    for ref in reg.entities:
        name = f"<code>{esc(ref.name)}</code>"
        if ref.url:
            name = f'<a href="{esc(ref.url)}" target="_blank" rel="noopener">{name} ↗</a>'
        rows.append(f"<tr><td style='padding:1px 8px;color:var(--jp-content-font-color2,#616161)'>{esc(ref.kind.replace('_', ' '))}</td><td>{name}</td></tr>")
    return f"<table class='fastreg-entities' style='{TABLE}'>{''.join(rows)}</table>"


def registration_text(reg) -> str:
    """The registration as terminal text."""
    title = {"registered": "Registered", "serialized": "Serialized", "dry run": "Dry run of"}[_mode(reg)]
    lines = [f"{title} {reg.module} version {reg.version}"]
    lines += [f"  {k:<15} {v}" for k, v in registration_facts(reg)[2:]]
    for ref in reg.entities:
        lines.append(f"  {ref.kind.replace('_', ' '):<15} {ref.name}" + (f"  {ref.url}" if ref.url else ""))
    for item in reg.left_out:
        lines.append(f"  left out        {getattr(item, 'relpath', item)}: {getattr(item, 'reason', '')}")
    for note in (*(f"lifted {x}" for x in reg.lifted), *reg.warnings):
        lines.append(f"  note            {note}")
    runs = list(getattr(reg, "runs", ()) or ())
    for run in runs:
        version = getattr(run, "version", None)
        previous = f" (previous version {version})" if version not in (None, reg.version) else ""
        lines.append("  " + run_text(run).splitlines()[0] + previous)
    if runs:  # the names outlive the kernel in the saved notebook; the way back to a live view with them
        lines.append(f"  phases as when this text was written; to watch one again: {watch_again(runs[-1].name)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# what a view can say for itself once its kernel is gone


def watch_again(name: str) -> str:
    return f"%flyte_watch {name}"


def live_caption_html(name: str, seen_at: str) -> str:
    """The quiet line under a run still going. A widget's saved state is what it showed last: after a
    kernel restart the view no longer changes, so it says so itself, with the time it was last true."""
    return (
        f"<div class='fastreg-live-note' style='color:var(--jp-content-font-color2,#757575);font-size:90%;{_WRAP}'>"
        f"live while this kernel runs (last updated {esc(seen_at)}) — after a restart: "
        f"<code>{esc(watch_again(name))}</code></div>"
    )


def live_note_text(name: str, seen_at: str) -> str:
    return f"  as of {seen_at}; live only while this kernel runs. After a restart: {watch_again(name)}"


# ---------------------------------------------------------------------------------------------
# the recent runs of a notebook's cells (`%flyte_watch` with no run name)


def _started_text(started) -> str:
    return started.strftime("%Y-%m-%d %H:%M:%S UTC") if started is not None else ""


def _recent_where(listed) -> str:
    modules = ", ".join(f"{m}.*" for m in listed.modules)
    return f"{modules} in {listed.project}/{listed.domain} on {listed.backend}"


def recent_runs_text(listed) -> str:
    """The list as terminal text: one line a run, newest first, and how to watch one."""
    if not listed.runs:
        return (f"No runs of {_recent_where(listed)}. A cell registered with -m NAME: "
                "%flyte_watch -m NAME; another project or domain: -p / -d.")
    lines = [_recent_heading(listed) + ":"]
    width = max(len(run.name) for run in listed.runs)
    for run in listed.runs:
        lines.append(f"  {run.name:<{width}}  {short_name(run.target):<20} {run.phase:<10} "
                     f"{_started_text(run.started):<23} {duration_text(run.duration):>8}")
    lines.append(f"Watch one: {watch_again(listed.runs[0].name)}")
    return "\n".join(lines)


def _recent_heading(listed) -> str:
    if listed.of_anything:
        return (f"No runs of {_recent_where(listed)}; the latest runs in {listed.project}/{listed.domain}, newest "
                "first (a cell registered with -m NAME: %flyte_watch -m NAME)")
    return f"Recent runs of {_recent_where(listed)}, newest first"


def recent_runs_html(listed) -> str:
    if not listed.runs:
        return f"<pre>{esc(recent_runs_text(listed))}</pre>"
    # JupyterLab's own table style aligns cells right: each cell says where it sits, as its header does
    head = "".join(f"<th style='text-align:{side};padding:2px 8px'>{h}</th>"
                   for h, side in (("run", "left"), ("workflow / launch plan", "left"), ("phase", "left"),
                                   ("started", "left"), ("duration", "right")))
    rows = "".join(
        f"<tr class='fastreg-recent-run' data-run='{esc(run.name)}'>"
        f"<td style='padding:2px 8px;text-align:left'><code>{esc(run.name)}</code></td>"
        f"<td style='padding:2px 8px;text-align:left' title='{esc(run.target)}'>{esc(short_name(run.target))}</td>"
        f"<td style='padding:2px 8px;text-align:left'>{badge_html(run.phase)}</td>"
        f"<td style='padding:2px 8px;text-align:left'>{esc(_started_text(run.started))}</td>"
        f"<td style='padding:2px 8px;text-align:right'>{esc(duration_text(run.duration))}</td></tr>"
        for run in listed.runs
    )
    return (
        f"<div>{esc(_recent_heading(listed))}"
        f"<table class='fastreg-recent' style='{TABLE}'><tr>{head}</tr>{rows}</table>"
        f"Watch one: <code>{esc(watch_again(listed.runs[0].name))}</code></div>"
    )
