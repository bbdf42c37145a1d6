"""The leaderboard view of a run: per model and context, the PlantCAD2 leaderboard's task ids with
the forward, reverse-complement and selected values, the group means and the composite.

The selection follows the leaderboard: for each task, the better of the forward and the
reverse-complement evaluation of the whole task (never per example, never their mean), over the
strands its entry allows (the structural-variant task: forward only). A group mean is the plain
mean of its tasks' selected values and the composite the plain mean of the group means; a group
with a missing task has no mean (and then neither has the composite): missing tasks are listed,
never averaged over.

Which (task, split) is which leaderboard task is data: each task definition's `leaderboard:`
entries (`families.tasks.LeaderboardEntry`), so a user's task file can add tasks to a view of its
own (`board`). The files follow the PlantCAD team's own per-checkpoint artifacts: `result.json`
(rows with `left`, `reverse_complement`, `selected_context`, `selected_value`), `leaderboard.tsv`
and `summary.md`; and one combined `leaderboard.tsv` per run in the leaderboard's data table
shape, `model, task_id, value, context_bp, note`. Layout under the run directory:

    leaderboard/leaderboard.tsv                          every model and context, plantcad2 board
    leaderboard/{model}/{context_bp}/result.json, leaderboard.tsv, summary.md
    leaderboard/provenance.json                          what the run knew (sampling, condition)
    leaderboard-{board}/...                              the same for any other board

The flow writes them with the run's provenance (its sampling and compute); `plantcad-flows
leaderboard` rewrites them from results.json alone and keeps the provenance the flow recorded.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from plantcad_flows.families.tasks import LeaderboardEntry, TaskDef
from plantcad_flows.layout.storage import to_path, write_bytes_atomic
from plantcad_flows.tables import text_table

DEFAULT_BOARD = "plantcad2"
# the leaderboard's own names of the two strands (its `left` and `right_reverse_complement`)
CONTEXT_NAMES = {"fwd": "left", "rc": "right_reverse_complement"}
TABLE_COLUMNS = ("model", "task_id", "value", "context_bp", "note")
RESULT_COLUMNS = (
    "key",
    "category",
    "task",
    "metric",
    "samples",
    "selected_context",
    "selected_value",
    "left",
    "reverse_complement",
)


@dataclass(frozen=True)
class Slot:
    """One leaderboard task and the (task, split) of ours that fills it."""

    task: str
    split: str
    entry: LeaderboardEntry


@dataclass(frozen=True)
class TaskScore:
    slot: Slot
    fwd: float | None
    rc: float | None
    samples: int | None

    @property
    def candidates(self) -> list[tuple[str, float]]:
        values = {"fwd": self.fwd, "rc": self.rc}
        return [(s, v) for s in self.slot.entry.strands if (v := values[s]) is not None]

    @property
    def selected_strand(self) -> str | None:
        """The strand with the larger value (forward on a tie); None when the task is missing."""
        best = None
        for strand, value in self.candidates:
            if best is None or value > best[1]:
                best = (strand, value)
        return None if best is None else best[0]

    @property
    def selected(self) -> float | None:
        strand = self.selected_strand
        return None if strand is None else dict(self.candidates)[strand]

    @property
    def missing(self) -> bool:
        return self.selected is None

    @property
    def note(self) -> str:
        if self.missing:
            return "missing: no result in this run"
        allowed = self.slot.entry.strands
        if len(allowed) == 1:
            return f"{allowed[0]} only"
        absent = [s for s in allowed if s not in dict(self.candidates)]
        if absent:
            return f"{self.selected_strand} ({', '.join(absent)} not evaluated)"
        return f"best of {'/'.join(allowed)}: {self.selected_strand}"


@dataclass
class View:
    """One model at one context on one board."""

    board: str
    model: str
    context_bp: int | None
    scores: list[TaskScore]
    groups: dict[str, float | None] = field(default_factory=dict)
    composite: float | None = None

    @property
    def missing(self) -> list[str]:
        return [s.slot.entry.task_id for s in self.scores if s.missing]


def slots(tasks: Mapping[str, TaskDef], board: str | None = None) -> list[Slot]:
    """Every leaderboard slot the task definitions declare (of `board`, or all), in file order."""
    return [
        Slot(t.name, split, entry)
        for t in tasks.values()
        for split, entry in t.leaderboard.items()
        if board is None or entry.board == board
    ]


def _number(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _mean(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def build_views(rows: Iterable[Mapping[str, Any]], tasks: Mapping[str, TaskDef]) -> list[View]:
    """The views of a run's result rows (results.json rows, schema 3 or upgraded: `strand` and
    `context_bp` present): one per board, model and context that has at least one result on
    that board, in the order the rows name them.
    """
    all_slots = slots(tasks)
    by_split = {(s.task, s.split): s for s in all_slots}
    values: dict[tuple, dict[str, float | None]] = {}
    samples: dict[tuple, int] = {}
    order: list[tuple[str, str, int | None]] = []
    for row in rows:
        slot = by_split.get((row.get("task"), row.get("split")))
        if slot is None:
            continue
        ctx = row.get("context_bp")
        ctx = None if _number(ctx) is None else int(ctx)
        head = (slot.entry.board, str(row.get("model")), ctx)
        if head not in order:
            order.append(head)
        key = (*head, slot.entry.task_id)
        values.setdefault(key, {})[row.get("strand") or "fwd"] = _number(row.get(slot.entry.metric))
        n = _number(row.get("num_examples"))
        if n is not None:
            samples[key] = int(n)
    views = []
    for board, model, ctx in order:
        scores = []
        for slot in (s for s in all_slots if s.entry.board == board):
            key = (board, model, ctx, slot.entry.task_id)
            got = values.get(key, {})
            scores.append(TaskScore(slot, got.get("fwd"), got.get("rc"), samples.get(key)))
        view = View(board, model, ctx, scores)
        for s in scores:
            view.groups.setdefault(s.slot.entry.group, None)
        for group in view.groups:
            view.groups[group] = _mean([s.selected for s in scores if s.slot.entry.group == group])
        view.composite = _mean(list(view.groups.values()))
        views.append(view)
    return views


# --- text forms ---------------------------------------------------------------------------


def _fmt(v: float | None, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _ctx(view: View) -> str:
    return "unknown" if view.context_bp is None else str(view.context_bp)


def table_rows(views: Iterable[View]) -> list[dict[str, Any]]:
    """The leaderboard's data table: model, task_id, value (selected), context_bp, note."""
    return [
        {
            "model": v.model,
            "task_id": s.slot.entry.task_id,
            "value": s.selected,
            "context_bp": v.context_bp,
            "note": s.note,
        }
        for v in views
        for s in v.scores
    ]


