"""Shard planning, naming and the exactly-once merge check (pure, no Ray)."""

from __future__ import annotations

import pandas as pd
import pytest

from plantcad_flows.errors import IncompleteShardsError, ValidationError
from plantcad_flows.layout.sharding import (
    ShardSpec,
    merge_shards,
    missing_shards,
    parse_shard_filename,
    plan_shards,
    shard_filename,
)


def test_plan_hand_computed():
    assert plan_shards(10, 4) == [
        ShardSpec(0, 4, 0, 3),
        ShardSpec(1, 4, 3, 6),
        ShardSpec(2, 4, 6, 8),
        ShardSpec(3, 4, 8, 10),
    ]
    assert plan_shards(5, 1) == [ShardSpec(0, 1, 0, 5)]


@pytest.mark.parametrize("n,k", [(1, 1), (7, 3), (100, 8), (9, 9), (1000, 7)])
def test_plan_contiguous_balanced(n, k):
    specs = plan_shards(n, k)
    assert specs[0].start == 0 and specs[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(specs, specs[1:]))
    sizes = [s.size for s in specs]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert [s.index for s in specs] == list(range(len(specs)))
    assert plan_shards(n, k) == specs  # deterministic


def test_plan_more_shards_than_examples():
    specs = plan_shards(3, 8)
    assert [(s.start, s.stop, s.count) for s in specs] == [(0, 1, 3), (1, 2, 3), (2, 3, 3)]


@pytest.mark.parametrize("n,k,field", [(0, 2, "n_examples"), (5, 0, "ray.num_shards")])
def test_plan_rejects(n, k, field):
    with pytest.raises(ValidationError, match=field):
        plan_shards(n, k)


def test_filenames_roundtrip():
    assert shard_filename(3, 8) == "shard-00003-of-00008.parquet"
    assert ShardSpec(0, 4, 0, 3).filename == "shard-00000-of-00004.parquet"
    assert parse_shard_filename("shard-00003-of-00008.parquet") == (3, 8)
    assert parse_shard_filename("shard-00008-of-00008.parquet") is None
    assert parse_shard_filename("predictions.parquet") is None
    with pytest.raises(ValidationError):
        shard_filename(4, 4)


def test_missing_shards():
    specs = plan_shards(10, 4)
    have = [
        "shard-00000-of-00004.parquet",
        "shard-00002-of-00004.parquet",
        "shard-00001-of-00002.parquet",
        "_SUCCESS",
    ]
    assert [s.index for s in missing_shards(specs, have)] == [1, 3]


def _sampled(n=10):
    # Sampled row indices are not 0..n-1: sampling picks rows of the original split.
    return pd.DataFrame({"row_index": [i * 7 + 3 for i in range(n)], "label": [i % 2 for i in range(n)]})


def _shards(frame, k):
    return [s.take(frame).assign(score=lambda d: d["row_index"] * 0.5) for s in plan_shards(len(frame), k)]


def test_merge_exact(tmp_path):
    frame = _sampled()
    shards = _shards(frame, 3)
    paths = []
    for i, s in enumerate(shards):
        p = tmp_path / shard_filename(i, 3)
        s.to_parquet(p)
        paths.append(p)
    for inputs in (shards, paths, [str(p) for p in paths], list(reversed(shards))):
        merged = merge_shards(inputs, frame["row_index"])
        assert merged["row_index"].tolist() == frame["row_index"].tolist()
        assert merged["score"].tolist() == [r * 0.5 for r in frame["row_index"]]
        assert merged.index.tolist() == list(range(10))


def test_merge_reports_missing():
    frame = _sampled()
    shards = _shards(frame, 3)
    with pytest.raises(IncompleteShardsError, match=r"3 missing \[31, 38, 45\]"):
        merge_shards([shards[0], shards[2]], frame["row_index"])


def test_merge_reports_duplicates_and_unexpected():
    frame = _sampled()
    shards = _shards(frame, 3)
    stray = pd.DataFrame({"row_index": [999], "label": [0], "score": [0.0]})
    with pytest.raises(IncompleteShardsError) as e:
        merge_shards(shards + [shards[1], stray], frame["row_index"])
    msg = str(e.value)
    assert "3 duplicated [31, 38, 45]" in msg
    assert "1 unexpected [999]" in msg
    assert "missing" not in msg


def test_merge_truncates_long_lists():
    frame = _sampled(50)
    with pytest.raises(IncompleteShardsError, match=r"49 missing \[10, 17, 24, 31, 38 and 44 more\]"):
        merge_shards([frame.iloc[:1]], frame["row_index"])


def test_merge_rejects_empty_and_columnless():
    with pytest.raises(IncompleteShardsError, match="no shards"):
        merge_shards([], [1, 2])
    with pytest.raises(IncompleteShardsError, match="row_index"):
        merge_shards([pd.DataFrame({"x": [1]})], [1])
