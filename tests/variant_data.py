"""Small hand-built variant inputs for the variant-effect tests: a FASTA with two chromosomes and
a VCF whose every record's fate (scored, split, trimmed, skipped and why) is known in advance."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

CHROMS = {"chr1": 200, "chr2": 150}
INFO_HEADER = [
    '##INFO=<ID=LAB,Number=A,Type=Integer,Description="label">',
    '##INFO=<ID=SCORE,Number=1,Type=Float,Description="target">',
    '##INFO=<ID=CSQ,Number=1,Type=String,Description="subset">',
    '##INFO=<ID=BAD,Number=1,Type=Integer,Description="not binary">',
]


def genome(seed: int = 3) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    return {c: "".join(rng.choice(list("ACGT"), size=n)) for c, n in CHROMS.items()}


def write_fasta(seqs: dict[str, str], path: Path, width: int = 60, lower_from: int | None = None) -> Path:
    with open(path, "w") as f:
        for name, s in seqs.items():
            if lower_from is not None:  # soft-masked tail: compared upper-case
                s = s[:lower_from] + s[lower_from:].lower()
            f.write(f">{name}\n")
            for i in range(0, len(s), width):
                f.write(s[i : i + width] + "\n")
    return path


def other(base: str, k: int = 1) -> str:
    return "ACGT"[("ACGT".index(base) + k) % 4]


def records(seqs: dict[str, str]) -> tuple[list[str], list[tuple]]:
    """VCF body lines, and the expected scored rows (chrom, pos, ref, alt, label, score, csq)."""
    s1, s2 = seqs["chr1"], seqs["chr2"]
    lines, expected = [], []

    def snv(chrom, pos, alt, lab, score, csq, expect=True):
        ref = seqs[chrom][pos - 1]
        lines.append(f"{chrom}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\tLAB={lab};SCORE={score};CSQ={csq};BAD=2")
        if expect:
            expected.append((chrom, pos, ref, alt, lab, score, csq))

    snv("chr1", 1, other(s1[0]), 1, 0.5, "a")  # first base: window mostly N on the left
    snv("chr1", 3, other(s1[2]), 0, 0.1, "b")
    snv("chr1", 100, other(s1[99]), 1, 0.9, "a")
    # multi-allelic, per-ALT labels (Number=A)
    r = s1[119]
    lines.append(f"chr1\t120\t.\t{r}\t{other(r, 1)},{other(r, 2)}\t.\tPASS\tLAB=0,1;SCORE=0.3;CSQ=b;BAD=2")
    expected += [("chr1", 120, r, other(r, 1), 0, 0.3, "b"), ("chr1", 120, r, other(r, 2), 1, 0.3, "b")]
    # an equal-length pair differing at one base: trimmed to the SNV at pos + 1
    ref2 = s1[129:131]
    lines.append(f"chr1\t130\t.\t{ref2}\t{ref2[0]}{other(ref2[1])}\t.\tPASS\tLAB=0;SCORE=0.2;CSQ=a;BAD=2")
    expected.append(("chr1", 131, ref2[1], other(ref2[1]), 0, 0.2, "a"))
    lines.append(f"chr1\t140\t.\t{s1[139]}\t{s1[139]}TT\t.\tPASS\tLAB=0;SCORE=0.2;CSQ=a;BAD=2")  # indel
    lines.append(f"chr1\t150\t.\t{s1[149]}\t<DEL>\t.\tPASS\tLAB=0;SCORE=0.2;CSQ=a;BAD=2")  # symbolic
    lines.append(
        f"chr1\t160\t.\t{other(s1[159])}\t{s1[159]}\t.\tPASS\tLAB=0;SCORE=0.2;CSQ=a;BAD=2"
    )  # mismatch
    ref3 = s1[169:171]
    lines.append(
        f"chr1\t170\t.\t{ref3}\t{other(ref3[0])}{other(ref3[1])}\t.\tPASS\tLAB=0;SCORE=0;CSQ=a;BAD=2"
    )  # mnv
    snv("chr1", 200, other(s1[199]), 0, 0.4, "b")  # last base
    snv("chr2", 2, other(s2[1]), 1, 0.7, "a")
    snv("chr2", 149, other(s2[148]), 0, 0.05, "b")
    lines.append("chrUn\t10\t.\tA\tG\t.\tPASS\tLAB=0;SCORE=0.2;CSQ=a;BAD=2")  # missing chromosome
    return lines, expected


SKIPS = {"indel": 1, "symbolic": 1, "ref_mismatch": 1, "mnv": 1, "missing_chrom": 1}


def write_vcf(path: Path, lines: list[str], contigs=CHROMS, info=INFO_HEADER) -> Path:
    header = ["##fileformat=VCFv4.2", *(f"##contig=<ID={c},length={n}>" for c, n in contigs.items()), *info]
    header.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    text = "\n".join(header + lines) + "\n"
    if path.name.endswith(".gz"):
        import pysam

        plain = path.with_suffix("")
        plain.write_text(text)
        pysam.tabix_compress(str(plain), str(path), force=True)
        plain.unlink()
    else:
        path.write_text(text)
    return path


def write_plain_gzip(src: Path, dest: Path) -> Path:
    with open(src, "rb") as f, gzip.open(dest, "wb") as g:
        g.write(f.read())
    return dest


def hand_window(seq: str, pos: int, length: int) -> str:
    """The window by its definition, with Python slicing: variant at index length//2 - 1."""
    c = length // 2 - 1
    start = pos - 1 - c
    return "".join(seq[i].upper() if 0 <= i < len(seq) else "N" for i in range(start, start + length))
