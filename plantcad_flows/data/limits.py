"""How much sequence a split may hold, checked from parquet footers before any row is read.

A split is read whole into memory before it is sampled, and every shard task reads the sampled
examples again; a sequence column of gigabytes would exhaust a worker's memory long after the run
started (and a pyarrow string array over 2 GiB needs a large_string type pandas does not give
back). So the footers of a split's parquet files are read first (a few KB each, on any fsspec
store): the column's size is the larger of its declared uncompressed size and rows x bases per
sequence, and a split over `MAX_SEQUENCE_BYTES` is refused as bad input, naming the file.
"""

from __future__ import annotations

from plantcad_flows.config import SplitConfig
from plantcad_flows.errors import ValidationError
from plantcad_flows.identity.remote import filesystem

MAX_SEQUENCE_BYTES = 1 << 30  # 1 GiB of bases per sequence column: ~130,000 rows of 8,192 bp
_GB = 1e9


def parquet_files(path: str) -> list[str]:
    """The parquet files at `path` (a file, or every *.parquet under a directory), as URLs."""
    fs, root = filesystem(path)
    if not fs.exists(root):
        return []
    if fs.isdir(root):
        files = sorted(p for p in fs.find(root) if p.endswith(".parquet"))
    else:
        files = [root]
    return [fs.unstrip_protocol(p) for p in files]


def column_bytes(url: str, column: str, seq_length: int) -> tuple[int, int]:
    """(rows, bytes) of `column` in one parquet file, from its footer alone."""
    import pyarrow.parquet as pq

    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        meta = pq.ParquetFile(f).metadata
    declared = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.path_in_schema == column:
                declared += chunk.total_uncompressed_size
    return meta.num_rows, max(declared, meta.num_rows * seq_length)


def check_split_size(split: SplitConfig, limit: int = MAX_SEQUENCE_BYTES) -> None:
    """Refuse a split whose sequence column would not fit, before reading it.

    Raises:
        ValidationError: naming `splits[TASK/SPLIT].path`, the column and its size.
    """
    if not split.path:
        return
    columns = split.family.sequence_columns(split)
    for url in parquet_files(split.path):
        for column in columns:
            rows, size = column_bytes(url, column, split.seq_length)
            if size > limit:
                raise ValidationError(
                    f"splits[{split.key}].path",
                    split.path,
                    f"column {column!r} of {url} holds {size / _GB:.1f} GB ({rows} rows of "
                    f"{split.seq_length} bp); a split may hold {limit / _GB:.1f} GB",
                    "cut the file into smaller splits",
                )
