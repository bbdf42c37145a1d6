"""Real services on loopback for end-to-end tests: a Prefect server, Prefect workers, and a
helper to wait for flow runs. Everything started here runs in its own process group and is
stopped by its PID, never by name, so parallel test sessions do not step on each other.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from plantcad_flows.cluster.processes import stop_process_group
from plantcad_flows.services.prefect_server import prefect_executable, start_server

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


# Set by tests/conftest.py for the whole run (every xdist worker sees the controller's directory).
SHARED_ENV = "PLANTCAD_TEST_SHARED_DIR"


# Server settings for a home made by `seeded_prefect_home`: its database already holds the
# block types this Prefect registers at start (Prefect's own memo of that is keyed by the database
# path, so it would register them again in every new home).
SEEDED_SERVER_SETTINGS = {"PREFECT_API_BLOCKS_REGISTER_ON_START": "false"}


def seeded_prefect_home(home: str | os.PathLike) -> Path:
    """`home` as a PREFECT_HOME whose SQLite database is already migrated and has its block types.

    A server on a new database first runs every migration and registers every block type: more
    than half the CPU time of its start (15 s against 7 s here). The suite starts dozens of
    servers (fixtures, and every CLI run that starts its own), so each new home gets a copy of one
    database made once per test run by a real server start (shared by the xdist workers under a
    file lock). The server still starts and serves as on a fresh machine; its alembic upgrade is
    then a no-op, and `SEEDED_SERVER_SETTINGS` skips re-registering the blocks. An existing
    database is left alone.
    """
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "prefect.db").exists():
        shutil.copyfile(_template_database(), home / "prefect.db")
    return home


def seeded_home_env(home: str | os.PathLike) -> dict[str, str]:
    """Environment entries for a CLI that starts its own server in `home` (seeded here)."""
    return {"PREFECT_HOME": str(seeded_prefect_home(home)), **SEEDED_SERVER_SETTINGS}


def _template_database() -> Path:
    import sqlite3
    import tempfile

    import prefect
    from filelock import FileLock

    shared = Path(os.environ.get(SHARED_ENV) or tempfile.gettempdir())
    template = shared / f"prefect-{prefect.__version__}-seeded.db"
    with FileLock(f"{template}.lock"):
        if not template.exists():
            build = Path(tempfile.mkdtemp(prefix="prefect-seed-", dir=shared))
            server = start_server(home=build, log_path=build / "server.log", timeout=240)
            server.stop()
            partial = template.with_suffix(".partial")
            with sqlite3.connect(build / "prefect.db") as src, sqlite3.connect(partial) as dst:
                src.backup(dst)  # one self-contained file, whatever the WAL still held
            os.replace(partial, template)
            shutil.rmtree(build, ignore_errors=True)
    return template


def start_prefect_server(tmpdir: str | os.PathLike) -> tuple[str, subprocess.Popen]:
    """`prefect server start` on 127.0.0.1 at a free port, SQLite under `tmpdir`.

    Returns:
        (api_url, process): the API URL (".../api") and the server's Popen (its own session).
    """
    home = seeded_prefect_home(Path(tmpdir) / "prefect-server-home")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = start_server(
        home=home, log_path=Path(tmpdir) / "prefect-server.log", timeout=240, settings=SEEDED_SERVER_SETTINGS
    )
    assert server.process is not None
    return server.api_url, server.process


def stop(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """Stop a process started by these helpers (and its process group) by PID."""
    stop_process_group(proc, timeout)


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


CLI = VENV_BIN / "plantcad-flows"


def run_cli(
    *args: object, cwd: str | os.PathLike, api_url: str | None = None, timeout: float = 180, **extra: str
) -> subprocess.CompletedProcess:
    """`plantcad-flows ARGS` in a subprocess, as a user's shell runs it: no Prefect setting of this
    process, offline hub, HOME under `cwd`. With `api_url`, the command uses that server (the
    session's: no server start of its own); without it, a run finds or starts one itself, on a
    seeded database under `cwd` (`--server-port` picks a free port in tests)."""
    cwd = Path(cwd)
    if api_url:
        env = client_env(api_url, cwd / "client-home")
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(cwd / ".prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        if "--server-port" in args:  # the run starts its own server: on a seeded database
            env.update(seeded_home_env(cwd / ".prefect-home"))
    env.update(HOME=str(cwd), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), **extra)
    return subprocess.run(
        [str(CLI), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def start_worker(
    pool: str, env: dict[str, str], log_path: str | os.PathLike, cwd: str | os.PathLike = REPO
) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(
        [prefect_executable(), "worker", "start", "--pool", pool, "--type", "process"],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def api(api_url: str, method: str, path: str, body: dict | None = None) -> dict | list:
    req = urllib.request.Request(
        f"{api_url}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def wait_for_flow_run(
    api_url: str, flow_run_id: str, timeout: float, alive: list[subprocess.Popen] = ()
) -> dict:
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


# ---------------------------------------------------------------------------------------------
# One deployed stack per test session (the `stack` fixture in conftest.py), shared by
# test_deployments.py, test_grid_flow.py and test_ui_browser.py: server -> `plantcad-flows setup`
# from a snapshot of the working tree -> a `local` worker -> one `zero-shot-eval/local` run.

_STACK: dict[str, Stack] = {}
RUN_TIMEOUT_S = 600


@dataclass
class Stack:
    api_url: str
    tmp: Path
    env: dict[str, str]
    hf_token: str
    setup_output: str
    snapshot_repo: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    local_run: dict | None = None

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")


def snapshot_repo(dest: Path) -> Path:
    """A git repository holding the working tree as it is now (tracked and untracked files,
    minus ignored ones), committed on branch `main`: what a fresh VM would clone."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-C", str(dest)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "snapshot"], check=True)
    return dest


