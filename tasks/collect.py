"""The last step of a run: write the results files and show the run in the Prefect UI
(results table, markdown summary with curves and cache status, the leaderboard view, final
progress)."""

from __future__ import annotations

import datetime as dt

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from plantcad_flows.config import EvalConfig
from plantcad_flows.families import builtin_tasks
from plantcad_flows.layout.storage import to_path, write_bytes_atomic, write_json_atomic
from plantcad_flows.results.leaderboard import build_views, summary_markdown, write_views
from plantcad_flows.results.pivot import pivot_markdown
from plantcad_flows.results.report import artifact_key, results_title
from plantcad_flows.results.summary import render_summary
from plantcad_flows.results.table import CellResult, long_table, rows, write_results
from tasks.policy import RETRY_OPTIONS


@task(name="collect-results", **RETRY_OPTIONS)
def collect_results(
    results: list[CellResult],
    prefix: str,
    run_name: str,
    config_hash: str,
    run_info: dict,
    config: dict | None = None,
) -> dict[str, str]:
    """Write results under `runs/{run_name}` and `latest/{config_hash}`; publish artifacts.
    `config`, the run's config as JSON, is kept beside its results (`config.json`): what a
    publish of the run uploads with them."""
    run_dir = str(to_path(prefix) / "runs" / run_name)
    latest_dir = str(to_path(prefix) / "latest" / config_hash)
    paths = write_results(run_dir, results)
    if config is not None:
        write_json_atomic(to_path(run_dir) / "config.json", config)
    latest = write_results(latest_dir, results)
    summary = render_summary(
        results,
        run_info
        | {
            "results": paths["parquet"],
            "latest": latest["parquet"],
            "finished": dt.datetime.now(dt.UTC).isoformat(),
        },
    )
    write_bytes_atomic(to_path(run_dir) / "summary.md", summary.encode())
    return {"run_dir": run_dir, "latest_dir": latest_dir, "summary": summary, **paths}


def publish_artifacts(results: list[CellResult], summary: str, scope: str) -> None:
    """Results table, pivoted table and summary on the flow run itself (called from the flow,
    so the UI shows them under the run rather than under the collect task). Keys are scoped by
    the config (`results.report.artifact_scope`), so unrelated configs never share a history."""
    if rows(results):
        create_table_artifact(
            key=artifact_key("results", scope),
            table=long_table(results),
            description=f"{results_title(results)}: {len(rows(results))} rows, 95% bootstrap CI",
        )
        create_markdown_artifact(
            key=artifact_key("pivot", scope),
            markdown=pivot_markdown(results),
            description="model x split, each family's main metric per task (95% CI)",
        )
    create_markdown_artifact(
        key=artifact_key("summary", scope),
        markdown=summary,
        description="Regressions, what ran, what came from cache, what was skipped and why",
    )


def publish_leaderboard(results: list[CellResult], config: EvalConfig, run_dir: str, scope: str) -> list[str]:
    """The leaderboard view of this run (`plantcad-flows leaderboard`): its files under
    `{run_dir}/leaderboard*/` and one markdown artifact, when some result is a leaderboard task
    (the task definitions are the config's own, so a user's task files count too). Returns the
    files written (none when nothing is on a leaderboard)."""
    tasks = dict(builtin_tasks()) | {s.definition.name: s.definition for s in config.splits}
    views = build_views(rows(results), tasks)
    if not views:
        return []
    revisions = {r.dataset_revision for r in results if r.dataset_revision}
    provenance = {
        "condition": f"{config.compute.device_type}/{config.compute.precision}",
        "sampling": {
            "seed": config.sampling.seed,
            "method": f"shuffled with seed, rate={config.sampling.rate}, max_size={config.sampling.max_size}",
            "dataset_revision": revisions.pop() if len(revisions) == 1 else None,
        },
    }
    written = write_views(run_dir, views, provenance)
    create_markdown_artifact(
        key=artifact_key("board", scope),
        markdown="\n".join(summary_markdown(v) for v in views),
        description="Leaderboard view: best of forward / reverse complement per task, group means, composite",
    )
    return [p for paths in written.values() for p in paths]
