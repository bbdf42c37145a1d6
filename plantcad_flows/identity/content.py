"""Content fingerprints: what a local model directory, a local data file or directory, and a
remote (`s3://`, `hf://`, ...) object holds, as short hex digests that enter cache keys.

* Data is hashed in full (size and sha256 of every file read), since a replaced parquet file at
  the same path must never serve the old scores. Splits are megabytes to a few GB; sha256 reads
  them at disk speed, once per file version (digests are remembered, as for models).
* A local model directory is hashed in full too (name, size and sha256 of every file: weights,
  config, tokenizer), so a checkpoint retrained in place is always re-scored. Each file's digest
  is remembered by its stat in a small index under the user's cache directory (`digests.py`),
  so an unchanged multi-GB checkpoint is read once, not at every run.
* A remote object is identified by what its store reports (S3: ETag and size), with no download.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from plantcad_flows.identity.digests import file_digest
from plantcad_flows.io.remote import CONTENT_FIELDS, filesystem, version_token

FINGERPRINT_LEN = 16
# enters every local model's fingerprint: fingerprints of an older scheme never match this one's
MODEL_SCHEME = "sha256-v2"


def local_model_fingerprint(path: str, subfolder: str = "") -> str | None:
    """The content fingerprint of a local model directory; None when it is not one.

    A hub model is pinned by its commit; a local directory is not, and retraining into the same
    path must not serve the old model's cached scores. The name, size and full sha256 of every
    file in the directory are hashed (digests reused from the index while a file's stat holds).
    """
    root = os.path.join(path, subfolder) if subfolder else path
    if not os.path.isdir(root):
        return None
    h = hashlib.sha256(f"{MODEL_SCHEME}\n".encode())
    for name in sorted(os.listdir(root)):
        full = os.path.join(root, name)
        if not os.path.isfile(full):
            continue
        h.update(f"{name}:{os.path.getsize(full)}:{file_digest(full)}\n".encode())
    return h.hexdigest()[:FINGERPRINT_LEN]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a local file (remembered by its stat, see `digests.py`)."""
    return file_digest(path)


def data_files(root: Path, suffix: str | None) -> list[Path]:
    """The files a reader of `root` sees: the file itself, or every `*{suffix}` file under the
    directory (as `read_parquet` reads them), or with no suffix every file but hidden ones such
    as `.git` and `.cache` (a dataset repository)."""
    if root.is_file():
        return [root]
    files = []
    for p in sorted(root.rglob("*")):
        hidden = suffix is None and any(part.startswith(".") for part in p.relative_to(root).parts)
        if p.is_file() and not hidden and (suffix is None or p.name.endswith(suffix)):
            files.append(p)
    return files


def local_data_fingerprint(path: str, suffix: str | None = ".parquet") -> str:
    """Size and sha256 of every file a split at `path` is read from.

    Raises:
        FileNotFoundError: the path does not exist or holds no matching file.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    files = data_files(root, suffix)
    if not files:
        raise FileNotFoundError(f"directory holds no {suffix or ''} file: {path}")
    h = hashlib.sha256()
    for f in files:
        rel = "." if f == root else f.relative_to(root).as_posix()
        h.update(f"{rel}:{f.stat().st_size}:{file_sha256(f)}\n".encode())
    return h.hexdigest()[:FINGERPRINT_LEN]


def remote_listing(url: str, suffix: str | None = None) -> dict[str, dict]:
    """Relative name -> fsspec info of the object at `url`, or of every object under it.

    Raises:
        FileNotFoundError: nothing is there.
    """
    fs, path = filesystem(url)
    info = fs.info(path)
    if info.get("type") != "directory":
        return {".": info}
    base = path.rstrip("/") + "/"
    found = fs.find(path, detail=True)
    out = {
        name[len(base) :]: i
        for name, i in found.items()
        if name.startswith(base) and (suffix is None or name.endswith(suffix))
    }
    if not out:
        raise FileNotFoundError(f"directory holds no {suffix or ''} file: {url}")
    return out


def listing_fingerprint(listing: dict[str, dict]) -> str:
    """A fingerprint of remote objects from what the store reports (ETag, size, blob ids)."""
    h = hashlib.sha256()
    for name in sorted(listing):
        h.update(f"{name}:{version_token(listing[name], CONTENT_FIELDS)}\n".encode())
    return h.hexdigest()[:FINGERPRINT_LEN]


def remote_fingerprint(url: str, suffix: str | None = ".parquet") -> str:
    """ETag and size of the object at `url`, or of every `*{suffix}` object under it."""
    return listing_fingerprint(remote_listing(url, suffix))
