"""The zero-shot-eval flow against a real Prefect server: caching, force, failure isolation and
recovery, retries, and the files and UI artifacts a run leaves behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import eval_config, task_run_states

from plantcad_flows.config import EvalConfig

pytestmark = pytest.mark.slow


def _run(cfg: dict):
    from flows.zero_shot_eval import zero_shot_eval

    state = zero_shot_eval(EvalConfig.model_validate(cfg), return_state=True)
    return state, state.state_details.flow_run_id


def _cell_files(prefix: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for p in sorted(prefix.glob("score_cell-*/**/*")):
        if p.is_file():
            out[str(p)] = (p.stat().st_mtime_ns, p.read_bytes())
    return out


def test_flow_end_to_end_then_cached_then_forced(prefect_server, small_models, synthetic_dir, tmp_path):
    prefix = tmp_path / "out"
    cfg = eval_config(small_models, synthetic_dir, prefix)

    state, run1 = _run(cfg)
    assert state.is_completed(), state.message
    results = state.result()
    by_cell = {r["cell_id"]: r for r in results}
    assert set(by_cell) == {
        f"{m}/{t}/{s}"
        for m in ("mlm", "clm")
        for t, s in (
            ("conservation_within_andropogoneae", "test"),
            ("tis_recovery", "test_maize"),
            ("structural_variant_effect_prediction", "test"),
        )
    }
    assert by_cell["clm/structural_variant_effect_prediction/test"]["status"] == "skipped"
    assert "causal" in by_cell["clm/structural_variant_effect_prediction/test"]["reason"]
    cons = by_cell["mlm/conservation_within_andropogoneae/test"]
    assert cons["status"] == "completed" and cons["metrics"]["num_examples"] == 16
    assert 0.0 <= cons["metrics"]["auroc"] <= 1.0
    assert {"token_accuracy", "motif_accuracy"} <= set(by_cell["mlm/tis_recovery/test_maize"]["metrics"])

    # files: per-run and latest results, per-cell predictions with provenance, curves
    run_dirs = list((prefix / "runs").iterdir())
    assert len(run_dirs) == 1
    table = pd.read_parquet(run_dirs[0] / "results.parquet")
    assert len(table) == 5 and {"dataset", "model", "task", "split"} <= set(table.columns)
    assert json.loads((run_dirs[0] / "results.json").read_text())["rows"][0]["model"] in ("mlm", "clm")
    assert len(list((prefix / "latest").glob("*/results.parquet"))) == 1
    cell_dir = Path(cons["output_dir"])
    info = json.loads((cell_dir / ".step_info.json").read_text())
    assert info["config"]["model"]["path"] == str(small_models["mlm"]) and info["code_version"]
    assert (cell_dir / "predictions.parquet").exists() and (cell_dir / "plots" / "roc.png").exists()
    assert all(Path(p).exists() for p in cons["plots"])

    # UI: table, summary and progress artifacts on the flow run
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run1]))
        )
    kinds = {a.type for a in arts}
    assert {"table", "markdown", "progress"} <= kinds
    progress = [a for a in arts if a.type == "progress"][0]
    assert float(progress.data) == 100.0

    states1 = task_run_states(run1)
    assert any(n.startswith("score ") for n in states1)
    assert all(s == "Completed" for n, s in states1.items() if n.startswith("score ")), states1

    # second run: nothing is scored again, files untouched
    before = _cell_files(prefix)
    state, run2 = _run(cfg)
    assert state.is_completed()
    states2 = task_run_states(run2)
    scoring = {n: s for n, s in states2.items() if n.startswith(("score ", "finalize ", "prepare "))}
    assert scoring and all(s == "Cached" for s in scoring.values()), scoring
    assert _cell_files(prefix) == before
    assert [r["metrics"] for r in state.result()] == [r["metrics"] for r in results]

    # force: everything is recomputed, with the same numbers
    state, run3 = _run({**cfg, "force": True})
    assert state.is_completed()
    states3 = task_run_states(run3)
    assert all(s == "Completed" for n, s in states3.items() if n.startswith("score ")), states3
    after = _cell_files(prefix)
    pred = str(cell_dir / "predictions.parquet")
    assert after[pred][0] != before[pred][0]
    assert [r["metrics"] for r in state.result()] == [r["metrics"] for r in results]


def test_failed_cell_is_isolated_and_recomputed(prefect_server, small_models, synthetic_dir, tmp_path):
    prefix = tmp_path / "out"
    broken = tmp_path / "clm-broken"
    shutil.copytree(small_models["clm"], broken)
    (broken / "config.json").write_text("{ not json")
    models = {"mlm": small_models["mlm"], "clm": broken}
    cfg = eval_config(models, synthetic_dir, prefix, tasks=(("tis_recovery", "test_maize"),))

    state, run1 = _run(cfg)
    assert state.is_failed()
    assert "clm/tis_recovery/test_maize" in state.message
    # the healthy cell completed and its results were written
    table = pd.read_parquet(next((prefix / "runs").glob("*/results.parquet")))
    assert list(table["model"]) == ["mlm"]

    from plantcad_flows.layout.plan import CellStatus, plan_cells

    statuses = {p.cell.id: p.status for p in plan_cells(EvalConfig.model_validate(cfg))}
    assert statuses == {
        "mlm/tis_recovery/test_maize": CellStatus.CACHED,
        "clm/tis_recovery/test_maize": CellStatus.FAILED_BEFORE,
    }

    shutil.rmtree(broken)
    shutil.copytree(small_models["clm"], broken)
    state, run2 = _run(cfg)
    assert state.is_completed(), state.message
    states = task_run_states(run2)
    assert all(s == "Cached" for n, s in states.items() if n.startswith("score mlm")), states
    assert all(s == "Completed" for n, s in states.items() if n.startswith("score clm")), states


def test_transient_error_is_retried(prefect_server, small_models, synthetic_dir, tmp_path, monkeypatch):
    import plantcad_flows.scoring.score as scoring

    real = scoring.score_frame
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("storage connection reset (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_frame", flaky)
    models = {"mlm": small_models["mlm"], "clm": small_models["clm"]}
    cfg = eval_config(
        models,
        synthetic_dir,
        tmp_path / "out",
        tasks=(("conservation_within_andropogoneae", "test"),),
        only="^mlm/",
    )
    cfg["ray"]["num_shards"] = 1
    state, run = _run(cfg)
    assert state.is_completed(), state.message
    assert calls["n"] == 2

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run])))
        shard = [r for r in runs if r.name.startswith("score ")][0]
        history = [s.name for s in client.read_task_run_states(shard.id)]
    assert "AwaitingRetry" in history and history[-1] == "Completed"
    assert shard.run_count == 2


def test_validation_errors_are_not_retried(prefect_server, small_models, synthetic_dir, tmp_path):
    bad = tmp_path / "bad.parquet"
    frame = pd.read_parquet(synthetic_dir / "conservation_within_andropogoneae" / "test.parquet")
    frame.drop(columns=["label"]).to_parquet(bad)
    cfg = eval_config(small_models, synthetic_dir, tmp_path / "out", tasks=())
    cfg["splits"] = [{"task": "conservation_within_andropogoneae", "split": "test", "path": str(bad)}]
    state, run = _run(cfg)
    assert state.is_failed()
    assert "label" in state.message
    states = task_run_states(run)
    assert not any(n.startswith("score ") for n in states)  # no model was loaded
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run])))
    assert [r.run_count for r in runs if r.name.startswith("prepare")] == [1]


def test_strands_and_contexts_are_cells_and_the_run_has_its_leaderboard_view(
    prefect_server, small_models, synthetic_dir, tmp_path
):
    """strands [fwd, rc] x contexts [256, 512]: one cell each (the rc cell of the
    structural-variant task skipped with its reason), each row carries its strand and context,
    a second run serves every cell from cache, and the run has its leaderboard files and artifact."""
    prefix = tmp_path / "out"
    cfg = eval_config(small_models, synthetic_dir, prefix, strands=["fwd", "rc"])
    cfg["models"] = [{**cfg["models"][0], "context_length": [256, 512]}]
    state, run1 = _run(cfg)
    assert state.is_completed(), state.message
    by_cell = {r["cell_id"]: r for r in state.result()}
    assert len(by_cell) == 3 * 2 * 2
    assert by_cell["mlm/tis_recovery/test_maize/ctx256/rc"]["status"] == "completed"
    sv_rc = by_cell["mlm/structural_variant_effect_prediction/test/ctx512/rc"]
    assert sv_rc["status"] == "skipped" and "forward strand only" in sv_rc["reason"]
    run_dir = next((prefix / "runs").iterdir())
    rows = json.loads((run_dir / "results.json").read_text())["rows"]
    assert {(r["strand"], r["context_bp"]) for r in rows} == {
        ("fwd", 256),
        ("rc", 256),
        ("fwd", 512),
        ("rc", 512),
    }
    for ctx in (256, 512):
        doc = json.loads((run_dir / "leaderboard" / "mlm" / str(ctx) / "result.json").read_text())
        cons = next(r for r in doc["rows"] if r["key"] == "cons_andropogoneae")
        assert cons["selected_value"] == max(cons["left"], cons["reverse_complement"])
        assert len(doc["missing"]) == 20 - 3 and doc["composite"] is None
    assert (run_dir / "leaderboard" / "leaderboard.tsv").exists()

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run1]))
        )
    assert any((a.key or "").startswith("zero-shot-board-") for a in arts)

    state, run2 = _run(cfg)
    assert state.is_completed()
    scoring = {n: s for n, s in task_run_states(run2).items() if n.startswith(("score ", "finalize "))}
    assert scoring and all(s == "Cached" for s in scoring.values()), scoring
