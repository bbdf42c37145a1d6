"""What a publish must send: the files whose content differs from what the repo holds.

The hub reports each file's git blob id, and for a file stored in LFS the sha256 of its content
(`paths-info`). A local file is unchanged when the repo holds it with the same sha256 (LFS) or
the same git blob id (a regular file); only changed files are sent, and nothing at all when
nothing changed. Files under the run's folder that the run no longer has are deleted, so the
folder holds exactly the run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def git_blob_oid(data: bytes) -> str:
    """The id git gives a file's content: sha1 of `blob {size}\\0` + the bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class RemoteFile:
    """What the repo says about one of its files."""

    path: str
    blob_id: str
    sha256: str | None = None  # the content's sha256 when the file is in LFS


def unchanged(data: bytes, remote: RemoteFile | None) -> bool:
    if remote is None:
        return False
    if remote.sha256 is not None:
        return hashlib.sha256(data).hexdigest() == remote.sha256
    return git_blob_oid(data) == remote.blob_id


@dataclass(frozen=True)
class Changes:
    upload: list[str]  # paths to add or overwrite, sorted
    delete: list[str]  # stale paths under the run's folder, sorted
    unchanged: int

    @property
    def empty(self) -> bool:
        return not self.upload and not self.delete


def plan_changes(
    files: dict[str, bytes], remote: dict[str, RemoteFile], folder_listing: list[str], folder: str
) -> Changes:
    """What to send so that the repo holds `files` and, under `folder`, nothing else."""
    upload = sorted(p for p, data in files.items() if not unchanged(data, remote.get(p)))
    inside = folder.rstrip("/") + "/"
    delete = sorted(p for p in folder_listing if p.startswith(inside) and p not in files)
    return Changes(upload=upload, delete=delete, unchanged=len(files) - len(upload))
