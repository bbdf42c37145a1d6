"""The pipeline's Prefect tasks: prepare a split, score a shard, finish a cell (or record its
failure). Each wraps one function of `plantcad_flows.steps` in a few lines, under the step's lock
(`tasks/locks.step_lock`), so two runs on one prefix compute each step once. Whether a step is
done is decided by its files alone (the step functions check them); a step found complete
returns a "Cached" state (`tasks/policy.reused`). Prefect's own cache is off: it would be a
second authority to keep in step with the files.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.locking.protocol import LockManager

from plantcad_flows import steps
from plantcad_flows.config import MetricsConfig
from plantcad_flows.layout.plan import Cell, SplitJob
from plantcad_flows.layout.sharding import ShardSpec
from plantcad_flows.results.table import CellResult
from plantcad_flows.results.uncertainty import with_intervals
from plantcad_flows.steps import PreparedSplit, ShardOutput
from tasks.locks import step_lock
from tasks.policy import RETRY_OPTIONS, reused

# Each result persists under its own task run's id: a record to read back, never a cache entry
# (a key no earlier run can have written; with a storage key Prefect uses no cache policy).
STEP_OPTIONS: dict[str, Any] = {"result_storage_key": "{task_run.task_name}-{task_run.id}", **RETRY_OPTIONS}


@task(name="prepare-split", task_run_name="prepare {job.split.task}/{job.split.split}", **STEP_OPTIONS)
def prepare_split(job: SplitJob, force: bool = False, locks: LockManager | None = None) -> PreparedSplit:
    with step_lock(job.prefix, locks, f"prepare_split-{job.key}"):
        was_complete = not force and steps.prepared_ok(job)
        return reused(steps.prepare(job, force=force), was_complete)


@task(
    name="score-shard",
    task_run_name="score {cell.id} shard {shard.index}",
    **STEP_OPTIONS,
)
def score_shard(
    cell: Cell,
    shard: ShardSpec,
    prepared: PreparedSplit,
    force: bool = False,
    locks: LockManager | None = None,
) -> ShardOutput:
    with step_lock(cell.prefix, locks, f"score_shard-{cell.key}-{shard.index:05d}-of-{shard.count:05d}"):
        out = steps.score_shard(cell, shard, prepared, force=force)
    return reused(out, not out.computed)


@task(
    name="finalize-cell",
    task_run_name="finalize {cell.id}",
    **STEP_OPTIONS,
)
def finalize_cell(
    cell: Cell,
    shards: list[ShardOutput | BaseException],
    prepared: PreparedSplit | None,
    force: bool = False,
    metrics: MetricsConfig | None = None,
    locks: LockManager | None = None,
) -> CellResult:
    """Merge the shards, compute metrics and intervals, draw curves, mark the cell complete."""
    m = metrics or MetricsConfig()
    with step_lock(cell.prefix, locks, f"finalize_cell-{cell.key}"):
        result = with_intervals(steps.finalize_cell(cell, shards, prepared, force=force), m.bootstrap, m.seed)
    return reused(result, result.status == "cached")


@task(
    name="record-failure",
    cache_policy=NO_CACHE,
    persist_result=False,
    task_run_name="failed {cell.id}",
)
def record_failure(cell: Cell, reason: str) -> CellResult:
    return steps.record_failure(cell, reason)


def prepare_splits(
    cells: list[Cell], options: dict[str, Any], force: bool, locks: LockManager | None = None
) -> tuple[dict[str, PreparedSplit], dict[str, BaseException]]:
    """Prepare every split these cells need, once each, and wait for all of them.

    Bad data (`ValidationError`) stops the run here, before any model loads; a split that could
    not be fetched fails only its own cells (returned in the second dict, by split key).
    """
    from plantcad_flows.errors import ValidationError

    jobs = {c.split_job.key: c.split_job for c in cells}
    task = prepare_split.with_options(**options)
    futures = {k: task.submit(job, force, locks) for k, job in jobs.items()}
    prepared: dict[str, PreparedSplit] = {}
    errors: dict[str, BaseException] = {}
    for key, fut in futures.items():
        fut.wait()
        try:
            prepared[key] = fut.result()
        except ValidationError:
            raise
        except Exception as e:
            errors[key] = e
    return prepared, errors
