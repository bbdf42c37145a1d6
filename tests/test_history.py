"""The history store, the `history` command, regressions, trends, the pivoted table and artifact
keys, on real files under tmp_path (no Prefect): what each run adds, de-duplication by cell key,
the paired comparison against the previous revision and the best so far, plots redrawn only
when their data changed."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError as PydanticValidationError

from plantcad_flows.cli import main as cli_main
from plantcad_flows.layout.integrity import write_parquet_recorded
from plantcad_flows.layout.plan import PREDICTIONS
from plantcad_flows.layout.storage import mark_complete, to_path
from plantcad_flows.results.history import (
    deduplicated,
    family_of,
    history_rows,
    newest_result_time,
    read_history,
    write_history,
)
from plantcad_flows.results.pivot import pivot_markdown, pivot_text
from plantcad_flows.results.regression import find_regressions
from plantcad_flows.results.report import artifact_key, artifact_scope
from plantcad_flows.results.table import CellResult
from plantcad_flows.results.trends import leaderboard, trend_plots, trend_rows
from plantcad_flows.results.uncertainty import with_intervals

TASK, SPLIT = "conservation_within_andropogoneae", "test"
N = 300
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _labels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 2, N)


def _cell(tmp_path, name: str, scores: np.ndarray, status: str = "completed", step: int | None = None):
    """A finished cell directory (predictions recorded in _SUCCESS) and its result."""
    d = to_path(
        str(tmp_path / "out" / f"score_cell-{name.replace('@', '_')}-{TASK}-{SPLIT}-k{abs(hash(name))}")
    )
    frame = pd.DataFrame({"row_index": np.arange(N), "label": _labels(), "score": scores})
    record = write_parquet_recorded(d / PREDICTIONS, frame)
    from sklearn.metrics import average_precision_score, roc_auc_score

    metrics = {
        "auroc": float(roc_auc_score(frame["label"], scores)),
        "auprc": float(average_precision_score(frame["label"], scores)),
        "num_examples": N,
    }
    mark_complete(d, {"name": name}, {"metrics": metrics, "files": {PREDICTIONS: record}})
    result = CellResult(
        cell_id=f"{name}/{TASK}/{SPLIT}",
        model=name,
        task=TASK,
        split=SPLIT,
        dataset="synthetic",
        family="evolutionary_conservation",
        status=status,
        metrics=metrics,
        output_dir=str(d),
        cell_key=f"key-{name}",
        model_revision=f"rev-{name}",
        step=step,
    )
    return with_intervals(result, 200, 0)


def _scores(quality: float, noise_seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(noise_seed)
    return quality * _labels() + rng.normal(0, 1, N)


def test_rows_files_and_deduplication(tmp_path):
    prefix = str(tmp_path / "out")
    a = _cell(tmp_path, "m@step-100", _scores(1.0), step=100)
    skipped = a.model_copy(update={"status": "skipped", "metrics": {}, "cell_id": "x", "cell_key": "k-x"})
    rows = history_rows([a, skipped], "run-1-id", "night-1", T0)
    assert sorted(rows["metric"]) == ["auprc", "auroc"]  # no row for the skipped cell, none for counts
    row = rows.set_index("metric").loc["auroc"]
    assert row["family"] == "m" and row["step"] == 100 and row["model_revision"] == "rev-m@step-100"
    assert (
        row["n"] == N
        and row["ci_low"] < row["value"] < row["ci_high"]
        and row["cell_key"] == "key-m@step-100"
    )
    assert row["code_version"] and row["run_id"] == "run-1-id"
    assert write_history(prefix, "night-1", rows).endswith("history/night-1.parquet")
    # two more nights serve the same cell from cache: one file each, one row per result when read
    cached = a.model_copy(update={"status": "cached"})
    for night in (2, 3):
        write_history(
            prefix,
            f"night-{night}",
            history_rows([cached], f"r{night}", f"night-{night}", T0 + dt.timedelta(days=night)),
        )
    files = sorted(p.name for p in (tmp_path / "out" / "history").iterdir())
    assert files == ["night-1.parquet", "night-2.parquet", "night-3.parquet"]
    everything = read_history(prefix)
    assert len(everything) == 6
    first = deduplicated(everything)
    assert len(first) == 2 and set(first["run_name"]) == {"night-1"} and set(first["status"]) == {"completed"}
    assert newest_result_time(everything, ["key-m@step-100"]) == pd.Timestamp(T0)
    assert newest_result_time(everything, ["unknown"]) is None
    assert read_history(str(tmp_path / "empty")).empty


def test_history_command(tmp_path, capsys):
    prefix = str(tmp_path / "out")
    cells = [_cell(tmp_path, f"m@step-{s}", _scores(1.0 + s / 100), step=s) for s in (100, 200)]
    other = _cell(tmp_path, "other", _scores(0.5))
    write_history(prefix, "run-a", history_rows([*cells, other], "a", "run-a", T0))
    write_history(
        prefix,
        "run-b",
        history_rows(
            [c.model_copy(update={"status": "cached"}) for c in cells],
            "b",
            "run-b",
            T0 + dt.timedelta(days=1),
        ),
    )

    assert cli_main(["history", "--prefix", prefix]) == 0
    out = capsys.readouterr().out
    assert "6 result(s), 3 cell(s), from 1 run(s)" in out  # the cached re-run adds no row
    assert re.search(
        r"m@step-200\s+200\s+conservation_within_andropogoneae\s+test\s+fwd\s+auroc\s+0\.\d{4}\s+\[0\.\d{4}, 0\.\d{4}\]",
        out,
    )

    csv = tmp_path / "h.csv"
    assert (
        cli_main(
            ["history", "--prefix", prefix, "--model", "^m@", "--task", "conservation", "--csv", str(csv)]
        )
        == 0
    )
    exported = pd.read_csv(csv)
    assert len(exported) == 4 and set(exported["model"]) == {"m@step-100", "m@step-200"}
    assert {
        "model_revision",
        "dataset_revision",
        "ci_low",
        "ci_high",
        "cell_key",
        "run_id",
        "code_version",
    } <= set(exported)

    assert cli_main(["history", "--prefix", prefix, "--model", "("]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--model='('" in err[0]


def test_regression_against_previous_and_best(tmp_path):
    prefix = str(tmp_path / "out")
    good = _cell(tmp_path, "m@step-100", _scores(2.0), step=100)
    worse = _cell(tmp_path, "m@step-200", _scores(0.3, noise_seed=2), step=200)
    # step 300: the step-200 model plus a little noise: a difference inside the noise against
    # step 200, but still far below the best so far (step 100)
    wobble = _scores(0.3, noise_seed=2) + np.random.default_rng(9).normal(0, 0.01, N)
    noisy = _cell(tmp_path, "m@step-300", wobble, step=300)
    results = [good, worse, noisy]
    write_history(prefix, "sweep-1", history_rows(results, "s1", "sweep-1", T0))
    found = find_regressions(results, read_history(prefix), 300, 0)
    assert [r.cell_id for r in found] == [worse.cell_id, noisy.cell_id]  # one per regressed cell

    first = found[0].payload(300, 0)
    assert first["against"] == "previous" and first["old_model"] == "m@step-100" and first["old_step"] == 100
    assert first["new_revision"] == "rev-m@step-200" and first["old_revision"] == "rev-m@step-100"
    assert first["metric"] == "auroc" and first["old_value"] == pytest.approx(good.metrics["auroc"])
    assert first["new_value"] == pytest.approx(worse.metrics["auroc"])
    low, high = first["interval"]
    assert low < first["difference"] < high < 0 and first["task"] == TASK and first["split"] == SPLIT

    third = found[1].payload(300, 0)
    assert [c["against"] for c in third["comparisons"]] == ["best"]  # not a drop against step 200
    assert third["old_model"] == "m@step-100"

    # cells served from cache were compared when they were scored: nothing again
    cached = [r.model_copy(update={"status": "cached"}) for r in results]
    assert find_regressions(cached, read_history(prefix), 300, 0) == []
    # a better checkpoint is no regression
    better = _cell(tmp_path, "m@step-400", _scores(2.5, noise_seed=4), step=400)
    write_history(prefix, "sweep-2", history_rows([better], "s2", "sweep-2", T0 + dt.timedelta(hours=1)))
    assert find_regressions([better], read_history(prefix), 300, 0) == []


def test_alerts_min_drop_is_a_margin_on_the_interval(tmp_path):
    """`alerts.min_drop`: a drop counts only when its whole interval lies below -min_drop, so a
    real but small drop is tolerated and a large one still alerts."""
    prefix = str(tmp_path / "out")
    good = _cell(tmp_path, "m@step-100", _scores(2.0), step=100)
    worse = _cell(tmp_path, "m@step-200", _scores(0.3, noise_seed=2), step=200)
    write_history(prefix, "sweep", history_rows([good, worse], "s", "sweep", T0))
    history = read_history(prefix)
    (reg,) = find_regressions([worse], history, 300, 0)
    low, high = reg.main.difference.low, reg.main.difference.high
    assert low < high < 0
    # a margin just inside the interval's upper end: still a regression, and the alert says so
    (kept,) = find_regressions([worse], history, 300, 0, min_drop=-high * 0.9)
    assert kept.payload(300, 0)["min_drop"] == pytest.approx(-high * 0.9)
    assert "beyond the margin" in kept.line() and kept.payload(300, 0)["comparisons"][0]["regression"]
    # a margin the interval does not clear: tolerated
    assert find_regressions([worse], history, 300, 0, min_drop=-high * 1.1) == []
    assert find_regressions([worse], history, 300, 0, min_drop=-low + 0.01) == []


def test_alerts_config_is_checked():
    from plantcad_flows.config import AlertsConfig

    assert AlertsConfig().min_drop == 0.0
    with pytest.raises(PydanticValidationError):
        AlertsConfig(min_drop=-0.01)
    with pytest.raises(PydanticValidationError):
        AlertsConfig(min_drop=0.01, margin=1)


def test_nightly_regression_orders_by_time(tmp_path):
    """No steps: the previous revision is the family's latest earlier result."""
    prefix = str(tmp_path / "out")
    night1 = _cell(tmp_path, "hub-model", _scores(2.0))
    write_history(prefix, "n1", history_rows([night1], "n1", "n1", T0))
    night2 = _cell(tmp_path, "hub-model-new", _scores(0.2, noise_seed=3)).model_copy(
        update={"model": "hub-model", "cell_id": f"hub-model/{TASK}/{SPLIT}"}
    )
    write_history(prefix, "n2", history_rows([night2], "n2", "n2", T0 + dt.timedelta(days=1)))
    (reg,) = find_regressions([night2], read_history(prefix), 200, 0)
    assert reg.main.old_revision == "rev-hub-model" and reg.revision == "rev-hub-model-new"


