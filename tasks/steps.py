"""The pipeline's Prefect tasks: prepare a split, score a shard, compute a cell's metrics,
collect the results. Each wraps one function of `plantcad_flows.execution` in a few lines;
retries and cache keys come from `tasks.policy`.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from plantcad_flows import execution
from plantcad_flows.cells import Cell, SplitJob
from plantcad_flows.execution import PreparedSplit, ShardOutput, shard_path
from plantcad_flows.results import CellResult
from plantcad_flows.sharding import ShardSpec
from plantcad_flows.storage import is_complete, to_path
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
    return content_key(cell.prefix, f"compute_metrics-{cell.key}", execution.cell_is_complete(cell))


@task(name="prepare-split", task_run_name="prepare {job.split.task}/{job.split.split}",
      cache_key_fn=_prepare_key, **RETRY_OPTIONS)
def prepare_split(job: SplitJob, force: bool = False) -> PreparedSplit:
    return execution.prepare(job, force=force)


@task(name="score-shard",
      task_run_name="score {cell.model.label}/{cell.split.task}/{cell.split.split} shard {shard.index}",
      cache_key_fn=_shard_key, **RETRY_OPTIONS)
def score_shard(cell: Cell, shard: ShardSpec, prepared: PreparedSplit, force: bool = False) -> ShardOutput:
    return execution.score_shard(cell, shard, prepared, force=force)


@task(name="compute-metrics", task_run_name="metrics {cell.model.label}/{cell.split.task}/{cell.split.split}",
      cache_key_fn=_cell_key, **RETRY_OPTIONS)
def compute_metrics(cell: Cell, shards: list[ShardOutput], prepared: PreparedSplit,
                    force: bool = False) -> CellResult:
    return execution.finalize_cell(cell, shards, prepared, force=force)
