"""Cutting a (model, split) cell into shards, naming their files, and merging them back.

A cell's sampled examples are cut into contiguous, balanced shards by position in the sampled
frame. Shard i of n always holds the same rows for the same sampled frame, so a shard file that
survived a crashed run is a valid piece of the next run and only the missing shards are scored
again. The shard count is part of the file name, so shards planned for a different count are never
mistaken for pieces of this plan.

Merging is where lost or duplicated work would turn into silently wrong metrics, so `merge_shards`
refuses to return anything unless the shards cover every sampled example exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike

import numpy as np
import pandas as pd

from plantcad_flows.errors import IncompleteShardsError, ValidationError
from plantcad_flows.layout.storage import read_parquet

ROW_INDEX = "row_index"
_SHARD_RE = re.compile(r"^shard-(\d{5})-of-(\d{5})\.parquet$")
_SHOWN = 5  # row indices quoted in an error message; more would bury the message


@dataclass(frozen=True)
class ShardSpec:
    """Rows [start, stop) of the sampled frame, by position; shard `index` of `count`."""

    index: int
    count: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def filename(self) -> str:
        return shard_filename(self.index, self.count)

    def take(self, frame: pd.DataFrame) -> pd.DataFrame:
        """This shard's rows of the sampled frame."""
        return frame.iloc[self.start : self.stop]


def plan_shards(n_examples: int, num_shards: int) -> list[ShardSpec]:
    """Cut `n_examples` rows into `num_shards` contiguous shards whose sizes differ by at most one.

    The first `n_examples % num_shards` shards get the extra row. Asking for more shards than
    examples gives one shard per example rather than empty shards, which would cost a task each
    for nothing.

    Raises:
        ValidationError: `n_examples` < 1 or `num_shards` < 1.
    """
    if n_examples < 1:
        raise ValidationError("n_examples", n_examples, "a cell needs at least one example")
    if num_shards < 1:
        raise ValidationError("ray.num_shards", num_shards, "must be >= 1")
    count = min(num_shards, n_examples)
    base, extra = divmod(n_examples, count)
    specs, start = [], 0
    for i in range(count):
        stop = start + base + (1 if i < extra else 0)
        specs.append(ShardSpec(i, count, start, stop))
        start = stop
    return specs


def shard_filename(index: int, count: int) -> str:
    """`shard-00003-of-00008.parquet` (0-based index)."""
    if not 0 <= index < count:
        raise ValidationError("shard index", index, f"out of range for {count} shards")
    return f"shard-{index:05d}-of-{count:05d}.parquet"


def parse_shard_filename(name: str) -> tuple[int, int] | None:
    """(index, count) from a shard file name, or None if `name` is not a shard file."""
    m = _SHARD_RE.match(name)
    if not m:
        return None
    index, count = int(m.group(1)), int(m.group(2))
    return (index, count) if index < count else None


def missing_shards(specs: Sequence[ShardSpec], existing_names: Iterable[str]) -> list[ShardSpec]:
    """The planned shards whose file is not among `existing_names` (base names)."""
    have = set(existing_names)
    return [s for s in specs if s.filename not in have]


def _read(item: pd.DataFrame | str | PathLike) -> pd.DataFrame:
    if isinstance(item, pd.DataFrame):
        return item
    return read_parquet(item)


def _quote(values: np.ndarray) -> str:
    shown = ", ".join(str(int(v)) for v in values[:_SHOWN])
    more = f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else ""
    return f"[{shown}{more}]"


def merge_shards(
    frames_or_paths: Iterable[pd.DataFrame | str | PathLike],
    expected_row_index: Sequence[int] | np.ndarray | pd.Series,
) -> pd.DataFrame:
    """Concatenate shard predictions and check they cover the sampled examples exactly once.

    Args:
        frames_or_paths: shard frames, or parquet paths (local or fsspec URLs), in shard order.
        expected_row_index: the `row_index` column of the sampled frame, in its order.

    Returns:
        One frame with a fresh 0..n-1 index, rows in the order of `expected_row_index`.

    Raises:
        IncompleteShardsError: naming the first missing, duplicated or unexpected row indices.
    """
    frames = [_read(x) for x in frames_or_paths]
    expected = np.asarray(expected_row_index, dtype=np.int64)
    if not frames:
        raise IncompleteShardsError(f"no shards to merge; {len(expected)} examples expected")
    for i, f in enumerate(frames):
        if ROW_INDEX not in f.columns:
            raise IncompleteShardsError(f"shard {i} has no {ROW_INDEX!r} column")
    merged = pd.concat(frames, ignore_index=True)
    got = merged[ROW_INDEX].to_numpy(dtype=np.int64)

    uniq_exp, exp_counts = np.unique(expected, return_counts=True)
    if (exp_counts > 1).any():
        # A sampled frame with repeated row indices cannot be checked for exact coverage.
        raise IncompleteShardsError(f"expected {ROW_INDEX} has duplicates {_quote(uniq_exp[exp_counts > 1])}")
    uniq_got, got_counts = np.unique(got, return_counts=True)
    problems = []
    missing = np.setdiff1d(uniq_exp, uniq_got, assume_unique=True)
    if len(missing):
        problems.append(f"{len(missing)} missing {_quote(missing)}")
    dup = uniq_got[got_counts > 1]
    if len(dup):
        problems.append(f"{len(dup)} duplicated {_quote(dup)}")
    extra = np.setdiff1d(uniq_got, uniq_exp, assume_unique=True)
    if len(extra):
        problems.append(f"{len(extra)} unexpected {_quote(extra)}")
    if problems:
        raise IncompleteShardsError(
            f"shards do not cover the {len(expected)} sampled examples exactly once: " + "; ".join(problems)
        )
    order = pd.Series(np.arange(len(merged)), index=got).loc[expected].to_numpy()
    return merged.iloc[order].reset_index(drop=True)
