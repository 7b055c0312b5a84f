"""The recent runs of a notebook's cells on a backend, newest first: what `%flyte_watch` lists with no run name.

    rows = recent_runs(remote, "flytesnacks", "development", modules=["my_flows"], limit=10)
    rows[0].name, rows[0].target, rows[0].phase, rows[0].started, rows[0].duration
    RecentRuns(rows, ...)            # shown as a table in Jupyter, as text in a terminal and in the saved notebook

A cell's workflows and default launch plans are named after its module (``my_flows.pipeline``), so the
runs of a notebook are the executions whose launch plan name starts with that module. A launch plan
the cell names itself (``LaunchPlan.get_or_create(pipeline, "quad", ...)``) has no module prefix: its
runs are found by their workflow's name instead (``contains(workflow.name,my_flows.)``, the workflow
FlyteAdmin records in each execution's closure), and, since it may run a workflow of a module the cell
imports (``mylib.flows.wf``), by its version: every entity of one registration has the cell's
version, so the launch plans of the cell's versions are the cell's. Those versions are read from the
backend, which keeps them across a kernel restart: the versions of the cell's newest tasks and
workflows (``contains(name,my_flows.)``, newest first, one page of ``ENTITY_PAGE`` each), the
``RECENT_VERSIONS`` newest kept, with those this kernel registered; then one request lists the runs
of any launch plan of those versions (``value_in(launch_plan.version,V1;V2;...)``). A cell that
defines no task or workflow of its own leaves no version to find by its name: only the kernel that
registered it knows it. The backend filters and sorts each list, newest first, so listing a module
costs five requests however many runs and versions it has. The names and versions survive a kernel
restart, a closed notebook and a lost widget state, which is what a user who wants yesterday's run
back needs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable

from fastreg_magic.runs_data import RUN_TERMINAL, phase_name
from fastreg_magic.runs_errors import rpc

DEFAULT_LIMIT = 10  # runs listed when -n is not given
MAX_LIMIT = 100  # FlyteAdmin's usual page size: a longer list would need several pages
RECENT_VERSIONS = 10  # a cell's newest versions whose launch plans' runs are listed
ENTITY_PAGE = 100  # newest workflows (and as many tasks) of a cell read for its versions: one page each


@dataclass(frozen=True)
class RecentRun:
    """One run as the list shows it."""

    name: str
    target: str  # the launch plan (or task) it runs: a workflow's default launch plan has the workflow's name
    phase: str
    started: dt.datetime | None
    duration: float | None  # seconds; up to now for a run still going


def recent_runs(remote, project: str, domain: str, modules: Iterable[str], limit: int = DEFAULT_LIMIT) -> list[RecentRun]:
    """The ``limit`` newest runs in ``project``/``domain`` of anything the cells of ``modules`` registered."""
    from flytekit.models import filters

    found: dict[str, tuple[float, RecentRun]] = {}
    for module in dict.fromkeys(modules):  # each once, in order
        prefix = f"{module}."
        versions = cell_versions(remote, project, domain, module)
        asked = [filters.Contains("launch_plan.name", [prefix]), filters.Contains("workflow.name", [prefix])]
        if versions:
            asked.append(filters.ValueIn("launch_plan.version", list(versions)))
        for one_filter in asked:  # FlyteAdmin ands the filters of a request: one request for each
            for execution in _list_executions(remote, project, domain, module, one_filter, limit):
                if _is_of_module(execution, prefix, versions):
                    found[execution.id.name] = (_created(execution), _row(execution))
    newest_first = sorted(found.values(), key=lambda pair: pair[0], reverse=True)
    return [row for _, row in newest_first[:limit]]


def latest_runs(remote, project: str, domain: str, limit: int = DEFAULT_LIMIT) -> list[RecentRun]:
    """The ``limit`` newest runs in ``project``/``domain``, of anything: what to list when none is found of
    the cells asked about (a cell registered under a ``-m`` name the user does not remember)."""
    return [_row(execution) for execution in _list_executions(remote, project, domain, None, None, limit)]


def cell_versions(remote, project: str, domain: str, module: str) -> tuple[str, ...]:
    """The ``RECENT_VERSIONS`` newest versions ``module``'s cells registered in ``project``/``domain``, newest
    first: those this kernel registered, then those of the module's newest tasks and workflows on the backend."""
    from fastreg_magic import api

    known = [registration.version for registration in reversed(list(api._memo.values()))
             if registration.registered and registration.module == module
             and (registration.project, registration.domain) == (project, domain)]
    stored = sorted(_entity_versions(remote, project, domain, module), reverse=True)
    return tuple(dict.fromkeys([*known, *(version for _, version in stored)]))[:RECENT_VERSIONS]


