"""What a data file held when we wrote it, and the check that it still holds exactly that.

Atomic writes keep a crash from leaving half a file under its final name, but nothing stops a
disk fault, a partial copy made outside our writes, or a stray edit from changing a file later.
So every data file the pipeline writes (a split's `examples.parquet`, each shard, a cell's
`predictions.parquet`) gets a record at write time: its sha256, its byte size and its row count.

* `examples.parquet` and `predictions.parquet`: under `files` in their step's `_SUCCESS`.
* shards have no step directory of their own: a sidecar `shard-....parquet.json`, written after
  the shard, so a shard without its sidecar (a kill between the two writes) is not complete.

`check_file` re-reads the bytes (streamed through sha256, never held whole) and compares all
three. Any mismatch makes the file's step
incomplete: the plan shows it "to run", its cache key is dropped and the step is computed again;
a warning names the file, and the file itself is never read into a result. Verdicts are
remembered per process for a file version (size and modification time, or the object store's
ETag), so one run hashes each file once however many checks ask.

Large files are written and read in row groups: `write_parquet_batches_recorded` streams frames
into fixed-size row groups (a prepared split's `examples.parquet`), and `read_verified_rows`
checks the file, then reads only the row groups that hold rows [start, stop) (a shard's).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Iterable
from typing import Any

import pandas as pd
import pyarrow as pa
from upath import UPath

from plantcad_flows.errors import CorruptFileError
from plantcad_flows.layout.storage import SUCCESS, read_json, write_bytes_atomic

log = logging.getLogger(__name__)
SIDECAR_SUFFIX = ".json"
_CHUNK = 1 << 22  # bytes hashed at a time

_lock = threading.Lock()
_verdicts: dict[tuple[str, str, str], str | None] = {}  # (path, version, sha256) -> problem
_warned: set[tuple[str, str]] = set()


def record_for(data: bytes, rows: int) -> dict[str, Any]:
    """The record of a file's content: sha256, size in bytes, row count."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "rows": int(rows)}


def parquet_bytes(frame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def write_parquet_recorded(path: UPath, frame) -> dict[str, Any]:
    """Write `frame` atomically; return its record (to be stored by the caller)."""
    data = parquet_bytes(frame)
    write_bytes_atomic(path, data)
    return record_for(data, len(frame))


def sidecar(path: UPath) -> UPath:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_parquet_with_sidecar(path: UPath, frame) -> dict[str, Any]:
    """Write a shard and then its sidecar record: the shard counts only once both exist."""
    record = write_parquet_recorded(path, frame)
    write_bytes_atomic(sidecar(path), json.dumps(record, sort_keys=True).encode())
    return record


def read_sidecar(path: UPath) -> dict[str, Any] | None:
    try:
        record = read_json(sidecar(path))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"sha256", "rows"} <= set(record) else None


def _version(path: UPath) -> str | None:
    """What changes when the file does, cheaply (no read); None when the backend says nothing."""
    try:
        info = path.fs.info(path.path)
    except (OSError, ValueError):
        return None
    parts = [str(info.get(k)) for k in ("size", "mtime", "ETag", "LastModified", "created") if info.get(k)]
    return "|".join(parts) if len(parts) > 1 else None


def _read(path: UPath) -> tuple[bytes | None, str | None]:
    try:
        return path.read_bytes(), None
    except FileNotFoundError:
        return None, "missing"
    except OSError as e:
        return None, f"unreadable ({type(e).__name__}: {e})"


def _problem(path: UPath, record: dict[str, Any]) -> str | None:
    """`_content_problem`, streamed: the file is hashed in chunks and its footer alone parsed."""
    import pyarrow.parquet as pq

    h, size = hashlib.sha256(), 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({type(e).__name__}: {e})"
    if "bytes" in record and size != int(record["bytes"]):
        return f"{size} bytes, {record['bytes']} recorded"
    if h.hexdigest() != record["sha256"]:
        return f"sha256 {h.hexdigest()[:12]}..., {str(record['sha256'])[:12]}... recorded"
    try:
        with path.open("rb") as f:
            rows = pq.ParquetFile(f).metadata.num_rows
    except Exception as e:  # noqa: BLE001 - any parser error means the same: not a usable file
        return f"not a readable parquet file ({type(e).__name__})"
    if rows != int(record["rows"]):
        return f"{rows} rows, {record['rows']} recorded"
    return None