def test_trends_redrawn_only_when_data_changes(tmp_path):
    prefix = str(tmp_path / "out")
    cells = [_cell(tmp_path, f"m@step-{s}", _scores(s / 100), step=s) for s in (100, 200, 300)]
    write_history(prefix, "r1", history_rows(cells, "r1", "r1", T0, plan="p1"))
    # the same family in another config (say, other sampling) is another evaluation
    elsewhere = _cell(tmp_path, "m@step-999", _scores(0.1), step=999)
    write_history(prefix, "other", history_rows([elsewhere], "o", "other", T0, plan="p2"))
    directory = str(tmp_path / "out" / "trends" / "scope")
    rows = trend_rows(read_history(prefix), {"m"}, {(TASK, SPLIT)}, plan="p1")
    assert sorted(set(rows["step"])) == [100, 200, 300]
    assert len(trend_rows(read_history(prefix), {"m"}, {(TASK, SPLIT)})) == 8  # no plan: all of them
    plots = trend_plots(rows, directory)
    assert sorted(p.metric for p in plots) == ["auprc", "auroc"] and all(p.redrawn for p in plots)
    png = (tmp_path / "out" / "trends" / "scope" / f"{TASK}-{SPLIT}-auroc.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    # nothing new: nothing redrawn, the file untouched
    again = trend_plots(trend_rows(read_history(prefix), {"m"}, {(TASK, SPLIT)}, plan="p1"), directory)
    assert not any(p.redrawn for p in again)
    # a fourth checkpoint: redrawn
    fourth = _cell(tmp_path, "m@step-400", _scores(4.0), step=400)
    write_history(prefix, "r2", history_rows([fourth], "r2", "r2", T0, plan="p1"))
    rows = trend_rows(read_history(prefix), {"m"}, {(TASK, SPLIT)}, plan="p1")
    assert all(p.redrawn for p in trend_plots(rows, directory))
    board = leaderboard(rows)
    assert [(b["model"], b["metric"], b["step"]) for b in board] == [("m@step-400", "auroc", 400)]
    assert board[0]["ci_low"] <= board[0]["value"] <= board[0]["ci_high"]


def test_pivot_shows_intervals_and_reasons(tmp_path):
    done = _cell(tmp_path, "mlm", _scores(1.0))
    skipped = CellResult(
        cell_id="clm/structural_variant_effect_prediction/test",
        model="clm",
        task="structural_variant_effect_prediction",
        split="test",
        dataset="d",
        family="structural_variant_effect",
        status="skipped",
        reason="no published definition for causal LMs",
    )
    md = pivot_markdown([done, skipped])
    low, high = done.intervals["auroc"]
    assert f"| mlm | test | {done.metrics['auroc']:.4f} [{low:.4f}, {high:.4f}] |" in md
    assert "| clm | test | skipped: no published definition for causal LMs |" in md
    text = pivot_text([done, skipped])
    assert "evolutionary_conservation - auroc (95% CI)" in text and "andropogoneae" in text
    assert "note: clm/structural_variant_effect_prediction/test skipped: no published definition" in text


def test_artifact_keys_are_scoped_and_valid():
    sweep3 = artifact_scope("0a1b2c3d4e", ["run-7@step-100", "run-7@step-200", "run-7@step-300"])
    sweep4 = artifact_scope(
        "0a1b2c3d4e", ["run-7@step-100", "run-7@step-200", "run-7@step-300", "run-7@step-400"]
    )
    assert sweep3 == sweep4 == "run-7-0a1b2c3d4e"  # new checkpoints keep the key
    assert artifact_scope("0a1b2c3d4e", ["tiny-mlm"]) == "0a1b2c3d4e"
    assert artifact_scope("ffff000011", ["tiny-mlm"]) != artifact_scope("0a1b2c3d4e", ["tiny-mlm"])
    key = artifact_key("trend", sweep3, TASK)
    assert re.fullmatch(r"[a-z0-9-]+", key) and key.endswith("-conservation-within-andropogoneae")
    assert family_of("run-7@step-300") == "run-7" and family_of("PlantCAD2-Small") == "PlantCAD2-Small"


def test_nightly_deployment_discovers_checkpoints():
    import yaml

    from plantcad_flows import REPO_ROOT
    from plantcad_flows.config import EvalConfig

    deployments = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    nightly = next(d for d in deployments if d["name"] == "nightly")
    cfg = EvalConfig.model_validate(nightly["parameters"]["config"])
    assert cfg.checkpoints and cfg.checkpoints[0].pattern == "step-*"
    # hub models follow their branch: resolved to a commit every night, so a new one is re-scored
    assert cfg.models and all(m.revision is None for m in cfg.models)
    assert nightly["schedules"][0]["cron"]


def test_history_files_carry_a_schema_version_and_old_files_are_read(tmp_path):
    """A file written by this code carries the current version; a file of the previous version
    (written before versions, without the key) is still read, and rows of both come back."""
    import pyarrow.parquet as pq

    from plantcad_flows.results import schema

    prefix = str(tmp_path / "out")
    a = _cell(tmp_path, "m@step-100", _scores(1.0), step=100)
    b = _cell(tmp_path, "m@step-200", _scores(2.0), step=200)
    path = write_history(prefix, "new", history_rows([a], "r-new", "new", T0))
    assert pq.read_schema(path).metadata[b"schema_version"] == str(schema.SCHEMA_VERSION).encode()
    assert schema.read_parquet(path)[1] == schema.SCHEMA_VERSION == 3
    old = history_rows([b], "r-old", "old", T0 - dt.timedelta(days=1))
    old.to_parquet(tmp_path / "out" / "history" / "old.parquet", index=False)  # version 1: no key
    assert schema.read_parquet(tmp_path / "out" / "history" / "old.parquet")[1] == 1
    both = read_history(prefix)
    assert sorted(set(both["run_name"])) == ["new", "old"] and len(both) == 4
    # version 3 added the strand and the context; an older file's rows were all forward
    v2 = history_rows([b], "r-v2", "v2", T0).drop(columns=["strand", "context_bp"])
    v2.to_parquet(tmp_path / "out" / "history" / "old.parquet", index=False)
    again = read_history(prefix)
    assert again["strand"].tolist() == ["fwd"] * 4 and again["context_bp"].isna().all()


def test_results_files_carry_a_schema_version_and_old_files_are_read(tmp_path):
    import json

    import pandas as pd
    import pytest

    from plantcad_flows.errors import StorageError
    from plantcad_flows.results import schema
    from plantcad_flows.results.table import read_results, read_results_rows, rows, write_results

    a = _cell(tmp_path, "m@step-100", _scores(1.0), step=100)
    paths = write_results(str(tmp_path / "run"), [a])
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    assert data["schema_version"] == schema.SCHEMA_VERSION and data["rows"] == rows([a])
    assert read_results_rows(str(tmp_path / "run")) == (rows([a]), schema.SCHEMA_VERSION)
    frame, version = read_results(str(tmp_path / "run"))
    assert version == schema.SCHEMA_VERSION and frame["model"].tolist() == ["m@step-100"]
    assert pd.read_parquet(paths["parquet"]).columns.tolist() == frame.columns.tolist()  # no extra column

    # the previous version: a bare list in results.json, parquet without the key
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(rows([a])))
    pd.DataFrame(rows([a])).to_parquet(tmp_path / "old" / "results.parquet", index=False)
    assert read_results_rows(str(tmp_path / "old")) == (rows([a]), 1)
    assert read_results(str(tmp_path / "old"))[1] == 1

    # version 2 rows had no strand nor context: read as forward, context unknown
    v2 = [{k: v for k, v in row.items() if k not in ("strand", "context_bp")} for row in rows([a])]
    (tmp_path / "old" / "results.json").write_text(json.dumps({"schema_version": 2, "rows": v2}))
    pd.DataFrame(v2).to_parquet(tmp_path / "old" / "results.parquet", index=False)
    got, version = read_results_rows(str(tmp_path / "old"))
    assert version == 2 and [(r["strand"], r["context_bp"]) for r in got] == [("fwd", None)]
    assert read_results(str(tmp_path / "old"))[0]["strand"].tolist() == ["fwd"]

    # a newer version than this code knows is refused by name, not misread
    (tmp_path / "old" / "results.json").write_text(json.dumps({"schema_version": 99, "rows": []}))
    with pytest.raises(StorageError, match="schema_version 99 is newer"):
        read_results_rows(str(tmp_path / "old"))


