"""What the Prefect UI shows of a run, as plain data: artifact keys, and markdown that embeds
the curves and trend plots as base64 `data:image/png` URIs (the UI renders them; it cannot open
a path on the worker's disk), one artifact per task or per plot to keep each one small.

Artifact keys are scoped by the config as declared (`layout.plan.plan_hash`: models, checkpoint
entries, splits, sampling, precision, code version) and lead with the sweep's name, so unrelated
configs never share a key while the same config keeps one key across nights and across the
checkpoints a sweep adds: the UI's version history of a key is then the history of one
evaluation. Keys hold lowercase letters, digits and dashes only (Prefect's rule).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

from plantcad_flows.families import builtin_tasks
from plantcad_flows.layout.storage import to_path
from plantcad_flows.results.history import family_of
from plantcad_flows.results.table import CellResult
from plantcad_flows.results.trends import TrendPlot

KEY_PREFIX = "zero-shot"


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")[:limit].strip("-")


def artifact_scope(plan: str, model_labels: Iterable[str] = ()) -> str:
    """The name of the evaluation a config declares: its plan hash, led by the name of its
    sweep(s) (the family of its `{name}@step-{N}` models) for a reader of the UI."""
    sweeps = sorted({family_of(m) for m in model_labels if family_of(m) != m})
    return slug("-".join([*(slug(s, 24) for s in sweeps[:2]), plan]), limit=80)


def artifact_key(kind: str, scope: str, *parts: str) -> str:
    """`zero-shot-{kind}-{scope}[-{parts}]`, made a valid artifact key."""
    return slug("-".join([KEY_PREFIX, kind, scope, *parts]), limit=200)


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def image_markdown(title: str, data: bytes, location: str) -> str:
    """An embedded PNG with a line naming where its file is."""
    return f"![{title}]({png_data_uri(data)})\n\nfile: `{location}`\n"


def curves_markdown(task: str, results: list[CellResult]) -> str:
    """Every ROC / PR curve of one task's cells, embedded."""
    lines = [f"# ROC / PR curves: {task}", ""]
    for r in results:
        for p in r.plots:
            path = to_path(p)
            if not path.exists():
                continue
            kind = path.name.removesuffix(".png").upper()
            lines += [f"## {r.model} - {r.split} - {kind}", "", image_markdown(kind, path.read_bytes(), p)]
    return "\n".join(lines)


def trend_markdown(task: str, plots: list[TrendPlot]) -> str:
    """Every trend plot of one task (each split and metric), embedded: one artifact per task, as
    for the curves, so a run's artifact list stays short however many splits it has."""
    lines = [f"# Trends: {task}", ""]
    for p in plots:
        path = to_path(p.path)
        if not path.exists():
            continue
        title = f"{p.split} / {p.metric}"
        lines += [f"## {title}", "", image_markdown(f"{task} / {title}", path.read_bytes(), p.path)]
    return "\n".join(lines)


def trends_index_markdown(plots: list[TrendPlot], scope: str, directory: str) -> str:
    """The stable-key index of the trend plots: each plot's artifact key and file."""
    lines = [
        "# Trends",
        "",
        f"Value against checkpoint step (sweeps) or date (nightly), 95% bootstrap bands. "
        f"PNG files under `{directory}`; each task's plots are embedded in one artifact.",
        "",
        "| task | split | metric | artifact | file |",
        "|---|---|---|---|---|",
    ]
    for p in plots:
        key = artifact_key("trend", scope, p.task)
        lines.append(f"| {p.task} | {p.split} | {p.metric} | `{key}` | `{p.path}` |")
    return "\n".join(lines) + "\n"


def results_title(results: list[CellResult]) -> str:
    """What the results artifact is titled: "PlantCAD2 zero-shot results" only when every task
    is one of the built-in PlantCAD2 tasks; a run of the user's own tasks names them."""

    builtin = set(builtin_tasks())
    own = sorted({r.task for r in results} - builtin)
    if not own:
        return "PlantCAD2 zero-shot results"
    named = ", ".join(own[:3]) + (f" and {len(own) - 3} more" if len(own) > 3 else "")
    return f"Zero-shot results ({named}{' and PlantCAD2 tasks' if len(own) < len({r.task for r in results}) else ''})"
