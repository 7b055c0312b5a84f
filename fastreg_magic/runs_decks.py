"""A task's deck: the HTML report a task with ``@task(enable_deck=True)`` writes, read back from the backend.

flytekit renders a deck-enabled task's decks (``flytekit.Deck("name", html)``,
``current_context().default_deck``, the renderers of its inputs and outputs) into one HTML page,
``deck.html``, beside the task's outputs, and the backend records where on the node execution
(``closure.deck_uri``). It is read as flytekit's and the console's clients read it: DataProxy
``CreateDownloadLink(ARTIFACT_TYPE_DECK, node execution id)`` gives a signed URL, which is fetched.
A backend whose DataProxy does not serve decks, or cannot sign a link to where it keeps them,
falls back to reading ``deck_uri`` itself with the FlyteRemote's file access (``s3://``, ``gs://``,
a path on this machine), with the credentials of the Flyte config.

A deck is a whole page with its own scripts (flytekit's tabs, a plot's library). In a notebook it is
shown in an ``<iframe sandbox="allow-scripts" srcdoc=...>``: its scripts run, in an origin of their
own, so they cannot reach the notebook's page, its cookies or its kernel.

    run.deck()                 -> TaskDeck(node="n0", task="mod.train", html="<html>…")
    run.deck("report")         -> the deck of the node that ran task ``report`` (or node "n1/n0")
    deck.save("report.html")   -> Path("report.html")
    fetch_deck(run, row)       -> the deck of one row of ``run.nodes()`` (the run view's "Show deck")
"""

from __future__ import annotations

import html as html_lib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import grpc

from fastreg_magic.errors import FastRegError, NotYetSupported, RunError
from fastreg_magic.runs_data import NODE_TERMINAL, NodeStatus
from fastreg_magic.runs_errors import grpc_status, is_not_found, rpc
from fastreg_magic.runs_tree import flatten
from fastreg_magic.widget_text import esc, short_name, size_text

log = logging.getLogger(__name__)

ENABLE_HINT = "Enable it with @task(enable_deck=True), re-run the cell and launch again."
# flytekit's page names each deck in a tab of its own: <li onclick="handleLinkClick(this)">name</li>
_TAB = re.compile(r'<li onclick="handleLinkClick\(this\)">(.*?)</li>', re.S)
# How tall a deck's frame is at first; the reader drags its corner for more.
FRAME_HEIGHT_PX = 480


@dataclass
class TaskDeck:
    """The deck one node's task wrote. ``html`` is the whole page; shown in Jupyter, it is framed
    (sandboxed); in a terminal, its repr says where it is kept and how to save a copy."""

    run: str  # the run's name
    node: str  # the node's path, as ``run.nodes()`` shows it ("n0", "n1/n0")
    task: str | None
    html: str
    uri: str  # where the backend keeps it
    saved_to: Path | None = None

    @property
    def tabs(self) -> list[str]:
        """The names of the page's decks (flytekit's tabs): ``["summary", "Input", "Output"]``."""
        return [html_lib.unescape(name).strip() for name in _TAB.findall(self.html)]

    def save(self, path: str | Path | None = None) -> Path:
        """Write the page to ``path`` (default ``<task>_deck.html`` here), to open in a browser; returns it."""
        target = Path(path) if path is not None else Path(f"{_short(self.task)}_deck.html")
        if target.is_dir():
            target = target / f"{_short(self.task)}_deck.html"
        target.write_text(self.html, encoding="utf-8")
        self.saved_to = target.resolve()
        return self.saved_to

    def __repr__(self) -> str:
        return f"<TaskDeck of node {self.node} ({_short(self.task)}) of run {self.run}, {size_text(len(self.html))}>"

    def text(self) -> str:
        """What a terminal shows: which deck, its tabs, and where to open it."""
        tabs = ", ".join(self.tabs)
        lines = [f"Deck of node {self.node} ({_short(self.task)}) of run {self.run}: {size_text(len(self.html))} of HTML"
                 + (f", tabs: {tabs}" if tabs else "")]
        if self.saved_to is not None:
            lines.append(f"  saved to {self.saved_to}: open it in a browser")
        else:
            local = _local_file(self.uri)
            if local is not None:
                lines.append(f"  the backend keeps it at {local}: open it in a browser")
            name = f"{_short(self.task)}_deck.html"
            lines.append(f"  save a copy to open in a browser: run.deck({self.node!r}).save({name!r})")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self) if cycle else self.text())

    def _repr_html_(self) -> str:
        return deck_html(self)


