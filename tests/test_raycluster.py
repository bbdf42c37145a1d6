"""Joining Ray clusters, shard resources, and Prefect task runs on Ray workers.

The slow tests run a real multi-process Ray cluster on loopback (`ray start --head --block`, 2 CPUs,
stopped by PID) and a real Prefect server, both shared by the whole module because each takes tens
of seconds to start on a 2-core machine.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from ray_cluster import busy_worker_pids, descendants, free_port, start_ray_head

from plantcad_flows import REPO_ROOT
from plantcad_flows.cluster.ray_client import (
    Address,
    Resources,
    check_reachable,
    default_num_workers,
    parse_address,
    runtime_env,
    shard_remote_options,
)
from plantcad_flows.config import RayConfig
from plantcad_flows.errors import ValidationError

# ---------------------------------------------------------------------------------------------
# Pure: no Ray, no Prefect.


@pytest.mark.parametrize(
    "text,expected",
    [
        (None, Address("local")),
        ("auto", Address("auto")),
        ("10.0.0.5:6379", Address("gcs", "10.0.0.5", 6379)),
        ("head.example.org:6380", Address("gcs", "head.example.org", 6380)),
        ("ray://10.0.0.5:10001", Address("client", "10.0.0.5", 10001)),
        ("[::1]:6379", Address("gcs", "::1", 6379)),
    ],
)
def test_parse_address(text, expected):
    assert parse_address(text) == expected
    if expected.kind in ("gcs", "client") and "::" not in text:
        assert expected.text == text


@pytest.mark.parametrize("bad", ["localhost", "ray://head", "http://h:1", "h:99999", "h:x", "h:1/x"])
def test_parse_address_rejects(bad):
    with pytest.raises(ValidationError, match=r"ray\.address="):
        parse_address(bad)


def test_shard_remote_options():
    assert shard_remote_options(8, 4.0) == {"num_gpus": 1, "max_retries": 3}
    assert shard_remote_options(0, 2.0) == {"num_cpus": 2.0, "max_retries": 3}
    assert shard_remote_options(0.5, 1.0)["num_cpus"] == 1.0  # a GPU fraction is not a GPU per shard


def test_default_num_workers():
    assert default_num_workers(Resources(8, 64, 2)) == 8
    assert default_num_workers(Resources(0, 16, 1), cpus_per_shard=4) == 4
    assert default_num_workers(Resources(0, 2, 1), cpus_per_shard=4) == 1


def test_runtime_env_ships_code_only_for_ray_client():
    api = "http://10.0.0.2:4200/api"
    client = runtime_env(RayConfig(address="ray://10.0.0.5:10001"), api)
    assert client["working_dir"] == str(REPO_ROOT)
    assert {".venv", ".git", "/data/", "/outputs/", ".env*"} <= set(client["excludes"])
    assert client["env_vars"] == {"PREFECT_API_URL": api}
    assert "working_dir" not in runtime_env(RayConfig(address="10.0.0.5:6379"), api)
    assert "working_dir" not in runtime_env(RayConfig(address="ray://h:1", ship_code=False), api)
    assert runtime_env(RayConfig(), None) == {}
    # the driver's retry waits reach the workers, where the steps run and retry
    shared = {"PLANTCAD_TASK_RETRY_WAITS": "5,30"}
    assert runtime_env(RayConfig(), api, shared)["env_vars"] == {**shared, "PREFECT_API_URL": api}
    assert (REPO_ROOT / "plantcad_flows" / "cluster" / "ray_client.py").exists()


def test_unreachable_address_fails_fast():
    port = free_port()  # nothing listens there
    t = time.monotonic()
    with pytest.raises(ValidationError, match=rf"ray\.address='127\.0\.0\.1:{port}': cannot connect"):
        check_reachable(parse_address(f"127.0.0.1:{port}"))
    assert time.monotonic() - t < 5


# ---------------------------------------------------------------------------------------------
# A real cluster.


@pytest.fixture(scope="module")
def head():
    h = start_ray_head(num_cpus=2)
    yield h
    h.stop()


@pytest.fixture
def ray_mod():
    import ray

    assert not ray.is_initialized()
    yield ray
    ray.shutdown()


def _own_ray_processes(head) -> list[int]:
    """Ray daemons (gcs_server, raylet) this test process started outside the test head: a local
    instance."""
    out = []
    theirs = set(descendants(head.popen.pid)) | {head.popen.pid}
    for pid in set(descendants(os.getpid())) - theirs:
        try:
            exe = Path(f"/proc/{pid}/exe").resolve().name
        except OSError:
            continue
        if exe in ("gcs_server", "raylet"):
            out.append(pid)
    return out


@pytest.mark.slow
def test_join_host_port(head, ray_mod):
    from plantcad_flows.cluster.ray_client import cluster_resources, connect

    assert cluster_resources(head.address) == Resources(num_gpus=0.0, num_cpus=2.0, num_nodes=1)
    assert not ray_mod.is_initialized()  # cluster_resources leaves no connection behind
    assert connect(head.address) is True
    assert ray_mod.get_runtime_context().gcs_address.endswith(f":{head.port}")
    assert connect(head.address) is False  # already on it: nothing to own
    with pytest.raises(ValidationError, match="already connected"):
        connect(f"127.0.0.1:{free_port()}")
    assert _own_ray_processes(head) == []


@pytest.mark.slow
def test_bad_address_never_starts_local_instance(head, ray_mod):
    from plantcad_flows.cluster.ray_client import connect
    from tasks.ray_runner import PlantcadRayTaskRunner

    bad = f"127.0.0.1:{free_port()}"
    with pytest.raises(ValidationError, match="cannot connect"):
        connect(bad)
    with pytest.raises(ValidationError, match="cannot connect"):
        with PlantcadRayTaskRunner(RayConfig(address=bad)):
            pass
    assert not ray_mod.is_initialized()
    assert _own_ray_processes(head) == []


@pytest.mark.slow
def test_auto_uses_ray_address(head, ray_mod, monkeypatch):
    from plantcad_flows.cluster.ray_client import cluster_resources, connect

    monkeypatch.setenv("RAY_ADDRESS", head.address)
    assert connect("auto") is True
    assert cluster_resources("auto").num_cpus == 2.0
    assert ray_mod.get_runtime_context().gcs_address.endswith(f":{head.port}")


@pytest.mark.slow
def test_ray_client_address(head, ray_mod, monkeypatch):
    import ray.util.client.worker as client_worker

    from plantcad_flows.cluster.ray_client import cluster_resources

    # The first client connection starts a server process for it; on a loaded 2-core machine that
    # outlasts Ray's 5 s first attempt and its retries.
    monkeypatch.setattr(client_worker, "INITIAL_TIMEOUT_SEC", 60)

    assert cluster_resources(head.client_address) == Resources(0.0, 2.0, 1)


# ---------------------------------------------------------------------------------------------
# Prefect task runs on Ray workers.


@pytest.fixture(scope="module")
def prefect_api(prefect_server):
    """The session's server: the flow's API, which the workers must report to."""
    return prefect_server


def _flow_and_tasks(ray_config, marker: Path | None = None):
    from prefect import flow, task
    from prefect_ray.context import remote_options

    from plantcad_flows.cluster.ray_client import shard_remote_options
    from tasks.ray_runner import PlantcadRayTaskRunner

    @task(name="where")
    def where(i: int) -> dict:
        from prefect.settings import PREFECT_API_URL

        if marker is not None:
            with open(marker, "a") as f:
                f.write(f"{i} {os.getpid()}\n")
            time.sleep(4)
        return {
            "i": i,
            "pid": os.getpid(),
            "api": PREFECT_API_URL.value(),
            "env_api": os.environ.get("PREFECT_API_URL"),
        }

    @flow(name="ray-probe", task_runner=PlantcadRayTaskRunner(ray_config))
    def probe(n: int) -> list[dict]:
        with remote_options(**shard_remote_options(0, cpus_per_shard=1)):
            futures = [where.submit(i) for i in range(n)]
        return [f.result() for f in futures]

    return probe


def _task_runs(flow_run_id, expected: int, timeout: float = 60):
    """The flow run's task runs with their state histories, once `expected` of them are final.

    Task runs on Ray workers reach the server as events, which its recorder writes a moment
    later: the flow can finish before the last one is in the database. Waits through the API.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            final = [r for r in runs if r.state is not None and r.state.is_final()]
            if len(final) >= expected or time.monotonic() > deadline:
                return [(r, client.read_task_run_states(r.id)) for r in runs]
            time.sleep(0.2)


