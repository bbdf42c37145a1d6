"""Where a split's rows come from, read so that memory is bounded by what is scored.

A split is parquet (a file, or every `*.parquet` under a directory, on any fsspec store), a
`datasets.Dataset` from the dataset repo, or a frame already in memory (tests, benchmarks). All
three answer the same four questions, in this order, so that sampling is decided before a
sequence is read:

1. `columns` and `num_rows`: from the parquet footers (a few KB per file) or the dataset's
   Arrow schema.
2. `column(name)`: one small column in full (the label), to validate the kept labels.
3. `batches(keep, columns)`: only the kept rows of the sequence columns, in row order, a batch
   at a time. Parquet is read row group by row group, and only the row groups holding a kept
   row, in batches of `BATCH_ROWS` rows within a group; a dataset by `Dataset.select`. So a
   split sampled to 64 rows never holds more than one batch of its sequences, and an unsampled
   split too large for memory is streamed, never read whole.

Errors name the file: a file that is not parquet, and a missing path, are `ValidationError`s of
`splits[TASK/SPLIT].path`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from plantcad_flows.errors import ValidationError
from plantcad_flows.io.remote import filesystem, is_local

BATCH_ROWS = 1024  # rows decoded at once within a row group: 8 MB of 8,192-bp sequences
READ_BUFFER = 1 << 22  # bytes of a column chunk read at a time


def parquet_files(path: str) -> list[str]:
    """The parquet files at `path` (a file, or every *.parquet under a directory): URLs, or
    plain paths for a local `path`."""
    fs, root = filesystem(path)
    if not fs.exists(root):
        return []
    if fs.isdir(root):
        files = sorted(p for p in fs.find(root) if p.endswith(".parquet"))
    else:
        files = [root]
    return files if is_local(path) else [fs.unstrip_protocol(p) for p in files]


def _rows_in(keep: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The kept (sorted, global) row indices within [start, stop)."""
    lo, hi = np.searchsorted(keep, [start, stop])
    return keep[lo:hi]


@dataclass
class _File:
    url: str
    offset: int  # global index of its first row
    num_rows: int
    group_rows: list[int]
    columns: list[str]


class ParquetSource:
    """A split's parquet files on any fsspec store, read by row group."""

    def __init__(self, path: str, field: str):
        self.path = path
        self.field = field
        urls = parquet_files(path)
        if not urls:
            fs, root = filesystem(path)
            reason = "directory holds no .parquet file" if fs.exists(root) else "no such file or directory"
            raise ValidationError(field, path, reason)
        self.files: list[_File] = []
        offset = 0
        for url in urls:
            meta = self._footer(url)
            groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            self.files.append(
                _File(url, offset, meta.num_rows, groups, list(meta.schema.to_arrow_schema().names))
            )
            offset += meta.num_rows
        self.num_rows = offset
        # a column counts only when every file has it
        self.columns = [c for c in self.files[0].columns if all(c in f.columns for f in self.files)]

    def describe(self) -> str:
        return self.path

    def _open(self, url: str):
        import pyarrow.parquet as pq

        fs, p = filesystem(url)
        try:
            # buffered: a column chunk is read a few MB at a time, not whole
            return pq.ParquetFile(fs.open(p, "rb"), pre_buffer=False, buffer_size=READ_BUFFER)
        except FileNotFoundError:
            raise ValidationError(self.field, url, "no such file or directory") from None
        except Exception as e:  # noqa: BLE001 - pyarrow's ArrowInvalid and friends: not parquet
            cause = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValidationError(self.field, url, f"not a parquet file ({cause})") from None

    def _footer(self, url: str):
        pf = self._open(url)
        try:
            return pf.metadata
        finally:
            pf.close()

    def column(self, name: str) -> pd.Series:
        parts = []
        for f in self.files:
            pf = self._open(f.url)
            try:
                parts.append(pf.read(columns=[name]).column(name).to_pandas())
            finally:
                pf.close()
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]

    def batches(self, keep: np.ndarray, columns: Sequence[str]) -> Iterator[pd.DataFrame]:
        """The kept rows of `columns`, in row order, with their global `row_index`."""
        for f in self.files:
            in_file = _rows_in(keep, f.offset, f.offset + f.num_rows)
            if in_file.size == 0:
                continue
            pf = self._open(f.url)
            try:
                start = f.offset
                for g, n in enumerate(f.group_rows):
                    wanted = _rows_in(in_file, start, start + n)
                    if wanted.size:
                        yield from _group_batches(pf, g, start, wanted, columns)
                    start += n
            finally:
                pf.close()


def _group_batches(pf: Any, group: int, start: int, wanted: np.ndarray, columns) -> Iterator[pd.DataFrame]:
    """The `wanted` rows of one row group, decoded `BATCH_ROWS` rows at a time."""
    at = start
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=list(columns)):
        rows = _rows_in(wanted, at, at + batch.num_rows)
        if rows.size:
            frame = batch.take(rows - at).to_pandas()
            frame.insert(0, "row_index", rows)
            yield frame
        at += batch.num_rows


class DatasetSource:
    """A `datasets.Dataset` (Arrow on disk, memory-mapped): kept rows by `Dataset.select`."""

    def __init__(self, ds: Any, where: str):
        self.ds = ds
        self.where = where
        self.num_rows = ds.num_rows
        self.columns = list(ds.column_names)

    def describe(self) -> str:
        return self.where

    def column(self, name: str) -> pd.Series:
        return self.ds.select_columns([name]).to_pandas()[name]

    def batches(self, keep: np.ndarray, columns: Sequence[str]) -> Iterator[pd.DataFrame]:
        cols = self.ds.select_columns(list(columns))
        for i in range(0, len(keep), BATCH_ROWS):
            rows = keep[i : i + BATCH_ROWS]
            frame = cols.select(rows).to_pandas()
            frame.insert(0, "row_index", rows)
            yield frame


class FrameSource:
    """A split already in memory (tests, benchmarks, the old `raw=` argument)."""

    def __init__(self, frame: pd.DataFrame, where: str = "the given frame"):
        self.frame = frame
        self.where = where
        self.num_rows = len(frame)
        self.columns = list(frame.columns)

    def describe(self) -> str:
        return self.where

    def column(self, name: str) -> pd.Series:
        return self.frame[name].reset_index(drop=True)

    def batches(self, keep: np.ndarray, columns: Sequence[str]) -> Iterator[pd.DataFrame]:
        for i in range(0, len(keep), BATCH_ROWS):
            rows = keep[i : i + BATCH_ROWS]
            frame = self.frame.iloc[rows][list(columns)].reset_index(drop=True)
            frame.insert(0, "row_index", rows)
            yield frame
