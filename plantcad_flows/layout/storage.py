"""The storage prefix: one code path for a local directory, `s3://` and `hf://datasets/...`.

Every step writes under `{prefix}/{step}-{label}-{hash}/` (marin-style content addressing):
its files, a `.step_info.json` provenance record (config, code version, time), and last of all
a `_SUCCESS` marker. Readers trust a step directory only when `_SUCCESS` exists, so a crash
mid-write never leaves something that looks complete. Local files are written to a temporary
name and renamed; object stores (S3, the HF hub) make each object visible only once it is whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import re
import shutil
import socket
import uuid
from typing import Any

import pandas as pd
from upath import UPath

from plantcad_flows import CODE_VERSION
from plantcad_flows.errors import DiskFullError, StorageError
from plantcad_flows.io.remote import hf_token, is_local, storage_options
from plantcad_flows.layout.hashing import short_hash

SUCCESS = "_SUCCESS"
FAILED = "_FAILED"
STEP_INFO = ".step_info.json"


def to_path(url: str | UPath) -> UPath:
    """A UPath for any supported location; local paths are made absolute."""
    if isinstance(url, UPath):
        return url
    if is_local(url):
        return UPath(os.path.abspath(re.sub(r"^(file|local)://", "", str(url))))
    return UPath(url, **storage_options(url))


def ensure_prefix(url: str) -> UPath:
    """Create the prefix if needed and prove it is writable, before any scoring.

    Raises:
        StorageError: naming the prefix and the underlying problem.
    """
    try:
        if url.startswith("hf://"):
            _ensure_hf_repo(url)
        root = to_path(url)
        if is_local(url):
            root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe-{uuid.uuid4().hex[:8]}"
        probe.write_text("ok")
        probe.unlink()
        return root
    except StorageError:
        raise
    except Exception as e:  # any backend error means the same thing to the user
        raise StorageError(f"executor.prefix={url!r}: not writable: {type(e).__name__}: {e}") from e


def _ensure_hf_repo(url: str) -> None:
    m = re.match(r"hf://datasets/([^/]+/[^/]+)", url)
    if not m:
        raise StorageError(f"executor.prefix={url!r}: expected hf://datasets/ORG/REPO[/path]")
    from huggingface_hub import HfApi

    HfApi(token=hf_token()).create_repo(m.group(1), repo_type="dataset", exist_ok=True, private=True)


def step_dir(prefix: str | UPath, step: str, label: str, fields: Any) -> UPath:
    """`{prefix}/{step}-{label}-{hash}`: the content-addressed home of one step's outputs."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")[:80]
    return to_path(prefix) / f"{step}-{safe}-{short_hash(fields)}"


def write_bytes_atomic(path: UPath, data: bytes) -> None:
    """Write so that `path` is either absent or complete, on every backend.

    Raises:
        DiskFullError: the disk filled (ENOSPC): the partial temporary file is removed, and the
        message names the file and the space left, so a step fails with nothing marked complete.
    """
    if path.protocol in ("", "file", "local"):
        local = path.path
        tmp = f"{local}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            os.makedirs(os.path.dirname(local), exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, local)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise DiskFullError(disk_full_message(local, len(data), e)) from None
    else:
        path.write_bytes(data)


def disk_full_message(local: str, size: int, error: OSError) -> str:
    """One line: which file could not be written, and how much space its filesystem has left."""
    where = os.path.dirname(local)
    while where and not os.path.isdir(where):
        where = os.path.dirname(where)
    try:
        usage = shutil.disk_usage(where or ".")
        space = f"{_size(usage.free)} free of {_size(usage.total)}"
    except OSError:
        space = "free space unknown"
    reason = "quota exceeded" if error.errno == errno.EDQUOT else "no space left on device"
    return f"{reason}: cannot write {local} ({_size(size)}; {space} under {where}); free space and run again"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def write_json_atomic(path: UPath, obj: Any) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(path: UPath) -> Any:
    return json.loads(path.read_text())


def is_complete(directory: UPath) -> bool:
    return (directory / SUCCESS).exists()


def has_failed(directory: UPath) -> bool:
    return (directory / FAILED).exists() and not is_complete(directory)


def provenance(fields: Any) -> dict[str, Any]:
    return {
        "config": fields,
        "code_version": CODE_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "host": socket.gethostname(),
    }


def mark_complete(directory: UPath, fields: Any, summary: dict[str, Any] | None = None) -> None:
    """Write provenance, then the success marker last; clears an earlier failure marker."""
    write_json_atomic(directory / STEP_INFO, provenance(fields))
    failed = directory / FAILED
    if failed.exists():
        failed.unlink()
    write_json_atomic(directory / SUCCESS, summary or {})


def mark_failed(directory: UPath, error: str) -> None:
    write_json_atomic(directory / FAILED, {"error": error, "time": dt.datetime.now(dt.UTC).isoformat()})


def read_parquet(location: str | os.PathLike | UPath):
    """The one parquet reader: a file, or every `*.parquet` under a directory (sorted by name),
    on any backend. A missing location raises FileNotFoundError naming it."""

    path = location if isinstance(location, UPath) else to_path(os.fspath(location))
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {location}")
    files = sorted((p for p in path.rglob("*.parquet") if p.is_file()), key=str) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"directory holds no .parquet file: {location}")
    frames = []
    for f in files:
        with f.open("rb") as fh:
            frames.append(pd.read_parquet(fh))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
