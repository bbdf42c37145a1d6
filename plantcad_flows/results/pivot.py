"""The pivoted results table: one block per task family, rows model x split, the family's main
metric per task as columns, 4 decimals with the 95% interval; skipped and failed cells show
their reason. It is what a person compares models with, where the long table is for machines.
"""

from __future__ import annotations

from dataclasses import dataclass

from plantcad_flows.families import FAMILIES, TaskFamily
from plantcad_flows.results.table import CellResult, axis_labels
from plantcad_flows.tables import text_table


def value_text(r: CellResult, metric: str, with_reason: bool = True) -> str:
    """`0.8060 [0.7112, 0.8901]`, or the cell's status (and reason) when it has no value."""
    if r.status in ("skipped", "failed"):
        return f"{r.status}: {r.reason}" if with_reason and r.reason else r.status
    v = r.metrics.get(metric)
    if v is None or v != v:
        return "n/a"
    low, high = r.intervals.get(metric, [None, None])
    ci = f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else ""
    return f"{v:.4f}{ci}"


@dataclass(frozen=True)
class PivotBlock:
    family: TaskFamily
    metric: str
    tasks: list[str]
    rows: list[tuple[str, str, list[str]]]  # (model, split, one text per task)
    notes: list[str]  # reasons of skipped / failed cells (text form)


def pivot_blocks(results: list[CellResult], with_reasons: bool = True) -> list[PivotBlock]:
    """One block per family present, in registry family order; rows in result order."""
    blocks = []
    labels = axis_labels(results)  # strands and contexts are rows of their own
    by_family: dict[str, list[CellResult]] = {}
    for r in results:
        by_family.setdefault(r.family, []).append(r)
    for family in FAMILIES.values():
        mine = by_family.get(family.name, [])
        if not mine:
            continue
        tasks = list(dict.fromkeys(r.task for r in mine))
        # each task's main metric (a variant set with a target only leads with spearman)
        names: dict[str, set[str]] = {}
        for r in mine:
            names.setdefault(r.task, set()).update(r.metrics)
        per_task = {task: family.main_metric_of(names[task]) for task in tasks}
        metric = " / ".join(dict.fromkeys(per_task.values()))
        keys = list(dict.fromkeys((labels[r.cell_id], r.split) for r in mine))
        by = {(labels[r.cell_id], r.split, r.task): r for r in mine}
        rows, notes = [], []
        for model, split in keys:
            texts = []
            for task in tasks:
                r = by.get((model, split, task))
                if r is None:
                    texts.append("")
                    continue
                texts.append(value_text(r, per_task[task], with_reasons))
                if not with_reasons and r.status in ("skipped", "failed") and r.reason:
                    notes.append(f"{r.cell_id} {r.status}: {r.reason}")
            rows.append((model, split, texts))
        blocks.append(PivotBlock(family, metric, tasks, rows, notes))
    return blocks


def pivot_markdown(results: list[CellResult]) -> str:
    """The pivoted tables as markdown (reasons inline)."""
    out = []
    for b in pivot_blocks(results):
        out += [f"**{b.family.name}** ({b.metric}, 95% CI)", ""]
        out.append("| model | split | " + " | ".join(b.family.short_name(t) for t in b.tasks) + " |")
        out.append("|---|---|" + "---|" * len(b.tasks))
        out += [f"| {m} | {s} | " + " | ".join(texts) + " |" for m, s, texts in b.rows]
        out.append("")
    return "\n".join(out)


def pivot_text(results: list[CellResult]) -> str:
    """The pivoted tables for a terminal: aligned columns, reasons as notes under each block."""
    out = []
    for b in pivot_blocks(results, with_reasons=False):
        header = ["model", "split", *(b.family.short_name(t) for t in b.tasks)]
        body = [[m, s, *texts] for m, s, texts in b.rows]
        out += [f"{b.family.name} - {b.metric} (95% CI)", *text_table(header, body, rule="  ")]
        out += [f"  note: {n}" for n in b.notes]
        out.append("")
    return "\n".join(out).rstrip()
