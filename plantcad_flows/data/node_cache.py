"""Fetch once per node: a node-local copy of a remote benchmark file (or parquet directory).

Every shard task of a cell reads the same sampled examples. On a Ray cluster several worker
processes of one node may ask for the same `s3://` or `hf://` object at the same moment; they
should download it once between them. So the copy lives in a directory on the node's disk, named
by a hash of the URL and of the object's version (size, etag, mtime: whatever the filesystem
reports), and the download happens under a file lock and lands by atomic rename. A new version of
the object gets a new key, so a stale copy is never served; local paths are returned unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import fsspec
from filelock import FileLock

from plantcad_flows.io.remote import filesystem, is_local, version_token

DEFAULT_CACHE_ROOT = Path("~/.cache/plantcad-flows/node-cache")


def _local_path(url: str) -> Path:
    _, path = fsspec.core.split_protocol(str(url))
    return Path(path)


def cache_key(url: str, version: str) -> str:
    return hashlib.sha256(f"{url}\n{version}".encode()).hexdigest()[:24]


def _version(fs: fsspec.AbstractFileSystem, path: str, info: dict) -> str:
    if info.get("type") != "directory":
        return version_token(info)
    # A directory's own info does not change when a file in it does; its files' infos do.
    files = fs.find(path, detail=True)
    return "\n".join(f"{k}:{version_token(v)}" for k, v in sorted(files.items()))


def local_copy(url: str, cache_root: str | os.PathLike | None = None) -> Path:
    """A path on this node's disk holding the content of `url`, downloading it at most once.

    Args:
        url: a local path, or any fsspec URL (`s3://`, `hf://`, `gs://`, ...) of a file or directory.
        cache_root: node-local directory for copies; default `~/.cache/plantcad-flows/node-cache`.

    Returns:
        The local path (for `url` = `.../name`, a path ending in `name`).
    """
    if is_local(url):
        return _local_path(url)
    fs, path = filesystem(url)
    info = fs.info(path)
    root = Path(cache_root or DEFAULT_CACHE_ROOT).expanduser()
    entry = root / cache_key(url, _version(fs, path, info))
    name = Path(path.rstrip("/")).name or "data"
    dest = entry / name
    if dest.exists():  # the common case, taken without the lock
        return dest
    entry.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry) + ".lock"):
        if dest.exists():  # another process finished the download while we waited
            return dest
        tmp = entry / f".{name}.partial-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        if info.get("type") == "directory":
            fs.get(path.rstrip("/") + "/", str(tmp), recursive=True)
        else:
            fs.get_file(path, str(tmp))
        os.replace(tmp, dest)
    return dest
