"""The bodies of the pipeline's steps: prepare a split, score a shard, finalise a cell.

Each function is idempotent over the content-addressed layout: when its outputs are complete it
returns their description without touching them (same bytes, same mtime); otherwise it computes,
writes atomically and marks the directory complete last. `force` recomputes. The Prefect tasks
in `tasks/` are thin wrappers around these functions.

Complete means verified: every data file is recorded (sha256, bytes, rows) when written and
checked against that record before it is reused or read (`layout/integrity.py`); a file that
does not match is never used, and its step is computed again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from plantcad_flows.errors import CellFailedError, CorruptFileError, ValidationError
from plantcad_flows.layout.integrity import (
    invalidate_shard,
    invalidate_step,
    read_sidecar,
    read_verified_parquet,
    read_verified_rows,
    recorded,
    shard_ok,
    step_file_ok,
    write_parquet_batches_recorded,
    write_parquet_recorded,
    write_parquet_with_sidecar,
)
from plantcad_flows.layout.plan import PREDICTIONS, Cell, SplitJob, cell_is_complete
from plantcad_flows.layout.sharding import ShardSpec, merge_shards
from plantcad_flows.layout.storage import (
    SUCCESS,
    mark_complete,
    mark_failed,
    read_json,
    to_path,
    write_bytes_atomic,
    write_json_atomic,
)
from plantcad_flows.results.table import CellResult, cell_result

log = logging.getLogger(__name__)
EXAMPLES = "examples.parquet"
# examples.parquet is written in row groups of this many rows, so that a shard reads its own
# rows plus at most this many on either side, never the whole split (2 MB at 8,192 bp)
EXAMPLES_ROW_GROUP = 256
METRICS = "metrics.json"
METRICS_SCHEMA = 2  # 1: a variant set's metrics.json had its own layout
DEFAULT_CPU_BATCH = 16


class PreparedSplit(BaseModel):
    """Small description of a prepared split: where its examples are and how many."""

    model_config = ConfigDict(frozen=True)
    key: str
    dir: str
    examples: str
    num_examples: int
    # what examples.parquet held when written; shard readers check the bytes they read against it
    examples_sha256: str | None = None
    examples_bytes: int | None = None
    # what the family's steps said of it besides (a variant set's: records read, skipped per
    # reason, the table's columns); kept in the step's marker
    info: dict[str, Any] = {}

    @property
    def examples_record(self) -> dict[str, Any] | None:
        if self.examples_sha256 is None:
            return None
        return {"sha256": self.examples_sha256, "bytes": self.examples_bytes, "rows": self.num_examples}


class ShardOutput(BaseModel):
    model_config = ConfigDict(frozen=True)
    cell_id: str
    index: int
    count: int
    path: str
    num_examples: int
    computed: bool
    timings: dict[str, float | int] = {}


class Steps:
    """The generic bodies of a family's steps; a family names another class with the same
    methods (`TaskFamily.steps`) where its data differ (variant sets: `variants.steps`).

    * `prepare` writes the prepared file (`prepared_name`) into `d` and returns the step
      marker's info: `num_examples`, `files` (the file's record) and anything the family keeps;
    * `shard_frame` turns a shard's rows of that file (`shard_columns` of them) into the frame
      `score_frame` scores, `chunk_rows` rows at a time (None: the whole shard at once);
    * `finish` turns the merged shard scores into the cell's predictions, writes the family's
      own outputs, and returns (predictions, extra metrics, notes).
    """

    prepared_name: str = EXAMPLES

    def chunk_rows(self, cell: Cell) -> int | None:
        return None

    def prepare(self, job: SplitJob, d) -> dict[str, Any]:
        from plantcad_flows.data.splits import iter_prepared

        batches = iter_prepared(job.split, job.sampling)
        record = write_parquet_batches_recorded(d / EXAMPLES, batches, EXAMPLES_ROW_GROUP)
        return {"num_examples": record["rows"], "files": {EXAMPLES: record}}

    def shard_columns(self, cell: Cell) -> list[str] | None:
        return None

    def shard_frame(self, cell: Cell, prepared: PreparedSplit, rows):
        return rows

    def finish(self, cell: Cell, merged, prepared: PreparedSplit, d) -> tuple[Any, dict[str, Any], list[str]]:
        return merged, {}, []


_STEPS: dict[str, Any] = {}


def steps_of(family: Any) -> Steps:
    """The bodies of `family`'s steps (the class its `steps` names), made once per process."""
    name = family.steps
    if name not in _STEPS:
        import importlib

        module, _, cls = name.partition(":")
        _STEPS[name] = getattr(importlib.import_module(module), cls)()
    return _STEPS[name]