def _content_problem(data: bytes, record: dict[str, Any]) -> str | None:
    if "bytes" in record and len(data) != int(record["bytes"]):
        return f"{len(data)} bytes, {record['bytes']} recorded"
    digest = hashlib.sha256(data).hexdigest()
    if digest != record["sha256"]:
        return f"sha256 {digest[:12]}..., {str(record['sha256'])[:12]}... recorded"
    import pyarrow.parquet as pq

    try:
        rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
    except Exception as e:  # noqa: BLE001 - any parser error means the same: not a usable file
        return f"not a readable parquet file ({type(e).__name__})"
    if rows != int(record["rows"]):
        return f"{rows} rows, {record['rows']} recorded"
    return None


def _record_problem(record: dict[str, Any] | None, expected_rows: int | None) -> str | None:
    if record is None or not {"sha256", "rows"} <= set(record):
        return "no integrity record (written by an interrupted or older run)"
    if expected_rows is not None and int(record["rows"]) != expected_rows:
        return f"{record['rows']} rows recorded, {expected_rows} expected"
    return None


def check_file(path: UPath, record: dict[str, Any] | None, expected_rows: int | None = None) -> str | None:
    """Why `path` does not match its record (None when it does). Warns once, naming the file.

    Args:
        record: as written by `record_for`; None (never recorded) is itself a mismatch.
        expected_rows: the row count the reader needs, checked against the record too.
    """
    problem = _record_problem(record, expected_rows)
    if problem is None:
        version = _version(path)
        key = (str(path), version or "", str(record["sha256"]))
        with _lock:
            cached = version is not None and key in _verdicts
            problem = _verdicts.get(key) if cached else None
        if not cached:
            problem = _problem(path, record)
            if version is not None:
                with _lock:
                    _verdicts[key] = problem
    if problem is not None and problem != "missing":
        _warn(path, problem)
    return problem


def _warn(path: UPath, problem: str) -> None:
    with _lock:
        if (str(path), problem) in _warned:
            return
        _warned.add((str(path), problem))
    log.warning("integrity check failed for %s: %s; not used, its step will be computed again", path, problem)


def file_ok(path: UPath, record: dict[str, Any] | None, expected_rows: int | None = None) -> bool:
    return check_file(path, record, expected_rows) is None


def shard_ok(path: UPath, expected_rows: int | None = None) -> bool:
    """A shard is complete when it and its sidecar exist and its bytes match the sidecar."""
    if not path.exists():
        return False
    return file_ok(path, read_sidecar(path), expected_rows)


def recorded(directory: UPath, name: str) -> dict[str, Any] | None:
    """The record of `name` in a complete step's `_SUCCESS` (None if absent)."""
    try:
        files = read_json(directory / SUCCESS).get("files") or {}
    except (OSError, ValueError, AttributeError):
        return None
    return files.get(name)


def step_file_ok(directory: UPath, name: str, expected_rows: int | None = None) -> bool:
    """`directory` is complete and its file `name` matches the record in its `_SUCCESS`."""
    if not (directory / SUCCESS).exists():
        return False
    return file_ok(directory / name, recorded(directory, name), expected_rows)


def read_verified_parquet(path: UPath, record: dict[str, Any] | None, expected_rows: int | None = None):
    """Read a parquet file only if it matches its record.

    Raises:
        CorruptFileError: naming the file and what differs.
    """

    # read once: the bytes that are checked are the bytes that are parsed
    problem = _record_problem(record, expected_rows)
    data = None
    if problem is None:
        data, problem = _read(path)
    if problem is None:
        problem = _content_problem(data, record)
    if problem is not None:
        if problem != "missing":
            _warn(path, problem)
        raise CorruptFileError(str(path), problem)
    return pd.read_parquet(io.BytesIO(data))


def _local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")


