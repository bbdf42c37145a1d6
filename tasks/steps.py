"""The pipeline's Prefect tasks: prepare a split, score a shard, finish a cell (or record its
failure). Each wraps one function of `plantcad_flows.steps` in a few lines; retries, cache keys
and result persistence come from `tasks.policy`.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from plantcad_flows import steps
from plantcad_flows.layout.plan import Cell, SplitJob, cell_is_complete
from plantcad_flows.layout.sharding import ShardSpec
from plantcad_flows.layout.storage import is_complete, to_path
from plantcad_flows.results.table import CellResult
from plantcad_flows.steps import PreparedSplit, ShardOutput, shard_path
from tasks.policy import RETRY_OPTIONS, content_key


def _prepare_key(ctx: Any, params: dict[str, Any]) -> str | None:
    job: SplitJob = params["job"]
    return content_key(job.prefix, f"prepare_split-{job.key}", is_complete(to_path(job.dir)))


def _shard_key(ctx: Any, params: dict[str, Any]) -> str | None:
    cell: Cell = params["cell"]
    shard: ShardSpec = params["shard"]
    key = f"score_shard-{cell.key}-{shard.index:05d}-of-{shard.count:05d}"
    return content_key(cell.prefix, key, to_path(shard_path(cell, shard)).exists())


def _cell_key(ctx: Any, params: dict[str, Any]) -> str | None:
    cell: Cell = params["cell"]
    return content_key(cell.prefix, f"compute_metrics-{cell.key}", cell_is_complete(cell))


@task(
    name="prepare-split",
    task_run_name="prepare {job.split.task}/{job.split.split}",
    cache_key_fn=_prepare_key,
    **RETRY_OPTIONS,
)
def prepare_split(job: SplitJob, force: bool = False) -> PreparedSplit:
    return steps.prepare(job, force=force)


@task(
    name="score-shard",
    task_run_name="score {cell.model.label}/{cell.split.task}/{cell.split.split} shard {shard.index}",
    cache_key_fn=_shard_key,
    **RETRY_OPTIONS,
)
def score_shard(cell: Cell, shard: ShardSpec, prepared: PreparedSplit, force: bool = False) -> ShardOutput:
    return steps.score_shard(cell, shard, prepared, force=force)


@task(
    name="compute-metrics",
    task_run_name="metrics {cell.model.label}/{cell.split.task}/{cell.split.split}",
    cache_key_fn=_cell_key,
    **RETRY_OPTIONS,
)
def compute_metrics(
    cell: Cell, shards: list[ShardOutput | BaseException], prepared: PreparedSplit | None, force: bool = False
) -> CellResult:
    return steps.finalize_cell(cell, shards, prepared, force=force)


@task(name="record-failure", task_run_name="failed {cell.model.label}/{cell.split.task}/{cell.split.split}")
def record_failure(cell: Cell, reason: str) -> CellResult:
    return steps.record_failure(cell, reason)


def prepare_splits(
    cells: list[Cell], options: dict[str, Any], force: bool
) -> tuple[dict[str, PreparedSplit], dict[str, BaseException]]:
    """Prepare every split these cells need, once each, and wait for all of them.

    Bad data (`ValidationError`) stops the run here, before any model loads; a split that could
    not be fetched fails only its own cells (returned in the second dict, by split key).
    """
    from plantcad_flows.errors import ValidationError

    jobs = {c.split_job.key: c.split_job for c in cells}
    futures = {k: prepare_split.with_options(**options).submit(job, force) for k, job in jobs.items()}
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