def _examples_name(job: SplitJob) -> str:
    """The prepared file: a split's sampled examples, or what its family prepares instead."""
    return steps_of(job.split.family).prepared_name


def prepared_ok(job: SplitJob) -> bool:
    """The split's step is complete and its examples match their record."""
    return step_file_ok(to_path(job.dir), _examples_name(job))


def _prepared(
    job: SplitJob, num_examples: int, record: dict[str, Any] | None, info: dict[str, Any]
) -> PreparedSplit:
    d = to_path(job.dir)
    return PreparedSplit(
        key=job.key,
        dir=str(d),
        examples=str(d / _examples_name(job)),
        num_examples=num_examples,
        examples_sha256=(record or {}).get("sha256"),
        examples_bytes=(record or {}).get("bytes"),
        info={k: v for k, v in info.items() if k not in ("num_examples", "files", "fields", "code_version")},
    )


def prepare(job: SplitJob, force: bool = False) -> PreparedSplit:
    """Load, validate and sample a split once (the family's `prepare`); later calls reuse its
    file if it matches its record, and prepare it again if not. The generic body streams the kept
    rows into the file in row groups of `EXAMPLES_ROW_GROUP` rows: memory holds a batch, never
    the split. A split that fails its checks leaves no empty step directory behind."""
    d = to_path(job.dir)
    name = _examples_name(job)
    if not force and prepared_ok(job):
        info = read_json(d / SUCCESS)
        return _prepared(job, int(info["num_examples"]), recorded(d, name), info)
    invalidate_step(d)  # the old marker must not vouch for the file about to be rewritten
    try:
        info = steps_of(job.split.family).prepare(job, d)
    except ValidationError:
        if d.exists() and not any(d.iterdir()):
            d.rmdir()
        raise
    mark_complete(d, job.fields, info)
    return _prepared(job, int(info["num_examples"]), info["files"][name], info)


def shard_path(cell: Cell, shard: ShardSpec) -> str:
    return str(to_path(cell.dir) / "shards" / shard.filename)


def shard_done(cell: Cell, shard: ShardSpec) -> bool:
    """The shard's file exists, with its sidecar record, and matches it (rows = the shard's size)."""
    return shard_ok(to_path(shard_path(cell, shard)), shard.size)


def read_examples(
    prepared: PreparedSplit,
    location: Any = None,
    rows: tuple[int, int] | None = None,
    columns: list[str] | None = None,
):
    """A prepared split's examples (rows [start, stop) and `columns` only, when given), checked
    against their record; only the row groups holding those rows are read. A mismatch marks the
    split's step incomplete (prepared again next time) and raises `CorruptFileError` naming the
    file."""
    start, stop = rows if rows is not None else (0, prepared.num_examples)
    try:
        return read_verified_rows(
            to_path(str(location or prepared.examples)),
            prepared.examples_record,
            prepared.num_examples,
            start,
            stop,
            columns,
        )
    except CorruptFileError:
        invalidate_step(to_path(prepared.dir))
        raise


def _model_key(cell: Cell) -> str:
    # with the resolved identity: a long-lived worker must not reuse a model retrained in place
    identity = cell.model_identity.model_dump_json()
    return f"{cell.model.model_dump_json()}|{identity}|{cell.compute.device}|{cell.compute.precision}"


def _axes_text(cell: Cell) -> str:
    """` - 512 bp, rc` where the cell is one of several contexts or on the reverse strand."""
    parts = [f"{cell.model.context_length} bp"] if cell.context_axis else []
    parts += ["rc"] if cell.strand == "rc" else []
    return f" - {', '.join(parts)}" if parts else ""


def _batch_size(cell: Cell, loaded: Any, rows: Any) -> int:
    """The configured batch size, or for `auto` on a GPU the largest that fits (probed once
    per model, context length and GPU model, then remembered on the node)."""
    if cell.compute.batch_size != "auto":
        return int(cell.compute.batch_size)
    if cell.compute.device_type == "cpu" or len(rows) == 0:
        return DEFAULT_CPU_BATCH
    from plantcad_flows.scoring.batch_size import auto_batch_size
    from plantcad_flows.scoring.devices import device_name
    from plantcad_flows.scoring.score import score_frame

    def try_batch(size: int) -> None:
        # a real batch of this cell's own examples, repeated to `size` rows
        probe = rows.iloc[[i % len(rows) for i in range(size)]]
        score_frame(loaded, cell.model, cell.split, probe, size, strand=cell.strand)

    identity = f"{cell.model.path}@{cell.model.revision}/{cell.model.subfolder}:{cell.compute.precision}"
    size, _ = auto_batch_size(try_batch, identity, cell.model.context_length, device_name(loaded.device))
    return size


