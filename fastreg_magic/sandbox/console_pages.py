"""Read-only HTML pages behind the console links stock flytekit prints for the sandbox.

flytekit builds its console links from ``console.endpoint`` in the config file
(``FlyteRemote.generate_console_http_domain``/``generate_console_url``), else from the admin endpoint,
which on the sandbox speaks only gRPC. The config files the sandbox writes point ``console.endpoint``
at its HTTP server (``blobserver``) under a random key made at each start,
``http://127.0.0.1:PORT/KEY``, and that server hands its GETs (but signed ``/blobs/``) to
:class:`ConsolePages`, which answers these paths under ``/KEY``:

* ``/console/projects/P/domains/D/executions/NAME`` (``pyflyte run --remote``, ``FlyteRemote``): the
  run's launch plan and workflow with their versions, phase, start and duration, each node (id, task,
  phase, duration; the nodes a dynamic or sub-workflow node ran, under it), the error of a failed run,
  and how to watch it from a notebook (``%flyte_watch NAME``). While the run goes on, the page reloads
  itself (a meta refresh: the pages run no scripts, and their Content-Security-Policy allows none);
* ``/console/projects/P/domains/D/{task|workflow|launch_plan}/NAME[/version/V]`` (``pyflyte register``):
  the entity's versions, newest first; for a workflow or launch plan, its latest runs too;
* ``/console`` and ``/console/projects/P/domains/D/executions``: the latest runs;
* anything else, or a run or entity the sandbox does not have: a 404 page saying so.

Every value shown goes through ``html.escape``: names and error messages are the user's. Loopback
is reachable by every user of the machine, and the sandbox's gRPC API answers only its owner (its
access token, ``access.py``): so do these pages, by the key, which only the config files (readable by
the owner only) and the links flytekit prints from them hold. A path without it, or with another, is
a 404 that tells nothing about the runs; a link printed before the sandbox restarted needs the new
key (the one in the config file). The pages show no signed URL, no inputs or outputs, no environment.
A request whose Host is no loopback name is refused, so a web page that points its own DNS name at
127.0.0.1 gets nothing either.

Written by hand rather than serving FlyteConsole, a React app with its own build and server: a printed
link needs one static page per request, read from the sandbox's store.
"""

from __future__ import annotations

import hmac
import html
import re
import secrets
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from flyteidl.admin import execution_pb2, launch_plan_pb2, node_execution_pb2, task_execution_pb2
from flyteidl.core import execution_pb2 as core_execution_pb2
from flyteidl.core import identifier_pb2

from fastreg_magic.sandbox.entity_service import ENTITY_CLASSES
from fastreg_magic.sandbox.store import Store

REFRESH_SECONDS = 3  # how often a page of a run still going reloads itself
LISTED_RUNS = 25  # runs on a list page
NESTING_SHOWN = 8  # levels of nodes under nodes (dynamic in dynamic ...) drawn before "..."
DEFAULT_PROJECT, DEFAULT_DOMAIN = "flytesnacks", "development"  # the magic's defaults: no -p/-d needed then
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

RUN_PHASE = core_execution_pb2.WorkflowExecution.Phase
NODE_PHASE = core_execution_pb2.NodeExecution.Phase
RUN_ENDED = {RUN_PHASE.SUCCEEDED, RUN_PHASE.FAILED, RUN_PHASE.ABORTED, RUN_PHASE.TIMED_OUT}
NODE_ENDED = {NODE_PHASE.SUCCEEDED, NODE_PHASE.FAILED, NODE_PHASE.ABORTED, NODE_PHASE.SKIPPED,
              NODE_PHASE.TIMED_OUT, NODE_PHASE.RECOVERED}
HIDDEN_NODES = {"start-node", "end-node"}  # FlyteConsole does not show them either

# the path segment flytekit's generate_console_url writes for each kind (FlyteConsole's plural too)
ENTITY_KINDS = {
    "task": identifier_pb2.TASK, "tasks": identifier_pb2.TASK,
    "workflow": identifier_pb2.WORKFLOW, "workflows": identifier_pb2.WORKFLOW,
    "launch_plan": identifier_pb2.LAUNCH_PLAN, "launch_plans": identifier_pb2.LAUNCH_PLAN,
}
KIND_TITLES = {identifier_pb2.TASK: "Task", identifier_pb2.WORKFLOW: "Workflow",
               identifier_pb2.LAUNCH_PLAN: "Launch plan"}
