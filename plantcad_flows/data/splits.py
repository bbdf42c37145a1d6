"""Loading, validating and sampling one benchmark split into the frame scoring consumes.

A split comes from the Hugging Face dataset repo (config = task) or from parquet (a file or a
directory of files) at a local, `s3://` or `hf://` path, read through fsspec. Validation happens
here, before any model loads: required columns, one sequence length equal to the split's
`seq_length`, the A/C/G/T/N alphabet (checked on the sampled rows only, to keep large splits
cheap), labels in {0, 1}, and SV coordinates inside RefSeq.

Sampling shuffles the row indices with `numpy.random.default_rng(seed).permutation`, keeps the
first floor(n * rate), then the first `max_size` of those; the kept rows are returned sorted by
their original `row_index` so outputs read in the split's own order.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from plantcad_flows.config import SamplingConfig, SplitConfig
from plantcad_flows.data.dataset_repo import checkout
from plantcad_flows.data.limits import check_split_size
from plantcad_flows.errors import ValidationError
from plantcad_flows.families import require_columns
from plantcad_flows.identity.retry import with_retries
from plantcad_flows.layout.storage import read_parquet


def read_split_files(path: str) -> pd.DataFrame:
    """A split's parquet file or directory; a missing one is a config error naming the path."""
    try:
        return read_parquet(path)
    except FileNotFoundError as e:
        raise ValidationError("splits[].path", path, str(e).split(":")[0]) from None


def load_split(split: SplitConfig) -> pd.DataFrame:
    """The raw split, in its original row order.

    A dataset repo is read with `datasets.load_dataset(repo, name=task, split=split)`: from the
    hub at `split.revision` (the commit the plan resolved; transient hub errors are retried), or
    from a local directory in the hub's layout, at `split.revision` when one is given (a git
    clone, materialised at that commit by `dataset_repo.checkout`).
    """
    if split.path:
        check_split_size(split)  # from the footers, before a row is read
        return read_split_files(split.path)
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
    return ds.to_pandas()


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


def _check_lengths(values: pd.Series, column: str, split: SplitConfig) -> None:
    lengths = values.str.len().to_numpy()
    if len(lengths) and (lengths != lengths[0]).any():
        bad = int(np.flatnonzero(lengths != lengths[0])[0])
        raise ValidationError(
            f"splits[{split.key}].{column}",
            int(lengths[bad]),
            f"mixed sequence lengths: row {bad} differs from row 0 ({int(lengths[0])})",
        )
    if len(lengths) and lengths[0] != split.seq_length:
        raise ValidationError(
            f"splits[{split.key}].seq_length",
            split.seq_length,
            f"column {column} holds {int(lengths[0])}-bp sequences",
        )


def prepare_split(
    split: SplitConfig, sampling: SamplingConfig, raw: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Load (unless `raw` is given), validate and sample one split.

    Returns:
        The frame of the split's family (`TaskFamily.frame`): row_index, label (int64) and the
        family's sequence columns.

    Raises:
        ValidationError: missing columns, mixed or wrong lengths, characters outside ACGTN, bad
        labels or coordinates, or a split that is empty after sampling.
    """
    raw = load_split(split) if raw is None else raw
    family = split.family
    seq_columns = family.sequence_columns(split)
    require_columns(raw.columns, seq_columns, split, f"splits[{split.key}].seq_column")
    require_columns(raw.columns, family.other_columns(split), split, f"splits[{split.key}] columns")
    if family.label_required:
        require_columns(raw.columns, (split.label_column,), split, f"splits[{split.key}].label_column")
    for col in seq_columns:
        _check_lengths(raw[col].astype(str), col, split)

    keep = sample_indices(len(raw), sampling)
    if keep.size == 0:
        raise ValidationError(
            "sampling", sampling.model_dump(), f"leaves 0 of {len(raw)} examples of {split.key}"
        )
    return family.frame(raw.iloc[keep], keep, split).reset_index(drop=True)
