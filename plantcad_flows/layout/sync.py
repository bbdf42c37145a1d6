"""Copying a directory tree between a local disk and a store (`s3://`, `hf://`), skipping what is
already there.

One code path for `plantcad-flows sync up|down`, the upload of a grid cell's `outputs/` and the
download of `grid pickup`: `sync(src, dst)` lists both sides, keeps the source files that the
include/exclude globs select, and copies those whose copy at the destination is missing or
different. A file counts as unchanged when the sizes match *and* a checksum does, in the form the
store already keeps, so nothing is downloaded to compare:

* S3: the ETag, which is the MD5 of the object for a single-part upload, and the MD5 of the parts'
  MD5s plus `-N` for a multipart one (tried with the part sizes s3fs and the AWS CLI use);
* Hugging Face: the SHA-256 of an LFS file, the git blob SHA-1 of any other;
* local on both sides: the MD5 of both.

A checksum the store does not report, or a multipart ETag of an unknown part size, means "copy":
a needless copy costs time, a wrong skip would cost data. Local files are written to a temporary
name and renamed. Uploads to the Hugging Face hub go in one commit per repository.

Globs match the path relative to the synced directory with `fnmatch` (`*` also crosses `/`); a
pattern without `/` also matches a file's base name. A file is copied when it matches some
`--include` (or none was given) and no `--exclude`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec

from plantcad_flows.io import remote
from plantcad_flows.io.remote import hf_token, is_local

_CHUNK = 8 * 2**20
# Part sizes of multipart uploads whose ETags we can recompute: s3fs (50 MiB), AWS CLI (8 MiB).
MULTIPART_SIZES = (50 * 2**20, 8 * 2**20, 16 * 2**20)


@dataclass(frozen=True)
class Entry:
    """A file of a listed tree."""

    rel: str  # path relative to the tree's root, with `/`
    path: str  # path in its filesystem
    size: int
    digest: tuple[str, str] | None = None  # (kind, value) as the store reports it; None on disk


@dataclass
class Tree:
    """A listed directory: its filesystem, root and files."""

    url: str
    fs: Any
    root: str
    entries: dict[str, Entry]

    @property
    def local(self) -> bool:
        return is_local(self.url)


@dataclass
class SyncReport:
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unchanged at the destination
    bytes_copied: int = 0

    def summary(self) -> str:
        return f"{len(self.copied)} copied ({self.bytes_copied} bytes), {len(self.skipped)} unchanged"


def selected(rel: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """Whether `rel` passes the include and exclude globs (see the module docstring)."""

    def hit(pattern: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return fnmatch.fnmatchcase(rel, pattern) or (
            "/" not in pattern and fnmatch.fnmatchcase(name, pattern)
        )

    return (not include or any(hit(p) for p in include)) and not any(hit(p) for p in exclude)


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem and path of a location; local paths are made absolute."""
    if is_local(url):
        path = url.split("://", 1)[1] if "://" in url else url
        return fsspec.filesystem("file"), os.path.abspath(path)
    fs, path = remote.filesystem(url)
    return fs, path.rstrip("/")


def remote_digest(info: dict[str, Any]) -> tuple[str, str] | None:
    """The checksum a store reports for a file, as (kind, value)."""
    lfs = info.get("lfs")
    if isinstance(lfs, dict) and lfs.get("sha256"):
        return ("sha256", lfs["sha256"])
    if info.get("blob_id"):
        return ("git-sha1", info["blob_id"])
    etag = info.get("ETag") or info.get("etag")
    if etag:
        etag = etag.strip('"')
        return ("s3-multipart", etag) if "-" in etag else ("md5", etag)
    return None


def list_tree(url: str) -> Tree:
    """Every file under `url` (nothing when it does not exist; one entry when it is a file)."""
    fs, root = filesystem(url)
    entries: dict[str, Entry] = {}
    if is_local(url):
        base = Path(root)
        if base.is_file():
            entries[base.name] = Entry(base.name, str(base), base.stat().st_size)
            return Tree(url, fs, str(base.parent), entries)
        for dirpath, _, files in os.walk(base):
            for name in files:
                p = Path(dirpath) / name
                if p.is_file():
                    rel = p.relative_to(base).as_posix()
                    entries[rel] = Entry(rel, str(p), p.stat().st_size)
        return Tree(url, fs, root, entries)
    fs.invalidate_cache()  # a listing cached earlier in this process may be stale
    try:
        if fs.isfile(root):
            info = fs.info(root)
            name = root.rsplit("/", 1)[-1]
            entries[name] = Entry(name, root, int(info["size"]), remote_digest(info))
            return Tree(url, fs, root.rsplit("/", 1)[0], entries)
        found = fs.find(root, detail=True, withdirs=False)
    except FileNotFoundError:
        found = {}
    for path, info in found.items():
        if info.get("type", "file") != "file":
            continue
        rel = path[len(root) :].lstrip("/")
        entries[rel] = Entry(rel, path, int(info.get("size") or 0), remote_digest(info))
    return Tree(url, fs, root, entries)