KIND_SEGMENTS = {identifier_pb2.TASK: "task", identifier_pb2.WORKFLOW: "workflow",
                 identifier_pb2.LAUNCH_PLAN: "launch_plan"}

_SCOPE = r"/console/projects/(?P<project>[^/]+)/domains/(?P<domain>[^/]+)"
_ROUTES = [
    (re.compile(r"/console/?"), "_index_page"),
    (re.compile(_SCOPE + r"/executions/?"), "_runs_page"),
    (re.compile(_SCOPE + r"/executions/(?P<name>[^/]+)/?"), "_run_page"),
    (re.compile(_SCOPE + r"/(?P<kind>" + "|".join(ENTITY_KINDS) + r")/(?P<name>[^/]+)"
                r"(?:/version/(?P<version>[^/]+))?/?"), "_entity_page"),
]

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em 2em; color: #222; }
h1 { font-size: 1.3em; margin-bottom: .2em; } h2 { font-size: 1.05em; margin-top: 1.6em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; } td, th { padding: .25em .9em .25em 0; text-align: left; vertical-align: top; }
th { color: #555; font-weight: 600; border-bottom: 1px solid #ddd; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1.2em; } dt { color: #555; } dd { margin: 0; }
code, pre { font-family: ui-monospace, monospace; font-size: 13px; }
pre { background: #f6f6f6; padding: .8em; white-space: pre-wrap; overflow-wrap: anywhere; }
.phase { font-weight: 600; } .ok { color: #1a7f37; } .bad { color: #c62828; } .going { color: #1565c0; }
.idle { color: #777; } .this { background: #fff8d6; } footer { margin-top: 2em; color: #777; font-size: 12px; }
"""


@dataclass(frozen=True)
class Page:
    status: int
    html: str


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _link(href: str, text: str) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>'


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _run_path(project: str, domain: str, name: str) -> str:
    return f"/console/projects/{_q(project)}/domains/{_q(domain)}/executions/{_q(name)}"


def _entity_path(identifier, version: str | None = None) -> str:
    href = (f"/console/projects/{_q(identifier.project)}/domains/{_q(identifier.domain)}/"
            f"{KIND_SEGMENTS.get(identifier.resource_type, 'workflow')}/{_q(identifier.name)}")
    return href + (f"/version/{_q(version)}" if version else "")


def _seconds(timestamp) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9


def _when(timestamp) -> str:
    if not timestamp.seconds:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(_seconds(timestamp)))


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _duration(duration, started, ended: bool) -> str:
    """A finished one's duration; for one still going, how long it has run so far."""
    if ended:
        return _span(duration.ToTimedelta().total_seconds()) if started.seconds or duration.seconds else "—"
    if not started.seconds:
        return "—"
    return f"{_span(max(0.0, time.time() - _seconds(started)))} so far"


def _phase(name: str) -> str:
    tone = ("ok" if name in ("SUCCEEDED", "RECOVERED") else
            "bad" if name in ("FAILED", "FAILING", "TIMED_OUT", "ABORTED", "ABORTING") else
            "idle" if name in ("UNDEFINED", "QUEUED", "SKIPPED") else "going")
    return f'<span class="phase {tone}">{_e(name)}</span>'


def _document(title: str, body: str, refresh: bool = False, home: str | None = None) -> str:
    """A whole page; ``home``: the link to the latest runs (none on pages for requests without the key)."""
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    footer = "fastreg sandbox · read-only" + (f" · {_link(home, 'latest runs')}" if home else "")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)} · fastreg sandbox</title>{meta}<style>{STYLE}</style></head>\n<body>\n{body}\n"
        f"<footer>{footer}</footer>\n</body></html>\n"
    )


def _not_found(what: str, hint: str = "", home: str | None = None) -> Page:
    body = f"<h1>Not found</h1>\n<p>{_e(what)}</p>" + (f"\n<p>{hint}</p>" if hint else "")
    return Page(404, _document("Not found", body, home=home))


NO_PAGE_WITHOUT_KEY = _not_found(
    "The sandbox has no page here.",
    "Its console links start with <code>console.endpoint</code> from its config file (readable by its owner "
    "only), as the links <code>pyflyte</code> prints do; a link printed before the sandbox last started "
    "needs the one in the config file now.")


def _table(headers: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>"


class ConsolePages:
    """The pages, read from ``store`` at each request (the sandbox's own, in this process)."""

    def __init__(self, store: Store, config_file: Path | None = None, key: str | None = None):
        self.store = store
        self.config_file = config_file  # named in the "watch it from elsewhere" line
        self.key = key or secrets.token_urlsafe(18)  # URL-safe: one path segment as it is
        self._href = f"/{self.key}"  # every link of a page starts with it

    def console_endpoint(self, port: int) -> str:
        """``console.endpoint`` for the config files: flytekit appends ``/console/projects/...`` to it."""
        return f"http://127.0.0.1:{port}{self._href}"

    def page(self, path: str, host: str | None) -> Page:
        """The page at ``path`` (no query), for a request that named ``host`` in its Host header."""
        if not _is_loopback(host):
            return Page(403, _document("Refused", "<h1>Refused</h1>\n<p>These pages answer requests to "
                                       "127.0.0.1 or localhost only.</p>"))
        key, _, rest = path.lstrip("/").partition("/")
        # constant time: how much of a guessed key matched must not show in how long the answer takes
        if not hmac.compare_digest(key.encode(), self.key.encode()):
            return NO_PAGE_WITHOUT_KEY
        return self._route("/" + rest)

    def _route(self, path: str) -> Page:
        for pattern, method in _ROUTES:
            match = pattern.fullmatch(path)
            if match:
                fields = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items() if v is not None}
                try:
                    return getattr(self, method)(**fields)
                except sqlite3.ProgrammingError:  # the store closed under a request as the sandbox stopped
                    return Page(503, _document("Stopping", "<h1>The sandbox is stopping</h1>"))
        return self._missing(f"The sandbox has no page at {path}.",
                             "It serves the console links flytekit prints: runs (…/executions/NAME) and tasks, "
                             "workflows and launch plans (…/workflow/NAME/version/VERSION); "
                             + _link(self._home, "latest runs") + ".")

    @property
    def _home(self) -> str:
        return f"{self._href}/console"

    def _missing(self, what: str, hint: str = "") -> Page:
        return _not_found(what, hint, home=self._home)

    def _document(self, title: str, body: str, refresh: bool = False) -> str:
        return _document(title, body, refresh, home=self._home)

    # -- runs --------------------------------------------------------------------------------

    def _run_page(self, project: str, domain: str, name: str) -> Page:
        key = (project, domain, name)
        run = self.store.get_execution(key, execution_pb2.Execution)
        if run is None:
            runs_here = f"{self._home}/projects/{_q(project)}/domains/{_q(domain)}/executions"
            return self._missing(f"The sandbox has no run {name} in project {project}, domain {domain}.",
                                 "A sandbox started afresh (another data dir, or its data deleted) has none of the "
                                 "old one's runs; " + _link(runs_here, "the latest runs here") + ".")
        closure = run.closure
        ended = closure.phase in RUN_ENDED
        started = closure.started_at if closure.started_at.seconds else closure.created_at
        facts = [
            ("Launch plan", self._entity_cell(run.spec.launch_plan)),
            ("Workflow", self._entity_cell(closure.workflow_id)),
            ("Phase", _phase(RUN_PHASE.Name(closure.phase))),
            ("Started", _e(_when(started))),
            ("Duration", _e(_duration(closure.duration, started, ended))),
        ]
        parent = run.spec.metadata.parent_node_execution
        if parent.execution_id.name:
            parent_run = parent.execution_id
            facts.append(("Launched by", f"node <code>{_e(parent.node_id)}</code> of "
                          + _link(self._href + _run_path(parent_run.project, parent_run.domain, parent_run.name),
                                  parent_run.name)))
        body = [f"<h1>Run {_e(name)}</h1>", f'<p class="sub">{_e(project)} / {_e(domain)}</p>',
                "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"]
        body += self._run_problem(closure)
        body += ["<h2>Nodes</h2>", self._nodes_table(key)]
        body += ["<h2>Watch it from a notebook</h2>", self._watch_hint(project, domain, name)]
        return Page(200, self._document(f"Run {name}", "\n".join(body), refresh=not ended))

    @staticmethod
    def _run_problem(closure) -> list[str]:
        if closure.HasField("error") and (closure.error.message or closure.error.code):
            return ["<h2>Error</h2>", f"<p><code>{_e(closure.error.code)}</code></p>",
                    f"<pre>{_e(closure.error.message)}</pre>"]
        cause = closure.abort_metadata.cause or closure.abort_cause
        if cause:
            return ["<h2>Aborted</h2>", f"<pre>{_e(cause)}</pre>"]
        return []

    def _entity_cell(self, identifier) -> str:
        if not identifier.name:
            return "—"
        return (_link(self._href + _entity_path(identifier, identifier.version), identifier.name)
                + f" <code>{_e(identifier.version)}</code>")

    def _watch_hint(self, project: str, domain: str, name: str) -> str:
        scope = "" if (project, domain) == (DEFAULT_PROJECT, DEFAULT_DOMAIN) else f"-p {project} -d {domain} "
        lines = [f"<p>In a notebook whose cells register to this sandbox: <code>%flyte_watch {_e(scope + name)}</code>"
                 "</p>"]
        if self.config_file is not None:
            lines.append(f"<p>From any other notebook: <code>%flyte_watch --config {_e(self.config_file)} "
                         f"{_e(scope + name)}</code></p>")
        return "\n".join(lines)

    def _nodes_table(self, key: tuple) -> str:
        tasks = self._task_names(key)
        rows = self._node_rows(key, None, tasks, depth=0)
        if not rows:
            return "<p>No node has started yet.</p>"
        return _table(["node", "task", "phase", "started", "duration"], rows)

    def _task_names(self, key: tuple) -> dict[str, tuple[str, int]]:
        """Each node's task and its latest attempt."""
        names: dict[str, tuple[str, int]] = {}
        for attempt in self.store.all_task_executions(key, task_execution_pb2.TaskExecution):
            node = attempt.id.node_execution_id.node_id
            if attempt.id.retry_attempt >= names.get(node, ("", -1))[1]:
                names[node] = (attempt.id.task_id.name, attempt.id.retry_attempt)
        return names

    def _node_rows(self, key: tuple, parent: str | None, tasks: dict, depth: int) -> list[str]:
        rows = []
        for node in self.store.list_node_executions(key, parent, node_execution_pb2.NodeExecution):
            node_id = node.id.node_id
            if node_id in HIDDEN_NODES or node.metadata.spec_node_id in HIDDEN_NODES:
                continue
            rows.append(self._node_row(node, tasks, depth))
            if node.metadata.is_parent_node and depth + 1 < NESTING_SHOWN:
                rows += self._node_rows(key, node_id, tasks, depth + 1)
        return rows

    def _node_row(self, node, tasks: dict, depth: int) -> str:
        closure = node.closure
        ended = closure.phase in NODE_ENDED
        task, attempt = tasks.get(node.id.node_id, ("", 0))
        what = _e(task) if task else "—"
        child = closure.workflow_node_metadata.executionId
        if child.name:
            what = "run " + _link(self._href + _run_path(child.project, child.domain, child.name), child.name)
        phase = _phase(NODE_PHASE.Name(closure.phase)) + (f" (attempt {attempt + 1})" if attempt else "")
        indent = f' style="padding-left:{1.2 * depth:.1f}em"' if depth else ""
        cells = [f"<td{indent}><code>{_e(node.id.node_id)}</code></td>", f"<td>{what}</td>", f"<td>{phase}</td>",
                 f"<td>{_e(_when(closure.started_at))}</td>",
                 f"<td>{_e(_duration(closure.duration, closure.started_at, ended))}</td>"]
        return "<tr>" + "".join(cells) + "</tr>"

    # -- lists of runs ----------------------------------------------------------------------

    def _index_page(self) -> Page:
        rows = self.store.query("SELECT body FROM executions ORDER BY created_at DESC LIMIT ?", (LISTED_RUNS,))
        runs = [_parsed(execution_pb2.Execution, row[0]) for row in rows]
        body = "<h1>Latest runs</h1>\n" + self._runs_table(runs, with_scope=True)
        return Page(200, self._document("Latest runs", body))

    def _runs_page(self, project: str, domain: str) -> Page:
        runs = self.store.list_executions(project, domain, execution_pb2.Execution)[:LISTED_RUNS]
        body = f'<h1>Latest runs</h1>\n<p class="sub">{_e(project)} / {_e(domain)}</p>\n' + self._runs_table(runs)
        return Page(200, self._document(f"Runs of {project}/{domain}", body))

    def _runs_table(self, runs: list, with_scope: bool = False) -> str:
        if not runs:
            return "<p>No runs yet.</p>"
        rows = []
        for run in runs:
            closure, run_id = run.closure, run.id
            started = closure.started_at if closure.started_at.seconds else closure.created_at
            cells = [_link(self._href + _run_path(run_id.project, run_id.domain, run_id.name), run_id.name)]
            if with_scope:
                cells.append(_e(f"{run_id.project} / {run_id.domain}"))
            cells += [_e(run.spec.launch_plan.name) or "—", _phase(RUN_PHASE.Name(closure.phase)), _e(_when(started)),
                      _e(_duration(closure.duration, started, closure.phase in RUN_ENDED))]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        headers = ["run"] + (["project / domain"] if with_scope else []) + ["launch plan", "phase", "started",
                                                                             "duration"]
        return _table(headers, rows)

    # -- tasks, workflows, launch plans -----------------------------------------------------

    def _entity_page(self, project: str, domain: str, kind: str, name: str, version: str | None = None) -> Page:
        resource = ENTITY_KINDS[kind]
        title = f"{KIND_TITLES[resource]} {name}"
        versions = self.store.list_entities(resource, project, domain, name, ENTITY_CLASSES[resource])
        if not versions:
            return self._missing(f"The sandbox has no {KIND_TITLES[resource].lower()} {name} in project {project}, "
                              f"domain {domain}.")
        table = self._versions_table(resource, versions, version)
        if version and all(v.id.version != version for v in versions):
            return Page(404, self._document(title, f"<h1>Not found</h1>\n<p>{_e(title)} has no version {_e(version)}. "
                                              f"Its versions, newest first:</p>\n{table}"))
        body = [f"<h1>{_e(title)}</h1>", f'<p class="sub">{_e(project)} / {_e(domain)}</p>',
                "<h2>Versions, newest first</h2>", table]
        if resource != identifier_pb2.TASK:
            runs = [run for run in self.store.list_executions(project, domain, execution_pb2.Execution)
                    if (run.spec.launch_plan if resource == identifier_pb2.LAUNCH_PLAN
                        else run.closure.workflow_id).name == name][:LISTED_RUNS]
            body += ["<h2>Latest runs</h2>", self._runs_table(runs)]
        return Page(200, self._document(title, "\n".join(body)))

    def _versions_table(self, resource: int, versions: list, shown: str | None) -> str:
        rows = []
        for entity in versions:
            cells = [_link(self._href + _entity_path(entity.id, entity.id.version), entity.id.version),
                     _e(_when(entity.closure.created_at))]
            if resource == identifier_pb2.LAUNCH_PLAN:
                cells.append(_e(launch_plan_pb2.LaunchPlanState.Name(entity.closure.state)))
            mark = ' class="this"' if entity.id.version == shown else ""
            rows.append(f"<tr{mark}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        headers = ["version", "registered"] + (["state"] if resource == identifier_pb2.LAUNCH_PLAN else [])
        return _table(headers, rows)


def _parsed(cls, data: bytes):
    message = cls()
    message.ParseFromString(data)
    return message


def _is_loopback(host: str | None) -> bool:
    """Whether a Host header names this machine's loopback (any port: an SSH tunnel may change it)."""
    if not host:
        return True  # HTTP/1.0 clients send none; only a browser can be led here by a web page, and it sends one
    hostname = urllib.parse.urlsplit(f"//{host}").hostname or ""
    return hostname in LOOPBACK_HOSTS