def deck_html(deck: TaskDeck) -> str:
    """The deck framed for a notebook: a caption, then the page in a sandboxed iframe the reader can
    make taller. Everything from the task goes through `html.escape`: the page itself only as the
    frame's ``srcdoc`` attribute, so it cannot close the frame and reach the notebook's page."""
    tabs = ", ".join(deck.tabs)
    caption = (
        f"<div class='fastreg-deck-caption' style='color:var(--jp-content-font-color2,#616161);overflow-wrap:anywhere'>"
        f"deck of <code>{esc(deck.node)}</code> <b>{esc(_short(deck.task))}</b> · run <code>{esc(deck.run)}</code>"
        f" · {esc(size_text(len(deck.html)))}" + (f" · tabs: {esc(tabs)}" if tabs else "") + "</div>"
    )
    # Only scripts: no allow-same-origin (the page would share the notebook's origin), no forms,
    # pop-ups or top-level navigation. A srcdoc frame's height cannot follow its page without
    # allow-same-origin, so its box has a height the reader can drag (resize works on the box, not the frame).
    frame = (
        f"<div style='resize:vertical;overflow:hidden;height:{FRAME_HEIGHT_PX}px;min-height:120px;"
        f"border:1px solid var(--jp-border-color2,#e0e0e0);background:white'>"
        f"<iframe class='fastreg-deck-frame' sandbox='allow-scripts' referrerpolicy='no-referrer' "
        f"title='deck of {esc(deck.node)}' style='width:100%;height:100%;border:0' srcdoc=\"{esc(deck.html)}\"></iframe></div>"
    )
    return f"<div class='fastreg-deck' data-node='{esc(deck.node)}'>{caption}{frame}</div>"


# ---------------------------------------------------------------------------------------------
# which node


def read_deck(run, node: str | None = None) -> TaskDeck:
    """The deck of ``node`` (a path as ``run.nodes()`` shows it, or a task's name, whole or short) of
    ``run``; with no ``node``, the deck of the run's one node that has one."""
    rows = [row for _, row in flatten(run.nodes())]
    return fetch_deck(run, _chosen(run, rows, node))


def _chosen(run, rows: list[NodeStatus], node: str | None) -> NodeStatus:
    with_deck = [row for row in rows if row.deck_uri]
    if node is None:
        if len(with_deck) == 1:
            return with_deck[0]
        if with_deck:
            raise RunError(f"Run {run.name} has decks on {len(with_deck)} nodes: {_listed(with_deck)}.",
                           f"Pick one: run.deck({with_deck[0].label!r}).")
        raise _no_deck(run, rows)
    matching = [row for row in rows if row.label == node] or \
               [row for row in rows if row.task and node in (row.task, _short(row.task))]
    if not matching:
        known = ", ".join(row.label for row in rows) or "none yet"
        raise RunError(f"Run {run.name} has no node or task {node!r}.", f"Its nodes are: {known}.")
    found = [row for row in matching if row.deck_uri]
    if len(found) > 1:
        raise RunError(f"Task {node} ran in {len(found)} nodes of run {run.name}, each with a deck: {_listed(found)}.",
                       f"Pick one by its node: run.deck({found[0].label!r}).")
    if found:
        return found[0]
    raise _no_deck(run, matching, asked=node)


