"""Results: one typed row per (model, task, split), the fixed results table, and result files.

Rows are written as `results.parquet` and `results.json` twice: once per run
(`{prefix}/runs/{run}/`) and once as a stable "latest" per config (`{prefix}/latest/{hash}/`).
Both carry a `schema_version` (`results/schema.py`); `read_results` reads every version.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict

from plantcad_flows.layout.plan import Cell
from plantcad_flows.layout.storage import to_path, write_bytes_atomic, write_json_atomic
from plantcad_flows.results import schema
from plantcad_flows.tables import text_table

METRIC_ORDER = (
    "auroc",
    "auprc",
    "token_accuracy",
    "motif_accuracy",
    "num_examples",
    "num_positive_examples",
    "num_negative_examples",
    "balance",
)


class CellResult(BaseModel):
    """What a finished cell reports; this is also the (small) Prefect result of a metrics task."""

    model_config = ConfigDict(frozen=True)
    cell_id: str
    model: str
    task: str
    split: str
    strand: str = "fwd"  # fwd, or rc: the reverse complement (results schema 3)
    context_bp: int | None = None  # the model's context in bases; None in results before schema 3
    dataset: str
    family: str
    status: str  # completed | cached | failed | skipped
    metrics: dict[str, float | int | None] = {}
    output_dir: str | None = None
    plots: list[str] = []
    reason: str | None = None
    timings: dict[str, float | int] = {}  # input-pipeline stages of the shards scored for it
    cell_key: str | None = None  # the content hash naming the cell's directory
    # resolved identities (hub commit sha or content fingerprint; dataset sha) and the
    # checkpoint step of a discovered checkpoint; None where not known
    model_revision: str | None = None
    dataset_revision: str | None = None
    step: int | None = None
    # 95% bootstrap interval per metric ([low, high]) and standard error per accuracy
    intervals: dict[str, list[float | None]] = {}
    stderr: dict[str, float | None] = {}

    def row(self) -> dict[str, Any]:
        base = {"dataset": self.dataset, "model": self.model, "task": self.task, "split": self.split}
        base |= {"strand": self.strand, "context_bp": self.context_bp}
        # what was scored, as resolved at plan time: every row carries its provenance
        base |= {
            "model_revision": self.model_revision,
            "dataset_revision": self.dataset_revision,
            "step": self.step,
        }
        uncertainty: dict[str, Any] = {}
        for name, (low, high) in self.intervals.items():
            uncertainty |= {f"{name}_ci_low": low, f"{name}_ci_high": high}
        uncertainty |= {f"{name}_se": se for name, se in self.stderr.items()}
        return {**base, **self.metrics, **uncertainty}


def cell_result(
    cell: Cell,
    status: str,
    metrics: dict | None = None,
    plots: list[str] | None = None,
    reason: str | None = None,
) -> CellResult:
    """The result row of one planned cell."""
    return CellResult(
        cell_id=cell.id,
        model=cell.model.label,
        task=cell.split.task,
        split=cell.split.split,
        strand=cell.strand,
        context_bp=cell.model.context_length,
        dataset=cell.split.path or cell.split.repo_id,
        family=cell.split.family.name,
        status=status,
        metrics=metrics or {},
        output_dir=cell.dir,
        plots=plots or [],
        reason=reason,
        cell_key=cell.key,
        model_revision=cell.model_identity.value,
        dataset_revision=cell.data_identity.value,
        step=cell.model.step,
    )


def axis_labels(results: list[CellResult]) -> dict[str, str]:
    """A display name per cell id: the model, plus its context when the results hold several
    contexts of that model, plus `rc` on the reverse strand (`m`, `m 512bp`, `m 512bp rc`)."""
    contexts: dict[str, set] = {}
    for r in results:
        contexts.setdefault(r.model, set()).add(r.context_bp)
    out = {}
    for r in results:
        label = r.model
        if len(contexts[r.model]) > 1 and r.context_bp is not None:
            label += f" {r.context_bp}bp"
        out[r.cell_id] = label + (" rc" if r.strand == "rc" else "")
    return out


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def rows(results: list[CellResult]) -> list[dict[str, Any]]:
    """Result rows of the cells that produced metrics (JSON-safe: NaN becomes null)."""
    return [{k: _clean(v) for k, v in r.row().items()} for r in results if r.metrics]


def _round(v: Any) -> float | None:
    v = _clean(v)
    return None if v is None else round(float(v), 4)


def long_table(results: list[CellResult]) -> list[dict[str, Any]]:
    """The fixed display table: model | task | split | strand | context_bp | metric | value |
    ci_low | ci_high | se | n (`model` names the strand and context where they vary: `axis_labels`)."""
    out = []
    labels = axis_labels(results)
    for r in results:
        n = r.metrics.get("num_examples")
        for name in METRIC_ORDER:
            if name in r.metrics and not name.startswith("num_"):
                low, high = r.intervals.get(name, [None, None])
                out.append(
                    {
                        "model": labels[r.cell_id],
                        "task": r.task,
                        "split": r.split,
                        "strand": r.strand,
                        "context_bp": r.context_bp,
                        "metric": name,
                        "value": _round(r.metrics[name]),
                        "ci_low": _round(low),
                        "ci_high": _round(high),
                        "se": _round(r.stderr.get(name)),
                        "n": n,
                    }
                )
    return out


def format_table(results: list[CellResult]) -> str:
    table = long_table(results)
    if not table:
        return "(no results)"
    for row in table:
        low, high = row["ci_low"], row["ci_high"]
        row["95% CI"] = "" if low is None or high is None else f"[{low:.4f}, {high:.4f}]"
    cols = ["model", "task", "split", "metric", "value", "95% CI", "n"]
    cells = [
        [
            ("" if row[c] is None else f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]))
            for c in cols
        ]
        for row in table
    ]
    return "\n".join(text_table(cols, cells, sep=" | ", rule="-+-", rstrip=False))


def write_results(directory: str, results: list[CellResult]) -> dict[str, str]:
    """Write results.parquet and results.json under `directory`; returns their paths."""
    d = to_path(directory)
    data = rows(results)
    write_bytes_atomic(d / "results.parquet", schema.parquet_bytes(pd.DataFrame(data)))
    write_json_atomic(d / "results.json", schema.results_json(data))
    return {"parquet": str(d / "results.parquet"), "json": str(d / "results.json")}


def read_results(directory: str) -> tuple[pd.DataFrame, int]:
    """The results.parquet under `directory` (any schema version, brought to the current
    columns: `schema.upgrade_frame`) and its version."""
    path = to_path(directory) / "results.parquet"
    with path.open("rb") as fh:
        frame, version = schema.read_parquet(fh, str(path))
    return schema.upgrade_frame(frame, version), version


def read_results_rows(directory: str) -> tuple[list[dict[str, Any]], int]:
    """The rows of the results.json under `directory` (any schema version, brought to the
    current fields: `schema.upgrade_rows`) and its version."""
    path = to_path(directory) / "results.json"
    rows_, version = schema.read_results_json(path.read_text(), str(path))
    return schema.upgrade_rows(rows_, version), version
