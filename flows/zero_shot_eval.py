"""The `zero-shot-eval` flow: models x PlantCAD2 zero-shot splits -> metrics.

The flow only wires tasks together:
1. plan every cell (validation, unsupported cells, what storage already holds) and prove the
   storage prefix is writable, before any data is read or any model loaded;
2. prepare each split once (load, validate, sample); bad data stops the run here;
3. cut each cell into shards and score them through the scoring task runner (prefect-ray's
   `RayTaskRunner` by default, one GPU per shard when the cluster has GPUs);
4. merge each cell's shards and compute its metrics as soon as its shards are in;
5. collect the results into files and UI artifacts.
One failing cell does not stop the others; the run ends Failed and names the failed cells.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import get_run_context
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from plantcad_flows.cells import CellStatus, build_cells, format_plan, plan_cells
from plantcad_flows.config import EvalConfig
from plantcad_flows.errors import PlantCADError, ValidationError
from plantcad_flows.execution import PreparedSplit, cell_result, completed_shard_count, record_failure
from plantcad_flows.hashing import short_hash
from plantcad_flows.results import CellResult
from plantcad_flows.sharding import plan_shards
from plantcad_flows.storage import ensure_prefix
from tasks.collect import collect_results, publish_artifacts
from tasks.policy import task_options
from tasks.steps import compute_metrics, prepare_split, score_shard


class EvalFailed(PlantCADError):
    """Some cells failed; the others completed and their results were written."""


def _scoring_runner(config: EvalConfig, suggested_workers: int):
    """The runner for shard scoring, its worker count (None = ask the Ray cluster) and name."""
    if not config.ray.enabled:
        workers = config.compute.num_workers or suggested_workers
        return ThreadPoolTaskRunner(max_workers=workers), workers, "threads"
    from plantcad_flows import raycluster

    return raycluster.make_task_runner(config.ray), None, "ray"


def _config_hash(config: EvalConfig) -> str:
    return short_hash(sorted(c.key for c in build_cells(config)))


@flow(name="zero-shot-eval", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
def zero_shot_eval(config: EvalConfig) -> list[dict[str, Any]]:
    """Score every model on every benchmark split of `config` and report the metrics."""
    logger = get_run_logger()
    planned = plan_cells(config)
    logger.info("plan:\n%s", format_plan(planned))
    ensure_prefix(config.executor.prefix)
    opts = task_options(config.executor.prefix, config.force)
    runnable = [p.cell for p in planned if p.status != CellStatus.UNSUPPORTED]
    results: dict[str, CellResult] = {
        p.cell.id: cell_result(p.cell, "skipped", reason=p.reason)
        for p in planned if p.status == CellStatus.UNSUPPORTED
    }

    # 2. prepare every split first: bad data must stop the run before any model loads
    jobs = {c.split_job.key: c.split_job for c in runnable}
    prep_futures = {k: prepare_split.with_options(**opts).submit(job, config.force) for k, job in jobs.items()}
    prepared: dict[str, PreparedSplit] = {}
    prep_errors: dict[str, BaseException] = {}
    for key, fut in prep_futures.items():
        fut.wait()
        try:
            prepared[key] = fut.result()
        except ValidationError:
            raise
        except Exception as e:  # a split that could not be fetched fails only its cells
            prep_errors[key] = e

    progress = create_progress_artifact(progress=0.0, key="zero-shot-progress",
                                        description="cells finished / cells planned")
    done = len(results)
    total = max(len(planned), 1)
    env, suggested = _environment()
    runner, workers, runner_name = _scoring_runner(config, suggested)
    timings: dict[str, float] = {}
    with runner:
        workers, remote = _cluster_workers(config, runner_name, workers)
        shard_futures: dict[str, list[PrefectFuture]] = {}
        for cell in runnable:
            key = cell.split_job.key
            if key in prep_errors:
                continue
            n = completed_shard_count(cell) or config.ray.num_shards or workers
            shards = plan_shards(prepared[key].num_examples, n)
            shard_futures[cell.id] = [
                _submit(runner, score_shard.with_options(**opts), remote,
                        dict(cell=cell, shard=s, prepared=prepared[key], force=config.force))
                for s in shards
            ]
        metric_futures: dict[str, PrefectFuture] = {}
        for cell in runnable:
            key = cell.split_job.key
            if key in prep_errors:
                record_failure(cell, f"prepare failed: {prep_errors[key]}")
                results[cell.id] = cell_result(cell, "failed", reason=f"prepare failed: {prep_errors[key]}")
                done += 1
                continue
            outputs, error = _gather(shard_futures[cell.id])
            if error is not None:
                record_failure(cell, f"scoring failed: {error}")
                results[cell.id] = cell_result(cell, "failed", reason=f"scoring failed: {error}")
                done += 1
                update_progress_artifact(progress, progress=100.0 * done / total)
                continue
            for o in outputs:
                for k, v in o.timings.items():
                    timings[k] = timings.get(k, 0) + v
            metric_futures[cell.id] = compute_metrics.with_options(**opts).submit(
                cell, outputs, prepared[key], config.force)
        for cell in runnable:
            fut = metric_futures.get(cell.id)
            if fut is None:
                continue
            fut.wait()
            try:
                r = fut.result()
                results[cell.id] = r if fut.state.name != "Cached" else r.model_copy(update={"status": "cached"})
            except Exception as e:
                results[cell.id] = cell_result(cell, "failed", reason=f"metrics failed: {e}")
            done += 1
            update_progress_artifact(progress, progress=100.0 * done / total)

    ordered = [results[p.cell.id] for p in planned]
    run_name = get_run_context().flow_run.name
    info = {"prefix": config.executor.prefix, "workers": workers, "runner": runner_name,
            "environment": env, "timings": timings}
    paths = collect_results(ordered, config.executor.prefix, run_name, _config_hash(config), info)
    publish_artifacts(ordered, paths["summary"])
    update_progress_artifact(progress, progress=100.0)
    logger.info("results written to %s", paths["parquet"])
    failed = [r for r in ordered if r.status == "failed"]
    if failed:
        raise EvalFailed(f"{len(failed)} cell(s) failed: " +
                         "; ".join(f"{r.cell_id} ({r.reason})" for r in failed))
    return [r.model_dump() for r in ordered]


def _submit(runner, task, remote: dict | None, parameters: dict) -> PrefectFuture:
    if remote:
        from prefect_ray.context import remote_options

        with remote_options(**remote):
            return runner.submit(task, parameters=parameters)
    return runner.submit(task, parameters=parameters)


def _gather(futures: list[PrefectFuture]) -> tuple[list, BaseException | None]:
    outputs, error = [], None
    for f in futures:
        f.wait()
        try:
            outputs.append(f.result())
        except Exception as e:
            error = error or e
    return outputs, error


def _cluster_workers(config: EvalConfig, runner_name: str, workers: int | None) -> tuple[int, dict]:
    """Worker count and per-shard resources: from the config, else from the Ray cluster."""
    if runner_name != "ray":
        return workers or 1, {}
    from plantcad_flows import raycluster

    res = raycluster.cluster_resources(config.ray.address)
    n = config.compute.num_workers or raycluster.default_num_workers(res, config.ray.cpus_per_shard)
    return n, raycluster.shard_remote_options(res.num_gpus, config.ray.cpus_per_shard)


def _environment() -> tuple[str, int]:
    """Where this run is (for the summary) and the worker count that environment suggests."""
    try:
        from plantcad_flows.cluster_env import detect

        r = detect()
        gpus = f"{r.gpus_per_host} x {r.gpu_model}" if r.gpus_per_host else "no GPU"
        return (f"{r.kind}, {len(r.hosts)} host(s), {gpus} per host, "
                f"suggested workers {r.num_workers}"), max(1, r.num_workers)
    except Exception as e:  # the report is informative only; never fail a run over it
        logging.getLogger(__name__).warning("environment detection failed: %s", e)
        return "unknown", 1
