"""The evaluation history: one row per (finished cell, metric) per run, kept under the prefix.

Each run writes its own file, `{prefix}/history/{run_name}.parquet`, atomically: concurrent runs
never rewrite a shared file, and a reader is just a concatenation. A cell served from cache is
recorded again by every run that reports it (the file says what that run saw); readers that
want one row per result de-duplicate by cell key, keeping the run that first recorded it, so a
cached cell appears once however many nights saw it.

A row names the result's identity (model, checkpoint step, resolved model revision or content
fingerprint, dataset revision, the cell key) and the number (metric, value, 95% interval,
standard error, n), with the run that recorded it (run id and name, time, code version).
Each file carries a `schema_version` (`results/schema.py`); files of every version are read.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

import pandas as pd

from plantcad_flows import CODE_VERSION
from plantcad_flows.layout.integrity import read_verified_parquet, recorded
from plantcad_flows.layout.plan import PREDICTIONS
from plantcad_flows.layout.storage import to_path, write_bytes_atomic
from plantcad_flows.results import schema
from plantcad_flows.results.table import CellResult

HISTORY_DIR = "history"
COLUMNS = (
    "model",
    "family",
    "step",
    "model_revision",
    "dataset_revision",
    "task",
    "task_family",
    "split",
    "strand",
    "context_bp",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "se",
    "n",
    "status",
    "run_id",
    "run_name",
    "time",
    "code_version",
    "cell_key",
    "cell_id",
    "cell_dir",
    "plan",
)
_STEP = re.compile(r"@step-(\d+)$")
RECORDED = ("completed", "cached")


def family_of(model: str) -> str:
    """The model family: the model name without a checkpoint's `@step-N` suffix."""
    return _STEP.sub("", model)


def step_of(result: CellResult) -> int | None:
    """The checkpoint step: the resolved one, else the one the `@step-N` name carries."""
    if result.step is not None:
        return result.step
    m = _STEP.search(result.model)
    return int(m.group(1)) if m else None


def history_rows(
    results: Iterable[CellResult],
    run_id: str,
    run_name: str,
    time: dt.datetime | None = None,
    plan: str | None = None,
) -> pd.DataFrame:
    """The rows this run adds: one per reported metric of every finished (completed or cached)
    cell; failed and skipped cells have no number to keep. `plan` is the declared config's hash
    (`layout.plan.plan_hash`): trends draw one evaluation, not every config a model was in."""
    when = pd.Timestamp(time or dt.datetime.now(dt.UTC))
    out = []
    for r in results:
        if r.status not in RECORDED or not r.metrics:
            continue
        for metric, value in r.metrics.items():
            if metric.startswith("num_") or metric == "balance":
                continue
            low, high = r.intervals.get(metric, [None, None])
            out.append(
                {
                    "model": r.model,
                    "family": family_of(r.model),
                    "step": step_of(r),
                    "model_revision": r.model_revision,
                    "dataset_revision": r.dataset_revision,
                    "task": r.task,
                    "task_family": r.family,
                    "split": r.split,
                    "strand": r.strand,
                    "context_bp": r.context_bp,
                    "metric": metric,
                    "value": None if value is None else float(value),
                    "ci_low": low,
                    "ci_high": high,
                    "se": r.stderr.get(metric),
                    "n": r.metrics.get("num_examples"),
                    "status": r.status,
                    "run_id": str(run_id),
                    "run_name": run_name,
                    "time": when,
                    "code_version": CODE_VERSION,
                    "cell_key": r.cell_key,
                    "cell_id": r.cell_id,
                    "cell_dir": r.output_dir,
                    "plan": plan,
                }
            )
    return _typed(pd.DataFrame(out, columns=list(COLUMNS)))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({"step": "Int64", "n": "Int64", "context_bp": "Int64"})
    for c in ("value", "ci_low", "ci_high", "se"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame


def history_file(prefix: str, run_name: str):
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_name).strip("_") or "run"
    return to_path(prefix) / HISTORY_DIR / f"{safe}.parquet"


def write_history(prefix: str, run_name: str, rows: pd.DataFrame) -> str:
    """Write this run's rows to its own file (atomically; a retried run rewrites its own)."""
    path = history_file(prefix, run_name)
    write_bytes_atomic(path, schema.parquet_bytes(rows))
    return str(path)


def read_history(prefix: str) -> pd.DataFrame:
    """Every run's rows under `prefix` (empty, with the columns, when there are none)."""
    root = to_path(prefix) / HISTORY_DIR
    files = sorted((p for p in root.glob("*.parquet")), key=str) if root.exists() else []
    frames = []
    for f in files:
        with f.open("rb") as fh:
            frame, version = schema.read_parquet(fh, str(f))
        if len(frame):
            frames.append(schema.upgrade_frame(frame, version))
    if not frames:
        return _typed(pd.DataFrame(columns=list(COLUMNS)))
    frame = pd.concat(frames, ignore_index=True)
    for c in COLUMNS:
        if c not in frame:
            frame[c] = None
    return _typed(frame[list(COLUMNS)])


def deduplicated(history: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell key, metric): the first time it was recorded (the run that scored it,
    unless that run's file is gone)."""
    ordered = history.sort_values("time", kind="stable")
    first = ordered.drop_duplicates(["cell_key", "metric"], keep="first")
    return first.sort_values(["family", "task", "split", "metric", "time"], kind="stable").reset_index(
        drop=True
    )


def select(history: pd.DataFrame, model: str | None = None, task: str | None = None) -> pd.DataFrame:
    """Rows whose model / task match the regular expressions (searched, not anchored)."""
    keep = pd.Series(True, index=history.index)
    if model:
        keep &= history["model"].astype(str).str.contains(model, regex=True)
    if task:
        keep &= history["task"].astype(str).str.contains(task, regex=True)
    return history[keep]


def newest_result_time(history: pd.DataFrame, cell_keys: Iterable[str]) -> pd.Timestamp | None:
    """When the newest of these cells was first recorded: on a run that scores nothing, the
    date since which there has been nothing new."""
    keys = set(cell_keys)
    first = deduplicated(history)
    seen = first[first["cell_key"].isin(keys)]
    return None if seen.empty else seen["time"].max()


def read_predictions(cell_dir: str) -> pd.DataFrame:
    """A finished cell's per-example predictions, checked against the record in its `_SUCCESS`.

    Raises:
        CorruptFileError: the file is missing or does not match its record.
    """
    d = to_path(cell_dir)
    return read_verified_parquet(d / PREDICTIONS, recorded(d, PREDICTIONS))