def run_setup(api_url: str, home: Path, checkout: Path = REPO, **extra: str) -> subprocess.CompletedProcess:
    """`plantcad-flows setup` as run from `checkout`: the `local` deployment's runs work in that
    checkout (its pull step's directory), so a test stack points it at its own snapshot and its
    outputs never mix with this working tree's `outputs/` nor with an earlier session's."""
    cli = VENV_BIN / "plantcad-flows"
    if checkout == REPO and cli.exists():
        cmd = [str(cli), "setup"]
    else:  # the checkout's own modules (sys.path[0] is the working directory under -m)
        cmd = [sys.executable, "-m", "deployments.setup"]
    return subprocess.run(
        cmd, cwd=checkout, env=client_env(api_url, home, **extra), capture_output=True, text=True, timeout=600
    )


def deployment_run(stack: Stack, name: str, *args: str) -> str:
    """`prefect deployment run NAME ...`; returns the new flow run's id."""
    proc = subprocess.run(
        [prefect_executable(), "deployment", "run", name, *args],
        cwd=stack.tmp,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = re.search(r"UUID:\s*([0-9a-f-]{36})", proc.stdout)
    assert m, proc.stdout
    return m.group(1)


def get_stack(tmp_path_factory, request) -> Stack:
    if "stack" in _STACK:
        return _STACK["stack"]
    tmp = tmp_path_factory.mktemp("deployed")
    api_url, server = start_prefect_server(tmp)
    procs = [server]
    request.addfinalizer(lambda: [stop(p) for p in reversed(procs)])
    home = tmp / "client-home"
    hf_token = "hf_" + secrets.token_hex(20)
    repo = snapshot_repo(tmp / "snapshot")
    setup = run_setup(
        api_url,
        home,
        checkout=repo,
        HF_TOKEN=hf_token,
        PLANTCAD_FLOWS_REPO=str(repo),
        PLANTCAD_FLOWS_REF="main",
        AWS_ACCESS_KEY_ID="AKIATESTONLY",
        AWS_SECRET_ACCESS_KEY=hf_token[::-1],
    )
    output = setup.stdout + setup.stderr
    assert setup.returncode == 0, output[-5000:]
    env = client_env(api_url, home)
    stack = Stack(api_url, tmp, env, hf_token, output, repo, procs)
    _STACK["stack"] = stack
    return stack


def one_split_per_family(config: dict) -> dict:
    """The deployment's own config with its first split of each task family (both models): every
    family's scoring, metrics and artifacts, at a fifth of the demo's cells."""
    from plantcad_flows.families.tasks import builtin_tasks

    tasks = builtin_tasks()
    seen: set[str] = set()
    splits = []
    for split in config["splits"]:
        family = tasks[split["task"]].family
        if family not in seen:
            seen.add(family)
            splits.append(split)
    return {**config, "splits": splits}


def completed_local_run(stack: Stack) -> dict:
    """Start a `local` worker (in an unrelated directory) and run zero-shot-eval/local once, on
    the deployment's default config cut to one split per family (`--params`)."""
    if stack.local_run is not None:
        return stack.local_run
    workdir = stack.tmp / "worker-local"
    workdir.mkdir(exist_ok=True)
    worker = start_worker("local", stack.env, stack.tmp / "worker-local.log", cwd=workdir)
    stack.procs.append(worker)
    local = api(stack.api_url, "GET", "/deployments/name/zero-shot-eval/local")
    config = one_split_per_family(local["parameters"]["config"])
    run_id = deployment_run(stack, "zero-shot-eval/local", "--params", json.dumps({"config": config}))
    run = wait_for_flow_run(stack.api_url, run_id, RUN_TIMEOUT_S, alive=[worker])
    stack.local_run = run
    return run


def flow_run_logs(api_url: str, flow_run_id: str) -> str:
    logs = api(
        api_url, "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
    )
    return "\n".join(entry["message"] for entry in logs)


def start_moto(log_dir: str | os.PathLike, timeout: float = 60) -> tuple[str, subprocess.Popen]:
    """A moto S3 server on a free loopback port, in its own session (stop it with `stop`)."""
    import time
    import urllib.request

    from plantcad_flows.cluster.processes import free_port

    port = free_port()
    log = open(Path(log_dir) / "moto.log", "wb")
    proc = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return url, proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError(f"moto_server did not start on {url}") from None
            time.sleep(0.2)