def write_parquet_batches_recorded(path: UPath, batches: Iterable, row_group_rows: int) -> dict[str, Any]:
    """Stream frames into `path` in row groups of exactly `row_group_rows` rows (the last may be
    shorter), atomically; return the file's record. Memory holds one row group, never the file.

    A local file is written beside `path` and renamed; a remote one is written to a local
    temporary file and uploaded whole (the object appears only once complete).
    """
    import pyarrow.parquet as pq

    if _local(path):
        os.makedirs(os.path.dirname(path.path), exist_ok=True)
        tmp = f"{path.path}.tmp-{uuid.uuid4().hex[:8]}"
    else:
        fd, tmp = tempfile.mkstemp(suffix=".parquet")
        os.close(fd)
    writer, schema, pending, rows = None, None, [], 0

    def flush(frames: list, final: bool) -> list:
        nonlocal writer, schema, rows
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        cut = len(frame) if final else len(frame) - len(frame) % row_group_rows
        table = pa.Table.from_pandas(frame.iloc[:cut], preserve_index=False, schema=schema)
        if writer is None:
            schema = table.schema
            writer = pq.ParquetWriter(tmp, schema)
        if cut:
            writer.write_table(table, row_group_size=row_group_rows)
            rows += cut
        return [frame.iloc[cut:].reset_index(drop=True)] if cut < len(frame) else []

    try:
        held = 0
        for frame in batches:
            pending.append(frame)
            held += len(frame)
            if held >= row_group_rows:
                pending = flush(pending, final=False)
                held = sum(len(f) for f in pending)
        if pending or writer is None:
            flush(pending or [pd.DataFrame()], final=True)
        writer.close()
        h, size = hashlib.sha256(), 0
        with open(tmp, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
        if _local(path):
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path.path)
        else:
            path.fs.put_file(tmp, path.path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"sha256": h.hexdigest(), "bytes": size, "rows": rows}


def row_groups_for(group_rows: list[int], start: int, stop: int) -> tuple[list[int], int]:
    """The row groups holding rows [start, stop), and the first one's starting row."""
    groups, first_row, at = [], 0, 0
    for g, n in enumerate(group_rows):
        if at < stop and at + n > start:
            if not groups:
                first_row = at
            groups.append(g)
        at += n
    return groups, first_row


def read_rows(f, start: int, stop: int, columns: list[str] | None = None):
    """Rows [start, stop) of the parquet file open as `f`, reading only their row groups."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(f, pre_buffer=False)
    meta = pf.metadata
    groups, first_row = row_groups_for(
        [meta.row_group(g).num_rows for g in range(meta.num_row_groups)], start, stop
    )
    if not groups:
        empty = pf.schema_arrow.empty_table()
        return (empty.select(columns) if columns else empty).to_pandas()
    table = pf.read_row_groups(groups, columns=columns)
    return table.slice(start - first_row, stop - start).to_pandas()


def read_verified_rows(
    path: UPath,
    record: dict[str, Any] | None,
    expected_rows: int | None,
    start: int,
    stop: int,
    columns: list[str] | None = None,
):
    """Rows [start, stop) (of `columns`) of a parquet file that matches its record, reading only
    their row groups. The file is checked first (streamed, once per process per file version)
    and its version compared again after the read, so a file replaced in between is not used.

    Raises:
        CorruptFileError: naming the file and what differs.
    """
    problem = check_file(path, record, expected_rows)
    if problem is not None:
        raise CorruptFileError(str(path), problem)
    before = _version(path)
    with path.open("rb") as f:
        frame = read_rows(f, start, stop, columns)
    if _version(path) != before:
        raise CorruptFileError(str(path), "changed while it was read")
    return frame


def invalidate_step(directory: UPath) -> None:
    """Mark a step incomplete (its `_SUCCESS` removed), so the next plan computes it again."""
    try:
        (directory / SUCCESS).unlink()
    except FileNotFoundError:
        pass


def invalidate_shard(path: UPath) -> None:
    """Drop a shard's sidecar, so the shard counts as missing and is scored again."""
    try:
        sidecar(path).unlink()
    except FileNotFoundError:
        pass
