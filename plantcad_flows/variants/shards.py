"""A shard of a prepared variant set: a row range of `variants.parquet`, read by row group.

Shards are planned by `layout.sharding.plan_shards` over the prepared row count (contiguous,
balanced, the same rows for the same file), so a shard that survived a crash is a valid piece of
the next run. A shard reads only the row groups that overlap its range, and the reference windows
of its rows from the FASTA by index, `batch_rows` variants at a time: a worker's memory is one
row group plus one batch of windows, whatever the size of the set or of the genome.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from plantcad_flows.io.remote import filesystem, is_local
from plantcad_flows.layout.sharding import ShardSpec, plan_shards
from plantcad_flows.variants.reference import ReferenceGenome

__all__ = ["ShardSpec", "plan_shards", "read_rows", "iter_windows"]


def read_rows(
    path: str | os.PathLike, start: int, stop: int, columns: list[str] | None = None
) -> pd.DataFrame:
    """Rows [start, stop) of a prepared `variants.parquet` (local or remote), reading only the
    overlapping row groups (on object stores: only their byte ranges)."""
    if is_local(str(path)):
        return _read_rows(pq.ParquetFile(path), start, stop, columns)
    fs, inner = filesystem(str(path))
    with fs.open(inner, "rb") as f:
        return _read_rows(pq.ParquetFile(f), start, stop, columns)


def _read_rows(pf, start: int, stop: int, columns: list[str] | None) -> pd.DataFrame:
    sizes = np.array([pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)], dtype=np.int64)
    ends = np.cumsum(sizes)
    begins = ends - sizes
    groups = np.flatnonzero((begins < stop) & (ends > start)).tolist()
    if not groups:
        return pf.schema_arrow.empty_table().to_pandas() if columns is None else pd.DataFrame(columns=columns)
    table = pf.read_row_groups(groups, columns=columns)
    offset = int(begins[groups[0]])
    return table.slice(start - offset, stop - start).to_pandas()


def iter_windows(
    rows: pd.DataFrame, genome: ReferenceGenome, length: int, batch_rows: int = 4096
) -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray]]:
    """Per batch of `rows`: (slice of rows, (b, length) uint8 reference windows, (b,) uint8 ref
    bases, (b,) uint8 alt bases). The window's centre (`length // 2 - 1`) holds the REF base."""
    chrom = rows["chrom"].to_numpy(dtype=object)
    pos = rows["pos"].to_numpy(np.int64)
    ref = np.frombuffer("".join(rows["ref"]).encode("ascii"), dtype=np.uint8)
    alt = np.frombuffer("".join(rows["alt"]).encode("ascii"), dtype=np.uint8)
    for lo in range(0, len(rows), batch_rows):
        hi = min(lo + batch_rows, len(rows))
        yield slice(lo, hi), genome.windows(chrom[lo:hi], pos[lo:hi], length), ref[lo:hi], alt[lo:hi]
