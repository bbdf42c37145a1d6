"""Synthetic variant sets with a planted signal, for the demo, the tests and the benchmark.

The genome is `benchmark.genome`'s generative model (the one the shipped tiny models were trained
on), laid out here with every feature's position recorded: background gaps alternate with
conserved-element instances and gene features (acceptor, donor, TIS, TTS sites). SNVs are then
drawn with a known effect:

* label 1 (`INFO/DAMAGING=1`): the SNV breaks a motif: it hits the core motif of a canonical site
  (the acceptor's AG, the donor's GT, the start codon, the stop codon) or a base of a conserved
  element instance that equals its library consensus;
* label 0: the SNV hits background sequence, at least `MARGIN` bases inside a gap.

`INFO/AF` is drawn lower for damaging variants (a purifying-selection stand-in for the target),
`INFO/CLASS` names the kind of the feature a variant sits in or next to (the subset). A few
records of every kind that is not scored are mixed in (multi-allelic, indel, symbolic, REF
mismatch, unknown chromosome, chromosome ends), so a demo run shows each skip reason.

`scale_genome` tiles rotated copies of a generated pool to reach 100 Mb in seconds: the
throughput benchmark needs the size, not fresh sequence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from plantcad_flows.families import genome as g

MARGIN = 3
_KINDS = ("element", *g.SITE_KINDS)
_ACGT = "ACGT"


@dataclass
class SyntheticGenome:
    """Chromosome sequences (uint8, upper case) and, per base, what it is: 1 a motif/conserved
    base (breaking it is damaging), 0 neutral background, -1 anything else; `kind` the index in
    `_KINDS` of the feature a base belongs to or follows (-1 before the first)."""

    chroms: dict[str, np.ndarray]
    effect: dict[str, np.ndarray]
    kind: dict[str, np.ndarray]


def _feature(rng: np.random.Generator, gc: float) -> tuple[np.ndarray, np.ndarray, int]:
    """One feature of the genome's mixture: (bases, per-base effect, kind index)."""
    k = rng.choice(len(g._FEATURE_P), p=g._FEATURE_P)
    if k == 0:
        family = int(rng.integers(g.NUM_ELEMENTS))
        inst = g.element_instance(rng, family)
        effect = np.where(inst == g.element_library()[family], 1, -1).astype(np.int8)
        effect[:2] = effect[-2:] = -1  # the ends of an instance are its least predictable bases
        return inst, effect, 0
    canonical = k <= 4
    kind = g.SITE_KINDS[k - 1] if canonical else g.SITE_KINDS[rng.integers(4)]
    s = g.site(kind, rng, gc, canonical=canonical)
    effect = np.full(len(s.seq), -1, dtype=np.int8)
    if canonical:
        effect[s.anchor : s.anchor + s.motif_len] = 1
    return s.seq, effect, 1 + g.SITE_KINDS.index(kind)


def build_chromosome(rng: np.random.Generator, length: int, species: str = g.DEFAULT_SPECIES):
    """(bases, effect, kind) of one chromosome of `length` bases (see `SyntheticGenome`)."""
    gc = g.SPECIES_GC[species]
    seqs, effects, kinds, total, last = [], [], [], 0, -1
    while total < length:
        gap = g.background(rng, int(rng.geometric(1 / g.GAP_MEAN)), gc)
        eff = np.full(len(gap), -1, dtype=np.int8)
        eff[MARGIN : len(gap) - MARGIN] = 0
        feat, feff, kind = _feature(rng, gc)
        seqs += [gap, feat]
        effects += [eff, feff]
        kinds += [np.full(len(gap), last, np.int8), np.full(len(feat), kind, np.int8)]
        last = kind
        total += len(gap) + len(feat)
    return tuple(np.concatenate(x)[:length] for x in (seqs, effects, kinds))


def build_genome(seed: int, lengths: dict[str, int], species: str = g.DEFAULT_SPECIES) -> SyntheticGenome:
    rng = np.random.default_rng([seed, 15])
    out = SyntheticGenome({}, {}, {})
    for name, n in lengths.items():
        out.chroms[name], out.effect[name], out.kind[name] = build_chromosome(rng, n, species)
    return out


