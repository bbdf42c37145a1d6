"""The zero-shot-eval flow scoring on a real multi-process Ray cluster on loopback.

One `ray start --head --block` (2 CPUs, started and stopped by PID, never `ray stop`) and the
session's Prefect server serve the whole module, because each takes tens of seconds to start on a
2-core machine. The flow joins the cluster through `ray.address` (in-process) and through
`plantcad-flows eval --ray-address` (a subprocess); both must give exactly the numbers of the
default run on a local Ray instance. A Ray worker SIGKILLed while it scores a shard must cost
nothing but time, and a shard file lost from storage is re-scored alone.

Numbers are compared for exact equality: every run scores the same shards with the same batches
and the same torch thread count (Ray workers, or this process for the killed-worker test's
reference), so there is no reason for even the last bit to move.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from conftest import eval_config, task_run_states
from ray_cluster import RAY_BIN, busy_worker_pids, descendants, start_ray_head

from plantcad_flows.config import EvalConfig

pytestmark = pytest.mark.slow

CLI = Path(sys.prefix) / "bin" / "plantcad-flows"  # the venv this test runs in
SLOW_TASK = ("conservation_within_andropogoneae", "test")
SLOW_EXAMPLES = 300  # 2 shards of 150 rows: seconds of scoring each for the 4x128 model below
SHARD_TASK = "score-shard"  # the Prefect task name; Ray titles a worker `ray::score-shard` while it runs one


@pytest.fixture(scope="module")
def head():
    # Token auth on, as on any machine where a local `ray.init()` ever ran (it writes
    # ~/.ray/auth_token, and `ray start` then turns auth on): drivers joining by address must
    # present the token. `--generate` writes one only if there is none.
    subprocess.run([str(RAY_BIN), "get-auth-token", "--generate"], check=True, capture_output=True)
    h = start_ray_head(num_cpus=2, env={"RAY_AUTH_MODE": "token"})
    yield h
    h.stop()


def _run(cfg: dict):
    from flows.zero_shot_eval import zero_shot_eval

    state = zero_shot_eval(EvalConfig.model_validate(cfg), return_state=True)
    return state, state.state_details.flow_run_id


def _metrics(results: list[dict]) -> dict[str, str]:
    """cell id -> its metrics as canonical JSON (so NaN compares equal to NaN)."""
    return {r["cell_id"]: json.dumps(r["metrics"], sort_keys=True) for r in results if r["metrics"]}


def _shard_runs(flow_run_id) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return [
            (r, [s.type.value for s in client.read_task_run_states(r.id)])
            for r in runs
            if r.name.startswith("score ")
        ]


def _check_coverage(cfg: dict, cell_id: str) -> None:
    """The cell's predictions.parquet, and its shard files together, hold every sampled example
    of examples.parquet exactly once."""
    from plantcad_flows.layout.plan import build_cells

    cell = next(c for c in build_cells(EvalConfig.model_validate(cfg)) if c.id == cell_id)
    expected = sorted(pd.read_parquet(Path(cell.split_job.dir) / "examples.parquet")["row_index"].tolist())
    assert len(expected) == len(set(expected)) > 0
    predictions = pd.read_parquet(Path(cell.dir) / "predictions.parquet")["row_index"].tolist()
    assert sorted(predictions) == expected
    shards = sorted((Path(cell.dir) / "shards").glob("shard-*.parquet"))
    assert sorted(i for p in shards for i in pd.read_parquet(p)["row_index"].tolist()) == expected


def _own_ray_daemons(head) -> list[int]:
    """gcs_server / raylet processes this test process started outside the test head: a local
    Ray instance."""
    out = []
    theirs = set(descendants(head.popen.pid)) | {head.popen.pid}
    for pid in set(descendants(os.getpid())) - theirs:
        try:
            if Path(f"/proc/{pid}/exe").resolve().name in ("gcs_server", "raylet"):
                out.append(pid)
        except OSError:
            continue
    return out


@pytest.fixture(scope="module")
def cluster_run(head, prefect_server, small_models, synthetic_dir, tmp_path_factory):
    """The small config (2 models x 3 tasks, 2 shards per cell) scored on the test cluster."""
    prefix = tmp_path_factory.mktemp("cluster") / "out"
    cfg = eval_config(small_models, synthetic_dir, prefix, ray=True)
    cfg["ray"]["address"] = head.address
    state, run_id = _run(cfg)
    assert state.is_completed(), state.message
    import ray

    assert not ray.is_initialized()  # the runner left the cluster when the flow ended
    return SimpleNamespace(cfg=cfg, prefix=prefix, run_id=run_id, results=state.result())


def test_cluster_run_equals_default_local_ray_run(cluster_run, head, small_models, synthetic_dir, tmp_path):
    import ray

    computed = [r for r in cluster_run.results if r["status"] == "completed"]
    assert len(computed) == 5 and all(r["metrics"]["num_examples"] == 16 for r in computed)

    # the default: ray enabled, no address -> a local instance started (and stopped) for the run
    cfg = eval_config(small_models, synthetic_dir, tmp_path / "out", ray=True)
    assert cfg["ray"].get("address") is None
    state, _ = _run(cfg)
    assert state.is_completed(), state.message
    local = state.result()
    assert [r["status"] for r in local] == [r["status"] for r in cluster_run.results]
    assert _metrics(local) == _metrics(cluster_run.results)
    assert len(_metrics(local)) == 5

    assert not ray.is_initialized()
    deadline = time.monotonic() + 60
    while _own_ray_daemons(head) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _own_ray_daemons(head) == [], "the local Ray instance outlived the flow run"


def test_cli_ray_address_gives_same_rows(cluster_run, head, prefect_server, tmp_path):
    import servers

    from plantcad_flows.results.table import CellResult, rows

    cfg = {
        **cluster_run.cfg,
        "executor": {"prefix": str(tmp_path / "cli-out")},
        "ray": {"enabled": True, "num_shards": 2},
    }
    config_path = tmp_path / "eval.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    out_json = tmp_path / "results.json"
    env = servers.client_env(prefect_server, tmp_path / "client-home", HF_HUB_OFFLINE="1")
    env.pop("RAY_AUTH_MODE", None)  # as a user's shell has it: the CLI must find the token itself
    proc = subprocess.run(
        [str(CLI), "eval", str(config_path), "--ray-address", head.address, "--results-json", str(out_json)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(out_json.read_text())
    want = rows([CellResult.model_validate(r) for r in cluster_run.results])
    assert len(got) == 5 and got == want
    assert f"{prefect_server.removesuffix('/api')}/runs/flow-run/" in proc.stdout


def test_shard_task_runs_belong_to_flow_run_on_test_server(cluster_run):
    runs = _shard_runs(cluster_run.run_id)
    # 5 scorable cells (clm x structural variant is skipped) x 2 shards
    names = sorted(r.name for r, _ in runs)
    assert names == sorted(
        f"score {m}/{t}/{s} shard {i}"
        for m, t, s in (
            ("mlm", "conservation_within_andropogoneae", "test"),
            ("mlm", "tis_recovery", "test_maize"),
            ("mlm", "structural_variant_effect_prediction", "test"),
            ("clm", "conservation_within_andropogoneae", "test"),
            ("clm", "tis_recovery", "test_maize"),
        )
        for i in (0, 1)
    )
    # The Ray workers' task engines create these runs and move them Pending -> Running ->
    # Completed: had a worker (or the driver) used an ephemeral API of its own, they would not be
    # on the session's server, under this flow run.
    for r, history in runs:
        assert r.flow_run_id == cluster_run.run_id
        assert r.state.is_completed() and history.count("RUNNING") == 1, (r.name, history)


@pytest.fixture(scope="module")
def slow_inputs(tmp_path_factory):
    """A bigger split and a bigger model, so a shard scores for seconds: long enough to be caught."""
    from model_factory import save_tiny_mlm

    from plantcad_flows.benchmark.synthetic import build_split

    root = tmp_path_factory.mktemp("slow")
    task, split = SLOW_TASK
    (root / task).mkdir()
    build_split(task, split, seed=1, n_examples=SLOW_EXAMPLES).to_parquet(root / task / f"{split}.parquet")
    model = save_tiny_mlm(root / "mlm-4x128", layers=4, hidden=128, max_len=512)
    return SimpleNamespace(data=root, model=model)


def _slow_config(slow_inputs, prefix: Path, address: str) -> dict:
    cfg = eval_config(
        {"mlm": slow_inputs.model, "clm": slow_inputs.model},
        slow_inputs.data,
        prefix,
        tasks=(SLOW_TASK,),
        ray=True,
        only="^mlm/",
    )
    cfg["ray"]["address"] = address
    return cfg


def _maps_file(pid: int, path: Path) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return str(path) in f.read()
    except OSError:
        return False


def test_killed_worker_mid_scoring_loses_nothing(head, prefect_server, slow_inputs, tmp_path):
    # the reference, scored in this process's threads (no Ray workers to start and load the model)
    # with the workers' OMP_NUM_THREADS: both inherit it from tests/conftest.py (Ray sets it only
    # where it is unset), so the arithmetic is the same to the last bit
    reference = _slow_config(slow_inputs, tmp_path / "undisturbed", head.address)
    reference["ray"] = {"enabled": False, "num_shards": 2}
    state, _ = _run(reference)
    assert state.is_completed(), state.message
    undisturbed = state.result()

    weights = slow_inputs.model / "model.safetensors"
    killed: list[int] = []
    stop = threading.Event()

    def kill_a_scoring_worker():
        # The weights are mapped into a worker once it has loaded the model: from then on the
        # shard task is scoring. Kill it a moment later, if it is still on the shard.
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            loaded = [p for p in busy_worker_pids(head, SHARD_TASK) if _maps_file(p, weights)]
            if loaded:
                time.sleep(0.5)
                if loaded[0] in busy_worker_pids(head, SHARD_TASK):
                    os.kill(loaded[0], 9)
                    killed.append(loaded[0])
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_scoring_worker, daemon=True)
    cfg = _slow_config(slow_inputs, tmp_path / "disturbed", head.address)
    killer.start()
    try:
        state, run_id = _run(cfg)
    finally:
        stop.set()
        killer.join(10)
    assert killed, "no worker was caught scoring a shard"
    assert state.is_completed(), state.message
    disturbed = state.result()
    assert [r["status"] for r in disturbed] == ["completed"]
    assert _metrics(disturbed) == _metrics(undisturbed)
    assert disturbed[0]["metrics"]["num_examples"] == SLOW_EXAMPLES

    # Ray re-ran the killed shard task under the same task run: two shards, one started twice
    runs = _shard_runs(run_id)
    assert len(runs) == 2 and all(r.state.is_completed() for r, _ in runs)
    assert sorted(h.count("RUNNING") for _, h in runs) == [1, 2], [(r.name, h) for r, h in runs]

    cell_dir = Path(disturbed[0]["output_dir"])
    assert sorted(p.name for p in (cell_dir / "shards").iterdir()) == [
        "shard-00000-of-00002.parquet",
        "shard-00000-of-00002.parquet.json",  # each shard's integrity record, written after it
        "shard-00001-of-00002.parquet",
        "shard-00001-of-00002.parquet.json",
    ]
    _check_coverage(cfg, disturbed[0]["cell_id"])


def test_shard_level_resume(cluster_run):
    """One shard deleted from a complete cell, and a cell cut short before its merge (a shard and
    its completion marker gone): only the two missing shards are scored again.

    The re-run leaves the shard count to the cluster and says it has one worker (a node lost
    since): shards must still be planned as the files on storage were, or all of them would be
    re-scored under a new count.
    """

    def cell_dir(cell_id: str) -> Path:
        return Path(next(r["output_dir"] for r in cluster_run.results if r["cell_id"] == cell_id))

    deleted = (
        cell_dir("mlm/conservation_within_andropogoneae/test") / "shards" / "shard-00001-of-00002.parquet"
    )
    interrupted = cell_dir("clm/tis_recovery/test_maize")
    cut = interrupted / "shards" / "shard-00000-of-00002.parquet"
    kept = {
        p: p.stat().st_mtime_ns
        for p in cluster_run.prefix.glob("score_cell-*/shards/*.parquet")
        if p not in (deleted, cut)
    }
    assert len(kept) == 8
    deleted.unlink()
    cut.unlink()
    (interrupted / "_SUCCESS").unlink()

    cfg = {
        **cluster_run.cfg,
        "ray": {k: v for k, v in cluster_run.cfg["ray"].items() if k != "num_shards"},
        "compute": {**cluster_run.cfg["compute"], "num_workers": 1},
    }
    state, run_id = _run(cfg)
    assert state.is_completed(), state.message
    assert _metrics(state.result()) == _metrics(cluster_run.results)
    states = {n: s for n, s in task_run_states(run_id).items() if n.startswith("score ")}
    # cells the plan found complete submit no shard task at all; the two incomplete cells submit
    # both of their shards, of which only the missing one is scored
    assert len(states) == 4, states
    for rescored in (
        "score mlm/conservation_within_andropogoneae/test shard 1",
        "score clm/tis_recovery/test_maize shard 0",
    ):
        assert states.pop(rescored) == "Completed"
    assert set(states.values()) == {"Cached"}, states
    assert deleted.exists() and cut.exists() and (interrupted / "_SUCCESS").exists()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # no other shard was rewritten
    _check_coverage(cluster_run.cfg, "mlm/conservation_within_andropogoneae/test")
    _check_coverage(cluster_run.cfg, "clm/tis_recovery/test_maize")
