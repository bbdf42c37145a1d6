"""Loading, validating and sampling one benchmark split into the frame scoring consumes.

A split comes from the Hugging Face dataset repo (config = task) or from parquet (a file or a
directory of files) at a local, `s3://` or `hf://` path, read through fsspec
(`data/sources.py`). Only what is scored is read: the row count and columns come from the
parquet footers (or the dataset's schema), sampling is decided from the row count alone, the
label column is read whole (it is small), and then only the kept rows' sequences are read, a
batch at a time. So a split of any size can be evaluated; one too large for memory without
sampling is streamed (`iter_prepared`), never read whole.

Validation happens here, before any model loads: required columns, a non-empty split, labels in
{0, 1}, and on the kept rows (the rows that are scored; a bad row that sampling leaves out is
never read) one sequence length equal to the split's `seq_length`, the A/C/G/T/N alphabet and
SV coordinates inside RefSeq.

Sampling shuffles the row indices with `numpy.random.default_rng(seed).permutation`, keeps the
first floor(n * rate), then the first `max_size` of those; the kept rows are returned sorted by
their original `row_index` so outputs read in the split's own order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import pandas as pd

from plantcad_flows.config import SamplingConfig, SplitConfig
from plantcad_flows.data.dataset_repo import checkout
from plantcad_flows.data.sources import DatasetSource, FrameSource, ParquetSource
from plantcad_flows.errors import ValidationError
from plantcad_flows.families import labels_of, require_columns
from plantcad_flows.io.retry import with_retries


def open_split(split: SplitConfig):
    """The split's rows, unread: a source that answers its row count and columns from footers.

    A dataset repo is opened with `datasets.load_dataset(repo, name=task, split=split)` (Arrow on
    disk, memory-mapped): from the hub at `split.revision` (the commit the plan resolved;
    transient hub errors are retried), or from a local directory in the hub's layout, at
    `split.revision` when one is given (a git clone, materialised at that commit by
    `dataset_repo.checkout`).

    Raises:
        ValidationError: `splits[TASK/SPLIT].path` missing, or a file there is not parquet.
    """
    if split.path:
        return ParquetSource(split.path, f"splits[{split.key}].path")
    import datasets

    if os.path.isdir(split.repo_id):
        where = split.repo_id
        if split.revision:
            where = str(checkout(split.repo_id, split.revision, f"splits[{split.key}].revision"))
        ds = datasets.load_dataset(where, name=split.dataset_config, split=split.split)
    else:
        ds = with_retries(
            lambda: datasets.load_dataset(
                split.repo_id, name=split.dataset_config, split=split.split, revision=split.revision
            ),
            f"load {split.repo_id} {split.key}",
        )
    return DatasetSource(ds, f"{split.repo_id} {split.task}/{split.split}")


def load_split(split: SplitConfig) -> pd.DataFrame:
    """The raw split, whole, in its original row order (small splits and tests only)."""
    source = open_split(split)
    keep = np.arange(source.num_rows, dtype=np.int64)
    frames = list(source.batches(keep, source.columns))
    if not frames:
        return pd.DataFrame(columns=source.columns)
    return pd.concat(frames, ignore_index=True).drop(columns="row_index")


def sample_indices(n: int, sampling: SamplingConfig) -> np.ndarray:
    """Original row indices kept by `sampling`, ascending."""
    if sampling.rate is None and sampling.max_size is None:
        return np.arange(n, dtype=np.int64)
    order = np.random.default_rng(sampling.seed).permutation(n)
    if sampling.rate is not None:
        order = order[: math.floor(n * sampling.rate)]
    if sampling.max_size is not None:
        order = order[: sampling.max_size]
    return np.sort(order).astype(np.int64)


def _check_lengths(values: pd.Series, column: str, split: SplitConfig, rows: np.ndarray, first: dict) -> None:
    """One length across the kept rows (`first` carries the first kept row's from batch to
    batch), equal to the split's `seq_length`."""
    lengths = values.str.len().to_numpy()
    if not len(lengths):
        return
    if column not in first:
        first[column] = (int(rows[0]), int(lengths[0]))
        if lengths[0] != split.seq_length:
            raise ValidationError(
                f"splits[{split.key}].seq_length",
                split.seq_length,
                f"column {column} holds {int(lengths[0])}-bp sequences",
            )
    row0, length0 = first[column]
    if (lengths != length0).any():
        bad = int(np.flatnonzero(lengths != length0)[0])
        raise ValidationError(
            f"splits[{split.key}].{column}",
            int(lengths[bad]),
            f"mixed sequence lengths: row {int(rows[bad])} differs from row {row0} ({length0})",
        )


def iter_prepared(
    split: SplitConfig, sampling: SamplingConfig, raw: pd.DataFrame | None = None
) -> Iterator[pd.DataFrame]:
    """Open (or wrap `raw`), validate and sample one split, yielding the kept rows in batches.

    Everything that can be checked without the sequences (columns, an empty split, sampling
    that keeps nothing, labels) is checked before the first batch is read.

    Yields:
        The frame of the split's family (`TaskFamily.frame`): row_index, label (int64) and the
        family's sequence columns, in row order, of at most `sources.BATCH_ROWS` rows.

    Raises:
        ValidationError: a path that is missing or not parquet, missing columns, an empty split,
        a split that is empty after sampling, bad labels, and on the kept rows mixed or wrong
        lengths, characters outside ACGTN or bad coordinates (the family's checks).
    """
    source = open_split(split) if raw is None else FrameSource(raw)
    family = split.family
    seq_columns = family.sequence_columns(split)
    require_columns(source.columns, seq_columns, split, f"splits[{split.key}].seq_column")
    require_columns(source.columns, family.other_columns(split), split, f"splits[{split.key}] columns")
    if family.label_required:
        require_columns(source.columns, (split.label_column,), split, f"splits[{split.key}].label_column")
    if source.num_rows == 0:
        where = f"splits[{split.key}].path" if split.path else f"splits[{split.key}]"
        raise ValidationError(where, source.describe(), "empty split: it holds 0 rows")

    keep = sample_indices(source.num_rows, sampling)
    if keep.size == 0:
        raise ValidationError(
            "sampling", sampling.model_dump(), f"leaves 0 of {source.num_rows} examples of {split.key}"
        )
    labels = None
    if split.label_column in source.columns:  # small: read whole, checked before any sequence
        labels = source.column(split.label_column).iloc[keep].to_numpy()
        labels_of(pd.DataFrame({split.label_column: labels}), split, family.binary_labels)
    columns = [*seq_columns, *family.other_columns(split)]
    first: dict = {}
    done = 0
    for rows in source.batches(keep, columns):
        index = rows["row_index"].to_numpy(np.int64)
        if labels is not None:
            rows = rows.assign(**{split.label_column: labels[done : done + len(rows)]})
        for col in seq_columns:
            _check_lengths(rows[col].astype(str), col, split, index, first)
        yield family.frame(rows, index, split).reset_index(drop=True)
        done += len(rows)


def prepare_split(
    split: SplitConfig, sampling: SamplingConfig, raw: pd.DataFrame | None = None
) -> pd.DataFrame:
    """`iter_prepared`, concatenated: the kept rows as one frame (see there for Raises).

    Returns:
        The frame of the split's family (`TaskFamily.frame`): row_index, label (int64) and the
        family's sequence columns.
    """
    frames = list(iter_prepared(split, sampling, raw))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


def validate_split(split: SplitConfig, sampling: SamplingConfig) -> int:
    """Check a split as the prepare step will, holding one batch at a time; the kept row count."""
    return sum(len(batch) for batch in iter_prepared(split, sampling))
