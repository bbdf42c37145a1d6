"""Full sha256 digests of local files, remembered by (path, size, mtime_ns, inode, device).

A local model is identified by the sha256 of every file in its directory: a checkpoint retrained
in place (same names, same sizes, even the same first and last MiB) must be re-scored. Reading a
multi-GB checkpoint at every run would cost minutes, so each digest is kept in a small index under
the user's cache directory (`$XDG_CACHE_HOME/plantcad-flows/digests/`, else
`~/.cache/plantcad-flows/digests/`) and reused while the file's stat is unchanged.

The index is one small JSON file per (file, stat) entry, named by a hash of that stat key and
written to a temporary name then renamed: concurrent runs never read a half-written entry nor
lose each other's, and a stale entry is never matched, since a rewritten file has another key.
A file modified in the last `RACY_S` seconds is hashed but not remembered (as git treats
"racily clean" files): a second write within the same mtime tick could keep its stat.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from pathlib import Path

_CHUNK = 1 << 22
RACY_S = 2.0


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/plantcad-flows`, else `~/.cache/plantcad-flows`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "plantcad-flows"


def index_dir() -> Path:
    return cache_root() / "digests"


def stream_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, read in 4 MiB chunks (memory stays flat for any size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stat_key(path: str, st: os.stat_result) -> dict:
    return {
        "path": path,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "inode": st.st_ino,
        "dev": st.st_dev,
    }


def _entry_path(key: dict) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return index_dir() / name[:2] / f"{name}.json"


def _read_entry(entry: Path, key: dict) -> str | None:
    try:
        data = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    digest = data.get("sha256")
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def _write_entry(entry: Path, key: dict, digest: str) -> None:
    """Best effort: a cache that cannot be written only costs a re-read next time."""
    tmp = entry.with_name(f"{entry.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"key": key, "sha256": digest}))
        os.replace(tmp, entry)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def file_digest(path: str | os.PathLike) -> str:
    """The sha256 of `path`: from the index when its stat is unchanged, else read in full (and
    remembered, unless it was modified in the last `RACY_S` seconds)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = _stat_key(real, st)
    entry = _entry_path(key)
    cached = _read_entry(entry, key)
    if cached is not None:
        return cached
    digest = stream_sha256(real)
    after = os.stat(real)
    # changed while being read, or too fresh to trust its stat: hash it again next time
    if _stat_key(real, after) == key and time.time() - after.st_mtime >= RACY_S:
        _write_entry(entry, key, digest)
    return digest
