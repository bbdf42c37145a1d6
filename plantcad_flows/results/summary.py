"""The run's markdown summary: regressions first, then what ran, what came from cache, what was
skipped and why (next to the status), the pivoted results with their intervals, where the
outputs live (a cell by its folder's name), the stage timings of what this run scored, and
where the curves and trend plots are embedded."""

from __future__ import annotations

from typing import Any

from plantcad_flows.results.pivot import pivot_markdown
from plantcad_flows.results.table import CellResult


def render_summary(results: list[CellResult], info: dict[str, Any]) -> str:
    by_status: dict[str, list[CellResult]] = {}
    for r in results:
        by_status.setdefault(r.status, []).append(r)
    counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_status.items()))
    lines = ["# zero-shot-eval", ""]
    regressions = info.get("regressions") or []
    if regressions:
        lines += [f"## Regressions ({len(regressions)})", ""]
        lines += [f"- {line}" for line in regressions]
        lines.append("")
    if info.get("nothing_new_since"):
        lines += [f"**Nothing new since {info['nothing_new_since']}**: every cell came from cache.", ""]
    lines += [
        f"**Cells:** {len(results)} ({counts})  ",
        f"**Storage prefix:** `{info.get('prefix')}`  ",
        f"**Results:** `{info.get('results')}` (latest for this config: `{info.get('latest')}`)  ",
        f"**Workers:** {info.get('workers')} ({info.get('runner')}); environment: {info.get('environment')}  ",
        f"**Finished:** {info.get('finished')}",
        "",
        *_checkpoints(info.get("checkpoints") or []),
        "## Results (the family's main metric, 95% bootstrap CI)",
        "",
        pivot_markdown(results),
        "## Cells",
        "",
        "| cell | status | reason | folder |",
        "|---|---|---|---|",
    ]
    for r in results:
        folder = (r.output_dir or "").rstrip("/").rsplit("/", 1)[-1]
        lines.append(f"| {r.cell_id} | {r.status} | {r.reason or ''} | `{folder}` |")
    lines += ["", *_timings(info.get("timings") or {}, sum(r.status == "completed" for r in results))]
    artifacts = info.get("artifacts") or {}
    if artifacts.get("curves"):
        lines += ["", "## Curves", "", "ROC / PR curves are embedded, one artifact per task:", ""]
        lines += [f"- {task}: `{key}`" for task, key in artifacts["curves"].items()]
    if artifacts.get("trends"):
        lines += [
            "",
            "## Trends",
            "",
            f"Index `{artifacts['trends']}`"
            + (f", leaderboard `{artifacts['leaderboard']}`" if artifacts.get("leaderboard") else "")
            + f"; PNG files under `{info.get('trends_dir', '')}`.",
        ]
    return "\n".join(lines) + "\n"


def _checkpoints(lines: list[str]) -> list[str]:
    """What checkpoint discovery found: new, scored and skipped (half-written) checkpoints."""
    return ["## Checkpoints", "", "```", *lines, "```", ""] if lines else []


def _timings(timings: dict, scored: int) -> list[str]:
    if not scored or not timings:
        return [
            "## Input pipeline",
            "",
            "Nothing was scored in this run: every cell with a result came from cache, and stage "
            "timings belong to the run that scored it.",
        ]
    lines = [
        f"## Input pipeline (seconds, summed over the shards of the {scored} cell(s) scored in this run)",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    return lines + [
        f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in timings.items()
    ]
