"""Experiment grids end to end on a real Prefect server and a real process worker (pool `local`),
driven through the `plantcad-flows grid` commands as a user would.

One grid of 2 models x 2 datasets x 2 learning rates runs real Python commands that write a
`metrics.json`; one cell fails until a gate file exists. It is submitted (the failing cell is the
only failure), its errors and logs read, resubmitted (only that cell runs again), submitted once
more (nothing starts), picked up (8 rows, hyper-parameters as columns) and purged. A planted
`.env` secret reaches every command yet never shows in a run's parameters, job variables or
logs. A second grid's `sleep` is purged and its process is gone. A third runs `--local`, a
command cell and a zero-shot-eval cell, in the CLI's own process. Every process is started here
and stopped by its PID.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from servers import REPO, api, start_worker, stop

pytestmark = pytest.mark.slow
CLI = Path(sys.executable).parent / "plantcad-flows"
PLANTED = "planted-" + secrets.token_hex(12)
TRAIN = """\
import argparse, hashlib, json, os, sys, time
p = argparse.ArgumentParser()
for a in ("--model", "--dataset", "--lr", "--gate"):
    p.add_argument(a)
a = p.parse_args()
print(f"training {a.model} on {a.dataset} at lr={a.lr}", flush=True)
print("token:", os.environ["PLANTED_TOKEN"], flush=True)  # a careless script: the log must not show it
# hold each command until max_running (3) cells have started, so the cap is reached whatever
# the machine's speed; a grid that ran its cells one at a time would wait 60 s here and fail below
started = os.path.join(os.path.dirname(a.gate), "started")
os.makedirs(started, exist_ok=True)
open(os.path.join(started, f"{a.model}-{a.dataset}-{a.lr}"), "w").close()
deadline = time.time() + 60
while len(os.listdir(started)) < 3 and time.time() < deadline:
    time.sleep(0.2)
if (a.model, a.dataset, a.lr) == ("beta", "tomato", "0.3") and not os.path.exists(a.gate):
    print("gate closed", file=sys.stderr)
    sys.exit(3)
time.sleep(1)
json.dump({"loss": round(1 / float(a.lr), 6), "token_sha": hashlib.sha256(os.environ["PLANTED_TOKEN"].encode()).hexdigest()},
          open("outputs/metrics.json", "w"))