def _entity_versions(remote, project: str, domain: str, module: str) -> list[tuple[float, str]]:
    """(created, version) of the newest ``ENTITY_PAGE`` workflows and as many tasks named ``module.*``:
    a cell that defines workflows of imported tasks, or only tasks, has one or the other."""
    from flyteidl.admin import common_pb2
    from flytekit.models import filters

    prefix = f"{module}."
    request = common_pb2.ResourceListRequest(
        id=common_pb2.NamedEntityIdentifier(project=project, domain=domain),
        limit=ENTITY_PAGE,
        filters=filters.FilterList([filters.Contains("name", [prefix])]).to_flyte_idl(),
        sort_by=common_pb2.Sort(key="created_at", direction=common_pb2.Sort.DESCENDING),
    )
    found = []
    for method, field, kind in (("list_workflows_paginated", "workflows", "workflows"),
                                ("list_tasks_paginated", "tasks", "tasks")):
        answer = rpc(remote.client, method, request,
                     what=f"Listing the {kind} of {module} in {project}/{domain}", remote=remote)
        found.extend((_created(entity), entity.id.version) for entity in getattr(answer, field)
                     if entity.id.name.startswith(prefix))  # `contains` also matches ``pkg.my_flows.``
    return found


def _is_of_module(execution, prefix: str, versions: tuple[str, ...]) -> bool:
    """`contains` also matches ``pkg.my_flows.``: keep the runs whose launch plan or workflow is this module's,
    or whose launch plan is of one of its versions."""
    launch_plan = execution.spec.launch_plan
    workflow = execution.closure.workflow_id.name
    return launch_plan.name.startswith(prefix) or workflow.startswith(prefix) or launch_plan.version in versions


def _list_executions(remote, project: str, domain: str, module: str | None, one_filter, limit: int) -> list:
    from flyteidl.admin import common_pb2
    from flytekit.models import filters

    request = common_pb2.ResourceListRequest(
        id=common_pb2.NamedEntityIdentifier(project=project, domain=domain),
        limit=limit,
        filters=filters.FilterList([one_filter]).to_flyte_idl() if one_filter is not None else "",
        sort_by=common_pb2.Sort(key="created_at", direction=common_pb2.Sort.DESCENDING),
    )
    of = f"the runs of {module}" if module is not None else "the latest runs"
    answer = rpc(remote.client, "list_executions_paginated", request,
                 what=f"Listing {of} in {project}/{domain}", remote=remote)
    return list(answer.executions)


def _created(execution) -> float:
    stamp = execution.closure.created_at
    return stamp.seconds + stamp.nanos / 1e9


def _row(execution) -> RecentRun:
    closure = execution.closure
    phase = phase_name(closure.phase)
    start = closure.started_at if closure.started_at.seconds else closure.created_at
    started = start.ToDatetime(tzinfo=dt.timezone.utc) if start.seconds else None
    if phase in RUN_TERMINAL and closure.HasField("duration"):
        duration = closure.duration.ToTimedelta().total_seconds()
    elif started is not None:  # still going: how long so far
        duration = max(0.0, (dt.datetime.now(dt.timezone.utc) - started).total_seconds())
    else:
        duration = None
    return RecentRun(execution.id.name, execution.spec.launch_plan.name, phase, started, duration)


@dataclass(frozen=True)
class RecentRuns:
    """The list `%flyte_watch` shows: a table in Jupyter, text elsewhere (and in the saved notebook)."""

    runs: tuple[RecentRun, ...]
    project: str
    domain: str
    modules: tuple[str, ...]
    backend: str
    of_anything: bool = False  # none found of ``modules``: the latest runs in the project and domain instead

    def __iter__(self):
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index):
        return self.runs[index]

    def _repr_pretty_(self, printer, cycle) -> None:
        from fastreg_magic.widget_text import recent_runs_text

        printer.text(recent_runs_text(self))

    def _repr_html_(self) -> str:
        from fastreg_magic.widget_text import recent_runs_html

        return recent_runs_html(self)
