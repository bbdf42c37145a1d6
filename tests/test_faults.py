"""`plantcad-flows eval` under faults, against real services: SIGKILL at three points, SIGINT and
SIGTERM, two runs at once, a storage endpoint that goes away, files damaged on disk.

Every test compares final metrics with one uninterrupted run of the same config (5 cells: 2 models
x 3 tasks, the causal LM skipped on structural variants; 2 shards per cell, so 10 shards) and
checks the invariants that make a number trustworthy:
* no step is marked complete whose files do not match their records (`false_completions`);
* a re-run scores only the shards that were missing: every shard that was complete before it is
  the same file afterwards (same inode and mtime), and the rest were written;
* no process the killed CLI started is alive afterwards (recorded while it ran, by pid and start
  time), and a Prefect server the CLI did not start is untouched.

Kill points come from watching the prefix: the first prepare directory (preparation), the first
shard's sidecar (scoring), a cell whose shards are all in but that is not finished (between
scoring and metrics). Scoring runs in threads unless the test is about a local Ray instance.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml
from conftest import eval_config, task_run_states
from fault_harness import (
    TcpProxy,
    any_prepare_dir,
    cell_scored_not_finished,
    describe,
    false_completions,
    first_sidecar,
    kill_at,
    kill_leftovers,
    metrics_by_cell,
    run_eval,
    start_eval,
    start_redis,
    verified_shards,
    wait_gone,
    watch,
)
from servers import client_env, seeded_home_env, start_moto, stop

from plantcad_flows.cluster.processes import free_port
from plantcad_flows.services.prefect_server import api_healthy

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_cli_left_running():
    """A test that fails while its CLI still runs (a wait that timed out) kills it: left alone, it
    would hold a core for the rest of the suite."""
    yield
    kill_leftovers()


SHARDS = 10  # 5 cells x 2 shards


def _env(tmp_path: Path, api_url: str | None) -> dict[str, str]:
    """The CLI's environment: the test's server, or none (the CLI uses or starts one itself)."""
    if api_url:
        return client_env(api_url, tmp_path / "client-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(seeded_home_env(tmp_path / "cli-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def _config(tmp_path: Path, small_models, synthetic_dir, prefix, ray: bool = False) -> Path:
    cfg = eval_config(small_models, synthetic_dir, prefix, ray=ray)
    cfg["metrics"] = {"bootstrap": 50}  # intervals are exact too, just cheaper
    path = tmp_path / f"eval-{'ray' if ray else 'threads'}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _flow_run_id(output: str) -> str:
    return re.findall(r"/runs/flow-run/([0-9a-f-]{36})", output)[-1]


def _pause_both_at(runs, marker: str, timeout: float = 300) -> None:
    waiting, deadline = list(runs), time.monotonic() + timeout
    while waiting:
        for r in list(waiting):
            if marker in r.output():
                os.kill(r.popen.pid, signal.SIGSTOP)
                waiting.remove(r)
            assert r.popen.poll() is None and time.monotonic() < deadline, r.output()[-3000:]
        time.sleep(0.005)
    for r in runs:
        os.kill(r.popen.pid, signal.SIGCONT)


def _final_states(flow_run_id: str, expected: int, timeout: float = 60) -> dict[str, str]:
    """Task-run name -> final state, once the server has recorded `expected` prepare, score and
    finalize runs as final (a client reports states as events; the server records them shortly
    after the process that sent them has exited)."""
    deadline = time.monotonic() + timeout
    while True:
        states = task_run_states(flow_run_id)
        steps = {k: v for k, v in states.items() if k.split(" ")[0] in ("prepare", "score", "finalize")}
        if sum(v in ("Completed", "Cached", "Failed") for v in steps.values()) >= expected:
            return states
        if time.monotonic() > deadline:
            return states  # the assertions below then say what is missing
        time.sleep(0.5)


def _task_runs(flow_run_id: str) -> list[dict]:
    """Name, final state, its message and how many times each task run ran (client read-back)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [
        {"name": r.name, "state": r.state.name, "message": r.state.message or "", "run_count": r.run_count}
        for r in runs
    ]


