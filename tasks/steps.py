"""The pipeline's Prefect tasks: prepare a split, score a shard, finish a cell (or record its
failure). Each wraps one function of `plantcad_flows.steps` in a few lines; retries, cache keys
and result persistence come from `tasks.policy`.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import CachePolicy

from plantcad_flows import steps
from plantcad_flows.config import MetricsConfig
from plantcad_flows.layout.plan import Cell, SplitJob, cell_is_complete
from plantcad_flows.layout.sharding import ShardSpec
from plantcad_flows.results.table import CellResult
from plantcad_flows.results.uncertainty import with_intervals
from plantcad_flows.steps import PreparedSplit, ShardOutput
from tasks.policy import RETRY_OPTIONS, content_key, locks_of, with_run_options


# Each key is dropped (the step runs again) unless the step's files match their integrity records.
# The tasks take a cache *policy* (not cache_key_fn, which would override it) so that
# `with_run_options` can make it SERIALIZABLE under the run's lock manager.
def _prepare_key(ctx: Any, params: dict[str, Any]) -> str | None:
    job: SplitJob = params["job"]
    return content_key(job.prefix, f"prepare_split-{job.key}", lambda: steps.prepared_ok(job), locks_of(ctx))


def _shard_key(ctx: Any, params: dict[str, Any]) -> str | None:
    cell: Cell = params["cell"]
    shard: ShardSpec = params["shard"]
    key = f"score_shard-{cell.key}-{shard.index:05d}-of-{shard.count:05d}"
    return content_key(cell.prefix, key, lambda: steps.shard_done(cell, shard), locks_of(ctx))


def _cell_key(ctx: Any, params: dict[str, Any]) -> str | None:
    cell: Cell = params["cell"]
    # the resampling changes the intervals, never the scores: it keys this step only
    m: MetricsConfig = params.get("metrics") or MetricsConfig()
    key = f"finalize_cell-{cell.key}-b{m.bootstrap}-s{m.seed}"
    return content_key(cell.prefix, key, lambda: cell_is_complete(cell), locks_of(ctx))


@task(
    name="prepare-split",
    task_run_name="prepare {job.split.task}/{job.split.split}",
    cache_policy=CachePolicy.from_cache_key_fn(_prepare_key),
    **RETRY_OPTIONS,
)
def prepare_split(job: SplitJob, force: bool = False) -> PreparedSplit:
    return steps.prepare(job, force=force)


@task(
    name="score-shard",
    task_run_name="score {cell.model.label}/{cell.split.task}/{cell.split.split} shard {shard.index}",
    cache_policy=CachePolicy.from_cache_key_fn(_shard_key),
    **RETRY_OPTIONS,
)
def score_shard(cell: Cell, shard: ShardSpec, prepared: PreparedSplit, force: bool = False) -> ShardOutput:
    return steps.score_shard(cell, shard, prepared, force=force)


@task(
    name="finalize-cell",
    task_run_name="finalize {cell.model.label}/{cell.split.task}/{cell.split.split}",
    cache_policy=CachePolicy.from_cache_key_fn(_cell_key),
    **RETRY_OPTIONS,
)
def finalize_cell(
    cell: Cell,
    shards: list[ShardOutput | BaseException],
    prepared: PreparedSplit | None,
    force: bool = False,
    metrics: MetricsConfig | None = None,
) -> CellResult:
    m = metrics or MetricsConfig()
    return with_intervals(steps.finalize_cell(cell, shards, prepared, force=force), m.bootstrap, m.seed)


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
    task = with_run_options(prepare_split, options)
    futures = {k: task.submit(job, force) for k, job in jobs.items()}
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
