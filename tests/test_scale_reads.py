"""Reading only what is scored: a split over the old 1 GiB limit is sampled from its footers and
labels, only the row groups holding kept rows are read, `examples.parquet` is written in row
groups and a shard reads only its own; and the file errors (not parquet, an empty split).

The large split is real parquet whose footer declares 262,144 rows of 8,192 bp (2.1 GB of
bases) while the file stays a few MB: its 32 row groups repeat a 16-value dictionary.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plantcad_flows.config import SamplingConfig, SplitConfig
from plantcad_flows.data import sources
from plantcad_flows.data.splits import iter_prepared, prepare_split, sample_indices, validate_split
from plantcad_flows.errors import CorruptFileError, ValidationError
from plantcad_flows.layout.integrity import (
    read_rows,
    read_verified_rows,
    row_groups_for,
    write_parquet_batches_recorded,
)
from plantcad_flows.layout.storage import to_path

CONS = dict(task="conservation_within_andropogoneae", split="test")
RNG = np.random.default_rng(0)
DICT = ["".join(RNG.choice(list("ACGT"), 8192)) for _ in range(16)]


def _code(rows: np.ndarray) -> np.ndarray:
    return (rows * 7 + rows // 3) % len(DICT)  # which dictionary value row i holds


def _huge_split(path, rows=262_144, group=8192):
    """Row groups written one at a time, each a slice of one repeated dictionary."""
    schema = pa.schema([("sequence", pa.dictionary(pa.int32(), pa.string())), ("label", pa.int64())])
    dictionary = pa.array(DICT)
    with pq.ParquetWriter(path, schema) as w:
        for start in range(0, rows, group):
            idx = np.arange(start, min(start + group, rows))
            seq = pa.DictionaryArray.from_arrays(pa.array(_code(idx).astype(np.int32)), dictionary)
            w.write_table(pa.table({"sequence": seq, "label": pa.array(idx % 2)}, schema=schema))
    return path


def test_split_over_the_old_1gib_limit_is_planned_and_only_kept_row_groups_are_read(tmp_path, monkeypatch):
    path = _huge_split(tmp_path / "huge.parquet")
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows * 8192 > 2 * 10**9 and meta.num_row_groups == 32
    assert path.stat().st_size < 20_000_000
    read_groups: list[int] = []
    real = sources._group_batches
    monkeypatch.setattr(sources, "_group_batches", lambda pf, g, *a: read_groups.append(g) or real(pf, g, *a))
    split = SplitConfig(**CONS, path=str(path))
    sampling = SamplingConfig(max_size=5, seed=3)
    out = prepare_split(split, sampling)
    keep = sample_indices(meta.num_rows, sampling)  # the same draw as before this reader
    assert out["row_index"].tolist() == keep.tolist()
    assert out["label"].tolist() == (keep % 2).tolist()
    assert out["sequence"].tolist() == [DICT[c] for c in _code(keep)]
    assert sorted(read_groups) == sorted(set((keep // 8192).tolist()))  # 5 of 32 row groups at most
    assert validate_split(split, sampling) == 5


def test_sampling_from_parquet_keeps_the_rows_a_whole_read_kept(tmp_path):
    """The sampled set is the one the old reader (whole split, then `iloc`) kept, across files
    and row groups."""
    d = tmp_path / "split"
    d.mkdir()
    seqs = ["".join(RNG.choice(list("ACGT"), 16)) for _ in range(700)]
    whole = pd.DataFrame({"sequence": seqs, "label": [i % 2 for i in range(700)]})
    pq.write_table(pa.Table.from_pandas(whole.iloc[:400]), d / "a.parquet", row_group_size=64)
    pq.write_table(
        pa.Table.from_pandas(whole.iloc[400:].reset_index(drop=True)), d / "b.parquet", row_group_size=50
    )
    split = SplitConfig(**CONS, path=str(d), seq_length=16)
    for sampling in (SamplingConfig(rate=0.3, seed=1), SamplingConfig(max_size=10, seed=7), SamplingConfig()):
        out = prepare_split(split, sampling)
        keep = sample_indices(700, sampling)
        expected = whole.iloc[keep]
        assert out["row_index"].tolist() == keep.tolist()
        assert out["sequence"].tolist() == expected["sequence"].tolist()
        assert out["label"].tolist() == expected["label"].tolist()
        assert [len(b) for b in iter_prepared(split, sampling)] == _batch_sizes(
            keep, [64] * 6 + [16] + [50] * 6
        )


def _batch_sizes(keep, groups):
    """Kept rows per row group (batches never cross one), skipping groups with none."""
    out, at = [], 0
    for n in groups:
        k = int(((keep >= at) & (keep < at + n)).sum())
        if k:
            out.append(k)
        at += n
    return out


class Counting:
    """A binary file that counts the bytes read through it."""

    def __init__(self, f):
        self.f, self.read_bytes = f, 0

    def read(self, n=-1):
        data = self.f.read(n)
        self.read_bytes += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_examples_are_written_in_row_groups_and_a_shard_reads_only_its_own(tmp_path):
    n, length = 2000, 1024
    frame = pd.DataFrame(
        {
            "row_index": np.arange(n) * 3,
            "label": np.arange(n) % 2,
            "sequence": ["".join(RNG.choice(list("ACGT"), length)) for _ in range(n)],
        }
    )
    path = to_path(str(tmp_path / "examples.parquet"))
    uneven = (frame.iloc[i : i + 333] for i in range(0, n, 333))  # batches do not fall on groups
    record = write_parquet_batches_recorded(path, uneven, 256)
    meta = pq.ParquetFile(path.path).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [256] * 7 + [208]
    assert record["rows"] == n and record["bytes"] == path.stat().st_size
    assert row_groups_for([256] * 7 + [208], 500, 800) == ([1, 2, 3], 256)

    size = path.stat().st_size
    with open(path.path, "rb") as raw:
        f = Counting(raw)
        rows = read_rows(f, 500, 800)
    pd.testing.assert_frame_equal(rows, frame.iloc[500:800].reset_index(drop=True))
    assert f.read_bytes < 0.45 * size, (f.read_bytes, size)  # 3 row groups of 8, and the footer

    assert read_verified_rows(path, record, n, 1990, 2000)["row_index"].tolist() == list(range(5970, 6000, 3))
    assert read_verified_rows(path, record, n, 0, n, ["row_index"]).columns.tolist() == ["row_index"]
    with pytest.raises(CorruptFileError):
        read_verified_rows(path, {**record, "sha256": "0" * 64}, n, 0, 10)


def _one_line(e: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def test_a_file_named_parquet_that_is_not_one_is_named_with_its_cause(tmp_path):
    bad = tmp_path / "split" / "part-1.parquet"
    bad.parent.mkdir()
    pd.DataFrame({"sequence": ["ACGT"] * 3, "label": [0, 1, 0]}).to_parquet(
        tmp_path / "split" / "part-0.parquet"
    )
    bad.write_text("sequence,label\nACGT,0\n")
    with pytest.raises(ValidationError) as e:
        prepare_split(SplitConfig(**CONS, path=str(bad.parent), seq_length=4), SamplingConfig())
    _one_line(
        e, "splits[conservation_within_andropogoneae/test].path", "part-1.parquet", "not a parquet file"
    )


def test_an_empty_split_is_not_blamed_on_sampling(tmp_path):
    empty = tmp_path / "empty.parquet"
    pd.DataFrame({"sequence": pd.Series([], dtype=str), "label": pd.Series([], dtype="int64")}).to_parquet(
        empty
    )
    with pytest.raises(ValidationError) as e:
        prepare_split(SplitConfig(**CONS, path=str(empty), seq_length=4), SamplingConfig(rate=0.5))
    msg = _one_line(
        e, "splits[conservation_within_andropogoneae/test].path", str(empty), "empty split", "0 rows"
    )
    assert "sampling" not in msg
    nonempty = tmp_path / "three.parquet"
    pd.DataFrame({"sequence": ["ACGT"] * 3, "label": [0, 1, 0]}).to_parquet(nonempty)
    with pytest.raises(ValidationError) as e:
        prepare_split(SplitConfig(**CONS, path=str(nonempty), seq_length=4), SamplingConfig(rate=0.1))
    _one_line(e, "sampling=", "leaves 0 of 3")
