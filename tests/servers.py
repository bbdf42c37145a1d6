"""Real services on loopback for end-to-end tests: a Prefect server, Prefect workers, and a
helper to wait for flow runs. Everything started here runs in its own process group and is
stopped by its PID, never by name, so parallel test sessions do not step on each other.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from plantcad_flows.local_server import start_server

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def start_prefect_server(tmpdir: str | os.PathLike) -> tuple[str, subprocess.Popen]:
    """`prefect server start` on 127.0.0.1 at a free port, SQLite under `tmpdir`.

    Returns:
        (api_url, process): the API URL (".../api") and the server's Popen (its own session).
    """
    home = Path(tmpdir) / "prefect-server-home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = start_server(home=home, log_path=Path(tmpdir) / "prefect-server.log", timeout=240)
    assert server.process is not None
    return server.api_url, server.process


def stop(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """Stop a process started by these helpers (and its process group) by PID."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def client_env(api_url: str, home: str | os.PathLike, **extra: str) -> dict[str, str]:
    """Environment for a Prefect client/worker process talking to `api_url`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
    )
    env.update(extra)
    return env


def start_worker(pool: str, env: dict[str, str], log_path: str | os.PathLike,
                 cwd: str | os.PathLike = REPO) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(
        [str(VENV_BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def api(api_url: str, method: str, path: str, body: dict | None = None) -> dict | list:
    req = urllib.request.Request(
        f"{api_url}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def wait_for_flow_run(api_url: str, flow_run_id: str, timeout: float,
                      alive: list[subprocess.Popen] = ()) -> dict:
    """Poll the run until it is terminal; fail fast if a process it depends on died."""
    deadline = time.monotonic() + timeout
    while True:
        run = api(api_url, "GET", f"/flow_runs/{flow_run_id}")
        if run["state_type"] in TERMINAL:
            return run
        for p in alive:
            if p.poll() is not None:
                raise RuntimeError(f"process {p.args} exited with {p.returncode} while waiting")
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow run {flow_run_id} still {run['state_type']} after {timeout:.0f}s")
        time.sleep(2)
