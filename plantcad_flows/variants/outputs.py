"""Finishing a scored variant set: shards merged (exact coverage), the user's files, the metrics.

In the set's directory:

* `variant_scores.parquet`: chrom, pos, id (a VCF's ID; null for "."), ref, alt, llr, then
  label / target / subset columns, one row per scored variant, in VCF order;
* `variant_scores.tsv.gz`: the same table as BGZF-compressed TSV with a `#chrom` header line,
  plus a tabix index (`.tbi`) when the rows are sorted by position within each chromosome (a
  VCF in genome order is), so genome browsers and `tabix` can query it by region;
* `metrics.json`: counts (scored, skipped per reason) and `variants.metrics.variant_metrics`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from plantcad_flows.io.remote import is_local
from plantcad_flows.layout.sharding import merge_shards
from plantcad_flows.layout.storage import read_parquet, to_path, write_bytes_atomic
from plantcad_flows.variants.metrics import variant_metrics
from plantcad_flows.variants.prepare import PreparedVariants

log = logging.getLogger(__name__)
SCORES_PARQUET = "variant_scores.parquet"
SCORES_TSV = "variant_scores.tsv.gz"
METRICS = "metrics.json"
SCHEMA_VERSION = 1


def scores_frame(
    prepared: PreparedVariants, shard_paths: Sequence[str | os.PathLike | pd.DataFrame]
) -> pd.DataFrame:
    """The prepared variants with their `llr`, in VCF order (shards given by path, or as frames
    already read).

    Raises:
        IncompleteShardsError: the shards do not cover every prepared variant exactly once.
    """
    llr = merge_shards(shard_paths, np.arange(prepared.num_variants, dtype=np.int64))
    variants = read_parquet(prepared.path)
    first = ["chrom", "pos", *(["id"] if "id" in variants.columns else []), "ref", "alt"]
    extra = [c for c in prepared.columns if c not in ("row_index", *first)]
    frame = variants[first].copy()
    frame["llr"] = llr["llr"].to_numpy(np.float64)
    for c in extra:
        frame[c] = variants[c]
    return frame


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_tsv_bgzip(frame: pd.DataFrame, path: Path) -> bool:
    """BGZF TSV with a `#chrom` header; a tabix index when sorted. Returns whether it is indexed."""
    import pysam

    plain = path.with_name(f".{path.name}.plain-{os.getpid()}")
    try:
        with open(plain, "w") as f:
            f.write("#" + "\t".join(frame.columns) + "\n")
            frame.to_csv(f, sep="\t", header=False, index=False, na_rep=".", float_format="%.6g")
        _atomic(path, lambda tmp: pysam.tabix_compress(str(plain), str(tmp), force=True))
    finally:
        plain.unlink(missing_ok=True)
    tbi = Path(f"{path}.tbi")
    tbi.unlink(missing_ok=True)
    if not _sorted_by_position(frame):
        log.info("%s: rows are not in position order; no tabix index", path)
        return False
    pysam.tabix_index(
        str(path), seq_col=0, start_col=1, end_col=1, meta_char="#", force=True, keep_original=True
    )
    return True


def _sorted_by_position(frame: pd.DataFrame) -> bool:
    chrom = frame["chrom"].to_numpy(dtype=object)
    pos = frame["pos"].to_numpy(np.int64)
    change = np.r_[True, chrom[1:] != chrom[:-1]]
    if len(set(chrom[change].tolist())) != int(change.sum()):
        return False  # a chromosome appears in more than one block
    return bool(np.all((np.diff(pos) >= 0) | change[1:]))


def finalize_variant_set(
    prepared: PreparedVariants,
    shard_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    resamples: int = 1000,
    seed: int = 0,
    subsets: tuple[str, ...] = (),
    frame: pd.DataFrame | None = None,
) -> dict:
    """Merge the shards (unless their `scores_frame` is given), write the scores (parquet,
    bgzipped TSV) and `metrics.json`.

    `out_dir` may be remote (`s3://...`): the files are written locally (htslib writes local
    files), then uploaded, `metrics.json` last.

    Returns:
        The metrics document (also written to `metrics.json`).
    """
    if not is_local(str(out_dir)):
        with tempfile.TemporaryDirectory(prefix="plantcad-variants-") as tmp:
            doc = finalize_variant_set(prepared, shard_paths, tmp, resamples, seed, subsets, frame)
            names = [SCORES_PARQUET, SCORES_TSV, f"{SCORES_TSV}.tbi", METRICS]
            for name in names:
                if (Path(tmp) / name).exists():
                    write_bytes_atomic(
                        to_path(f"{str(out_dir).rstrip('/')}/{name}"), (Path(tmp) / name).read_bytes()
                    )
            return doc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = scores_frame(prepared, shard_paths) if frame is None else frame
    _atomic(out / SCORES_PARQUET, lambda tmp: frame.to_parquet(tmp, index=False))
    indexed = write_tsv_bgzip(frame, out / SCORES_TSV)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "name": prepared.name,
        "n_records": prepared.num_records,
        "n_scored": int(len(frame)),
        "n_skipped": prepared.skipped,
        "outputs": {"parquet": SCORES_PARQUET, "tsv": SCORES_TSV, "tabix_index": indexed},
        "metrics": variant_metrics(frame, subsets, resamples, seed),
    }
    doc = _json_safe(doc)
    _atomic(out / METRICS, lambda tmp: tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n"))
    return doc


def _json_safe(x):
    """NaN (an undefined metric) -> null, numpy scalars -> Python, recursively."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x
