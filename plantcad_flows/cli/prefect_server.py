"""A local Prefect API for runs that have none configured.

Ray workers cannot use Prefect's ephemeral mode (each would start its own temporary server on
the same SQLite file: "database is locked"), so a run without `PREFECT_API_URL` gets a real
`prefect server start` bound to 127.0.0.1. It is stopped by its PID (its own process group) when
the run ends, unless the user asks to keep it; if the CLI dies without cleaning up (SIGKILL), the
kernel's parent-death signal takes it down too. A server found running is someone else's (`make
server`) and is never stopped.
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

from plantcad_flows.cluster.processes import (
    LOOPBACK,
    die_with_parent,
    free_port,
    port_free,
    stop_process_group,
)

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
    tied_to_caller: bool = False,
    settings: dict[str, str] | None = None,
) -> LocalServer:
    """Start `prefect server start` on 127.0.0.1 and wait until its API answers.

    Args:
        port: defaults to a free port.
        home: PREFECT_HOME for the server (its SQLite database lives there).
        tied_to_caller: the kernel stops the server when this process dies, even by SIGKILL
            (Linux; elsewhere the CLI's reaper does). Call from the main thread.
        settings: extra environment of the server, e.g. `postgres.server_settings(url)`.
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
    env.update(settings or {})
    log = open(log_path or os.devnull, "ab")
    proc = subprocess.Popen(
        [prefect_executable(), "server", "start", "--host", DEFAULT_HOST, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent() if tied_to_caller else None,
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
    keep: bool = False,
    home: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    port: int = DEFAULT_PORT,
) -> Iterator[LocalServer]:
    """Use PREFECT_API_URL if set, else a server on 127.0.0.1:`port`, else start one there.

    Sets PREFECT_API_URL for this process (and so for Ray workers) while inside the block. A
    server started here lives exactly as long as this process (SIGKILL included) unless `keep`;
    a server found running was started by someone else and is never stopped.
    """
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        print(f"using the Prefect server at {configured} (PREFECT_API_URL)", flush=True)
        yield LocalServer(configured, None)
        return
    default = f"http://{DEFAULT_HOST}:{port}/api"
    if api_healthy(default):
        # someone else's server: say so, since its UI, database and lifetime are not ours
        print(
            f"using the Prefect server at {default} (already running; this command did not start it)",
            flush=True,
        )
        server = LocalServer(default, None)
    else:
        server = start_server(
            port=port if port_free(port) else None, home=home, log_path=log_path, tied_to_caller=not keep
        )
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