def file_digest(path: str, kind: str) -> str:
    """A local file's checksum of the given kind (`md5`, `sha256`, `git-sha1`)."""
    if kind == "git-sha1":
        h = hashlib.sha1(usedforsecurity=False)
        h.update(b"blob %d\0" % os.path.getsize(path))
    else:
        h = hashlib.new(kind, usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def multipart_etag(path: str, part_size: int) -> str:
    """The ETag S3 gives a file uploaded in parts of `part_size` bytes."""
    parts = []
    with open(path, "rb") as f:
        while chunk := f.read(part_size):
            parts.append(hashlib.md5(chunk, usedforsecurity=False).digest())
    return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"


def _matches(local_path: str, digest: tuple[str, str]) -> bool:
    kind, value = digest
    if kind == "s3-multipart":
        return any(multipart_etag(local_path, size) == value for size in MULTIPART_SIZES)
    return file_digest(local_path, kind) == value


def unchanged(src: Entry, src_local: bool, dst: Entry | None, dst_local: bool) -> bool:
    """Whether the destination already holds the source file (size, then checksum)."""
    if dst is None or dst.size != src.size:
        return False
    if src_local and dst_local:
        return file_digest(src.path, "md5") == file_digest(dst.path, "md5")
    local, remote = (src, dst) if src_local else (dst, src)
    return remote.digest is not None and _matches(local.path, remote.digest)


def plan_copies(
    src: Tree, dst: Tree, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> tuple[list[Entry], list[Entry]]:
    """The selected source files to copy, and those the destination already holds."""
    copy, same = [], []
    for rel in sorted(src.entries):
        entry = src.entries[rel]
        if not selected(rel, include, exclude):
            continue
        if unchanged(entry, src.local, dst.entries.get(rel), dst.local):
            same.append(entry)
        else:
            copy.append(entry)
    return copy, same


def _target(dst: Tree, rel: str) -> str:
    return f"{dst.root}/{rel}" if dst.root else rel


def _to_local(src: Tree, entry: Entry, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if src.local:
            shutil.copyfile(entry.path, tmp)
        else:
            src.fs.get_file(entry.path, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _hf_commit(dst: Tree, entries: Iterable[Entry]) -> None:
    """Upload to the Hugging Face hub in one commit per repository (not one per file)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    groups: dict[tuple[str, str, str | None], list[CommitOperationAdd]] = {}
    for entry in entries:
        resolved = dst.fs.resolve_path(_target(dst, entry.rel))
        key = (resolved.repo_type, resolved.repo_id, resolved.revision)
        groups.setdefault(key, []).append(
            CommitOperationAdd(path_in_repo=resolved.path_in_repo, path_or_fileobj=entry.path)
        )
    api = HfApi(token=hf_token())
    for (repo_type, repo_id, revision), ops in groups.items():
        api.create_commit(
            repo_id=repo_id,
            repo_type=repo_type,
            revision=revision,
            operations=ops,
            commit_message=f"plantcad-flows sync: {len(ops)} file(s)",
        )


def sync(
    src_url: str,
    dst_url: str,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    dry_run: bool = False,
) -> SyncReport:
    """Copy the selected files of `src_url` that `dst_url` lacks or holds differently.

    One side may be remote (`s3://`, `hf://`) or both local. Returns what was (or, with
    `dry_run`, would be) copied and what was already there.
    """
    src, dst = list_tree(src_url), list_tree(dst_url)
    if not src.local and not dst.local:
        raise ValueError(f"sync {src_url} -> {dst_url}: one side must be a local directory")
    copy, same = plan_copies(src, dst, include, exclude)
    report = SyncReport([e.rel for e in copy], [e.rel for e in same], sum(e.size for e in copy))
    if dry_run or not copy:
        return report
    if dst.local:
        for entry in copy:
            _to_local(src, entry, _target(dst, entry.rel))
    elif dst.url.startswith("hf://"):
        _hf_commit(dst, copy)
    else:
        for entry in copy:
            dst.fs.put_file(entry.path, _target(dst, entry.rel))
    return report


def remove_tree(url: str) -> bool:
    """Delete everything under `url`; returns whether anything was there."""
    fs, root = filesystem(url)
    if not is_local(url):
        fs.invalidate_cache()
    if not fs.exists(root):
        return False
    fs.rm(root, recursive=True)
    return True
