"""Cross-process locks, so that two runs of one config on one prefix compute each step once.

Each step body runs inside `step_lock(prefix, kind, key)`: the first run to take a step's lock
computes it and marks it complete; a second run waits for the lock, then finds the step's files
complete and returns them (a "Cached" state, `tasks/policy.reused`).

A lock must never outlive its holder: a run killed with SIGKILL would otherwise leave it held
forever and the next run would wait forever. The two managers here (Prefect `LockManager`s)
cannot be left behind:

* `FileLockManager` (one host; default): an OS file lock (`flock`, through `filelock`) on
  `{prefix}/.locks/{key}.lock` for a local prefix, or under `~/.cache/plantcad-flows/locks/` for
  an `s3://` / `hf://` prefix. The kernel drops the lock when its process dies, however it dies.
* `LeasedRedisLockManager` (several hosts): prefect-redis's `RedisLockManager`, with every lock
  taken for a lease (`LEASE_S`) that a thread of the holding process renews while it lives; a
  killed holder's lock expires within one lease.

`executor.locks` picks one (`file` or `redis`); the Redis server comes from the environment
(`PLANTCAD_REDIS_URL`, default redis://localhost:6379/0), never from the config, since its URL may
carry a password.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from prefect.locking.protocol import LockManager
from prefect_redis.locking import RedisLockManager

from plantcad_flows.errors import StorageError
from plantcad_flows.layout.hashing import short_hash
from plantcad_flows.layout.storage import is_local
from plantcad_flows.secrets import strip_url_credentials

LOCKS_DIR = ".locks"
REMOTE_LOCKS_ROOT = Path("~/.cache/plantcad-flows/locks")
REDIS_URL_ENV = "PLANTCAD_REDIS_URL"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
_POLL_S = 0.1


def lock_directory(prefix: str) -> Path:
    """Where the file locks of a prefix live: inside it when local, else on this host."""
    if is_local(prefix):
        return Path(os.path.abspath(re.sub(r"^(file|local)://", "", prefix))) / LOCKS_DIR
    return REMOTE_LOCKS_ROOT.expanduser() / short_hash(prefix.rstrip("/"))


class FileLockManager(LockManager):
    """Prefect `LockManager` on OS file locks, released by the kernel when the holder dies."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._init_state()

    def _init_state(self) -> None:
        self._held: dict[str, tuple[FileLock, str]] = {}
        self._guard = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": str(self.directory)}  # held locks belong to this process only

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.directory = Path(state["directory"])
        self._init_state()

    def _path(self, key: str) -> str:
        return str(self.directory / f"{re.sub(r'[^A-Za-z0-9._-]', '_', key)}.lock")

    def _new_lock(self, key: str) -> FileLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        # one OS-level lock per object: two threads of one process exclude each other too
        return FileLock(self._path(key), thread_local=False, is_singleton=False)

    def acquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        # hold_timeout is not needed: the lock lives exactly as long as its holder's process
        if self.is_lock_holder(key, holder):
            return True
        lock = self._new_lock(key)
        try:
            lock.acquire(timeout=-1 if acquire_timeout is None else acquire_timeout, poll_interval=_POLL_S)
        except Timeout:
            return False
        with self._guard:
            self._held[key] = (lock, holder)
        return True

    def release_lock(self, key: str, holder: str) -> None:
        with self._guard:
            held = self._held.get(key)
            if held is None or held[1] != holder:
                raise ValueError(f"No lock held by {holder} for transaction with key {key}")
            del self._held[key]
        held[0].release()

    def is_locked(self, key: str) -> bool:
        with self._guard:
            if key in self._held:
                return True
        probe = self._new_lock(key)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return True
        probe.release()
        return False

    def is_lock_holder(self, key: str, holder: str) -> bool:
        with self._guard:
            held = self._held.get(key)
        return held is not None and held[1] == holder


class LeasedRedisLockManager(RedisLockManager):
    """prefect-redis's lock manager with leases renewed by the live holder."""

    LEASE_S = 60.0
    RENEW_S = 15.0

    def __init__(self, connection_url: str):
        super().__init__(connection_url=connection_url)
        self._init_lease()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._init_lease()

    def _init_lease(self) -> None:
        self._renewer: threading.Thread | None = None
        self._lease_guard = threading.Lock()

    def acquire_lock(self, key, holder, acquire_timeout=None, hold_timeout=None) -> bool:
        acquired = super().acquire_lock(key, holder, acquire_timeout, hold_timeout or self.LEASE_S)
        if acquired:
            self._start_renewer()
        return acquired

    def _start_renewer(self) -> None:
        with self._lease_guard:
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew, name="redis-lock-lease", daemon=True)
                self._renewer.start()

    def _renew(self) -> None:
        while True:
            time.sleep(self.RENEW_S)
            for lock in list(self._locks.values()):
                try:
                    lock.reacquire()  # resets the lease to LEASE_S if we still hold it
                except Exception:  # noqa: BLE001 - released meanwhile, or Redis briefly away
                    pass


def redis_lock_manager(url: str | None = None) -> LockManager:
    """The Redis lock manager for `url` (default: `PLANTCAD_REDIS_URL`), checked reachable.

    Raises:
        StorageError: naming the server (without credentials) when it does not answer.
    """
    url = url or os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
    manager = LeasedRedisLockManager(connection_url=url)
    try:
        manager.client.ping()
    except Exception as e:  # any client error means the same: no locks to be had there
        raise StorageError(
            f"executor.locks='redis': no Redis at {strip_url_credentials(url)} "
            f"({type(e).__name__}; set {REDIS_URL_ENV})"
        ) from None
    return manager


def lock_manager(prefix: str, kind: str) -> LockManager:
    """The lock manager `executor.locks` asks for."""
    if kind == "redis":
        return redis_lock_manager()
    return FileLockManager(lock_directory(prefix))


@contextmanager
def step_lock(prefix: str, manager: LockManager | None, key: str) -> Iterator[None]:
    """Hold the lock of step `key` while inside: `manager` is the run's (`lock_manager`; it
    travels with the task to a Ray worker), or file locks on `prefix` when none is given."""
    manager = manager or FileLockManager(lock_directory(prefix))
    holder = f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}"
    if not manager.acquire_lock(key, holder):  # no timeout: only a lost lock server says no
        raise StorageError(f"could not take the lock of step {key}")
    try:
        yield
    finally:
        manager.release_lock(key, holder)
