"""Reaching a location: the one test of locality, and what identifies a remote object's version.

`is_local` lives here, below the storage layout, because resolving identities needs it too and
the identity room sits under `layout/` (the plan's cache keys are built from identities).
"""

from __future__ import annotations

import os

# Info fields that change when a remote object's content does; each filesystem reports a subset
# (S3: ETag and size; the HF hub: blob_id and lfs; GCS: md5 and generation).
VERSION_FIELDS = (
    "size",
    "ETag",
    "etag",
    "mtime",
    "LastModified",
    "last_modified",
    "VersionId",
    "blob_id",
    "lfs",
    "md5",
    "sha256",
    "generation",
    "created",
)
# The stable subset: what names a version's content, not when it was written. Used for cache
# keys, where a re-upload of the same bytes (same ETag) must keep the key.
CONTENT_FIELDS = ("size", "ETag", "etag", "VersionId", "blob_id", "lfs", "md5", "sha256", "generation")


def is_local(url: str | os.PathLike) -> bool:
    """True for plain paths and `file://` / `local://` URLs: the one test of locality."""
    text = os.fspath(url) if not isinstance(url, str) else url
    return "://" not in text or text.split("://", 1)[0] in ("file", "local")


def version_token(info: dict, fields: tuple[str, ...] = VERSION_FIELDS) -> str:
    """The parts of an fsspec `info()` that identify one version of an object."""
    return "|".join(f"{k}={info[k]}" for k in fields if info.get(k) is not None)


def filesystem(url: str):
    """The fsspec filesystem and in-filesystem path of a remote URL.

    Credentials and endpoints come from the environment of the process (s3fs / botocore read
    `AWS_*`, the hub's filesystem `HF_TOKEN`), never from a config.
    """
    import fsspec

    return fsspec.core.url_to_fs(url)
