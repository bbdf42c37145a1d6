"""Which Ray cluster scores a run, how to join it, and what each shard task asks of it.

`ray.address` is None (a local instance, started for the run), `auto` (the cluster this machine
belongs to), `host:port` (a cluster's GCS) or `ray://host:port` (Ray Client). Joining never falls
back to a local instance: `ray.init()` without an address starts one silently, so an unreachable
or mistyped address is caught here, before Ray is asked, and the cluster we end up on is checked
against the one asked for.

Prefect task runs executed on Ray workers must report to the flow's Prefect API. prefect-ray 0.6
ships the driver's whole Prefect settings to each task (`serialize_context`), so a worker uses the
driver's `PREFECT_API_URL`. But when the driver runs on an ephemeral API, that setting is empty and
each worker would start an ephemeral server of its own on the same SQLite file ("database is
locked"). The task runner (`tasks/ray_runner.py`) therefore resolves the API URL the flow really uses and
pins it in the settings each submission carries, and in the workers' environment (`runtime_env`
here). A loopback URL cannot serve workers on other machines; `check_api_reachable` refuses that
with a way out, rather than losing their task runs.

This module imports Ray only, never Prefect.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from plantcad_flows import REPO_ROOT
from plantcad_flows.config import RAY_ADDRESS_FIELD as FIELD
from plantcad_flows.config import Address, parse_address
from plantcad_flows.errors import ValidationError
from plantcad_flows.io.retry import backoff, retrying
from plantcad_flows.scoring.devices import cuda_devices

if TYPE_CHECKING:
    from plantcad_flows.config import RayConfig

log = logging.getLogger(__name__)

# Never uploaded with the code: secrets, environments, data, results, history. Stated here, not
# left to Ray's `.gitignore` handling (a checkout without that file, or with `.env` tracked by
# mistake, would ship the keys `setup` reads). gitignore syntax: a leading `/` anchors at the
# repo root, so `/data/` does not also drop the `plantcad_flows/data` package.
WORKING_DIR_EXCLUDES = [
    ".env*",
    "**/.env*",
    "infra/server/.env",
    ".prefect*",
    "**/.prefect-home",
    "/outputs/",
    "/data/",
    ".venv",
    ".git",
    "**/__pycache__",
    "*.egg-info",
    ".pytest_cache",
    "benchmarks/results",
]
CONNECT_TIMEOUT_S = 5.0
JOIN_RETRY_S = 60.0  # how long a ray:// join keeps retrying transient initialisation failures
RAY_TASK_RETRIES = 3  # re-runs of a shard task after its worker or node died


@dataclass(frozen=True)
class Resources:
    num_gpus: float
    num_cpus: float
    num_nodes: int


def check_reachable(addr: Address, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast, with the address in the message, if nothing listens at host:port.

    `ray.init` would otherwise retry for a long time and then fail with a GCS error that does not
    say which setting to fix.
    """
    if addr.host is None or addr.port is None:
        return
    try:
        with socket.create_connection((addr.host, addr.port), timeout=timeout):
            pass
    except OSError as exc:
        raise ValidationError(
            FIELD,
            addr.text,
            f"cannot connect to {addr.host}:{addr.port} ({exc})",
            "is the Ray head running and reachable from here? No local instance was started",
        ) from None


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(host: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}


def _same_gcs(asked: Address, actual: str) -> bool:
    """Does the GCS we joined (`actual`, ip:port as Ray reports it) match the address asked for?

    Ray reports the node's own IP even when joined through 127.0.0.1, so a loopback host matches
    any IP of this machine."""
    host, _, port = actual.rpartition(":")
    if int(port) != asked.port:
        return False
    asked_ips = _resolve(asked.host or "")
    if any(_is_loopback(ip) for ip in asked_ips):
        asked_ips |= _local_ips()
    return bool(asked_ips & _resolve(host))


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    return (Path.home() / ".ray" / "auth_token").exists()


def ship_code(ray_config: RayConfig) -> bool:
    """Upload the repo as working_dir? By default only for Ray Client, whose cluster has its own
    filesystem; a local or `host:port` driver runs on a node of the cluster."""
    if ray_config.ship_code is not None:
        return ray_config.ship_code
    return parse_address(ray_config.address).kind == "client"


def runtime_env(
    ray_config: RayConfig, api_url: str | None, env_vars: dict[str, str] | None = None
) -> dict[str, Any]:
    """The job-level runtime_env: Prefect settings for the workers, the driver's settings they
    must share (`env_vars`), and the code for Ray Client."""
    env: dict[str, Any] = {}
    variables = dict(env_vars or {})
    if api_url:
        # Workers read the API from the settings each task carries; the variable also covers
        # anything that builds a Prefect client before that context is entered.
        variables["PREFECT_API_URL"] = api_url
    if variables:
        env["env_vars"] = variables
    if ship_code(ray_config):
        env["working_dir"] = str(REPO_ROOT)
        env["excludes"] = list(WORKING_DIR_EXCLUDES)
    return env


