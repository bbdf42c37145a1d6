"""Every data file is recorded (sha256, bytes, rows) when written and checked when read or reused:
a truncated, edited or unrecorded file is never used, its step becomes incomplete, and a warning
names the file. The step functions themselves (no Prefect) recompute exactly what was damaged."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from conftest import eval_config

from plantcad_flows import steps
from plantcad_flows.config import EvalConfig
from plantcad_flows.errors import CorruptFileError
from plantcad_flows.layout.integrity import (
    check_file,
    read_verified_parquet,
    shard_ok,
    sidecar,
    write_parquet_recorded,
    write_parquet_with_sidecar,
)
from plantcad_flows.layout.plan import PREDICTIONS, build_cells, cell_is_complete
from plantcad_flows.layout.sharding import plan_shards
from plantcad_flows.layout.storage import SUCCESS, read_json, to_path


def frame(n: int = 50) -> pd.DataFrame:
    return pd.DataFrame({"row_index": range(n), "score": [i / 7 for i in range(n)]})


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip(path: Path, at: float = 0.5) -> None:
    """Change one byte in place: same size, different content."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_record_matches_what_was_written(tmp_path):
    p = to_path(str(tmp_path / "x.parquet"))
    record = write_parquet_recorded(p, frame())
    assert record["rows"] == 50 and record["bytes"] == len(Path(p.path).read_bytes())
    assert check_file(p, record) is None
    assert read_verified_parquet(p, record, 50).equals(frame())


@pytest.mark.parametrize(
    "damage,problem",
    [
        (lambda p: truncate(p), "bytes"),
        (lambda p: flip(p), "sha256"),
        (lambda p: p.unlink(), "missing"),
    ],
    ids=["truncated", "flipped", "deleted"],
)
def test_damage_is_detected_and_named(tmp_path, caplog, damage, problem):
    p = to_path(str(tmp_path / "x.parquet"))
    record = write_parquet_recorded(p, frame())
    damage(Path(p.path))
    caplog.set_level(logging.WARNING, logger="plantcad_flows.layout.integrity")
    assert problem in check_file(p, record)
    with pytest.raises(CorruptFileError) as e:
        read_verified_parquet(p, record)
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    if problem != "missing":
        assert any(str(p) in r.getMessage() and "not used" in r.getMessage() for r in caplog.records)


def test_rows_and_record_must_agree(tmp_path):
    p = to_path(str(tmp_path / "x.parquet"))
    record = write_parquet_recorded(p, frame())
    assert "expected" in check_file(p, record, expected_rows=49)
    assert "rows" in check_file(p, {**record, "rows": 49})
    assert "no integrity record" in check_file(p, None)


def test_shard_counts_only_with_its_sidecar(tmp_path):
    p = to_path(str(tmp_path / "shards" / "shard-00000-of-00002.parquet"))
    write_parquet_with_sidecar(p, frame(8))
    assert shard_ok(p, 8) and not shard_ok(p, 9)
    Path(sidecar(p).path).unlink()  # a kill between the shard and its sidecar
    assert Path(p.path).exists() and not shard_ok(p)


# --------------------------------------------------- the steps, end to end without Prefect


@pytest.fixture
def cell_and_job(small_models, synthetic_dir, tmp_path):
    cfg = eval_config(small_models, synthetic_dir, tmp_path / "out", tasks=(("tis_recovery", "test_maize"),))
    cfg["models"] = cfg["models"][:1]
    [cell] = build_cells(EvalConfig.model_validate(cfg))
    return cell, cell.split_job


def _run_cell(cell, job):
    prepared = steps.prepare(job)
    outputs = [steps.score_shard(cell, s, prepared) for s in plan_shards(prepared.num_examples, 2)]
    return prepared, outputs, steps.finalize_cell(cell, outputs, prepared)


def test_steps_recompute_exactly_what_was_damaged(cell_and_job, caplog):
    cell, job = cell_and_job
    prepared, outputs, clean = _run_cell(cell, job)
    assert clean.status == "completed" and cell_is_complete(cell)
    examples = Path(prepared.examples)
    info = read_json(to_path(job.dir) / SUCCESS)
    assert info["files"]["examples.parquet"]["rows"] == prepared.num_examples == 16
    assert read_json(to_path(cell.dir) / SUCCESS)["files"][PREDICTIONS]["rows"] == 16
    shard0, shard1 = (Path(o.path) for o in outputs)
    assert json.loads(Path(str(shard0) + ".json").read_text())["rows"] == 8

    # a truncated shard: the cell is no longer complete; only that shard is scored again
    caplog.set_level(logging.WARNING)
    before = shard1.stat().st_mtime_ns
    truncate(shard0)
    assert not cell_is_complete(cell)
    assert any(str(shard0) in r.getMessage() for r in caplog.records)
    again = [steps.score_shard(cell, s, prepared) for s in plan_shards(16, 2)]
    assert [o.computed for o in again] == [True, False]
    assert shard1.stat().st_mtime_ns == before
    redone = steps.finalize_cell(cell, again, prepared)
    assert redone.metrics == clean.metrics and cell_is_complete(cell)

    # flipped bytes in examples.parquet: the split is prepared again, to the same bytes
    good = examples.read_bytes()
    flip(examples)
    assert not steps.prepared_ok(job)
    with pytest.raises(CorruptFileError, match="examples.parquet"):
        steps.read_examples(prepared)  # a reader never uses it ...
    assert not (Path(job.dir) / SUCCESS).exists()  # ... and marks the step incomplete
    reprepared = steps.prepare(job)
    assert examples.read_bytes() == good and reprepared == prepared

    # a predictions file edited after the fact makes the cell incomplete
    flip(Path(cell.dir) / PREDICTIONS, at=0.3)
    assert not cell_is_complete(cell)


def test_finalize_refuses_a_shard_damaged_after_scoring(cell_and_job):
    cell, job = cell_and_job
    prepared = steps.prepare(job)
    outputs = [steps.score_shard(cell, s, prepared) for s in plan_shards(16, 2)]
    flip(Path(outputs[1].path))
    with pytest.raises(CorruptFileError, match="shard-00001-of-00002"):
        steps.finalize_cell(cell, outputs, prepared)
    assert not cell_is_complete(cell) and (Path(cell.dir) / "_FAILED").exists()
    assert not Path(outputs[1].path + ".json").exists()  # its sidecar is dropped: scored again next
    again = [steps.score_shard(cell, s, prepared) for s in plan_shards(16, 2)]
    assert [o.computed for o in again] == [False, True]
    assert steps.finalize_cell(cell, again, prepared).status == "completed" and cell_is_complete(cell)