def _no_deck(run, rows: list[NodeStatus], asked: str | None = None) -> RunError:
    """Why none of ``rows`` has a deck, and what to do: its tasks make none, a task that makes one has
    not ended yet, or it ended without one (answered from the cache, failed before writing it)."""
    makes, known = _deck_tasks(run)
    where = f"Node {rows[0].label} of run {run.name}" if asked and len(rows) == 1 else f"Run {run.name}"
    tasks = [row for row in rows if row.task and not row.gate]
    # a task the run's workflow does not name (a dynamic task's child) may make one: it is not ruled out
    enabled = [row for row in tasks if makes is None or row.task in makes or row.task not in known]
    if not tasks and not run.done:
        return RunError(f"{where} has no deck yet: no task of it has run ({run.phase}).", _WAIT_HINT)
    if not enabled:
        return RunError(f"{where} has no deck: {_which_tasks(tasks)} makes none.", ENABLE_HINT)
    waiting = [row for row in enabled if row.phase not in NODE_TERMINAL]
    if waiting:
        row = waiting[0]
        return RunError(f"{where} has no deck yet: node {row.label} ({_short(row.task)}) has not finished ({row.phase}).",
                        _WAIT_HINT)
    if makes is None:  # the tasks could not be read: every reason stays open
        return RunError(f"{where} has no deck.", f"{ENABLE_HINT} A task answered from the cache, or that failed "
                                                  "before it returned, writes none.")
    if all(row.cached for row in enabled):
        row = enabled[0]
        return RunError(f"{where} has no deck: node {row.label} ({_short(row.task)}) was answered from the task "
                        "cache, so its task did not run and wrote none.",
                        "Launch it with inputs not seen before, or change the task's cache_version, to run it again.")
    row = next(row for row in enabled if not row.cached)
    return RunError(f"{where} has no deck: node {row.label} ({_short(row.task)}) ended {row.phase} without writing one.",
                    "A task that fails before it returns writes none: fix it and launch again.")


_WAIT_HINT = "flytekit writes a task's deck as the task ends: run.wait(), then run.deck() again."


def _which_tasks(tasks: list[NodeStatus]) -> str:
    names = sorted({_short(row.task) for row in tasks})
    if len(names) == 1:
        return f"its task {names[0]}"
    return "none of its tasks" if not names else f"none of its tasks ({', '.join(names)})"


def _deck_tasks(run) -> tuple[set[str] | None, set[str]]:
    """The names of the run's registered tasks that make a deck (flytekit's ``generates_deck``), and of
    all of them; (None, set()) when they cannot be read (the error then says less, nothing worse)."""
    from flyteidl.admin import common_pb2
    from flyteidl.core import identifier_pb2

    try:
        spec = run._spec if run._spec is not None else run.refresh()._spec
        lp_id = spec.launch_plan
        what = f"Reading the tasks of run {run.name}"
        if lp_id.resource_type == identifier_pb2.TASK:
            task = rpc(run._client, "get_task", common_pb2.ObjectGetRequest(id=lp_id), what=what, remote=run._remote)
            templates = [task.closure.compiled_task.template]
        else:
            lp = rpc(run._client, "get_launch_plan", common_pb2.ObjectGetRequest(id=lp_id), what=what, remote=run._remote)
            wf = rpc(run._client, "get_workflow", common_pb2.ObjectGetRequest(id=lp.spec.workflow_id), what=what,
                     remote=run._remote)
            templates = [t.template for t in wf.closure.compiled_workflow.tasks]
    except Exception:  # a hint only: the error is whole without it
        log.debug("reading the tasks of run %s failed", run.name, exc_info=True)
        return None, set()
    return {t.id.name for t in templates if t.metadata.generates_deck.value}, {t.id.name for t in templates}


# ---------------------------------------------------------------------------------------------
# reading it