def _other_base(rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(np.frombuffer(b"ACGT", np.uint8), ref)
    return np.frombuffer(b"ACGT", np.uint8)[(idx + rng.integers(1, 4, size=len(ref))) % 4]


def plant_snvs(genome: SyntheticGenome, rng: np.random.Generator, n: int) -> pd.DataFrame:
    """n SNVs, half damaging (effect 1) and half neutral (effect 0), sorted by position."""
    rows = []
    names = list(genome.chroms)
    for label in (1, 0):
        want = n // 2 if label else n - n // 2
        per = np.bincount(rng.integers(0, len(names), size=want), minlength=len(names))
        for name, k in zip(names, per, strict=True):
            cand = np.flatnonzero(genome.effect[name] == label)
            pick = np.sort(rng.choice(cand, size=min(int(k), cand.size), replace=False))
            ref = genome.chroms[name][pick]
            rows.append(
                pd.DataFrame(
                    {
                        "chrom": name,
                        "pos": pick + 1,
                        "ref": ref.view("S1").astype(str),
                        "alt": _other_base(rng, ref).view("S1").astype(str),
                        "label": label,
                        "kind": genome.kind[name][pick],
                    }
                )
            )
    frame = pd.concat(rows, ignore_index=True)
    frame["af"] = np.round(
        np.where(frame["label"] == 1, rng.beta(1, 20, len(frame)), rng.beta(2, 6, len(frame))), 4
    )
    frame["kind"] = [_KINDS[k] if k >= 0 else "element" for k in frame["kind"]]
    return frame


def _extras(genome: SyntheticGenome, rng: np.random.Generator) -> pd.DataFrame:
    """Records of every kind the scorer skips or treats specially (see the module docstring)."""
    rows = []
    names = list(genome.chroms)
    for name in names:
        seq = genome.chroms[name]
        n = len(seq)
        for p in (1, 2, n - 1, n):  # chromosome ends: windows padded with N
            ref = seq[p - 1 : p]
            rows.append((name, p, chr(ref[0]), chr(_other_base(rng, ref)[0]), 0, "element"))
        for _ in range(3):
            p = int(rng.integers(100, n - 100))
            r = chr(seq[p - 1])
            others = [b for b in _ACGT if b != r]
            rows.append((name, p, r, f"{others[0]},{others[1]}", "0,1", "element"))  # multi-allelic
            rows.append((name, p + 7, chr(seq[p + 6]), chr(seq[p + 6]) + "A", 0, "element"))  # indel
            rows.append((name, p + 11, chr(seq[p + 10]), "<DEL>", 0, "element"))  # symbolic
            wrong = [b for b in _ACGT if b != chr(seq[p + 20])][0]
            rows.append((name, p + 21, wrong, chr(seq[p + 20]), 0, "element"))  # REF mismatch
    rows.append(("chrUn", 10, "A", "G", 0, "element"))  # a chromosome the FASTA lacks
    frame = pd.DataFrame(rows, columns=["chrom", "pos", "ref", "alt", "label", "kind"])
    frame["af"] = 0.1
    return frame


def write_fasta(
    chroms: dict[str, np.ndarray], path: str | os.PathLike, bgzip: bool = False, width: int = 80
) -> Path:
    """A FASTA of `chroms` (lines of `width` bases); BGZF-compressed when `bgzip`."""
    import pysam

    path = Path(path)
    plain = path.with_name(path.name + ".plain") if bgzip else path
    with open(plain, "wb") as f:
        for name, seq in chroms.items():
            f.write(f">{name}\n".encode())
            full = len(seq) // width * width
            if full:
                lines = np.concatenate(
                    [seq[:full].reshape(-1, width), np.full((full // width, 1), 10, np.uint8)], 1
                )
                f.write(lines.tobytes())
            if len(seq) > full:
                f.write(seq[full:].tobytes() + b"\n")
    if bgzip:
        pysam.tabix_compress(str(plain), str(path), force=True)
        plain.unlink()
    return path


def write_vcf(
    frame: pd.DataFrame, contigs: dict[str, int], path: str | os.PathLike, bgzip: bool = True
) -> Path:
    """A VCF 4.2 of `frame` (chrom, pos, ref, alt, label, af, kind), INFO DAMAGING/AF/CLASS."""
    import pysam

    path = Path(path)
    header = [
        "##fileformat=VCFv4.2",
        *(f"##contig=<ID={c},length={n}>" for c, n in contigs.items()),
        '##INFO=<ID=DAMAGING,Number=A,Type=Integer,Description="1: the variant breaks a motif">',
        '##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency (synthetic)">',
        '##INFO=<ID=CLASS,Number=1,Type=String,Description="Feature kind at or next to the variant">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    n_alt = frame["alt"].astype(str).str.count(",") + 1
    af = np.where(n_alt > 1, frame["af"].astype(str) + "," + frame["af"].astype(str), frame["af"].astype(str))
    info = (
        "DAMAGING="
        + frame["label"].astype(str)
        + ";AF="
        + pd.Series(af)
        + ";CLASS="
        + frame["kind"].astype(str)
    )
    body = pd.DataFrame(
        {
            "chrom": frame["chrom"],
            "pos": frame["pos"],
            "id": ".",
            "ref": frame["ref"],
            "alt": frame["alt"],
            "qual": ".",
            "filter": "PASS",
            "info": info.to_numpy(),
        }
    )
    plain = path.with_name(path.name + ".plain") if bgzip else path
    with open(plain, "w") as f:
        f.write("\n".join(header) + "\n")
        body.to_csv(f, sep="\t", header=False, index=False)
    if bgzip:
        pysam.tabix_compress(str(plain), str(path), force=True)
        plain.unlink()
    return path


def _sorted(frame: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    rank = {c: i for i, c in enumerate(order + ["chrUn"])}
    key = frame["chrom"].map(rank) * (1 << 40) + frame["pos"]
    return frame.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)


def make_demo(
    out_dir: str | os.PathLike,
    seed: int = 0,
    lengths: dict[str, int] | None = None,
    n_snvs: int = 2000,
    bgzip: bool = True,
) -> dict[str, Path]:
    """A synthetic genome (`genome.fa[.gz]`) and VCF (`variants.vcf[.gz]`) with a planted signal.

    Returns:
        {"fasta": path, "vcf": path}
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lengths = lengths or {"chr1": 300_000, "chr2": 200_000}
    genome = build_genome(seed, lengths)
    rng = np.random.default_rng([seed, 16])
    frame = _sorted(
        pd.concat([plant_snvs(genome, rng, n_snvs), _extras(genome, rng)], ignore_index=True), list(lengths)
    )
    suffix = ".gz" if bgzip else ""
    fasta = write_fasta(genome.chroms, out / f"genome.fa{suffix}", bgzip=bgzip)
    vcf = write_vcf(frame, lengths, out / f"variants.vcf{suffix}", bgzip=bgzip)
    return {"fasta": fasta, "vcf": vcf}


def scale_genome(
    seed: int, n_chroms: int, chrom_length: int, pool_length: int = 1 << 21
) -> dict[str, np.ndarray]:
    """`n_chroms` chromosomes of `chrom_length` bases tiled from rotated copies of one pool."""
    rng = np.random.default_rng([seed, 17])
    pool, _, _ = build_chromosome(rng, pool_length)
    out = {}
    for i in range(n_chroms):
        pieces, total = [], 0
        while total < chrom_length:
            piece = np.roll(pool, -int(rng.integers(0, pool_length)))
            pieces.append(piece)
            total += len(piece)
        out[f"chr{i + 1}"] = np.concatenate(pieces)[:chrom_length]
    return out


def scale_variants(chroms: dict[str, np.ndarray], n: int, seed: int) -> pd.DataFrame:
    """n random SNVs over `chroms` (REF from the genome), sorted, with a random label and AF."""
    rng = np.random.default_rng([seed, 18])
    names = list(chroms)
    lengths = np.array([len(chroms[c]) for c in names])
    which = np.sort(rng.choice(len(names), size=n, p=lengths / lengths.sum()))
    parts = []
    for i, name in enumerate(names):
        k = int((which == i).sum())
        pos0 = np.sort(rng.choice(lengths[i], size=k, replace=False))
        ref = chroms[name][pos0]
        parts.append(
            pd.DataFrame(
                {
                    "chrom": name,
                    "pos": pos0 + 1,
                    "ref": ref.view("S1").astype(str),
                    "alt": _other_base(rng, ref).view("S1").astype(str),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    frame["label"] = rng.integers(0, 2, size=n)
    frame["af"] = np.round(rng.random(n), 4)
    frame["kind"] = "element"
    return frame
