"""Which normalised rows can be scored, and why the others cannot.

This version scores single-nucleotide variants only. Every other row is counted under one named
reason (the first that applies, in this order) and kept out of the scores:

* `no_alt`: ALT missing (`.`), or equal to REF;
* `symbolic`: a symbolic or breakend ALT (`<DEL>`, `*`, `A[chr2:100[`, ...);
* `indel`: REF and ALT of different lengths;
* `non_acgt`: REF or ALT holds a base other than A, C, G, T (IUPAC codes, N);
* `mnv`: equal-length REF and ALT that differ at more than one base (a shared prefix or suffix
  is trimmed first, so `AT>GT` is the SNV `A>G`);
* `missing_chrom`: the chromosome is not in the FASTA;
* `out_of_range`: the position lies past the chromosome's end;
* `ref_mismatch`: REF differs from the FASTA's bases there (compared upper-case).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from plantcad_flows.variants.reference import ReferenceGenome

SKIP_REASONS = (
    "no_alt",
    "symbolic",
    "indel",
    "non_acgt",
    "mnv",
    "missing_chrom",
    "out_of_range",
    "ref_mismatch",
)
_ACGT = "^[ACGT]+$"


def _trim_equal_length(ref: str, alt: str) -> tuple[int, str, str] | None:
    """(offset, ref base, alt base) when equal-length alleles differ at exactly one base."""
    diff = [i for i, (a, b) in enumerate(zip(ref, alt, strict=True)) if a != b]
    if len(diff) != 1:
        return None
    i = diff[0]
    return i, ref[i], alt[i]


def classify(chunk: pd.DataFrame, genome: ReferenceGenome) -> tuple[pd.DataFrame, dict[str, int]]:
    """The scorable SNV rows of `chunk` (same columns, positions and alleles trimmed to the SNV)
    and the number of rows skipped per reason (reasons with none are omitted)."""
    n = len(chunk)
    reason = np.full(n, "", dtype=object)

    def mark(mask: np.ndarray, name: str) -> None:
        reason[mask & (reason == "")] = name

    ref = chunk["ref"].astype(object)
    alt = chunk["alt"].astype(object)
    alt_missing = alt.isna().to_numpy() | (alt == ".").to_numpy() | (alt == ref).to_numpy()
    mark(alt_missing, "no_alt")
    alt_s = alt.fillna("").astype(str)
    ref_s = ref.fillna("").astype(str)
    symbolic = (
        alt_s.str.startswith("<") | (alt_s == "*") | alt_s.str.contains(r"[\[\]]", regex=True)
    ).to_numpy()
    mark(symbolic, "symbolic")
    rlen, alen = ref_s.str.len().to_numpy(), alt_s.str.len().to_numpy()
    mark(rlen != alen, "indel")
    acgt = (ref_s.str.match(_ACGT) & alt_s.str.match(_ACGT)).to_numpy()
    mark(~acgt, "non_acgt")

    pos = chunk["pos"].to_numpy(np.int64).copy()
    ref_base, alt_base = ref_s.to_numpy(dtype=object).copy(), alt_s.to_numpy(dtype=object).copy()
    multi = np.flatnonzero((reason == "") & (rlen > 1))
    for i in multi:  # rare: equal-length multi-base alleles
        t = _trim_equal_length(ref_s.iat[i], alt_s.iat[i])
        if t is None:
            reason[i] = "mnv"
        else:
            pos[i] += t[0]
            ref_base[i], alt_base[i] = t[1], t[2]

    chrom = chunk["chrom"].to_numpy(dtype=object)
    lengths = np.array([genome.lengths.get(c, -1) for c in chrom], dtype=np.int64)
    mark(lengths < 0, "missing_chrom")
    end = chunk["pos"].to_numpy(np.int64) + rlen - 1
    mark((chunk["pos"].to_numpy(np.int64) < 1) | (end > lengths), "out_of_range")

    ok = np.flatnonzero(reason == "")
    if ok.size:
        fetched = genome.bases(chrom[ok], pos[ok] - 1, 1)[:, 0]
        want = np.frombuffer("".join(ref_base[ok]).encode("ascii"), dtype=np.uint8)
        bad = fetched != want
        # a trimmed multi-base REF must match over its whole length, not only at the SNV
        for k in np.flatnonzero(~bad & (rlen[ok] > 1)):
            i = ok[k]
            full = genome.bases(chrom[[i]], chunk["pos"].to_numpy(np.int64)[[i]] - 1, int(rlen[i]))[0]
            bad[k] = full.tobytes().decode("ascii") != ref_s.iat[i]
        reason[ok[bad]] = "ref_mismatch"

    keep = reason == ""
    out = chunk.loc[keep].copy()
    out["pos"] = pos[keep]
    out["ref"] = ref_base[keep]
    out["alt"] = alt_base[keep]
    names, counts = np.unique(reason[~keep].astype(str), return_counts=True)
    return out.reset_index(drop=True), {str(k): int(v) for k, v in zip(names, counts, strict=True)}