@pytest.mark.slow
def test_task_runs_on_workers_report_to_flow_api(head, prefect_api, ray_mod):
    probe = _flow_and_tasks(RayConfig(address=head.address))
    state = probe(3, return_state=True)
    assert state.is_completed(), state.message
    results = state.result()
    assert sorted(r["i"] for r in results) == [0, 1, 2]
    assert all(r["pid"] != os.getpid() for r in results)  # ran in Ray workers
    assert all(r["api"] == prefect_api and r["env_api"] == prefect_api for r in results)
    runs = _task_runs(state.state_details.flow_run_id, 3)
    assert sorted(r.name.rsplit("-", 1)[0] for r, _ in runs) == ["where"] * 3
    assert all(r.flow_run_id == state.state_details.flow_run_id for r, _ in runs)
    assert all(r.state.is_completed() for r, _ in runs)


@pytest.mark.slow
def test_killed_worker_task_is_rerun_by_ray(head, prefect_api, ray_mod, tmp_path):
    """A worker SIGKILLed mid-task: Ray re-runs the task (max_retries) under the same task run id."""
    marker = tmp_path / "started.txt"
    probe = _flow_and_tasks(RayConfig(address=head.address), marker)
    killed: list[int] = []

    def kill_first_worker():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lines = marker.read_text().split() if marker.exists() else []
            if lines:
                pid = int(lines[1])
                time.sleep(0.5)
                assert pid in busy_worker_pids(head, "where")
                os.kill(pid, 9)
                killed.append(pid)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    state = probe(2, return_state=True)
    killer.join(5)
    assert killed, "no task started"
    assert state.is_completed(), state.message
    results = state.result()
    assert sorted(r["i"] for r in results) == [0, 1]
    assert killed[0] not in {r["pid"] for r in results}
    starts = marker.read_text().splitlines()
    assert len(starts) == 3  # two tasks, one of them started twice
    runs = _task_runs(state.state_details.flow_run_id, 2)
    assert len(runs) == 2 and all(r.state.is_completed() for r, _ in runs)
    restarted = [r for r, states in runs if [s.type.value for s in states].count("RUNNING") == 2]
    assert len(restarted) == 1


