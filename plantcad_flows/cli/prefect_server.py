"""A local Prefect API for runs that have none configured.

Ray workers cannot use Prefect's ephemeral mode (each would start its own temporary server on
the same SQLite file: "database is locked"), so a run without `PREFECT_API_URL` gets a real
`prefect server start` bound to 127.0.0.1. It is stopped by its PID (its own process group) when
the run ends, unless the user asks to keep it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from plantcad_flows.cluster.processes import LOOPBACK, free_port, port_free, stop_process_group

DEFAULT_HOST = LOOPBACK
DEFAULT_PORT = 4200


@dataclass
class LocalServer:
    api_url: str
    process: subprocess.Popen | None  # None when we reuse a server someone else runs

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def stop(self) -> None:
        stop_process_group(self.process)


def api_healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def prefect_executable() -> str:
    candidate = Path(sys.executable).parent / "prefect"
    return str(candidate) if candidate.exists() else "prefect"


def start_server(
    port: int | None = None,
    home: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    timeout: float = 180.0,
) -> LocalServer:
    """Start `prefect server start` on 127.0.0.1 and wait until its API answers.

    Args:
        port: defaults to a free port.
        home: PREFECT_HOME for the server (its SQLite database lives there).
    """
    port = port or free_port()
    api_url = f"http://{DEFAULT_HOST}:{port}/api"
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_SERVER_API_HOST"] = DEFAULT_HOST
    env["PREFECT_SERVER_API_PORT"] = str(port)
    if home is not None:
        Path(home).mkdir(parents=True, exist_ok=True)
        env["PREFECT_HOME"] = str(home)
    log = open(log_path or os.devnull, "ab")
    proc = subprocess.Popen(
        [prefect_executable(), "server", "start", "--host", DEFAULT_HOST, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = LocalServer(api_url, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode}; see {log_path}")
        if api_healthy(api_url):
            return server
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"prefect server on {api_url} did not become healthy in {timeout:.0f}s")


@contextmanager
def prefect_api(
    keep: bool = False, home: str | os.PathLike | None = None, log_path: str | os.PathLike | None = None
) -> Iterator[LocalServer]:
    """Use PREFECT_API_URL if set, else a server on 127.0.0.1:4200, else start one.

    Sets PREFECT_API_URL for this process (and so for Ray workers) while inside the block.
    """
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        yield LocalServer(configured, None)
        return
    default = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/api"
    if api_healthy(default):
        server = LocalServer(default, None)
    else:
        port = DEFAULT_PORT if port_free(DEFAULT_PORT) else None
        server = start_server(port=port, home=home, log_path=log_path)
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield server
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        if not keep and server.process is not None:
            flush_prefect_logs()
            server.stop()


def flush_prefect_logs(timeout: float = 10.0) -> None:
    """Ship buffered run logs to the server before it stops (they are sent in batches);
    otherwise the interpreter's exit retries them against a dead server for a minute."""
    try:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=timeout)
    except Exception:  # logging must never turn a finished run into an error
        pass
