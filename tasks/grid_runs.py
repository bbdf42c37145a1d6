"""A grid's runs through the Prefect API: read them, cap them, cancel them, read their logs.

Shared by the `grid` flow (flows/grid.py) and the lifecycle commands (`plantcad-flows grid ...`,
plantcad_flows/cli/grid.py). Plain client calls, not tasks: they steer runs rather than compute
anything. What to do with the records is decided in the core (plantcad_flows/grid/runs.py).

The concurrency cap (`max_running`) is a work queue `grid-<project>` in the cell deployment's
pool, with that concurrency limit. The server hands a worker at most that many of the queue's
runs at once (Pending or Running); the others wait Scheduled, holding nothing: no process, no
pod, no GPU. Nothing is acquired by a run, so nothing can be held forever, and a crashed cell
frees its slot when it leaves Running. A worker started on the pool without `--work-queue`
serves every queue of the pool, this one included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterTags,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.exceptions import ObjectNotFound
from prefect.states import State

from plantcad_flows.grid.runs import RunRecord, cell_of, grid_tag

_PAGE = 200


def to_record(run: FlowRun) -> RunRecord:
    state = run.state
    worker = (run.labels or {}).get("prefect.worker.name") or run.work_pool_name
    if worker and run.infrastructure_pid:
        worker = f"{worker} ({run.infrastructure_pid})"  # the process id, or the Kubernetes Job
    return RunRecord(
        id=str(run.id),
        name=run.name,
        cell=cell_of(run.tags),
        state_type=state.type.value if state else "SCHEDULED",
        state_name=state.name if state else "Scheduled",
        created=run.created,
        start=run.start_time,
        end=run.end_time,
        worker=worker,
        message=state.message if state else None,
        idempotency_key=run.idempotency_key,
    )


def grid_runs(project: str) -> list[RunRecord]:
    """Every flow run tagged `grid:<project>`: each cell's runs and the grid flow's own."""
    out: list[RunRecord] = []
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[grid_tag(project)])),
                sort=FlowRunSort.ID_DESC,
                limit=_PAGE,
                offset=offset,
            )
            out.extend(to_record(r) for r in page)
            if len(page) < _PAGE:
                return out
            offset += _PAGE


def read_runs(ids: Iterable[str]) -> list[RunRecord]:
    ids = list(ids)
    if not ids:
        return []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
        )
    return [to_record(r) for r in runs]


def deployment_pool(deployment: str) -> str:
    """The work pool a deployment (`flow/name`) runs on.

    Raises:
        LookupError: no such deployment on the server (naming it and how to create it).
    """
    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(deployment).work_pool_name
        except ObjectNotFound:
            raise LookupError(
                f"deployment {deployment!r} not found on the server: run `plantcad-flows setup`"
            ) from None


def queue_name(project: str) -> str:
    return f"grid-{project}"


def ensure_queue(pool: str, project: str, limit: int) -> str:
    """The work queue `grid-<project>` in `pool`, with concurrency limit `limit` (created or updated)."""
    name = queue_name(project)
    with get_client(sync_client=True) as client:
        try:
            queue = client.read_work_queue_by_name(name, work_pool_name=pool)
        except ObjectNotFound:
            client.create_work_queue(
                name=name,
                work_pool_name=pool,
                concurrency_limit=limit,
                description=f"cells of grid {project}: at most {limit} at once (max_running)",
            )
            return name
        if queue.concurrency_limit != limit:
            client.update_work_queue(queue.id, concurrency_limit=limit)
    return name


def cancel(records: Iterable[RunRecord]) -> list[RunRecord]:
    """Ask the server to cancel each run that is not final; returns those asked.

    A run that has a process or a Job goes to Cancelling, and its worker stops it; one that has
    none yet (Scheduled) goes straight to Cancelled.
    """
    asked = []
    with get_client(sync_client=True) as client:
        for r in records:
            if r.is_final or r.state_type == "CANCELLING":
                continue
            client.set_flow_run_state(r.id, State(type=StateType.CANCELLING, message="grid purge"))
            asked.append(r)
    return asked


def run_logs(flow_run_id: str, tail: int | None = None) -> list[tuple[int, str]]:
    """(level, message) of a run's log, oldest first; only the last `tail` lines if given."""
    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        if tail is not None:
            logs = client.read_logs(log_filter=flt, limit=tail, sort=LogSort.TIMESTAMP_DESC)[::-1]
        else:
            logs, offset = [], 0
            while True:
                page = client.read_logs(
                    log_filter=flt, limit=_PAGE, offset=offset, sort=LogSort.TIMESTAMP_ASC
                )
                logs.extend(page)
                if len(page) < _PAGE:
                    break
                offset += _PAGE
    return [(entry.level, entry.message) for entry in logs]


def watch(
    ids: list[str],
    on_change: Callable[[RunRecord], Any],
    poll_s: float = 5.0,
    stop: Callable[[], bool] = lambda: False,
) -> dict[str, RunRecord]:
    """Poll the runs until every one is final (or `stop()`); `on_change` sees each new state."""
    seen: dict[str, str] = {}
    latest: dict[str, RunRecord] = {}
    while True:
        for r in read_runs(ids):
            latest[r.id] = r
            if seen.get(r.id) != r.state_name:
                seen[r.id] = r.state_name
                on_change(r)
        if (len(latest) == len(ids) and all(r.is_final for r in latest.values())) or stop():
            return latest
        time.sleep(poll_s)
