"""The recent runs of a notebook's cells on a backend, newest first: what `%flyte_watch` lists with no run name.

    rows = recent_runs(remote, "flytesnacks", "development", modules=["my_flows"], limit=10)
    rows[0].name, rows[0].target, rows[0].phase, rows[0].started, rows[0].duration
    RecentRuns(rows, ...)            # shown as a table in Jupyter, as text in a terminal and in the saved notebook

A cell's workflows and default launch plans are named after its module (``my_flows.pipeline``), so the
runs of a notebook are the executions whose launch plan name starts with that module. A launch plan
the cell names itself (``LaunchPlan.get_or_create(pipeline, "quad", ...)``) has no module prefix: its
runs are found by their workflow's name instead (``contains(workflow.name,my_flows.)``, the workflow
FlyteAdmin records in each execution's closure), and, for launch plans this kernel registered, by
their names (``value_in(launch_plan.name,quad;...)``: a cell's launch plan may run a workflow of a
module it imports). The backend filters and sorts each list, newest first. The names survive a
kernel restart, a closed notebook and a lost widget state, which is what a user who wants
yesterday's run back needs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable

from fastreg_magic.runs_data import RUN_TERMINAL, phase_name
from fastreg_magic.runs_errors import rpc

DEFAULT_LIMIT = 10  # runs listed when -n is not given
MAX_LIMIT = 100  # FlyteAdmin's usual page size: a longer list would need several pages


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
        named = declared_launch_plans(project, domain, module)
        asked = [filters.Contains("launch_plan.name", [prefix]), filters.Contains("workflow.name", [prefix])]
        if named:
            asked.append(filters.ValueIn("launch_plan.name", sorted(named)))
        for one_filter in asked:  # FlyteAdmin ands the filters of a request: one request for each
            for execution in _list_executions(remote, project, domain, module, one_filter, limit):
                if _is_of_module(execution, prefix, named):
                    found[execution.id.name] = (_created(execution), _row(execution))
    newest_first = sorted(found.values(), key=lambda pair: pair[0], reverse=True)
    return [row for _, row in newest_first[:limit]]


def latest_runs(remote, project: str, domain: str, limit: int = DEFAULT_LIMIT) -> list[RecentRun]:
    """The ``limit`` newest runs in ``project``/``domain``, of anything: what to list when none is found of
    the cells asked about (a cell registered under a ``-m`` name the user does not remember)."""
    return [_row(execution) for execution in _list_executions(remote, project, domain, None, None, limit)]


def declared_launch_plans(project: str, domain: str, module: str) -> frozenset[str]:
    """The names of the launch plans this kernel registered from ``module``'s cells in ``project``/``domain``
    (empty in a fresh kernel: its runs are then found by their workflow's name alone)."""
    from fastreg_magic import api

    return frozenset(
        ref.name
        for registration in list(api._memo.values())
        if registration.module == module and (registration.project, registration.domain) == (project, domain)
        for ref in registration.entities
        if ref.kind == "launch_plan"
    )


def _is_of_module(execution, prefix: str, named: frozenset[str]) -> bool:
    """`contains` also matches ``pkg.my_flows.``: keep the runs whose launch plan or workflow is this module's."""
    launch_plan = execution.spec.launch_plan.name
    workflow = execution.closure.workflow_id.name
    return launch_plan.startswith(prefix) or workflow.startswith(prefix) or launch_plan in named


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
