"""After a run's cells are in: add them to the history, alert on regressions, draw the trends.

* `record-history` writes this run's history file, compares every cell this run scored with the
  previous revision of its model family and the best so far (paired bootstrap), and emits one
  Prefect event `plantcad.eval.regression` per regressed cell; an automation created by
  `plantcad-flows setup` turns each event into a webhook call. On a run that scored nothing it
  says since when there has been nothing new.
* `trend-report` redraws the trend plots whose data changed and builds the leaderboard.
* `publish_reports` (called from the flow, so the UI shows them under the run) puts the curves,
  trends and leaderboard in artifacts whose keys are scoped by the config.
These tasks run every time (no cache): they describe this run.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel

from plantcad_flows.config import AlertsConfig, MetricsConfig
from plantcad_flows.layout.storage import to_path
from plantcad_flows.results.history import (
    family_of,
    history_rows,
    newest_result_time,
    read_history,
    write_history,
)
from plantcad_flows.results.progress import CONSOLE
from plantcad_flows.results.regression import EVENT, find_regressions
from plantcad_flows.results.report import (
    artifact_key,
    curves_markdown,
    trend_markdown,
    trends_index_markdown,
)
from plantcad_flows.results.table import CellResult
from plantcad_flows.results.trends import TRENDS_DIR, TrendPlot, leaderboard, trend_plots, trend_rows
from tasks.policy import RETRY_OPTIONS

_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False, **RETRY_OPTIONS}


class HistoryUpdate(BaseModel):
    path: str | None  # None: no cell finished, no file written
    rows: int
    regressions: list[dict[str, Any]] = []
    lines: list[str] = []  # one readable line per regression
    nothing_new_since: str | None = None


class TrendReport(BaseModel):
    directory: str
    plots: list[dict[str, Any]] = []
    leaderboard: list[dict[str, Any]] = []


@task(name="record-history", **_OPTIONS)
def record_history(
    results: list[CellResult],
    prefix: str,
    run_name: str,
    run_id: str,
    metrics: MetricsConfig,
    plan: str,
    alerts: AlertsConfig = AlertsConfig(),
) -> HistoryUpdate:
    rows = history_rows(results, run_id, run_name, plan=plan)
    path = write_history(prefix, run_name, rows) if len(rows) else None
    history = read_history(prefix)
    logger = get_run_logger()
    since = None
    # every cell served from cache (none scored, none failed): say since when nothing is new
    if any(r.status == "cached" for r in results) and all(r.status in ("cached", "skipped") for r in results):
        newest = newest_result_time(history, [r.cell_key for r in results if r.cell_key])
        since = newest.strftime("%Y-%m-%d %H:%M UTC") if newest is not None else "never"
        logger.info("nothing new since %s: every cell came from cache", since, extra={CONSOLE: True})
    found = find_regressions(results, history, metrics.bootstrap, metrics.seed, alerts.min_drop)
    payloads = [r.payload(metrics.bootstrap, metrics.seed) for r in found]
    for reg, payload in zip(found, payloads):
        logger.warning("regression: %s", reg.line(), extra={CONSOLE: True})  # shown even when quiet
        emit_event(
            event=EVENT,
            resource={
                "prefect.resource.id": f"plantcad.cell.{reg.cell_key}",
                "prefect.resource.name": reg.cell_id,
                "plantcad.model-family": family_of(reg.model),
            },
            payload=payload,
        )
    return HistoryUpdate(
        path=path,
        rows=len(rows),
        regressions=payloads,
        lines=[r.line() for r in found],
        nothing_new_since=since,
    )


@task(name="trend-report", **_OPTIONS)
def trend_report(results: list[CellResult], prefix: str, scope: str, plan: str) -> TrendReport:
    directory = str(to_path(prefix) / TRENDS_DIR / scope)
    families, pairs = {family_of(r.model) for r in results}, {(r.task, r.split) for r in results}
    rows = trend_rows(read_history(prefix), families, pairs, plan)
    plots = trend_plots(rows, directory)
    return TrendReport(directory=directory, plots=[asdict(p) for p in plots], leaderboard=leaderboard(rows))


def report_keys(results: list[CellResult], scope: str, trends: TrendReport) -> dict[str, Any]:
    """The artifact keys this run publishes to, and only those: curves for tasks with a cell
    scored now, the trend index when there are plots, the leaderboard when it has rows (a
    summary that named the others would point at artifacts that do not exist)."""
    scored = {r.task for r in results if r.status == "completed" and r.plots}
    keys: dict[str, Any] = {"curves": {t: artifact_key("curves", scope, t) for t in sorted(scored)}}
    if trends.plots:
        keys["trends"] = artifact_key("trends", scope)
    if trends.leaderboard:
        keys["leaderboard"] = artifact_key("leaderboard", scope)
    return keys


def publish_reports(results: list[CellResult], scope: str, trends: TrendReport) -> None:
    """Curves (per task scored in this run), trends (per task with a redrawn plot: all of that
    task's plots), the trend index and the leaderboard; embedded PNGs, so the UI shows them
    without the files."""
    keys = report_keys(results, scope, trends)
    for task_name, key in keys["curves"].items():
        cells = [r for r in results if r.task == task_name and r.plots]
        create_markdown_artifact(
            key=key, markdown=curves_markdown(task_name, cells), description=f"ROC / PR curves of {task_name}"
        )
    plots = [TrendPlot(**p) for p in trends.plots]
    for task_name in sorted({p.task for p in plots if p.redrawn}):
        create_markdown_artifact(
            key=artifact_key("trend", scope, task_name),
            markdown=trend_markdown(task_name, [p for p in plots if p.task == task_name]),
            description=f"trends of {task_name}",
        )
    if "trends" in keys:
        create_markdown_artifact(
            key=keys["trends"],
            markdown=trends_index_markdown(plots, scope, trends.directory),
            description="trend plots of this evaluation",
        )
    if "leaderboard" in keys:
        create_table_artifact(
            key=keys["leaderboard"],
            table=trends.leaderboard,
            description="latest result per model family (main metric, 95% CI)",
        )
