"""A local Prefect API for runs that have none configured.

Ray workers cannot use Prefect's ephemeral mode (each would start its own temporary server on
the same SQLite file: "database is locked"), so a run without `PREFECT_API_URL` gets a real
`prefect server start` bound to 127.0.0.1. It is stopped by its PID (its own process group) when
the run ends, unless the user asks to keep it; if the CLI dies without cleaning up (SIGKILL), the
kernel's parent-death signal takes it down too.

A run depends only on what it owns or what the user named. A server found on the port is shared
when it outlives its users (`make server`, `--keep-server`, or a server of the user's that this
project did not start); a server that another run will stop when it ends is never borrowed: the
run starts a private one on a free port instead (`server_records.py` tells them apart). A server
this command starts counts as up only once the process it started holds the port: a server that
lost the port to another process between the check and the bind is restarted on a free port,
and the run says so. One line at the start says which server the run uses and why.
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
    listens_on,
    port_free,
    stop_process_group,
)
from plantcad_flows.cluster.reaper import descendants
from plantcad_flows.services.server_records import ServerRecord, read_record, remove_record, write_record

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


class PortTaken(RuntimeError):
    """The server this command started could not bind its port: another process holds it."""


def _ours(proc: subprocess.Popen, port: int) -> bool:
    """The process started here (or a child of it) holds the listening socket on `port`; where
    /proc cannot tell, a server that is still alive after answering counts as ours."""
    if proc.poll() is not None:
        return False
    holds = listens_on(port, [proc.pid, *descendants(proc.pid)])
    return holds is not False and proc.poll() is None


def start_server(
    port: int | None = None,
    home: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    timeout: float = 180.0,
    tied_to_caller: bool = False,
    settings: dict[str, str] | None = None,
) -> LocalServer:
    """Start `prefect server start` on 127.0.0.1 and wait until it answers, from the process
    started here (not from another server that took the port first).

    Args:
        port: defaults to a free port.
        home: PREFECT_HOME for the server (its SQLite database lives there).
        tied_to_caller: the kernel stops the server when this process dies, even by SIGKILL
            (Linux; elsewhere the CLI's reaper does). Call from the main thread.
        settings: extra environment of the server, e.g. `postgres.server_settings(url)`.

    Raises:
        PortTaken: another process bound `port` first (the server exited without serving).
        RuntimeError: the server exited, or did not answer within `timeout`.
    """
    port = port or free_port()
    api_url = f"http://{DEFAULT_HOST}:{port}/api"
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_SERVER_API_HOST"] = DEFAULT_HOST
    env["PREFECT_SERVER_API_PORT"] = str(port)
    env["PREFECT_UI_API_URL"] = api_url  # the browser talks to this server, not to 4200
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
            if not port_free(port):
                raise PortTaken(f"port {port} was taken by another process; see {log_path}")
            raise RuntimeError(f"prefect server exited with code {proc.returncode}; see {log_path}")
        if api_healthy(api_url) and _ours(proc, port):
            return server
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"prefect server on {api_url} did not become healthy in {timeout:.0f}s")


def start_own_server(
    port: int, keep: bool, home: str | os.PathLike | None, log_path: str | os.PathLike | None
) -> tuple[LocalServer, ServerRecord | None]:
    """Start this command's server on `port` (a free one if `port` is taken, before or during the
    start), record it as this command's, and say in one line where it runs and how long."""
    wanted = port
    if not port_free(port):
        port = free_port()
    try:
        server = start_server(port=port, home=home, log_path=log_path, tied_to_caller=not keep)
    except PortTaken:
        print(
            f"port {port} was taken by another process while this command's Prefect server "
            "started; starting it on a free port instead",
            flush=True,
        )
        port = free_port()
        server = start_server(port=port, home=home, log_path=log_path, tied_to_caller=not keep)
    assert server.process is not None
    record = write_record(port, server.process.pid, keep, "plantcad-flows --keep-server" if keep else "a run")
    lifetime = "left running after this run (--keep-server)" if keep else "stops when this run ends"
    moved = f"; port {wanted} is in use" if port != wanted else ""
    print(
        f"started a Prefect server for this run at {server.ui_url} (pid {server.process.pid}; "
        f"{lifetime}{moved})",
        flush=True,
    )
    return server, record


@contextmanager
def prefect_api(
    keep: bool = False,
    home: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    port: int = DEFAULT_PORT,
) -> Iterator[LocalServer]:
    """Use PREFECT_API_URL if set, else a shared server on 127.0.0.1:`port`, else start one.

    Sets PREFECT_API_URL for this process (and so for Ray workers) while inside the block. A
    server started here lives exactly as long as this process (SIGKILL included) unless `keep`.
    A server found on `port` is used only if it outlives its users (see the module docstring);
    one that another run will stop is left to that run and this run starts its own.
    """
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        print(f"using the Prefect server at {configured} (PREFECT_API_URL)", flush=True)
        yield LocalServer(configured, None)
        return
    default = f"http://{DEFAULT_HOST}:{port}/api"
    record = None
    answering = api_healthy(default)
    found = read_record(port) if answering else None
    if answering and (found is None or found.outlives_owner):
        # a shared server: its UI, database and lifetime are not this run's
        by = f"started by {found.command}, pid {found.pid}" if found else "this command did not start it"
        print(
            f"using the Prefect server at {default} (already running; {by}; shared, not stopped by this run)",
            flush=True,
        )
        server = LocalServer(default, None)
    else:
        if found is not None:
            print(
                f"the Prefect server at {default} belongs to another run (pid {found.owner}) and stops "
                "when that run ends: this run starts a private one",
                flush=True,
            )
            port = free_port()
        server, record = start_own_server(port, keep, home, log_path)
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield server
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        if not keep and server.process is not None:
            flush_prefect_logs()
            server.stop()
            remove_record(record)


def flush_prefect_logs(timeout: float = 10.0) -> None:
    """Ship buffered run logs to the server before it stops (they are sent in batches);
    otherwise the interpreter's exit retries them against a dead server for a minute."""
    try:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=timeout)
    except Exception:  # logging must never turn a finished run into an error
        pass