def tsv(columns: Iterable[str], rows: Iterable[Mapping[str, Any]]) -> str:
    cols = list(columns)
    lines = ["\t".join(cols)]
    for row in rows:
        lines.append("\t".join("" if row.get(c) is None else str(row[c]) for c in cols))
    return "\n".join(lines) + "\n"


def result_rows(view: View) -> list[dict[str, Any]]:
    """The rows of the team's `result.json` / per-checkpoint `leaderboard.tsv`."""
    return [
        {
            "key": s.slot.entry.task_id,
            "category": s.slot.entry.group,
            "task": f"{s.slot.task}/{s.slot.split}",
            "metric": s.slot.entry.metric,
            "samples": s.samples,
            "selected_context": None if s.missing else CONTEXT_NAMES[s.selected_strand],
            "selected_value": s.selected,
            "left": s.fwd,
            "reverse_complement": s.rc if "rc" in s.slot.entry.strands else None,
        }
        for s in view.scores
    ]


def result_document(view: View, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`result.json` of one view: model, condition, sampling, runtime, rows, and our additions
    (board, context_bp, group means, composite, missing tasks)."""
    provenance = json.loads(json.dumps(dict(provenance or {})))  # a deep copy
    counts = {s.samples for s in view.scores if s.samples is not None}
    sampling = {
        "samples_per_task": counts.pop() if len(counts) == 1 else None,
        "seed": None,
        "method": None,
        "dataset_revision": None,
        **provenance.pop("sampling", {}),
    }
    return {
        "model": view.model,
        "condition": provenance.pop("condition", f"context_bp={_ctx(view)}"),
        "sampling": sampling,
        "runtime": provenance.pop("runtime", {}),
        "rows": result_rows(view),
        "board": view.board,
        "context_bp": view.context_bp,
        "group_means": view.groups,
        "composite": view.composite,
        "missing": view.missing,
        **provenance,
    }


def summary_markdown(view: View) -> str:
    """`summary.md` of one view: the task table, then the group means and the composite."""
    lines = [
        f"# {view.board} leaderboard view: {view.model}, {_ctx(view)} bp",
        "",
        "Selected = the better of forward (`left`) and reverse complement "
        "(`right_reverse_complement`) per task; structural variants forward only.",
        "",
        "| Group | Task id | Metric | Selected | Strand | Forward | Reverse complement | n |",
        "| :--- | :--- | :--- | ---: | :--- | ---: | ---: | ---: |",
    ]
    for s in view.scores:
        e = s.slot.entry
        rc = _fmt(s.rc) if "rc" in e.strands else "—"
        strand = s.selected_strand or "missing"
        lines.append(
            f"| {e.group} | {e.task_id} | {e.metric} | {_fmt(s.selected)} | {strand} | {_fmt(s.fwd)} "
            f"| {rc} | {'' if s.samples is None else s.samples} |"
        )
    lines += ["", "| Group | Mean |", "| :--- | ---: |"]
    lines += [f"| {g} | {_fmt(m) or 'n/a (missing tasks)'} |" for g, m in view.groups.items()]
    lines.append(f"| **composite** | {_fmt(view.composite) or 'n/a (missing tasks)'} |")
    if view.missing:
        lines += ["", f"Missing ({len(view.missing)}): " + ", ".join(view.missing)]
    return "\n".join(lines) + "\n"


def format_views(views: list[View]) -> str:
    """The views for a terminal: per model and context, one line per task, then the means."""
    out = []
    for v in views:
        out.append(f"{v.board} leaderboard: {v.model} @ {_ctx(v)} bp")
        header = ("task_id", "group", "metric", "fwd", "rc", "selected", "note")
        body = [
            (
                s.slot.entry.task_id,
                s.slot.entry.group,
                s.slot.entry.metric,
                _fmt(s.fwd),
                _fmt(s.rc) if "rc" in s.slot.entry.strands else "-",
                _fmt(s.selected),
                s.note,
            )
            for s in v.scores
        ]
        out += text_table(header, body, indent="  ")
        means = ", ".join(f"{g} {_fmt(m) or 'n/a'}" for g, m in v.groups.items())
        out.append(f"  group means: {means}")
        out.append(f"  composite: {_fmt(v.composite) or 'n/a (missing tasks)'}")
        if v.missing:
            out.append(f"  missing ({len(v.missing)}): {', '.join(v.missing)}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# --- files --------------------------------------------------------------------------------


def safe_name(model: str) -> str:
    """A model name as one path segment (`org/model@step-5` -> `org--model@step-5`)."""
    return re.sub(r"[^A-Za-z0-9._@+-]+", "--", model.replace("/", "--")).strip("-") or "model"


def board_dir(run_dir: str, board: str):
    name = "leaderboard" if board == DEFAULT_BOARD else f"leaderboard-{board}"
    return to_path(run_dir) / name


PROVENANCE = "provenance.json"


def read_provenance(run_dir: str, board: str = DEFAULT_BOARD) -> dict[str, Any]:
    """The provenance a run's flow recorded beside its views ({} when there is none)."""
    path = board_dir(run_dir, board) / PROVENANCE
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def write_views(
    run_dir: str, views: list[View], provenance: Mapping[str, Any] | None = None
) -> dict[str, list[str]]:
    """Write every view's files under `run_dir` (layout in this module's docstring); returns the
    combined tables' paths and every file written, by board. Without `provenance`, the one
    recorded beside the views (by the flow) is kept."""
    written: dict[str, list[str]] = {}
    for board in dict.fromkeys(v.board for v in views):
        mine = [v for v in views if v.board == board]
        root = board_dir(run_dir, board)
        paths = []
        if provenance is not None:
            write_bytes_atomic(root / PROVENANCE, (json.dumps(dict(provenance), indent=2) + "\n").encode())
        known = dict(provenance) if provenance is not None else read_provenance(run_dir, board)
        combined = root / "leaderboard.tsv"
        write_bytes_atomic(combined, tsv(TABLE_COLUMNS, table_rows(mine)).encode())
        paths.append(str(combined))
        for v in mine:
            d = root / safe_name(v.model) / _ctx(v)
            doc = result_document(v, known)
            write_bytes_atomic(d / "result.json", (json.dumps(doc, indent=2) + "\n").encode())
            write_bytes_atomic(d / "leaderboard.tsv", tsv(RESULT_COLUMNS, doc["rows"]).encode())
            write_bytes_atomic(d / "summary.md", summary_markdown(v).encode())
            paths += [str(d / n) for n in ("result.json", "leaderboard.tsv", "summary.md")]
        written[board] = paths
    return written