def test_trend_lines_are_split_by_strand_and_context():
    """rc rows and a second context are lines of their own; a plain forward history keeps its
    family names (so its trend plots are not redrawn)."""
    import pandas as pd

    from plantcad_flows.results.trends import axis_families

    rows = pd.DataFrame(
        {
            "family": ["m", "m", "m", "m", "n"],
            "strand": ["fwd", "rc", "fwd", "rc", "fwd"],
            "context_bp": pd.array([512, 512, 8192, 8192, 512], dtype="Int64"),
        }
    )
    assert axis_families(rows)["family"].tolist() == ["m 512bp", "m 512bp rc", "m 8192bp", "m 8192bp rc", "n"]
    plain = rows[rows["family"] == "n"]
    assert axis_families(plain)["family"].tolist() == ["n"]


def test_history_into_a_closed_pipe_ends_quietly(tmp_path):
    """`plantcad-flows history | head -1`: head leaves after one line; no BrokenPipe traceback."""
    import subprocess
    import sys
    from pathlib import Path

    prefix = str(tmp_path / "out")
    one = _cell(tmp_path, "m", _scores(1.0))
    cells = [one.model_copy(update={"model": f"m{i}"}) for i in range(400)]  # more than a pipe holds
    write_history(prefix, "run-a", history_rows(cells, "a", "run-a", T0))
    cli = f"{sys.executable} -c 'import sys; from plantcad_flows.cli import main; sys.exit(main())'"
    proc = subprocess.run(
        f"{cli} history --prefix {prefix} | head -1; echo status=${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=120,
    )
    assert proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[1] in ("status=0", "status=141"), lines