def _ray():
    import ray

    _no_auto_init()
    return ray


def _no_auto_init() -> None:
    """No Ray call in this process starts a cluster by itself: sessions are opened by `connect`.

    Ray's default (`RAY_ENABLE_AUTO_CONNECT`) makes any Ray call without a session start a local
    instance. When a run is interrupted, the task runner shuts its session down while the flow
    still resolves its shard futures; each such call then started a fresh instance (dashboard and
    all) that the process reaper took down again, and the interrupted command waited 60 s for that
    instance's GCS before it could exit. Now such a call fails at once.
    """
    from ray._private import auto_init_hook

    auto_init_hook.enable_auto_connect = False


def in_ray_worker() -> bool:
    """True inside a Ray worker process (where Ray is already set up by the raylet)."""
    ray = _ray()
    return ray.is_initialized() and ray.get_runtime_context().worker.mode != ray.SCRIPT_MODE


def connect(
    address: str | None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    runtime_env: dict[str, Any] | None = None,
    namespace: str = "prefect",
    join_retry_s: float = JOIN_RETRY_S,
) -> bool:
    """Start or join the Ray cluster `address` names.

    A `ray://` join that fails to initialise (the client proxy's per-client server died:
    "Initialization failure from server ... psutil.ZombieProcess", or a ConnectionError from the
    proxy) is retried with exponential backoff for up to `join_retry_s` seconds.

    Returns:
        True if this call initialised Ray (and the caller should shut it down), False if this
        process was already connected to the cluster asked for.

    Raises:
        ValidationError: bad address, nothing listening, or already connected to another cluster.
    """
    ray = _ray()
    addr = parse_address(address)
    if ray.is_initialized():
        if in_ray_worker() or addr.kind in ("local", "auto"):
            return False
        if addr.kind == "gcs":
            actual = ray.get_runtime_context().gcs_address
            if not _same_gcs(addr, actual):
                raise ValidationError(FIELD, address, f"this process is already connected to {actual}")
        return False

    kwargs: dict[str, Any] = {"namespace": namespace, "runtime_env": runtime_env or None}
    if addr.kind == "local":
        # "local" forces a new instance even when RAY_ADDRESS points at a cluster.
        kwargs.update(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
        kwargs.update(DRIVER_CONSOLE)
        ray.init(**kwargs)
        return True

    check_reachable(addr)
    _send_token_if_available()
    _init_with_retries(addr, address, kwargs, join_retry_s)
    try:
        _check_joined(addr, address)
    except Exception:
        ray.shutdown()
        raise
    return True


# How much of Ray reaches this process's console: the CLI sets it per run (cli/console.py). Quiet,
# the workers' output stays in Ray's session logs and the tasks' logs reach the Prefect UI.
DRIVER_CONSOLE: dict[str, Any] = {}


def quiet_driver_console(quiet: bool) -> None:
    DRIVER_CONSOLE.clear()
    if quiet:
        DRIVER_CONSOLE.update(log_to_driver=False, logging_level=logging.ERROR)


def _one_line(exc: BaseException) -> str:
    """A (possibly multi-line, traceback-carrying) Ray error as one line: its first and last lines."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return text if len(text) <= 300 else text[:297] + "..."


def _init_with_retries(addr: Address, address: str | None, kwargs: dict[str, Any], budget: float) -> None:
    """`ray.init` on `addr`; Ray Client's transient initialisation failures are retried with
    backoff (0.5 s doubling to 8 s) until `budget` seconds have passed, then reported on one line.

    Raises:
        ValidationError: naming `ray.address`, the attempts made and the last failure.
    """
    ray = _ray()
    attempts = [0]

    def attempt() -> None:
        attempts[0] += 1
        try:
            ray.init(address=addr.text, **kwargs)
        except ConnectionError:  # ConnectionAbortedError: "Initialization failure from server"
            try:
                ray.shutdown()  # drop whatever half-made client context the failure left
            except Exception:  # noqa: BLE001 - nothing was connected; nothing to undo
                pass
            raise

    try:
        retrying(
            attempt,
            f"joining {address}",
            lambda e: addr.kind == "client" and isinstance(e, ConnectionError),
            backoff(0.5, 8.0, 64),
            budget_s=budget,
        )
    except ConnectionError as exc:
        raise ValidationError(
            FIELD,
            address,
            f"cannot join the Ray cluster after {attempts[0]} attempt(s) ({_one_line(exc)})",
            "no local instance was started",
        ) from None


def _send_token_if_available() -> None:
    """Present this machine's Ray token when joining `host:port` or `ray://host:port`.

    `ray start --head` turns token auth on whenever a token file exists (any local `ray.init()`
    writes one), but a driver given an explicit address sends no token unless RAY_AUTH_MODE says
    so, and is refused ("InvalidAuthToken"). A cluster without auth accepts a token it did not
    ask for, so sending it is safe either way. An explicit RAY_AUTH_MODE is left alone.
    """
    if "RAY_AUTH_MODE" in os.environ or not _token_available():
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    from ray._raylet import Config

    # Ray reads the mode once per process into its cached config: re-read it (as Ray does).
    Config.initialize("")


def _check_joined(addr: Address, address: str | None) -> None:
    ray = _ray()
    if addr.kind == "client":
        if not ray.util.client.ray.is_connected():
            raise ValidationError(FIELD, address, "Ray Client did not connect")
        return
    ctx = ray.get_runtime_context()
    if addr.kind == "gcs" and not _same_gcs(addr, ctx.gcs_address):
        raise ValidationError(FIELD, address, f"joined a different cluster ({ctx.gcs_address})")
    if addr.kind == "auto" and not ray.nodes():
        raise ValidationError(FIELD, address, "joined a cluster with no nodes")


def connected_resources() -> Resources:
    ray = _ray()
    res = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return Resources(float(res.get("GPU", 0.0)), float(res.get("CPU", 0.0)), len(nodes))


def local_resources() -> Resources:
    """What a local instance would have, without starting one."""

    return Resources(float(cuda_devices()[0]), float(os.cpu_count() or 1), 1)


def cluster_resources(address: str | None = None) -> Resources:
    """GPUs, CPUs and alive nodes of the cluster `address` names (the connected one if Ray is up).

    A local address is answered from this machine, without starting Ray for it.
    """
    ray = _ray()
    if ray.is_initialized():
        connect(address)  # raises if connected to a different cluster
        return connected_resources()
    if parse_address(address).kind == "local":
        return local_resources()
    owned = connect(address)
    try:
        return connected_resources()
    finally:
        if owned:
            ray.shutdown()


def default_num_workers(resources: Resources, cpus_per_shard: float = 1.0) -> int:
    """Shards that can run at once: one per GPU, else as many as the CPUs allow (at least 1)."""
    if resources.num_gpus >= 1:
        return int(resources.num_gpus)
    return max(1, int(resources.num_cpus // cpus_per_shard))


def shard_remote_options(num_gpus_available: float, cpus_per_shard: float = 1.0) -> dict[str, Any]:
    """Ray options for one shard task, for `prefect_ray.context.remote_options(**...)`.

    A GPU each when the cluster has GPUs; otherwise `cpus_per_shard` CPUs, so that Ray runs as
    many CPU shards at once as the cluster's CPUs allow and no more.

    Usage (in the flow): `with remote_options(**shard_remote_options(...)): score_shard.submit(...)`.
    """
    # Ray re-runs a task whose worker process or node died (not one that raised) up to
    # max_retries times; the re-run reuses the Prefect task run id, so the shard is redone under
    # the same task run. Stated here rather than left to Ray's default.
    if num_gpus_available >= 1:
        return {"num_gpus": 1, "max_retries": RAY_TASK_RETRIES}
    return {"num_cpus": cpus_per_shard, "max_retries": RAY_TASK_RETRIES}


def _local_ips() -> set[str]:
    ips = {"127.0.0.1", "::1"}
    try:
        ips |= set(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            # No packet is sent: connecting a UDP socket only picks the outbound interface.
            s.connect(("192.0.2.1", 9))
            ips.add(s.getsockname()[0])
        except OSError:
            pass
    return ips


def check_api_reachable(api_url: str | None, address: str | None) -> None:
    """Refuse a loopback Prefect API when some Ray node is another machine.

    Call with Ray connected. Workers there could not report their task runs.
    """
    if not api_url or not _is_loopback(urlparse(api_url).hostname):
        return
    here = _local_ips()
    remote = sorted(
        {
            n["NodeManagerAddress"]
            for n in _ray().nodes()
            if n.get("Alive") and n["NodeManagerAddress"] not in here
        }
    )
    if remote:
        raise ValidationError(
            "PREFECT_API_URL",
            api_url,
            f"Ray nodes {', '.join(remote[:3])} of {address} cannot reach a loopback Prefect API",
            "start a Prefect server they can reach and set PREFECT_API_URL to it",
        )


def cancel(refs: list[Any]) -> None:
    """Cancel the Ray tasks behind `refs` that have not finished (their workers are stopped);
    a `ray.get` on one then raises `TaskCancelledError` at once. Never raises: it runs while a
    run is being torn down, possibly on a session that is already gone."""
    ray = _ray()
    if not refs or not ray.is_initialized():
        return
    try:
        _, pending = ray.wait(list(refs), num_returns=len(refs), timeout=0)
    except Exception:
        pending = list(refs)
    for ref in pending:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # already finished, or the session went away meanwhile
            pass


def shutdown() -> None:
    """Leave the Ray session this process opened (callers decide whether it was theirs)."""
    _ray().shutdown()
