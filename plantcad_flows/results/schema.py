"""The version of each file a run leaves for later readers: `results.json`, `results.parquet`
and `history/*.parquet`.

A reader years later must know what a file holds, so each carries `schema_version` (as Inspect's
logs carry `version`): results.json as `{"schema_version": N, "rows": [...]}`, a parquet file as
the key `schema_version` of its file metadata (the columns stay the table's own). Readers accept
every version up to the current one and refuse a newer one by name.

Versions:
  1. the files written before versions existed: results.json a bare list of rows; parquet files
     without the key.
  2. the same rows and columns, with `schema_version`.
  3. result and history rows gain `strand` (fwd or rc: the reverse complement) and `context_bp`
     (the model's context in bases). Older rows are read as `strand: fwd` (everything was scored
     forward then) and `context_bp: null` (the context was not recorded).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from plantcad_flows.errors import StorageError

SCHEMA_VERSION = 3
KEY = "schema_version"
_META = KEY.encode()


def _checked(version: int, where: str) -> int:
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"{where}: schema_version {version} is newer than this plantcad-flows reads "
            f"({SCHEMA_VERSION}); upgrade plantcad-flows"
        )
    return version


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """`frame` as parquet, its file metadata carrying the current `schema_version`."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _META: str(SCHEMA_VERSION).encode()}
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def read_parquet(source: Any, where: str = "parquet file") -> tuple[pd.DataFrame, int]:
    """A versioned parquet file (a path or an open binary file) and its version (1 when absent).

    Raises:
        StorageError: a version newer than this code reads.
    """
    table = pq.read_table(source)
    raw = (table.schema.metadata or {}).get(_META)
    version = _checked(int(raw) if raw else 1, where)
    return table.to_pandas(), version


# Fields added by a version, with the value an older row is read with.
ADDED_FIELDS: dict[int, dict[str, Any]] = {3: {"strand": "fwd", "context_bp": None}}


def _defaults(version: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for added_in, fields in sorted(ADDED_FIELDS.items()):
        if version < added_in:
            out.update(fields)
    return out


def upgrade_rows(rows: list[dict[str, Any]], version: int) -> list[dict[str, Any]]:
    """Rows of a file of `version` with every field a later version added (at its default)."""
    defaults = _defaults(version)
    return [{**defaults, **row} for row in rows] if defaults else rows


def upgrade_frame(frame: pd.DataFrame, version: int) -> pd.DataFrame:
    """A table of a file of `version` with every column a later version added (at its default)."""
    for column, value in _defaults(version).items():
        if column not in frame.columns:
            frame[column] = value
    return frame


def results_json(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The content of results.json: the rows under the current `schema_version`."""
    return {KEY: SCHEMA_VERSION, "rows": rows}


def read_results_json(text: str, where: str = "results.json") -> tuple[list[dict[str, Any]], int]:
    """The rows of a results.json of any version, and that version.

    Raises:
        StorageError: a version newer than this code reads, or a file that is neither shape.
    """
    data = json.loads(text)
    if isinstance(data, list):
        return data, 1
    if isinstance(data, dict) and isinstance(data.get(KEY), int) and isinstance(data.get("rows"), list):
        return data["rows"], _checked(data[KEY], where)
    raise StorageError(f"{where}: not a results file (expected a list of rows or {{{KEY!r}, 'rows'}})")