print(f"loss={1 / float(a.lr):.3f}")
"""


@pytest.fixture(scope="module")
def worker(stack, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("grid-worker")
    env = dict(stack.env, PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="1")
    proc = start_worker("local", env, workdir / "worker.log", cwd=workdir)
    yield proc
    stop(proc)


def grid_cli(stack, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), "grid", *args], cwd=cwd, env=stack.env, capture_output=True, text=True, timeout=timeout
    )


def runs_of(stack, project: str) -> list[dict]:
    return api(
        stack.api_url, "POST", "/flow_runs/filter", {"flow_runs": {"tags": {"all_": [f"grid:{project}"]}}}
    )


def cell_runs(stack, project: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in runs_of(stack, project):
        cell = next((t[5:] for t in r["tags"] if t.startswith("cell:")), None)
        if cell:
            out.setdefault(cell, []).append(r)
    return out


def logs_of(stack, run_ids: list[str]) -> list[str]:
    body = {"logs": {"flow_run_id": {"any_": run_ids}}, "limit": 200}
    out, offset = [], 0
    while True:
        page = api(stack.api_url, "POST", "/logs/filter", dict(body, offset=offset))
        out += [e["message"] for e in page]
        if len(page) < 200:
            return out
        offset += 200


def max_overlap(runs: list[dict]) -> int:
    events = []
    for r in runs:
        events += [(r["start_time"], 1), (r["end_time"], -1)]
    running = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        running += step
        peak = max(peak, running)
    return peak


def test_grid_submit_errors_resubmit_pickup_purge(stack, worker, tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / ".env").write_text(f"PLANTED_TOKEN={PLANTED}\n")
    spec = {
        "project": "e2e",
        "prefix": str(tmp_path / "prefix"),
        "target": "local",
        "max_running": 3,
        "hparam": {"lr": [0.1, 0.3], "_gate": str(tmp_path / "gate")},
        "models": {
            m: {
                "command": f"python {tmp_path}/train.py --model <model> --dataset <dataset> --lr <lr> --gate <gate>"
            }
            for m in ("alpha", "beta")
        },
        "datasets": {"maize": {}, "tomato": {}},
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(spec))

    first = grid_cli(stack, tmp_path, "submit", "grid.yaml", "--poll", "1")
    out = first.stdout + first.stderr
    assert first.returncode == 1, out[-5000:]
    assert "8 cells: 8 to submit (8 never ran), 0 skipped" in out
    assert "8 cells: 7 Completed, 1 Failed" in first.stdout
    runs = cell_runs(stack, "e2e")
    assert len(runs) == 8 and all(len(rs) == 1 for rs in runs.values())
    [failed] = [c for c, rs in runs.items() if rs[0]["state_type"] == "FAILED"]
    assert failed.startswith("e2e-beta-tomato-lr-0-3-")

    # every cell run is a subflow run of the grid's run, and at most max_running ran at once
    [grid_run] = [r for r in runs_of(stack, "e2e") if not any(t.startswith("cell:") for t in r["tags"])]
    for [r] in runs.values():
        parent = api(stack.api_url, "GET", f"/task_runs/{r['parent_task_run_id']}")
        assert parent["flow_run_id"] == grid_run["id"]
        assert r["work_queue_name"] == "grid-e2e" and r["idempotency_key"] == f"{r['name']}-1"
    assert grid_run["state_type"] == "FAILED"
    assert max_overlap([rs[0] for rs in runs.values()]) == 3

    status = grid_cli(stack, tmp_path, "status", "grid.yaml")
    assert status.stdout.splitlines()[-1] == "8 cells: 7 Completed, 1 Failed"
    errors = grid_cli(stack, tmp_path, "errors", "grid.yaml")
    lines = errors.stdout.splitlines()
    assert lines[0] == f"{failed}: Failed (attempt 1)"
    assert lines[1] == "  error: command exited with status 3"
    assert "  | gate closed" in lines and lines[-1] == "1 failed cell(s) of 8"
    one = sorted(runs)[0]
    logs = grid_cli(stack, tmp_path, "logs", "grid.yaml", one, "--lines", "200")
    assert logs.returncode == 0 and "token: <redacted>" in logs.stdout and "loss=" in logs.stdout

    # the planted secret reached each command, and nowhere it could be read
    all_runs = runs_of(stack, "e2e")
    messages = logs_of(stack, [r["id"] for r in all_runs])
    assert sum("token: <redacted>" in m for m in messages) == 8
    for text in [json.dumps(all_runs), *messages, first.stdout, first.stderr, logs.stdout, errors.stdout]:
        assert PLANTED not in text
    assert all(
        r["job_variables"]["env"]["PLANTED_TOKEN"] == "{{ prefect.blocks.secret.dotenv-planted-token }}"
        for [r] in runs.values()
    )
    metrics = [json.loads(p.read_text()) for p in (tmp_path / "prefix").rglob("metrics.json")]
    assert len(metrics) == 7 and {m["token_sha"] for m in metrics} == {
        hashlib.sha256(PLANTED.encode()).hexdigest()
    }

    # resubmitting: only the failed cell runs again, as attempt 2
    (tmp_path / "gate").write_text("open")
    second = grid_cli(stack, tmp_path, "submit", "grid.yaml", "--poll", "1")
    assert second.returncode == 0, (second.stdout + second.stderr)[-5000:]
    assert (
        "8 cells: 1 to submit (1 latest run Failed), 7 skipped (7 latest run Completed)"
        in second.stderr + second.stdout
    )
    runs = cell_runs(stack, "e2e")
    assert {c: len(rs) for c, rs in runs.items() if len(rs) != 1} == {failed: 2}
    assert {r["idempotency_key"] for r in runs[failed]} == {f"{failed}-1", f"{failed}-2"}

    # and once more: nothing starts
    count = len(runs_of(stack, "e2e"))
    third = grid_cli(stack, tmp_path, "submit", "grid.yaml", "--poll", "1")
    assert (
        third.returncode == 0
        and "8 cells: 0 to submit, 8 skipped (8 latest run Completed)" in third.stderr + third.stdout
    )
    assert len(runs_of(stack, "e2e")) == count + 1  # the third grid run itself, and no cell run
    plan = grid_cli(stack, tmp_path, "plan", "grid.yaml")
    assert (
        plan.stdout.count(" Completed ") == 8
        and plan.stdout.splitlines()[-1] == "8 cells (nothing submitted)"
    )

    pickup = grid_cli(stack, tmp_path, "pickup", "grid.yaml", str(tmp_path / "picked"))
    assert pickup.returncode == 0, pickup.stderr[-3000:]
    assert pickup.stdout.splitlines()[-1].startswith("8 rows from 8 cell(s)")
    table = pd.read_parquet(tmp_path / "picked" / "grid-results.parquet")
    assert len(table) == 8
    assert {"cell", "model", "dataset", "file", "lr", "gate", "loss"} <= set(table.columns)
    assert sorted(table.groupby(["model", "dataset"]).size().tolist()) == [2, 2, 2, 2]
    for row in table.itertuples():
        assert row.loss == pytest.approx(1 / row.lr) and row.gate == str(tmp_path / "gate")

    purge = grid_cli(stack, tmp_path, "purge", "grid.yaml", "--outputs")
    assert purge.returncode == 0 and "deleted the outputs of 8 cell(s)" in purge.stdout
    assert not [p for p in (tmp_path / "prefix").rglob("*") if p.is_file()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def test_purge_stops_a_running_cell_and_its_process(stack, worker, tmp_path):
    pidfile = tmp_path / "pid"
    spec = {
        "project": "e2e-sleep",
        "prefix": str(tmp_path / "prefix"),
        "models": {"nap": {"command": f"echo $$ > {pidfile}; exec sleep 600"}},
        "datasets": {"d": {}},
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(spec))
    submit = grid_cli(stack, tmp_path, "submit", "grid.yaml", "--no-wait")
    assert submit.returncode == 0, (submit.stdout + submit.stderr)[-3000:]
    deadline = time.monotonic() + 120
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the cell's command never started"
        assert worker.poll() is None
        time.sleep(0.5)
    pid = int(pidfile.read_text())
    assert _alive(pid)

    purge = grid_cli(stack, tmp_path, "purge", "grid.yaml", "--timeout", "120")
    assert purge.returncode == 0, (purge.stdout + purge.stderr)[-3000:]
    assert purge.stdout.splitlines()[0] == "cancelling 1 run(s)"
    [[run]] = cell_runs(stack, "e2e-sleep").values()
    assert run["state_type"] == "CANCELLED"
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(pid), f"pid {pid} survived the purge"
    status = grid_cli(stack, tmp_path, "status", "grid.yaml")
    assert status.stdout.splitlines()[-1] == "1 cells: 1 Cancelled"


def test_local_runs_command_and_eval_cells_in_this_process(stack, synthetic_dir, tmp_path):
    eval_template = {
        "models": [{"name": "<model>", "path": "<path>", "type": "mlm", "context_length": 512}],
        "splits": [
            {"task": "tis_recovery", "split": "test_maize", "path": "<data>/tis_recovery/test_maize.parquet"}
        ],
        "compute": {"device": "cpu", "batch_size": 8},
        "ray": {"enabled": False},
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(eval_template))
    spec = {
        "project": "e2e-local",
        "prefix": "outputs",  # relative: under the directory `submit --local` runs in
        "target": "kubernetes",  # --local wins: no deployment, no worker
        "models": {
            "tiny-mlm": {"hparam": {"_path": str(REPO / "plantcad_flows/assets/models/tiny-mlm")}},
            "echo": {
                "command": "[python -c \"import json; json.dump({'ok': 1}, open('outputs/r.json', 'w'))\"](false)"
            },
        },
        "datasets": {"synthetic": {"eval": "eval.yaml", "hparam": {"_data": str(synthetic_dir)}}},
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(spec))
    proc = grid_cli(stack, tmp_path, "submit", "grid.yaml", "--local")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    runs = cell_runs(stack, "e2e-local")
    assert len(runs) == 2
    for [r] in runs.values():
        assert r["state_type"] == "COMPLETED" and r["work_pool_name"] is None and r["parent_task_run_id"]
    flows = {api(stack.api_url, "GET", f"/flows/{r['flow_id']}")["name"] for [r] in runs.values()}
    assert flows == {"run-command", "zero-shot-eval"}
    pickup = grid_cli(stack, tmp_path, "pickup", "grid.yaml", str(tmp_path / "picked"))
    assert pickup.returncode == 0, pickup.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "picked" / "grid-results.parquet")
    evals = table[table["model"] == "tiny-mlm"]
    assert (
        len(evals) >= 1
        and set(evals["task"]) == {"tis_recovery"}
        and set(evals["path"]) == {spec["models"]["tiny-mlm"]["hparam"]["_path"]}
    )
    assert table[table["model"] == "echo"]["ok"].tolist() == [1]
    assert (tmp_path / "outputs" / "grids" / "e2e-local").is_dir()
