"""The last step of a run: write the results files and show the run in the Prefect UI
(results table, markdown summary with curves and cache status, final progress)."""

from __future__ import annotations

import datetime as dt

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from plantcad_flows.layout.storage import to_path, write_bytes_atomic
from plantcad_flows.results.pivot import pivot_markdown
from plantcad_flows.results.report import artifact_key, results_title
from plantcad_flows.results.summary import render_summary
from plantcad_flows.results.table import CellResult, long_table, rows, write_results
from tasks.policy import RETRY_OPTIONS


@task(name="collect-results", **RETRY_OPTIONS)
def collect_results(
    results: list[CellResult], prefix: str, run_name: str, config_hash: str, run_info: dict
) -> dict[str, str]:
    """Write results under `runs/{run_name}` and `latest/{config_hash}`; publish artifacts."""
    run_dir = str(to_path(prefix) / "runs" / run_name)
    latest_dir = str(to_path(prefix) / "latest" / config_hash)
    paths = write_results(run_dir, results)
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