@pytest.mark.slow
def test_final_state_reaches_api_before_flow_ends(head, prefect_api, ray_mod):
    """The worker sends its task run's last state before it hands back the result.

    When the flow ends, Ray ends the job's workers. A worker that had not yet sent its task run's
    `Completed` event took it with it, and the UI showed that shard as running forever. Here the
    worker's event sender is made 3 s slow on that one event, so only a flush before returning
    gets it through.
    """
    from prefect import flow, task

    from tasks.ray_runner import PlantcadRayTaskRunner

    @task(name="late-report")
    def late_report() -> int:
        import asyncio

        from prefect.events.worker import EventsWorker

        send = EventsWorker._handle

        async def slow_completed(self, event):
            if event.event == "prefect.task-run.Completed":
                await asyncio.sleep(3)
            await send(self, event)

        EventsWorker._handle = slow_completed  # this worker process only; Ray ends it with the job
        return os.getpid()

    @flow(name="ray-late-report", task_runner=PlantcadRayTaskRunner(RayConfig(address=head.address)))
    def probe() -> int:
        return late_report.submit().result()

    state = probe(return_state=True)
    assert state.is_completed(), state.message
    assert state.result() != os.getpid()
    runs = _task_runs(state.state_details.flow_run_id, 1, timeout=30)
    assert [r.state.type.value for r, _ in runs] == ["COMPLETED"]


@pytest.mark.slow
def test_ephemeral_api_is_shared_with_workers(head, ray_mod, tmp_path):
    """No PREFECT_API_URL: workers must use the driver's ephemeral server, not start their own
    (which fails, or locks the SQLite file the driver's server uses)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    ephemeral = SubprocessASGIServer()  # the per-process singleton the flow's client will start
    try:
        # The default 20 s start-up timeout is too short on a busy 2-core machine.
        with temporary_settings(
            updates={
                PREFECT_HOME: str(tmp_path / "home"),
                PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 180,
            },
            restore_defaults={PREFECT_API_URL},
        ):
            assert PREFECT_API_URL.value() is None
            probe = _flow_and_tasks(RayConfig(address=head.address))
            state = probe(2, return_state=True)
            assert state.is_completed(), state.message
            assert ephemeral.running
            apis = {r["api"] for r in state.result()}
            assert apis == {ephemeral.api_url}
            with temporary_settings(updates={PREFECT_API_URL: ephemeral.api_url}):
                runs = _task_runs(state.state_details.flow_run_id, 2)
            assert len(runs) == 2 and all(r.state.is_completed() for r, _ in runs)
    finally:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=30)  # send queued run logs while their server is up
        ephemeral.stop()
