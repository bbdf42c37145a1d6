"""How every task of the pipeline retries, caches and persists.

* Retries: exponential backoff, but only for transient failures (storage, network, a lost
  worker). Bad input (`ValidationError`) fails at once: retrying cannot fix it.
* Cache keys: the content hash of the step's declared fields (see `plantcad_flows.layout.hashing`), and
  only while the step's outputs really exist. A step whose files were deleted, or that never
  finished, gets no key and runs again. Prefect's default policy includes the run id, so without
  this nothing would be reused across runs.
* Results: persisted under the storage prefix itself (`{prefix}/prefect-results`), so a run on
  another machine that shares the prefix sees the same cache. They hold small metadata only.
* Locks: each step's transaction is SERIALIZABLE under a lock manager (`tasks/locks.py`), so
  two runs on one prefix compute a step once: the second waits, then reads the first's record.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.filesystems import LocalFileSystem, RemoteFileSystem
from prefect.locking.protocol import LockManager

from plantcad_flows.errors import CellFailedError, IncompleteShardsError, StorageError, ValidationError
from plantcad_flows.identity.retry import backoff
from plantcad_flows.layout.hashing import short_hash
from plantcad_flows.layout.storage import is_local, storage_options, to_path
from tasks.locks import lock_manager
from tasks.serializer import StableJSONSerializer

RESULTS_DIR = "prefect-results"
PERMANENT = (ValidationError, IncompleteShardsError, CellFailedError, StorageError, TypeError, KeyError)


def is_transient(exc: BaseException | None) -> bool:
    """Whether a failure is worth retrying: anything but bad input or a programming error."""
    return exc is not None and not isinstance(exc, PERMANENT)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except BaseException as exc:  # the state carries the task's exception
        return is_transient(exc)
    return False


RETRY_OPTIONS: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": list(backoff(2.0, 8.0, 3)),  # Prefect runs the loop; the waits are the house's
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": retry_transient,
}


def result_storage(prefix: str):
    """A Prefect filesystem block rooted at `{prefix}/prefect-results` (local, s3:// or hf://).

    Credentials are never put in the block: s3fs and huggingface_hub read them from the
    environment of whichever process persists or reads a result.
    """
    if is_local(prefix):
        return LocalFileSystem(basepath=os.path.join(os.path.abspath(prefix), RESULTS_DIR))
    settings = {k: v for k, v in storage_options(prefix).items() if k != "token"}
    if "endpoint_url" in settings:
        settings = {"client_kwargs": {"endpoint_url": settings.pop("endpoint_url")}, **settings}
    return RemoteFileSystem(basepath=f"{prefix.rstrip('/')}/{RESULTS_DIR}", settings=settings)


def content_key(
    prefix: str, key: str, outputs_exist: bool | Callable[[], bool], locks: LockManager | None = None
) -> str:
    """The cache key of a step, dropping its cache record when the step's files are gone.

    The key is always the content hash, so the first run's record serves the second run. But
    a record whose outputs were deleted (or lost with a preempted node) must not be served:
    it is removed here, so the step runs again and writes both back.

    With `locks`, a missing output is checked again under the step's lock before its record is
    dropped: another run may be computing the step right now, and once it commits, its fresh
    record must survive (else this run would compute the step a second time).
    """
    check = outputs_exist if callable(outputs_exist) else (lambda: outputs_exist)
    if check():
        return key
    holder = f"key-check:{os.getpid()}:{threading.get_ident()}"
    if locks is not None:
        locks.acquire_lock(key, holder)
    try:
        if locks is None or not check():
            record = to_path(prefix) / RESULTS_DIR / key
            try:
                if record.exists():
                    record.unlink()
            except FileNotFoundError:
                pass
    finally:
        if locks is not None:
            locks.release_lock(key, holder)
    return key


def locks_of(ctx: Any) -> LockManager | None:
    """The lock manager of the task run whose key is being computed (None if unlocked)."""
    policy = getattr(getattr(ctx, "task", None), "cache_policy", None)
    return getattr(policy, "lock_manager", None)


def saved_result_storage(prefix: str):
    """The result-storage block for `prefix`, saved on the server (Prefect requires it) under a
    name derived from its location, so every run on the same prefix shares one block."""
    block = result_storage(prefix)
    block.save(f"plantcad-results-{short_hash(block.basepath)}", overwrite=True)
    return block


class RunOptions(dict):
    """`Task.with_options` keywords, plus the run's lock manager (applied by `with_run_options`)."""

    lock_manager: LockManager | None = None


def task_options(prefix: str, force: bool, locks: str = "file") -> RunOptions:
    """Per-run options: where results persist, whether to ignore existing cache entries, and
    which lock manager serialises each step (`executor.locks`: file or redis)."""
    options = RunOptions(
        result_storage=saved_result_storage(prefix),
        persist_result=True,
        result_serializer=StableJSONSerializer(),
        refresh_cache=force,
    )
    options.lock_manager = lock_manager(prefix, locks)
    return options


def with_run_options(task: Any, options: dict[str, Any]) -> Any:
    """`task.with_options(**options)`, its cache policy made SERIALIZABLE under the run's locks."""
    manager = getattr(options, "lock_manager", None)
    if manager is None or not isinstance(task.cache_policy, CachePolicy):
        return task.with_options(**options)
    policy = task.cache_policy.configure(isolation_level="SERIALIZABLE", lock_manager=manager)
    return task.with_options(cache_policy=policy, **options)
