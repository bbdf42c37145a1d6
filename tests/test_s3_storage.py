"""The flow on an `s3://` prefix against a real S3-compatible server on loopback (moto_server,
started here in its own session and stopped by PID), and unreachable / unwritable prefixes
failing with a StorageError before any task run exists."""

from __future__ import annotations

import os

import pytest
from conftest import eval_config, task_run_states
from servers import start_moto, stop

from plantcad_flows.config import EvalConfig
from plantcad_flows.errors import StorageError

pytestmark = pytest.mark.slow

BUCKET = "plantcad-evals"


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 for this module; the URL of its endpoint."""
    url, proc = start_moto(tmp_path_factory.mktemp("moto"))
    yield url
    stop(proc)


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """A boto3 client on the moto server, with the standard AWS variables pointing at it."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    return client


def _keys(client, prefix: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def _objects(client, prefix: str) -> dict[str, tuple[str, object]]:
    """key -> (etag, last modified) of every object under `prefix`."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        out.update({o["Key"]: (o["ETag"], o["LastModified"]) for o in page.get("Contents", [])})
    return out


def _run(cfg: dict):
    from flows.zero_shot_eval import zero_shot_eval

    state = zero_shot_eval(EvalConfig.model_validate(cfg), return_state=True)
    return state, state.state_details.flow_run_id


def _task_runs(flow_run_id) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def test_flow_on_s3_prefix_writes_results_and_hits_cache(prefect_server, s3, small_models, synthetic_dir):
    # one split is read from the bucket too: data and outputs go through the same code path
    data_key = "data/tis_recovery/test_maize.parquet"
    s3.upload_file(str(synthetic_dir / "tis_recovery" / "test_maize.parquet"), BUCKET, data_key)
    prefix = f"s3://{BUCKET}/evals"
    cfg = eval_config(
        small_models,
        synthetic_dir,
        prefix,
        tasks=(("conservation_within_andropogoneae", "test"), ("tis_recovery", "test_maize")),
    )
    cfg["models"] = cfg["models"][:1]
    cfg["splits"][1]["path"] = f"s3://{BUCKET}/{data_key}"

    state, run1 = _run(cfg)
    assert state.is_completed(), state.message
    results = {r["cell_id"]: r for r in state.result()}
    assert set(results) == {"mlm/conservation_within_andropogoneae/test", "mlm/tis_recovery/test_maize"}
    assert all(r["status"] == "completed" for r in results.values()), results
    assert results["mlm/tis_recovery/test_maize"]["metrics"]["num_examples"] == 16

    keys = _keys(s3, "evals/")
    run_dirs = {k.split("/")[2] for k in keys if k.startswith("evals/runs/")}
    assert len(run_dirs) == 1
    run_dir = f"evals/runs/{run_dirs.pop()}"
    for name in ("results.parquet", "results.json", "summary.md"):
        assert f"{run_dir}/{name}" in keys, (name, keys)
    assert any(k.startswith("evals/latest/") and k.endswith("/results.parquet") for k in keys)
    for r in results.values():
        cell = r["output_dir"]
        assert cell.startswith(f"s3://{BUCKET}/evals/score_cell-mlm-"), cell
        cell_key = cell.removeprefix(f"s3://{BUCKET}/")
        for name in ("predictions.parquet", "metrics.json", ".step_info.json", "_SUCCESS"):
            assert f"{cell_key}/{name}" in keys, (name, cell_key)
        assert any(k.startswith(f"{cell_key}/shards/") for k in keys)
    prepared = [k for k in keys if k.startswith("evals/prepare_split-")]
    assert sum(k.endswith("/examples.parquet") for k in prepared) == 2
    assert sum(k.endswith("/_SUCCESS") for k in prepared) == 2
    records = [k for k in keys if k.startswith("evals/prefect-results/")]
    # a persisted result for each task run (under its run's id): 2 prepare, 2 x 2 shards, 2 finalize
    names = [k.removeprefix("evals/prefect-results/").rsplit("-", 5)[0] for k in records]
    assert sorted(names) == ["finalize-cell"] * 2 + ["prepare-split"] * 2 + ["score-shard"] * 4, records
    assert not any(".write-probe-" in k for k in keys)  # the writability probe cleans up

    import pandas as pd

    table = pd.read_parquet(
        f"s3://{BUCKET}/{run_dir}/results.parquet",
        storage_options={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]},
    )
    assert sorted(table["task"]) == ["conservation_within_andropogoneae", "tis_recovery"]

    # second run: every step is served from the cache in the bucket; cell objects untouched
    cells_before = {k: v for k, v in _objects(s3, "evals/").items() if k.startswith("evals/score_cell-")}
    # forget every s3fs instance (and its listings cache): the cache must come from the bucket,
    # as it would for a run on another machine
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    state, run2 = _run(cfg)
    assert state.is_completed(), state.message
    states = task_run_states(run2)
    steps = {n: s for n, s in states.items() if n.startswith(("score ", "finalize ", "prepare "))}
    # every cell was found complete in the bucket: no split is prepared and no shard submitted,
    # and each cell's finalize step finds its files complete in the bucket (a Cached state)
    scored = [cid for cid, r in results.items() if r["status"] != "skipped"]
    assert sorted(steps) == sorted(f"finalize {cid}" for cid in scored), steps
    assert all(s == "Cached" for s in steps.values()), steps
    assert {r["cell_id"]: r["metrics"] for r in state.result()} == {
        k: r["metrics"] for k, r in results.items()
    }
    cells_after = {k: v for k, v in _objects(s3, "evals/").items() if k.startswith("evals/score_cell-")}
    assert cells_after == cells_before
    assert len({k.split("/")[2] for k in _keys(s3, "evals/runs/")}) == 2
    assert set(task_run_states(run1).values()) <= {"Completed"}


def _fails_before_tasks(cfg: dict, prefix: str) -> None:
    state, run = _run(cfg)
    assert state.is_failed()
    with pytest.raises(StorageError) as e:
        state.result()
    msg = str(e.value)
    assert "\n" not in msg and f"executor.prefix={prefix!r}" in msg, msg
    assert _task_runs(run) == []
    # the error is what the UI shows for the run (and sending its logs now, while the server is
    # up, spares the session's exit a minute of retries against a stopped server)
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=15)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run])))
    assert any(f"executor.prefix={prefix!r}" in entry.message for entry in logs), [
        entry.message for entry in logs
    ]


def test_missing_bucket_fails_before_any_task(prefect_server, s3, small_models, synthetic_dir):
    prefix = "s3://no-such-bucket-plantcad/x"
    cfg = eval_config(small_models, synthetic_dir, prefix, tasks=(("tis_recovery", "test_maize"),))
    _fails_before_tasks(cfg, prefix)
    assert "no-such-bucket-plantcad" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


@pytest.mark.parametrize("kind", ["under-a-file", "read-only-dir"])
def test_unwritable_local_prefix_fails_before_any_task(
    prefect_server, small_models, synthetic_dir, tmp_path, kind
):
    if kind == "under-a-file":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        prefix = str(blocker / "evals")
    else:
        if os.geteuid() == 0:
            pytest.skip("root ignores directory permissions")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        prefix = str(ro / "evals")
    try:
        cfg = eval_config(small_models, synthetic_dir, prefix, tasks=(("tis_recovery", "test_maize"),))
        _fails_before_tasks(cfg, prefix)
    finally:
        if kind == "read-only-dir":
            (tmp_path / "ro").chmod(0o755)
