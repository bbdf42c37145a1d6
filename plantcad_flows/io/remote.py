"""Reaching a location: the one test of locality, and what identifies a remote object's version.

`is_local` lives here, below the storage layout, because resolving identities needs it too and
the identity room sits under `layout/` (the plan's cache keys are built from identities).
"""

from __future__ import annotations

import os
from typing import Any

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


def hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for a location, resolved from the environment at run time (never stored).

    The S3 endpoint is passed explicitly: fsspec caches filesystem instances by their options,
    so an instance made without it would keep talking to whatever endpoint it first found.
    """
    if url.startswith("s3://"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return {"endpoint_url": endpoint} if endpoint else {}
    if url.startswith("hf://"):
        token = hf_token()
        return {"token": token} if token else {}
    return {}


def filesystem(url: str):
    """The fsspec filesystem and in-filesystem path of a URL: the one way the core opens one.

    Credentials come from the environment of the process (s3fs / botocore read `AWS_*`, the
    hub's filesystem `HF_TOKEN`), never from a config.
    """
    import fsspec

    return fsspec.core.url_to_fs(url, **storage_options(url))
