"""A checkpoint sweep through the real flow and a real Prefect server: three checkpoints of a
local training run are evaluated; a fourth is added and only its cells are scored (the others'
task runs are Cached); the history holds four checkpoints x cells rows without duplicates; the
trend PNG and its artifact exist; a half-written fifth checkpoint is skipped and reported, and a
run with nothing new says since when."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import task_run_states
from servers import flow_run_logs

from plantcad_flows.benchmark.checkpoints import write_checkpoint, write_partial_checkpoint
from plantcad_flows.config import EvalConfig
from plantcad_flows.layout.plan import plan_hash
from plantcad_flows.results.history import deduplicated, read_history
from plantcad_flows.results.report import artifact_key, artifact_scope

pytestmark = pytest.mark.slow
TASKS = (("conservation_within_andropogoneae", "test"), ("tis_recovery", "test_maize"))
METRICS = {"conservation_within_andropogoneae": 2, "tis_recovery": 2}  # auroc+auprc; token+motif


def _config(run_dir: Path, data: Path, prefix: Path) -> dict:
    return {
        "checkpoints": [{"path": str(run_dir), "name": "run-7", "type": "mlm", "context_length": 512}],
        "splits": [{"task": t, "split": s, "path": str(data / t / f"{s}.parquet")} for t, s in TASKS],
        "compute": {"device": "cpu", "batch_size": 8},
        "metrics": {"bootstrap": 200, "seed": 0},
        "executor": {"prefix": str(prefix)},
        "ray": {"enabled": False, "num_shards": 1},
    }


def _run(cfg: dict):
    from flows.zero_shot_eval import zero_shot_eval

    state = zero_shot_eval(EvalConfig.model_validate(cfg), return_state=True)
    assert state.is_completed(), state.message
    return state.state_details.flow_run_id, state.result()


def _artifacts(flow_run_id) -> dict[str, object]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in arts}


def test_sweep_scores_only_new_checkpoints(prefect_server, synthetic_dir, tmp_path):
    run_dir, prefix = tmp_path / "training-run", tmp_path / "out"
    for step in (1000, 2000, 3000):
        write_checkpoint(run_dir, step)
    cfg = _config(run_dir, synthetic_dir, prefix)

    run1, results1 = _run(cfg)
    assert sorted({r["model"] for r in results1}) == ["run-7@step-1000", "run-7@step-2000", "run-7@step-3000"]
    assert all(r["status"] == "completed" and r["step"] for r in results1)
    cons = next(r for r in results1 if r["task"] == TASKS[0][0])
    low, high = cons["intervals"]["auroc"]
    assert low <= cons["metrics"]["auroc"] <= high

    # a fourth checkpoint: only its cells are scored
    write_checkpoint(run_dir, 4000)
    run2, results2 = _run(cfg)
    status = {r["model"]: r["status"] for r in results2}
    assert status == {
        "run-7@step-1000": "cached",
        "run-7@step-2000": "cached",
        "run-7@step-3000": "cached",
        "run-7@step-4000": "completed",
    }
    states = task_run_states(run2)
    scored = {n for n, s in states.items() if n.startswith("score ")}
    assert scored and all("run-7@step-4000/" in n for n in scored), scored
    assert all(s == "Completed" for n, s in states.items() if n.startswith("score ")), states
    old_metrics = {n: s for n, s in states.items() if n.startswith("finalize ") and "step-4000" not in n}
    assert len(old_metrics) == 6 and set(old_metrics.values()) == {"Cached"}, old_metrics

    # history: every run's rows, one per result when de-duplicated by cell key
    history = read_history(str(prefix))
    per_cell = sum(METRICS.values())
    assert len(history) == 3 * per_cell + 4 * per_cell  # run 1 saw 3 checkpoints, run 2 saw 4
    first = deduplicated(history)
    assert len(first) == 4 * per_cell
    assert not first.duplicated(["cell_key", "metric"]).any()
    assert sorted(first["step"].unique()) == [1000, 2000, 3000, 4000]
    assert set(first[first["step"] == 4000]["run_id"]) == {str(run2)}
    assert set(first[first["step"] < 4000]["run_id"]) == {str(run1)}

    # the trend plot and its artifacts (keys scoped by the config and the sweep)
    scope = artifact_scope(plan_hash(EvalConfig.model_validate(cfg)), ["run-7@step-1"])
    assert scope.startswith("run-7-")
    png = prefix / "trends" / scope / "conservation_within_andropogoneae-test-auroc.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arts = _artifacts(run2)
    # one trend artifact per task, holding each of its split x metric plots
    trend = arts[artifact_key("trend", scope, "conservation_within_andropogoneae")]
    assert "## test / auroc" in trend.data and "## test / auprc" in trend.data
    assert trend.data.count("data:image/png;base64,") == 2 and str(png) in trend.data
    assert artifact_key("leaderboard", scope) in arts and artifact_key("summary", scope) in arts
    assert arts[artifact_key("summary", scope)].data.count("run-7@step-4000") >= 1

    # a half-written fifth checkpoint: skipped and reported, nothing scored, nothing new
    write_partial_checkpoint(run_dir, 5000)
    run3, results3 = _run(cfg)
    assert {r["model"] for r in results3} == set(status) and {r["status"] for r in results3} == {"cached"}
    assert not any(n.startswith("score ") for n in task_run_states(run3))
    summary = _artifacts(run3)[artifact_key("summary", scope)].data
    assert "step-5000" in summary and "skipped" in summary
    assert "Nothing new since" in summary
    from plantcad_flows.services.prefect_server import flush_prefect_logs

    flush_prefect_logs()
    logs = flow_run_logs(prefect_server, str(run3))
    assert "nothing new since" in logs and "step-5000" in logs
    assert len(deduplicated(read_history(str(prefix)))) == 4 * per_cell


def test_sweep_demo_checkpoints_differ_to_the_last_step(tmp_path):
    """A sweep to step 5000 ends at the shipped model; step-4000 is a blend, not its copy, and
    rewriting a checkpoint an earlier sweep (to 4000) left gives it this sweep's weights."""
    from plantcad_flows.cli.sweep_demo import write_demo_checkpoints

    run = tmp_path / "run"
    write_demo_checkpoints(run, (1000, 4000))
    shipped = (run / "step-4000" / "model.safetensors").read_bytes()
    write_demo_checkpoints(run, (1000, 4000, 5000))
    weights = {s: (run / f"step-{s}" / "model.safetensors").read_bytes() for s in (1000, 4000, 5000)}
    assert len(set(weights.values())) == 3
    assert weights[5000] == shipped  # the last step is the shipped model
    before = weights[1000]
    write_demo_checkpoints(run, (1000, 4000, 5000))
    assert (run / "step-1000" / "model.safetensors").read_bytes() == before  # deterministic
