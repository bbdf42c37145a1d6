"""How every task of the pipeline retries and persists; where reuse is decided.

* Retries: exponential backoff, but only for transient failures (storage, network, a lost
  worker). Bad input (`ValidationError`) fails at once: retrying cannot fix it.
* "Done" has one authority: the content-addressed layout. A step is done when its files are
  complete and verified (`plantcad_flows.steps`), never because a second cache says so. Prefect's
  cache is off for every step; a task whose outputs were complete returns a `Completed` state
  named "Cached" (`reused`), so the UI still shows what was reused.
* Results: persisted (small metadata) under the storage prefix itself (`{prefix}/prefect-results`).
* Locks: each step body runs under its lock (`tasks/locks.step_lock`), so two runs on one prefix
  compute a step once: the second waits, then finds the outputs complete.
"""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path
from typing import Any, TypeVar

from prefect.filesystems import RemoteFileSystem, WritableFileSystem
from prefect.settings import PREFECT_API_URL
from prefect.states import Completed, State

from plantcad_flows.errors import (
    CellFailedError,
    DiskFullError,
    IncompleteShardsError,
    StorageError,
    ValidationError,
)
from plantcad_flows.io.retry import task_retry_waits
from plantcad_flows.layout.hashing import short_hash
from plantcad_flows.layout.storage import is_local, storage_options

T = TypeVar("T")
RESULTS_DIR = "prefect-results"
PERMANENT = (ValidationError, IncompleteShardsError, CellFailedError, StorageError, TypeError, KeyError)


def is_transient(exc: BaseException | None) -> bool:
    """Whether a failure is worth retrying: anything but bad input, a programming error or a
    full disk (waiting does not free space; found along the exception's cause chain, since
    pyarrow, torch and Prefect's result writer wrap the `OSError`)."""
    return exc is not None and not isinstance(exc, PERMANENT) and not disk_full(exc)


def disk_full(exc: BaseException) -> bool:
    """`exc`, or an exception it was raised from, is ENOSPC / EDQUOT."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, DiskFullError) or (
            isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT)
        ):
            return True
        if "No space left on device" in str(cur) or "Disk quota exceeded" in str(cur):
            return True  # pyarrow's OSError carries the text, not the errno
        cur = cur.__cause__ or cur.__context__
    return False


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except BaseException as exc:  # the state carries the task's exception
        return is_transient(exc)
    return False


_WAITS = task_retry_waits()  # read once, when the tasks are defined; `eval` checks it first
RETRY_OPTIONS: dict[str, Any] = {
    "retries": len(_WAITS),
    "retry_delay_seconds": list(_WAITS),  # Prefect runs the loop; the waits are the house's
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": retry_transient,
}


def result_storage(prefix: str) -> Path | WritableFileSystem:
    """Where task results persist: `{prefix}/prefect-results`.

    A local prefix is a plain path (nothing to register). A remote one (s3://, hf://) needs a
    filesystem block saved on the server (Prefect requires it); it is saved once per process,
    server and location, under a name derived from the location. Credentials are never put in the block:
    s3fs and huggingface_hub read them from the environment of whichever process persists a result.
    """
    if is_local(prefix):
        return Path(os.path.abspath(prefix)) / RESULTS_DIR

    return _saved_block(f"{prefix.rstrip('/')}/{RESULTS_DIR}", prefix, PREFECT_API_URL.value())


@functools.cache
def _saved_block(basepath: str, prefix: str, api_url: str | None) -> WritableFileSystem:
    settings = {k: v for k, v in storage_options(prefix).items() if k != "token"}
    if "endpoint_url" in settings:
        settings = {"client_kwargs": {"endpoint_url": settings.pop("endpoint_url")}, **settings}
    block = RemoteFileSystem(basepath=basepath, settings=settings)
    block.save(f"plantcad-results-{short_hash(basepath)}", overwrite=True)
    return block


def task_options(prefix: str) -> dict[str, Any]:
    """Per-run `Task.with_options` keywords: where the steps' results persist."""
    return {"result_storage": result_storage(prefix), "persist_result": True}


def reused(value: T, was_complete: bool) -> T | State:
    """The task's return: `value`, as a `Completed` state named "Cached" when the step's outputs
    were already complete (the UI shows it as reused; its result persists as any other)."""
    if not was_complete:
        return value
    return Completed(name="Cached", data=value, message="outputs complete under the prefix: reused")
