"""Opening the inputs: remote files staged to local disk, FASTA checked and indexed, VCF/BCF opened.

htslib (through pysam) reads local files. A remote input (`s3://`, `hf://`, any fsspec URL) is
first staged to the node-local cache of `data.node_cache.local_copy`: one directory per (URL,
object version), where the version is what the store reports for the object's content (S3 ETag
and size, the hub's blob id), downloaded once per node under a file lock and moved in by atomic
rename. A FASTA's `.fai` / `.gzi` are staged the same way when they exist beside it remotely.

A FASTA without a `.fai` is indexed on first use: next to the file when that directory is
writable, else into the cache directory (named by the FASTA's path, size and mtime), under a file
lock so concurrent workers index it once. htslib reads a bgzipped FASTA by index; a plain-gzip
FASTA cannot be, and is refused with the way out (recompress with bgzip).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

from filelock import FileLock

from plantcad_flows.data.node_cache import DEFAULT_CACHE_ROOT, local_copy
from plantcad_flows.errors import ValidationError
from plantcad_flows.io.remote import filesystem, is_local

_GZIP_MAGIC = b"\x1f\x8b"


def stage(url: str, field: str, cache_root: str | os.PathLike | None = None) -> Path:
    """A local path holding `url`'s content (the path itself for a local file).

    Raises:
        ValidationError: nothing is at `url`.
    """
    try:
        path = local_copy(url, cache_root)
    except FileNotFoundError:
        raise ValidationError(field, url, "no such file") from None
    if not path.is_file():
        raise ValidationError(field, url, "no such file")
    return path


def _stage_optional(url: str, cache_root) -> Path | None:
    if is_local(url):
        p = Path(url)
        return p if p.is_file() else None
    fs, path = filesystem(url)
    return local_copy(url, cache_root) if fs.exists(path) else None


def compression(path: Path) -> str:
    """'bgzf', 'gzip' or 'none', from the file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(18)
    if head[:2] != _GZIP_MAGIC:
        return "none"
    # BGZF: a gzip member with FEXTRA set and a 'BC' extra subfield (SAM spec, section 4.1).
    if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC":
        return "bgzf"
    return "gzip"


def _index_dir(path: Path, cache_root) -> Path:
    if os.access(path.parent, os.W_OK):
        return path.parent
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\n{st.st_size}\n{st.st_mtime_ns}".encode()).hexdigest()[:24]
    d = Path(cache_root or DEFAULT_CACHE_ROOT).expanduser() / "fasta-index" / key
    d.mkdir(parents=True, exist_ok=True)
    return d


def open_fasta(url: str, field: str, cache_root: str | os.PathLike | None = None):
    """A `pysam.FastaFile` on the FASTA at `url` (staged, checked, indexed on first use).

    Raises:
        ValidationError: missing, plain-gzip (not bgzip), or not indexable as FASTA.
    """
    import pysam

    path = stage(url, field, cache_root)
    kind = compression(path)
    if kind == "gzip":
        raise ValidationError(
            field,
            url,
            "gzip-compressed but not bgzip, so it cannot be read by index",
            f"recompress it: zcat {path.name} | bgzip > {path.name.removesuffix('.gz')}.bgz",
        )
    fai = _stage_optional(f"{url}.fai", cache_root)
    gzi = _stage_optional(f"{url}.gzi", cache_root) if kind == "bgzf" else None
    if fai is None or (kind == "bgzf" and gzi is None):
        out = _index_dir(path, cache_root)
        fai, gzi = out / f"{path.name}.fai", (out / f"{path.name}.gzi" if kind == "bgzf" else None)
        with FileLock(str(out / f".{path.name}.index.lock")):
            if not fai.exists() or (gzi is not None and not gzi.exists()):
                _check_fasta_start(path, kind, field, url)
                args = [str(path), "--fai-idx", str(fai)] + (["--gzi-idx", str(gzi)] if gzi else [])
                try:
                    pysam.faidx(*args)
                except pysam.SamtoolsError as e:
                    fai.unlink(missing_ok=True)
                    raise ValidationError(
                        field, url, f"cannot be indexed as FASTA: {_first_line(e)}"
                    ) from None
    try:
        return pysam.FastaFile(
            str(path), filepath_index=str(fai), filepath_index_compressed=str(gzi) if gzi else None
        )
    except (OSError, ValueError) as e:
        raise ValidationError(field, url, f"cannot be opened as an indexed FASTA: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


def _check_fasta_start(path: Path, kind: str, field: str, url: str) -> None:
    opener = gzip.open if kind == "bgzf" else open
    try:
        with opener(path, "rb") as f:
            first = f.read(1)
    except OSError as e:
        raise ValidationError(field, url, f"unreadable: {e}") from None
    if first != b">":
        raise ValidationError(field, url, "not a FASTA file (the first byte is not '>')")


def open_vcf(url: str, field: str, cache_root: str | os.PathLike | None = None):
    """A `pysam.VariantFile` on the VCF/BCF at `url` (staged first when remote).

    Raises:
        ValidationError: missing, or not a VCF/BCF.
    """
    import pysam

    path = stage(url, field, cache_root)
    # The file is streamed, never queried by region: htslib's complaint about a missing index
    # (.tbi/.csi) on open would only be noise.
    previous = pysam.set_verbosity(0)
    try:
        return pysam.VariantFile(str(path))
    except (OSError, ValueError) as e:
        raise ValidationError(field, url, f"cannot be read as VCF/BCF: {_first_line(e)}") from None
    finally:
        pysam.set_verbosity(previous)


def stage_table(url: str, field: str, cache_root: str | os.PathLike | None = None) -> Path:
    """A local path of a parquet/TSV variant table (staged first when remote)."""
    return stage(url, field, cache_root)
