"""The `zero-shot-eval` flow: models x PlantCAD2 zero-shot splits -> metrics.

The flow only wires tasks together:
1. plan every cell (validation, unsupported cells, what storage already holds) and prove the
   storage prefix is writable, before any data is read or any model loaded;
2. prepare each split that some unfinished cell needs (load, validate, sample); bad data stops
   the run here;
3. submit each unfinished cell's shards to the scoring runner (prefect-ray's `RayTaskRunner`,
   one GPU per shard when the cluster has GPUs), then finalize each cell (merge its shards,
   metrics, plots, `_SUCCESS`) as soon as its shards are in; cells the plan found complete go
   straight to their (cached) finalize step, and
   Ray is not started when no shard needs scoring;
4. collect the results into files and UI artifacts; add them to the history under the prefix,
   alert on regressions against earlier revisions, draw the trends (tasks/history.py);
5. when the config has a `publish:` section and no cell failed, publish the run to the Hugging
   Face hub (tasks/publish.py).
One failing cell does not stop the others; the run ends Failed and names the failed cells.
"""

from __future__ import annotations

from typing import Any

from prefect import allow_failure, flow, get_run_logger
from prefect.context import get_run_context
from prefect.task_runners import ThreadPoolTaskRunner

from plantcad_flows.cluster.env import run_environment
from plantcad_flows.config import EvalConfig
from plantcad_flows.identity import resolve as identities
from plantcad_flows.identity.resolve import Resolution
from plantcad_flows.layout.plan import format_discovery, format_plan, plan_cells, plan_hash
from plantcad_flows.layout.storage import ensure_prefix
from plantcad_flows.results.ledger import RunLedger
from plantcad_flows.results.report import artifact_key, artifact_scope
from tasks.collect import collect_results, publish_artifacts, publish_leaderboard
from tasks.history import publish_reports, record_history, report_keys, trend_report
from tasks.locks import lock_manager
from tasks.policy import task_options
from tasks.progress import Progress, outcome
from tasks.publish import publish_results
from tasks.scoring import scoring_pool
from tasks.steps import finalize_cell, prepare_splits, record_failure


@flow(name="zero-shot-eval", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
def zero_shot_eval(config: EvalConfig, resolution: Resolution | None = None) -> list[dict[str, Any]]:
    """Score every model on every benchmark split of `config` and report the metrics.

    `resolution` is what `plantcad-flows eval` resolved and planned with (hub revisions, content
    fingerprints, checkpoints), so the run neither asks the hub again nor pins a branch that moved
    in between to another commit; without it (a deployment run, a grid cell) the run resolves.
    """
    resolution = resolution if resolution is not None else identities.resolve(config)
    planned = plan_cells(config, resolution)
    get_run_logger().info("plan:\n%s", format_plan(planned, resolution.discoveries))
    ensure_prefix(config.executor.prefix)
    opts = task_options(config.executor.prefix)
    # `executor.locks`: file locks (one host) or Redis leases (several); an unreachable Redis fails here
    locks = lock_manager(config.executor.prefix, config.executor.locks)
    ledger = RunLedger(planned, retry_failed=config.executor.force_run_failed)
    plan = plan_hash(config)
    scope = artifact_scope(plan, [p.cell.model.label for p in planned])
    progress = Progress(ledger, artifact_key("progress", scope))

    prepared, prep_errors = prepare_splits(ledger.to_score, opts, config.force, locks)
    for cell in ledger.to_score:
        if cell.split_job.key in prep_errors:
            ledger.record(cell, error=f"prepare failed: {prep_errors[cell.split_job.key]}")
            record_failure.submit(cell, ledger.results[cell.id].reason).wait()
            progress.cell_done(cell.id)
    to_score = [c for c in ledger.to_score if c.split_job.key in prepared]
    environment, suggested = run_environment()

    with scoring_pool(config, opts, needed=bool(to_score), suggested_workers=suggested, locks=locks) as pool:
        shards = {c.id: pool.submit_shards(c, prepared[c.split_job.key]) for c in to_score}
        for cell_id, futures in shards.items():
            progress.track_shards(cell_id, futures, pool.shard_sizes[cell_id])
        metrics = {
            c.id: finalize_cell.with_options(**opts).submit(
                c,
                [allow_failure(f) for f in shards.get(c.id, [])],
                prepared.get(c.split_job.key),
                config.force,
                config.metrics,
                locks,
            )
            for c in ledger.runnable
            if c.id not in ledger.results
        }
        for cell in ledger.runnable:
            if cell.id in metrics:
                ledger.record(cell, **outcome(metrics[cell.id]))
                progress.cell_done(cell.id)

    info = {
        "prefix": config.executor.prefix,
        "workers": pool.workers,
        "runner": pool.kind,
        "environment": environment,
        "timings": ledger.timings(),
    }
    results, run = ledger.ordered(), get_run_context().flow_run
    try:
        history = record_history(
            results, config.executor.prefix, run.name, str(run.id), config.metrics, plan, config.alerts
        )
        trends = trend_report(results, config.executor.prefix, scope, plan)
        info |= {
            "regressions": history.lines,
            "nothing_new_since": history.nothing_new_since,
            "artifacts": report_keys(results, scope, trends),
            "trends_dir": trends.directory,
            "checkpoints": [line for d in resolution.discoveries for line in format_discovery(d, planned)],
        }
        paths = collect_results(
            results, config.executor.prefix, run.name, plan, info, config.model_dump(mode="json")
        )
        publish_artifacts(results, paths["summary"], scope)
        publish_leaderboard(results, config, paths["run_dir"], scope)
        publish_reports(results, scope, trends)
        progress.finish()
        get_run_logger().info("results written to %s", paths["parquet"])
    except Exception as e:  # the report failed: when cells failed too, say both
        ledger.raise_if_failed(report_error=e)
        raise
    ledger.raise_if_failed()
    if config.publish is not None:  # only a run whose every cell finished is published
        publish_results(config.executor.prefix, run.name, config.publish, scope)
    return [r.model_dump() for r in ledger.ordered()]
