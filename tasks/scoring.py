"""Where shards are scored: prefect-ray's task runner on a Ray cluster, or local threads.

`scoring_pool` enters the runner only when some shard needs scoring (a fully cached run never
starts Ray), sizes the work from the cluster (one shard per GPU, else per `cpus_per_shard`
CPUs) and submits each shard with the Ray resources it asks for. Cells whose shard files were
written with another shard count keep that count, so surviving shards are reused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from plantcad_flows.cluster import ray_client
from plantcad_flows.config import EvalConfig
from plantcad_flows.layout.plan import Cell, completed_shard_count
from plantcad_flows.layout.sharding import plan_shards
from plantcad_flows.steps import PreparedSplit
from tasks.steps import score_shard


@dataclass
class ScoringPool:
    config: EvalConfig
    options: dict[str, Any]
    locks: Any = None  # the run's lock manager (tasks/locks.py), passed to every shard task
    runner: TaskRunner | None = None
    kind: str = "none"  # ray | threads | none (nothing to score)
    workers: int = 0
    remote: dict[str, Any] = field(default_factory=dict)
    shard_sizes: dict[str, list[int]] = field(default_factory=dict)  # cell id -> examples per shard

    def submit_shards(self, cell: Cell, prepared: PreparedSplit) -> list[PrefectFuture]:
        """One score-shard task per shard of `cell`, on this pool's runner."""
        n = completed_shard_count(cell) or self.config.ray.num_shards or self.workers
        task = score_shard.with_options(**self.options)
        locks, force = self.locks, self.config.force
        specs = plan_shards(prepared.num_examples, n)
        self.shard_sizes[cell.id] = [s.size for s in specs]
        return [
            self._submit(task, dict(cell=cell, shard=s, prepared=prepared, force=force, locks=locks))
            for s in specs
        ]

    def _submit(self, task, parameters: dict[str, Any]) -> PrefectFuture:
        if self.remote:
            from prefect_ray.context import remote_options

            with remote_options(**self.remote):
                return self.runner.submit(task, parameters=parameters)
        return self.runner.submit(task, parameters=parameters)


@contextmanager
def scoring_pool(
    config: EvalConfig, options: dict[str, Any], needed: bool, suggested_workers: int, locks: Any = None
) -> Iterator[ScoringPool]:
    """The runner for this run's shards, entered only if `needed`."""
    pool = ScoringPool(config, options, locks)
    if not needed:
        yield pool
        return
    if not config.ray.enabled:
        pool.workers = config.compute.num_workers or suggested_workers
        pool.kind, pool.runner = "threads", ThreadPoolTaskRunner(max_workers=pool.workers)
        with pool.runner:
            yield pool
        return
    from tasks.ray_runner import PlantcadRayTaskRunner

    pool.kind, pool.runner = "ray", PlantcadRayTaskRunner(config.ray)
    with pool.runner:
        res = ray_client.cluster_resources(config.ray.address)
        pool.workers = config.compute.num_workers or ray_client.default_num_workers(
            res, config.ray.cpus_per_shard
        )
        pool.remote = ray_client.shard_remote_options(res.num_gpus, config.ray.cpus_per_shard)
        yield pool
