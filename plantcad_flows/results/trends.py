"""Trend plots and the leaderboard, drawn from the de-duplicated history.

For each (task, split, metric) one PNG: the value against the checkpoint step (when every point
has one: a sweep) or against the date it was first recorded (nightly runs), one line per model
family, the 95% bootstrap interval as a band. Figures use matplotlib's object API (a `Figure`
with its own Agg canvas), never pyplot: cells and reports are drawn on worker threads, and
pyplot's global figure state is not thread-safe.

A plot is redrawn only when the data it shows changed: its digest is stored beside the PNG, so
a run with nothing new draws nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

from plantcad_flows.families import builtin_tasks, get_family
from plantcad_flows.layout.hashing import short_hash
from plantcad_flows.layout.storage import read_json, to_path, write_bytes_atomic, write_json_atomic
from plantcad_flows.results.history import deduplicated

TRENDS_DIR = "trends"


@dataclass(frozen=True)
class TrendPlot:
    task: str
    split: str
    metric: str
    path: str
    redrawn: bool  # False: the data had not changed since the stored PNG was drawn

    @property
    def name(self) -> str:
        return f"{self.task}-{self.split}-{self.metric}"


def trend_rows(
    history: pd.DataFrame, families: set[str], pairs: set[tuple[str, str]], plan: str | None = None
) -> pd.DataFrame:
    """The de-duplicated rows of these model families on these (task, split) pairs, recorded by
    runs of the config `plan` when given."""
    first = deduplicated(history if plan is None else history[history["plan"] == plan])
    in_pairs = np.array([(t, s) in pairs for t, s in zip(first["task"], first["split"])], dtype=bool)
    keep = first["family"].isin(families).to_numpy() & in_pairs
    return axis_families(first[keep & first["value"].notna().to_numpy()])


def axis_families(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows whose `family` also names the strand (` rc`) and, where a family was scored at
    several contexts, the context (` 512bp`): each is a line of its own, never one line zigzagging
    between strands. Forward rows of a single context keep the plain family name."""
    if rows.empty or "strand" not in rows:
        return rows
    contexts = rows.groupby("family")["context_bp"].nunique(dropna=True)
    names = []
    for family, strand, ctx in zip(rows["family"], rows["strand"], rows["context_bp"]):
        name = family
        if contexts.get(family, 0) > 1 and not pd.isna(ctx):
            name += f" {int(ctx)}bp"
        names.append(name + (" rc" if strand == "rc" else ""))
    return rows.assign(family=names)


def _x(rows: pd.DataFrame) -> tuple[str, pd.Series]:
    if rows["step"].notna().all():
        return "checkpoint step", rows["step"].astype(int)
    return "date first recorded (UTC)", rows["time"].dt.tz_convert("UTC").dt.tz_localize(None)


def x_range(x: pd.Series) -> tuple | None:
    """Limits for an x axis with one distinct value, which matplotlib would otherwise spread over
    years (a single date) or an arbitrary span: a day around a date, one step either side of a
    step. None when there are several values (matplotlib's own limits are right then)."""
    values = x.dropna().unique()
    if len(values) != 1:
        return None
    point = values[0]
    if isinstance(point, int | np.integer):
        return point - 1, point + 1
    point = pd.Timestamp(point)
    return point - pd.Timedelta(hours=12), point + pd.Timedelta(hours=12)


def draw_trend(rows: pd.DataFrame, task: str, split: str, metric: str) -> bytes:
    """PNG bytes of one (task, split, metric) trend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    label, x = _x(rows)
    for family, part in rows.assign(x=x).sort_values("x").groupby("family", sort=True):
        (line,) = ax.plot(part["x"], part["value"], marker="o", markersize=4, label=family)
        band = part[["ci_low", "ci_high"]].notna().all(axis=1)
        if band.any():
            ax.fill_between(
                part["x"][band],
                part["ci_low"][band],
                part["ci_high"][band],
                color=line.get_color(),
                alpha=0.2,
            )
    limits = x_range(x)
    if limits is not None:
        ax.set_xlim(*limits)
    ax.set_xlabel(label)
    ax.set_ylabel(f"{metric} (95% CI band)")
    ax.set_title(f"{task}\nsplit {split} - {metric}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if label.startswith("date"):
        fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _digest(rows: pd.DataFrame) -> str:
    cols = ["family", "cell_key", "step", "time", "value", "ci_low", "ci_high"]
    return short_hash(rows[cols].astype(str).sort_values(cols).values.tolist(), n=16)


def trend_plots(rows: pd.DataFrame, directory: str) -> list[TrendPlot]:
    """Draw (or keep) one PNG per (task, split, metric) of `rows` under `directory`."""
    out = []
    root = to_path(directory)
    for (task, split, metric), part in rows.groupby(["task", "split", "metric"], sort=True):
        path = root / f"{task}-{split}-{metric}.png"
        marker = root / f"{task}-{split}-{metric}.json"
        digest = _digest(part)
        try:
            same = path.exists() and read_json(marker).get("digest") == digest
        except (OSError, ValueError):
            same = False
        if not same:
            write_bytes_atomic(path, draw_trend(part, task, split, metric))
            write_json_atomic(marker, {"digest": digest, "points": len(part)})
        out.append(TrendPlot(task, split, metric, str(path), redrawn=not same))
    return out


def main_metric_rows(rows: pd.DataFrame) -> np.ndarray:
    """Which history rows hold their task's main metric (the family's `main_metric_of` the
    metrics its cell reported: a variant set with a target only leads with spearman). Rows
    written before history kept the task's family (no `task_family`) are built-in tasks, looked
    up in the shipped task file."""
    builtin = builtin_tasks()
    families = (
        rows["task_family"] if "task_family" in rows else pd.Series([None] * len(rows), index=rows.index)
    )
    cells = rows["cell_key"] if "cell_key" in rows else rows["task"]
    reported: dict[object, set[str]] = {}
    for cell, metric in zip(cells, rows["metric"]):
        reported.setdefault(cell, set()).add(metric)
    out = []
    for task, family, metric, cell in zip(rows["task"], families, rows["metric"], cells):
        if not isinstance(family, str):
            family = builtin[task].family if task in builtin else None
        out.append(family is not None and metric == get_family(family).main_metric_of(reported[cell]))
    return np.array(out, dtype=bool)


def leaderboard(rows: pd.DataFrame) -> list[dict]:
    """The latest result per model family, task and split on the task's main metric, with its
    interval: the highest checkpoint step, else the most recently recorded."""
    if rows.empty:
        return []
    main = rows[main_metric_rows(rows)]
    ordered = main.assign(_s=main["step"].fillna(-1)).sort_values(["_s", "time"], kind="stable")
    latest = ordered.groupby(["family", "task", "split"], sort=True).tail(1)
    table = []
    for _, r in latest.sort_values(["task", "split", "value"], ascending=[True, True, False]).iterrows():
        table.append(
            {
                "model": r["model"],
                "task": r["task"],
                "split": r["split"],
                "metric": r["metric"],
                "value": round(float(r["value"]), 4),
                "ci_low": None if pd.isna(r["ci_low"]) else round(float(r["ci_low"]), 4),
                "ci_high": None if pd.isna(r["ci_high"]) else round(float(r["ci_high"]), 4),
                "n": None if pd.isna(r["n"]) else int(r["n"]),
                "step": None if pd.isna(r["step"]) else int(r["step"]),
                "revision": None if pd.isna(r["model_revision"]) else str(r["model_revision"]),
                "recorded": r["time"].strftime("%Y-%m-%d %H:%M UTC"),
            }
        )
    return table