def fetch_deck(run, row: NodeStatus) -> TaskDeck:
    """The deck ``row`` (a node of ``run`` whose ``deck_uri`` is set) points at, through the
    backend's signed link, else straight from where it is kept."""
    if not row.deck_uri:
        raise _no_deck(run, [row], asked=row.label)
    what = f"Reading the deck of node {row.label} of run {run.name}"
    url = _signed_link_if_any(run, row, what)
    link_problem = None
    if url is not None:
        try:
            return _deck(run, row, _read(run, url))
        except FileNotFoundError:
            raise _not_there(run, row) from None
        except Exception as exc:  # a link naming a host only the cluster reaches: the store itself may do
            log.debug("%s: the signed link could not be read (%s); reading %s itself", what, exc, row.deck_uri)
            link_problem = exc
    try:
        return _deck(run, row, _read(run, row.deck_uri))
    except FileNotFoundError:
        raise _not_there(run, row) from None
    except Exception as exc:
        if link_problem is not None:
            raise RunError(f"{what}: its signed link could not be read: {_reason(link_problem)}.",
                           f"Check that this machine reaches the backend's storage, or read {row.deck_uri} "
                           "with your storage's own tools.") from link_problem
        raise RunError(f"{what}: {row.deck_uri} could not be read here: {_reason(exc)}.",
                       "Check the storage settings of your Flyte config (the backend gives no link to it).") from exc


def _signed_link_if_any(run, row: NodeStatus, what: str) -> str | None:
    """The backend's signed link to the deck; None when its DataProxy gives none (the deck is then read
    from where it is kept)."""
    try:
        return _signed_link(run, row, what)
    except FastRegError as err:
        if _may_read_directly(err):
            log.debug("%s: no signed link (%s); reading %s itself", what, err, row.deck_uri)
            return None
        raise _not_there(run, row) if is_not_found(err.__cause__) else err


def _signed_link(run, row: NodeStatus, what: str) -> str:
    from flyteidl.core import identifier_pb2
    from flyteidl.service import dataproxy_pb2

    request = dataproxy_pb2.CreateDownloadLinkRequest(
        artifact_type=dataproxy_pb2.ARTIFACT_TYPE_DECK,
        node_execution_id=identifier_pb2.NodeExecutionIdentifier(node_id=row.execution_id or row.node, execution_id=run.id),
    )
    response = rpc(run._client, "create_download_link", request, what=what, remote=run._remote,
                   not_found="The backend keeps no deck there.")
    urls = list(response.pre_signed_urls.signed_url) or list(response.signed_url)
    if not urls:
        raise NotYetSupported(f"{what}: the backend answered with no link.", None)
    return urls[0]


def _may_read_directly(err: FastRegError) -> bool:
    """The backend's DataProxy cannot give a link (no DataProxy, a store it cannot sign for): the deck is
    read from where the backend keeps it instead. A deck it says is not there is not looked for."""
    if isinstance(err, NotYetSupported):
        return True
    code = grpc_status(err.__cause__)[0] if err.__cause__ is not None else None
    return code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


def _read(run, url: str) -> str:
    """The page at ``url`` (a signed HTTP link, or the store's own URI) through the remote's file
    access, as ``FlyteRemote.get`` reads a deck link: fsspec's filesystem for the URL's protocol."""
    fs = run._remote.file_access.get_filesystem_for_path(url)
    with fs.open(url, "rb") as fh:
        return fh.read().decode("utf-8", errors="replace")


def _deck(run, row: NodeStatus, page: str) -> TaskDeck:
    return TaskDeck(run=run.name, node=row.label, task=row.task, html=page, uri=row.deck_uri)


def _not_there(run, row: NodeStatus) -> RunError:
    if row.phase not in NODE_TERMINAL:  # a cluster names the deck as the task starts; it is written as it ends
        return RunError(
            f"Node {row.label} of run {run.name} has no deck yet: its task is {row.phase}.",
            "flytekit writes a task's deck as the task ends (or at Deck.publish()): run.wait(), then run.deck() again.",
        )
    return RunError(
        f"The deck of node {row.label} of run {run.name} is missing from {row.deck_uri}.",
        "The backend's storage was cleaned or replaced since the run: launch it again for a new deck.",
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _local_file(uri: str) -> str | None:
    """The path of a deck kept on this machine (the embedded sandbox keeps plain paths)."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return uri if uri.startswith("/") else None


def _short(task: str | None) -> str:
    return short_name(task) or "task"


def _listed(rows: list[NodeStatus]) -> str:
    return ", ".join(f"{row.label} ({_short(row.task)})" for row in rows)