@pytest.fixture(scope="session")
def clean(prefect_server, small_models, synthetic_dir, tmp_path_factory):
    """One uninterrupted run: the metrics every other run must reproduce. The module's tests are
    one xdist group (tests/conftest.py), so it is made once; session-scoped all the same, since a
    module-scoped fixture is made again whenever a worker's next test comes from another module."""
    tmp = tmp_path_factory.mktemp("clean")
    cfg = _config(tmp, small_models, synthetic_dir, tmp / "out")
    proc = run_eval(cfg, tmp, _env(tmp, prefect_server), "--results-json", str(tmp / "clean.json"))
    assert proc.popen.returncode == 0, proc.output()[-4000:]
    metrics = metrics_by_cell(tmp / "clean.json")
    assert len(metrics) == 5
    return {"metrics": metrics, "prefix": tmp / "out", "config": cfg, "tmp": tmp}


def _rerun_scores_only_missing(cfg, cwd, env, prefix, clean_metrics, *args, shards: int = SHARDS) -> int:
    """Re-run; check that complete shards were reused and the result equals the clean run's
    (for the cells the re-run reports). Returns the number of shards the re-run wrote."""
    before = verified_shards(prefix)
    out = cwd / "rerun.json"
    proc = run_eval(cfg, cwd, env, "--results-json", str(out), *args)
    assert proc.popen.returncode == 0, proc.output()[-4000:]
    after = verified_shards(prefix)
    assert len(after) == shards
    rewritten = [k for k, v in before.items() if after.get(k) != v]
    assert rewritten == [], f"complete shards scored again: {rewritten}"
    got = metrics_by_cell(out)
    assert got == {k: v for k, v in clean_metrics.items() if k in got} and len(got) == shards // 2
    assert false_completions(prefix) == []
    return shards - len(before)


def _leads(pid: int) -> bool:
    """Whether `pid` is alive and leads its own session."""
    try:
        return os.getsid(pid) == pid
    except OSError:
        return False


def _after_kill(proc, prefix) -> None:
    assert false_completions(prefix) == []
    left = wait_gone(proc.started)
    assert not left, f"still running after the CLI died: {describe(left)}"


def test_sigkill_during_preparation_with_the_clis_own_server(clean, small_models, synthetic_dir, tmp_path):
    prefix = tmp_path / "out"
    cfg = _config(tmp_path, small_models, synthetic_dir, prefix)
    env, port = _env(tmp_path, None), free_port()
    proc = start_eval(cfg, tmp_path, env, "--server-port", str(port))
    assert kill_at(proc, any_prepare_dir(prefix)), proc.output()[-3000:]
    assert "prefect server start" in proc.started_names()  # it started a server of its own ...
    _after_kill(proc, prefix)
    assert not api_healthy(f"http://127.0.0.1:{port}/api")  # ... which died with it
    scored = _rerun_scores_only_missing(
        cfg, tmp_path, env, prefix, clean["metrics"], "--server-port", str(port)
    )
    print(f"killed during preparation: {scored} of {SHARDS} shards scored by the re-run")


def test_sigkill_during_scoring_on_a_local_ray_instance(
    clean, prefect_server, small_models, synthetic_dir, tmp_path
):
    prefix = tmp_path / "out"
    cfg = _config(tmp_path, small_models, synthetic_dir, prefix, ray=True)
    env = _env(tmp_path, prefect_server)
    proc = start_eval(cfg, tmp_path, env)
    assert kill_at(proc, first_sidecar(prefix)), proc.output()[-3000:]
    names = proc.started_names()
    assert "raylet" in names and "gcs_server" in names, names  # the local Ray instance it started
    _after_kill(proc, prefix)
    assert 0 < len(verified_shards(prefix)) < SHARDS
    scored = _rerun_scores_only_missing(cfg, tmp_path, env, prefix, clean["metrics"], "--no-ray")
    assert 0 < scored < SHARDS
    print(f"killed during scoring: {scored} of {SHARDS} shards scored by the re-run")