def load_cached_model(cell: Cell):
    """The cell's model, loaded once per process and reused across shards."""
    from plantcad_flows.scoring.model_cache import get_or_load
    from plantcad_flows.scoring.score import load_model

    return get_or_load(_model_key(cell), lambda: load_model(cell.model, cell.compute))


def score_shard(cell: Cell, shard: ShardSpec, prepared: PreparedSplit, force: bool = False) -> ShardOutput:
    """Score rows [start, stop) of a prepared split and persist them as one shard file: the
    family's `shard_frame` of the rows, through the batched, prefetched input pipeline."""
    import pandas as pd

    from plantcad_flows.data.node_cache import local_copy
    from plantcad_flows.scoring.inputs import StageTimings
    from plantcad_flows.scoring.score import score_frame

    out = to_path(shard_path(cell, shard))
    if not force and shard_done(cell, shard):
        return _shard_output(cell, shard, out, shard.size, computed=False)
    invalidate_shard(out)  # a stale sidecar must never vouch for the file about to be rewritten
    body = steps_of(cell.split.family)
    t0 = time.perf_counter()
    location = local_copy(prepared.examples)
    rows = read_examples(prepared, location, rows=(shard.start, shard.stop), columns=body.shard_columns(cell))
    read_s = time.perf_counter() - t0
    loaded = load_cached_model(cell)
    timings = StageTimings()
    step = body.chunk_rows(cell) or max(len(rows), 1)
    parts, size, frame_s = [], None, 0.0
    for lo in range(0, len(rows), step):
        t0 = time.perf_counter()
        frame = body.shard_frame(cell, prepared, rows.iloc[lo : lo + step])
        frame_s += time.perf_counter() - t0
        size = size or _batch_size(cell, loaded, frame)
        parts.append(score_frame(loaded, cell.model, cell.split, frame, size, timings, strand=cell.strand))
    if not parts:
        parts.append(score_frame(loaded, cell.model, cell.split, body.shard_frame(cell, prepared, rows), 1))
    predictions = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    write_parquet_with_sidecar(out, predictions)
    stats = {"read_examples_s": round(read_s + frame_s, 4), **timings.as_dict()}
    log.info(
        "scored %s shard %d/%d: %d examples, stages %s",
        cell.id,
        shard.index + 1,
        shard.count,
        len(rows),
        stats,
    )
    return _shard_output(cell, shard, out, len(rows), True, stats)


def _shard_output(cell: Cell, shard: ShardSpec, out, n: int, computed: bool, timings=None) -> ShardOutput:
    return ShardOutput(
        cell_id=cell.id,
        index=shard.index,
        count=shard.count,
        path=str(out),
        num_examples=n,
        computed=computed,
        timings=timings or {},
    )


def record_failure(cell: Cell, reason: str) -> CellResult:
    """Leave a failure marker so the plan shows the cell as failed before (never as complete)."""
    mark_failed(to_path(cell.dir), reason)
    return cell_result(cell, "failed", reason=reason)


def finalize_cell(
    cell: Cell, shards: list[ShardOutput | BaseException], prepared: PreparedSplit | None, force: bool = False
) -> CellResult:
    """Merge a cell's shards (checking exact coverage), compute its metrics, draw its curves.

    `shards` holds what each shard task ended with: its output, or the exception it failed with.
    A failed shard fails the cell: the marker is written and `CellFailedError` raised, so that no
    cache record is written for it and the next run scores the missing shards.
    """
    d = to_path(cell.dir)
    failed = [s for s in shards if isinstance(s, BaseException)]
    if failed:
        reason = f"scoring failed: {type(failed[0]).__name__}: {failed[0]}"
        mark_failed(d, reason)
        raise CellFailedError(cell.id, reason)
    outputs = [s for s in shards if isinstance(s, ShardOutput)]
    if not force and cell_is_complete(cell) and all(not s.computed or _merged_after(d, s) for s in outputs):
        info = read_json(d / SUCCESS)
        return cell_result(cell, "cached", info["metrics"], info.get("plots", []))
    if prepared is None:
        raise CellFailedError(cell.id, "not complete, and no prepared split was given to finish it")
    try:
        return _finalize(cell, outputs, prepared, d)
    except Exception as e:
        mark_failed(d, f"{type(e).__name__}: {e}")
        raise


def _merged_after(d, shard: ShardOutput) -> bool:
    """The cell was marked complete after this shard's file was written, so its merge read this
    very file: another run finished the cell while this one scored (each shard is scored once,
    under its lock). A shard rewritten after the cell was completed is newer, and is merged again."""
    try:
        return (d / SUCCESS).stat().st_mtime >= to_path(shard.path).stat().st_mtime
    except OSError:
        return False


