"""The run's markdown summary: what ran, what came from cache, what was skipped and why,
where every output lives, the input-pipeline timings and the ROC / PR curves."""

from __future__ import annotations

from typing import Any

from plantcad_flows.results.table import CellResult, format_table


def render_summary(results: list[CellResult], info: dict[str, Any]) -> str:
    by_status: dict[str, list[CellResult]] = {}
    for r in results:
        by_status.setdefault(r.status, []).append(r)
    counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_status.items()))
    lines = [
        "# zero-shot-eval",
        "",
        f"**Cells:** {len(results)} ({counts})  ",
        f"**Storage prefix:** `{info.get('prefix')}`  ",
        f"**Results:** `{info.get('results')}` (latest for this config: `{info.get('latest')}`)  ",
        f"**Workers:** {info.get('workers')} ({info.get('runner')}); environment: {info.get('environment')}  ",
        f"**Finished:** {info.get('finished')}",
        "",
        "## Results",
        "",
        "```",
        format_table([r for r in results if r.metrics]),
        "```",
        "",
        "## Cells",
        "",
        "| cell | status | output | note |",
        "|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r.cell_id} | {r.status} | `{r.output_dir or ''}` | {r.reason or ''} |")
    timings = info.get("timings") or {}
    if timings:
        lines += [
            "",
            "## Input pipeline (seconds, summed over shards scored in this run)",
            "",
            "| stage | seconds |",
            "|---|---|",
        ]
        lines += [
            f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in timings.items()
        ]
    plots = [(r.cell_id, p) for r in results for p in r.plots]
    if plots:
        lines += ["", "## Curves", ""]
        for cell_id, p in plots:
            name = p.rsplit("/", 1)[-1].removesuffix(".png").upper()
            lines.append(f"- {cell_id} {name}: `{p}`")
    return "\n".join(lines) + "\n"