def test_sigkill_between_scoring_and_metrics_leaves_the_users_server_alone(
    clean, prefect_server, small_models, synthetic_dir, tmp_path
):
    """The CLI finds the test's server on --server-port (as it finds `make server` on 4200),
    says it did not start it, and a SIGKILL of the CLI leaves it running."""
    prefix = tmp_path / "out"
    cfg = _config(tmp_path, small_models, synthetic_dir, prefix)
    env = _env(tmp_path, None)
    port = prefect_server.rsplit(":", 1)[1].split("/")[0]
    proc = start_eval(cfg, tmp_path, env, "--server-port", port)
    assert kill_at(proc, cell_scored_not_finished(prefix, 2)), proc.output()[-3000:]
    assert f"using the Prefect server at {prefect_server}" in proc.output()
    assert "this command did not start it" in proc.output()
    _after_kill(proc, prefix)
    assert api_healthy(prefect_server)
    scored = _rerun_scores_only_missing(cfg, tmp_path, env, prefix, clean["metrics"], "--server-port", port)
    print(f"killed between scoring and metrics: {scored} of {SHARDS} shards scored by the re-run")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_server_and_ray_die_with_the_cli(sig, small_models, synthetic_dir, tmp_path):
    prefix = tmp_path / "out"
    cfg = _config(tmp_path, small_models, synthetic_dir, prefix, ray=True)
    port = free_port()
    proc = start_eval(cfg, tmp_path, _env(tmp_path, None), "--server-port", str(port))
    assert kill_at(proc, first_sidecar(prefix), sig=sig), proc.output()[-3000:]
    assert proc.popen.returncode != 0
    names = proc.started_names()
    assert "prefect server start" in names and "raylet" in names, names
    _after_kill(proc, prefix)
    assert not api_healthy(f"http://127.0.0.1:{port}/api")


@pytest.mark.parametrize("locks", ["file", "redis"])
def test_two_concurrent_runs_compute_each_shard_once(
    locks, clean, prefect_server, small_models, synthetic_dir, tmp_path
):
    prefix = tmp_path / "out"
    cfg = _config(tmp_path, small_models, synthetic_dir, prefix)
    env = _env(tmp_path, prefect_server)
    if locks == "redis":
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        url, redis_proc = start_redis(tmp_path)
        env["PLANTCAD_REDIS_URL"] = url
        data = yaml.safe_load(cfg.read_text())
        data["executor"]["locks"] = "redis"
        cfg.write_text(yaml.safe_dump(data))
    try:
        _two_runs(cfg, tmp_path, env, prefix, clean)
        assert (prefix / ".locks").is_dir() == (locks == "file")  # the lock manager asked for
    finally:
        if locks == "redis":
            stop(redis_proc)


def _two_runs(cfg, tmp_path, env, prefix, clean) -> None:
    runs = [
        start_eval(cfg, tmp_path, env, "-v", "--results-json", str(tmp_path / f"r{i}.json")) for i in (1, 2)
    ]  # -v: Prefect's "Beginning flow run" line on the console, where the pause below waits for it
    # Start their flows together, whatever else loads the machine: each CLI is paused (SIGSTOP)
    # where it prints a marker, and both are resumed at once; first once they have checked their
    # input, then as their flows begin (before either plans), so both plans see every cell to run.
    for marker in ("using the Prefect server", "Beginning flow run"):
        _pause_both_at(runs, marker)
    for r in runs:
        r.popen.wait(timeout=600)
        assert r.popen.returncode == 0, r.output()[-4000:]
    assert metrics_by_cell(tmp_path / "r1.json") == metrics_by_cell(tmp_path / "r2.json") == clean["metrics"]
    states = [_final_states(_flow_run_id(r.output()), expected=3 + SHARDS + 5) for r in runs]
    counts = {}
    for kind in ("prepare", "score", "finalize"):
        for name in ("Completed", "Cached"):
            counts[(kind, name)] = sum(
                1
                for s in states
                for task, state in s.items()
                if task.startswith(kind + " ") and state == name
            )
    assert counts[("score", "Completed")] == SHARDS, (counts, states)  # each shard computed once ...
    odd = [
        (i, n, v) for i, st in enumerate(states) for n, v in st.items() if v not in ("Completed", "Cached")
    ]
    plans = [
        [ln[:120] for ln in r.output().splitlines() if "Beginning flow run" in ln or " to run, " in ln]
        for r in runs
    ]
    assert counts[("score", "Cached")] == SHARDS, (counts, odd, plans)  # ... and read from cache by the other
    assert counts[("prepare", "Completed")] == 3 and counts[("finalize", "Completed")] == 5, counts
    assert false_completions(prefix) == []
    locks = yaml.safe_load(cfg.read_text())["executor"].get("locks", "file")
    print(f"two concurrent runs ({locks} locks): task-run states {counts}")


