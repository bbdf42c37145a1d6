"""Finishing a scored variant set: its scores in VCF order with the set's columns, as the user's files.

In the cell's directory (beside the `predictions.parquet` and `metrics.json` every cell has):

* `variant_scores.parquet`: chrom, pos, id (a VCF's ID; null for "."), ref, alt, llr, then
  label / target / subset columns, one row per scored variant, in VCF order;
* `variant_scores.tsv.gz`: the same table as BGZF-compressed TSV with a `#chrom` header line,
  plus a tabix index (`.tbi`) when the rows are sorted by position within each chromosome (a
  VCF in genome order is), so genome browsers and `tabix` can query it by region.

The metrics are the family's (`VariantEffect.metrics_of`), computed and written by the generic
finalize step like every cell's.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from plantcad_flows.io.remote import is_local
from plantcad_flows.layout.storage import read_parquet, to_path, write_bytes_atomic

log = logging.getLogger(__name__)
SCORES_PARQUET = "variant_scores.parquet"
SCORES_TSV = "variant_scores.tsv.gz"


def scores_frame(variants_path: str, columns: Sequence[str], merged: pd.DataFrame) -> pd.DataFrame:
    """The prepared variants (`variants.parquet`, its `columns`) with their `llr` (the merged
    shards' `score`, one row per prepared variant in row order), in VCF order; a VCF's `id`
    follows `pos` when the prepared table has it."""
    variants = read_parquet(variants_path)
    first = ["chrom", "pos", *(["id"] if "id" in variants.columns else []), "ref", "alt"]
    extra = [c for c in columns if c not in ("row_index", *first)]
    frame = variants[first].copy().reset_index(drop=True)
    frame["llr"] = merged["score"].to_numpy(np.float64)
    for c in extra:
        frame[c] = variants[c].to_numpy()
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


def write_outputs(frame: pd.DataFrame, out_dir: str | os.PathLike) -> dict:
    """Write the scores (parquet, bgzipped TSV, tabix index when sorted) into `out_dir`.

    `out_dir` may be remote (`s3://...`): the files are written locally (htslib writes local
    files), then uploaded.

    Returns:
        {"parquet": name, "tsv": name, "tabix_index": bool}
    """
    if not is_local(str(out_dir)):
        with tempfile.TemporaryDirectory(prefix="plantcad-variants-") as tmp:
            outputs = write_outputs(frame, tmp)
            for name in [SCORES_PARQUET, SCORES_TSV, f"{SCORES_TSV}.tbi"]:
                if (Path(tmp) / name).exists():
                    write_bytes_atomic(
                        to_path(f"{str(out_dir).rstrip('/')}/{name}"), (Path(tmp) / name).read_bytes()
                    )
            return outputs
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / SCORES_PARQUET, lambda tmp: frame.to_parquet(tmp, index=False))
    indexed = write_tsv_bgzip(frame, out / SCORES_TSV)
    return {"parquet": SCORES_PARQUET, "tsv": SCORES_TSV, "tabix_index": indexed}