def test_a_user_tasks_results_are_not_titled_plantcad2(tmp_path):
    from plantcad_flows.results.report import results_title

    builtin = _cell(tmp_path, "m", _scores(1.0))
    assert results_title([builtin]) == "PlantCAD2 zero-shot results"
    own = builtin.model_copy(update={"task": "lettuce_tis_recovery"})
    assert results_title([own]) == "Zero-shot results (lettuce_tis_recovery)"
    assert results_title([own, builtin]) == "Zero-shot results (lettuce_tis_recovery and PlantCAD2 tasks)"


def test_a_one_point_trend_spans_a_day_not_years():
    from plantcad_flows.results.trends import draw_trend, x_range

    when = pd.Series(pd.to_datetime(["2026-12-07 04:00"]))
    lo, hi = x_range(when)
    assert hi - lo == pd.Timedelta(days=1) and lo < when[0] < hi
    assert x_range(pd.Series([4000])) == (3999, 4001)
    assert x_range(pd.Series([1000, 2000])) is None
    one = pd.DataFrame(
        {"family": ["m"], "value": [0.7], "ci_low": [0.6], "ci_high": [0.8], "step": [None], "time": [T0]}
    )
    assert draw_trend(one, "tis_recovery", "test_maize", "motif_accuracy").startswith(b"\x89PNG")


def test_the_summary_lists_only_the_artifacts_the_run_publishes(tmp_path):
    """A cached run scores nothing and, without trend plots or leaderboard rows, publishes none:
    its summary must not point at them."""
    from tasks.history import TrendReport, report_keys

    cached = _cell(tmp_path, "m", _scores(1.0), status="cached")
    assert report_keys([cached], "s", TrendReport(directory=str(tmp_path))) == {"curves": {}}
    drawn = TrendReport(directory=str(tmp_path), plots=[{"task": "t"}], leaderboard=[{"model": "m"}])
    assert set(report_keys([cached], "s", drawn)) == {"curves", "trends", "leaderboard"}