def test_corrupt_files_are_detected_and_recomputed(clean, prefect_server, tmp_path):
    """A truncated shard and flipped bytes in examples.parquet (damage the clean run's prefix)."""
    prefix, cfg = clean["prefix"], clean["config"]
    tis = next(d for d in prefix.iterdir() if d.name.startswith("score_cell-mlm-tis_recovery"))
    shard = tis / "shards" / "shard-00001-of-00002.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    examples = next(prefix.glob("prepare_split-tis_recovery-test_maize-*")) / "examples.parquet"
    good = examples.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF
    examples.write_bytes(bytes(damaged))

    env = _env(tmp_path, prefect_server)
    assert false_completions(prefix) != []  # the damage is visible to the checks
    scored = _rerun_scores_only_missing(cfg, tmp_path, env, prefix, clean["metrics"])
    assert scored == 1
    assert examples.read_bytes() == good  # prepared again, to the same bytes
    output = next(tmp_path.glob("eval-*.log")).read_text()
    assert f"integrity check failed for {examples}" in output
    assert "Traceback" not in output


# ------------------------------------------------------------------ S3 outage


BUCKET = "plantcad-faults"


@pytest.fixture
def s3_behind_proxy(tmp_path):
    """moto_server on loopback (its own session, stopped by pid) behind a TCP proxy the test can
    take down and bring back: the endpoint goes away, the objects behind it stay."""
    import boto3

    direct, moto = start_moto(tmp_path)
    try:
        creds = dict(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
        boto3.client("s3", endpoint_url=direct, **creds).create_bucket(Bucket=BUCKET)
        port = int(direct.rsplit(":", 1)[1])
        proxy = TcpProxy(("127.0.0.1", port), free_port())
        proxy.start()
        yield proxy, direct
        proxy.stop()
    finally:
        stop(moto)


def test_s3_outage_fails_cells_cleanly_and_a_rerun_completes(
    clean, prefect_server, small_models, synthetic_dir, tmp_path, s3_behind_proxy, monkeypatch
):
    proxy, direct = s3_behind_proxy
    prefix = f"s3://{BUCKET}/evals"
    cfg = _config(tmp_path, small_models, synthetic_dir, prefix)
    aws = dict(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_MAX_ATTEMPTS="2",  # botocore's own retries; Prefect's task retries come on top
    )
    env = {**_env(tmp_path, prefect_server), **aws, "AWS_ENDPOINT_URL": proxy.url}
    # the steps' retries, with waits of a fraction of a second instead of 2, 4 and 8 s: the same
    # four attempts per step, without a minute and a half of sleeping
    env["PLANTCAD_TASK_RETRY_WAITS"] = "0.2,0.4,0.8"
    for k, v in {**aws, "AWS_ENDPOINT_URL": direct}.items():  # this process reads moto directly
        monkeypatch.setenv(k, v)

    only = ("--only", "^mlm/(tis|cons)")  # 2 cells, 4 shards: every task left meets the outage
    proc = start_eval(cfg, tmp_path, env, *only)
    assert watch(proc, first_sidecar(prefix), timeout=300), proc.output()[-3000:]
    proxy.stop()  # mid-run: some shards are written, the rest are not
    t0 = time.monotonic()
    proc.popen.wait(timeout=600)
    outage_s = time.monotonic() - t0
    output = proc.output()
    endpoint = proxy.url.split("//")[1]
    assert proc.popen.returncode == 1, output[-4000:]
    assert sum(ln.startswith("run failed:") for ln in output.splitlines()) == 1, output[-4000:]
    failures = [ln for ln in output.splitlines() if ln.startswith("  failed ")]  # one per cell
    assert failures and all(endpoint in f for f in failures), failures or output[-4000:]
    # each step that met the outage was retried with backoff, then failed naming the endpoint
    runs = _task_runs(_flow_run_id(output))
    failed = [r for r in runs if r["state"] == "Failed"]
    assert failed and all(endpoint in r["message"] and "\n" not in r["message"] for r in failed), failed
    assert all(r["run_count"] == 4 for r in failed if r["name"].startswith("score ")), failed
    assert false_completions(prefix) == []
    before = verified_shards(prefix)
    assert 0 < len(before) < 4

    proxy.start()
    scored = _rerun_scores_only_missing(cfg, tmp_path, env, prefix, clean["metrics"], *only, shards=4)
    print(f"S3 outage: run failed {outage_s:.0f}s after the endpoint went away; re-run scored {scored}")


# ------------------------------------------------------------------ the CLI's own server dies


def test_a_lost_server_ends_the_run_and_the_next_run_resumes(clean, small_models, synthetic_dir, tmp_path):
    """The Prefect server the CLI started is killed (by its pid, its whole process group)
    mid-scoring: the CLI exits 3 within the watchdog's bound, naming the server in one line,
    leaves nothing falsely complete and nothing running; the same command then scores only the
    shards that were missing."""
    prefix = tmp_path / "out"
    cfg = _config(tmp_path, small_models, synthetic_dir, prefix)
    env = {**_env(tmp_path, None), "PLANTCAD_API_LOST_AFTER": "10"}
    port = free_port()
    proc = start_eval(cfg, tmp_path, env, "--server-port", str(port))
    assert watch(proc, first_sidecar(prefix), timeout=300), proc.output()[-3000:]
    # the server leads its own session; a fork it made shows the same command line until it execs
    [server] = [pid for pid, name in proc.names.items() if "prefect server start" in name and _leads(pid)]
    os.killpg(server, signal.SIGKILL)  # its own session: the server and its workers
    killed = time.monotonic()
    proc.popen.wait(timeout=120)
    exit_s = time.monotonic() - killed
    output = proc.output()
    assert proc.popen.returncode == 3, output[-4000:]
    lost = [ln for ln in output.splitlines() if "has not answered" in ln]
    assert len(lost) == 1 and f"http://127.0.0.1:{port}" in lost[0], lost or output[-4000:]
    assert exit_s < 10 + 30, exit_s  # the bound, plus a poll and a health check's timeout
    _after_kill(proc, prefix)
    scored = _rerun_scores_only_missing(
        cfg, tmp_path, env, prefix, clean["metrics"], "--server-port", str(free_port())
    )
    print(f"server killed mid-scoring: CLI exited 3 after {exit_s:.1f}s; re-run scored {scored} of {SHARDS}")


# ------------------------------------------------------------------ disk full


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs (root only), unmounted at teardown."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_fails_the_run_cleanly_and_a_rerun_completes(
    clean, prefect_server, small_models, synthetic_dir, tmp_path, small_disk
):
    """The prefix's disk fills mid-scoring: the run fails (exit 1) with one line naming a file
    under the prefix and the space left, nothing is falsely complete, and once space is freed
    the same command scores only what is missing."""
    prefix = small_disk / "evals"
    cfg = _config(tmp_path, small_models, synthetic_dir, prefix)
    env = _env(tmp_path, prefect_server)
    proc = start_eval(cfg, tmp_path, env)
    assert watch(proc, first_sidecar(prefix), timeout=300), proc.output()[-3000:]
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    proc.popen.wait(timeout=600)
    output = proc.output()
    assert proc.popen.returncode == 1, output[-4000:]
    assert sum(ln.startswith("run failed:") for ln in output.splitlines()) == 1, output[-4000:]
    assert "Traceback" not in output, output[-4000:]  # the tracebacks are in the run's log file
    # one line: the run's (its results could not be written), or one per failed cell
    failures = [ln for ln in output.splitlines() if "no space left on device" in ln]
    assert failures and all(ln.startswith(("run failed:", "  failed ")) for ln in failures), output[-4000:]
    assert str(prefix) in failures[0] and "free of 64.0 MiB under" in failures[0], failures[0]
    assert len(output.splitlines()) < 20, output[-4000:]  # not a wall of frames
    assert false_completions(prefix) == []
    assert not list(prefix.rglob("*.tmp-*"))

    filler.unlink()
    scored = _rerun_scores_only_missing(cfg, tmp_path, env, prefix, clean["metrics"])
    print(f"disk full mid-scoring: {failures[0][:300]}; re-run scored {scored} of {SHARDS}")