def _finalize(cell: Cell, shards: list[ShardOutput], prepared: PreparedSplit, d) -> CellResult:
    from plantcad_flows.results.plots import curve_pngs

    examples = read_examples(prepared, columns=["row_index"])
    ordered = sorted(shards, key=lambda s: s.index)
    merged = merge_shards([_read_shard(s) for s in ordered], examples["row_index"])
    invalidate_step(d)  # rewriting: the old marker must not vouch for the new files
    frame, extra, notes = steps_of(cell.split.family).finish(cell, merged, prepared, d)
    family = cell.split.family
    metrics = family.metrics_of(frame, notes) | extra
    metrics = {k: (float(v) if isinstance(v, float) else int(v)) for k, v in metrics.items()}
    predictions = write_parquet_recorded(d / PREDICTIONS, frame)
    write_metrics(d, metrics, notes)
    plots: list[str] = []
    if family.curves:
        pngs = curve_pngs(
            frame["label"].to_numpy(),
            frame["score"].to_numpy(),
            f"{cell.model.label}\n{cell.split.task} - split {cell.split.split}{_axes_text(cell)}",
            with_roc="roc" in family.curves,
        )
        for name, data in pngs.items():
            write_bytes_atomic(d / "plots" / name, data)
            plots.append(str(d / "plots" / name))
    mark_complete(
        d,
        cell.fields,
        {
            "metrics": metrics,
            "plots": plots,
            "notes": notes,
            "num_shards": len(ordered),
            "files": {PREDICTIONS: predictions},
        },
    )
    timings = _summed_timings(ordered)
    return cell_result(cell, "completed", metrics, plots).model_copy(update={"timings": timings})


def write_metrics(d, metrics: dict[str, Any], notes: list[str]) -> None:
    """A cell's `metrics.json`, one schema for every family: the flat metrics (NaN as null: an
    undefined metric) and the notes. The intervals live beside it (`results.uncertainty`)."""
    import math

    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    write_json_atomic(d / METRICS, {"schema_version": METRICS_SCHEMA, "metrics": clean, "notes": notes})


def _summed_timings(shards: list[ShardOutput]) -> dict[str, float | int]:
    """The stage timings of the shards this run scored, summed."""
    timings: dict[str, float | int] = {}
    for shard in (s for s in shards if s.computed):
        for k, v in shard.timings.items():
            timings[k] = timings.get(k, 0) + v
    return timings


def _read_shard(shard: ShardOutput):
    """A shard's predictions, checked against its sidecar; a mismatch drops the sidecar (the
    shard is scored again by the next run) and raises `CorruptFileError` naming the file."""
    path = to_path(shard.path)
    try:
        return read_verified_parquet(path, read_sidecar(path), shard.num_examples)
    except CorruptFileError:
        invalidate_shard(path)
        raise


def run_variant_set(
    variants: Any,
    model: Any,
    out_dir: str,
    compute: Any = None,
    num_shards: int = 1,
    resamples: int = 1000,
    seed: int = 0,
    force: bool = False,
) -> tuple[CellResult, list[ShardOutput]]:
    """A variant set (a `VariantSetConfig`) scored by one model in this process, without
    Prefect: the flow's own steps (prepare, score each shard, finalize, intervals), in the
    content-addressed layout under `out_dir`. For notebooks, `vep-demo` and the benchmark.

    Returns:
        The cell's result (its `output_dir` holds `variant_scores.parquet`, the bgzipped TSV,
        `predictions.parquet` and `metrics.json`) and one output per shard.

    Raises:
        ValidationError: a bad input (before the model loads), naming its field.
    """
    from plantcad_flows.config import ComputeConfig, EvalConfig
    from plantcad_flows.layout.plan import build_cells
    from plantcad_flows.layout.sharding import plan_shards
    from plantcad_flows.results.uncertainty import with_intervals

    raw = variants.model_dump() if isinstance(variants, BaseModel) else dict(variants)
    config = EvalConfig.model_validate(
        {
            "models": [model.model_dump() if isinstance(model, BaseModel) else model],
            "splits": [],
            "variants": [raw],
            "compute": (compute or ComputeConfig()).model_dump(),
            "metrics": {"bootstrap": resamples, "seed": seed},
            "executor": {"prefix": str(out_dir)},
        }
    )
    [cell] = build_cells(config)
    prepared = prepare(cell.split_job, force=force)
    outputs = [
        score_shard(cell, s, prepared, force=force) for s in plan_shards(prepared.num_examples, num_shards)
    ]
    result = finalize_cell(cell, outputs, prepared, force=force)
    return with_intervals(result, resamples, seed), outputs
