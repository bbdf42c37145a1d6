"""The synthetic plant genome: one generative model shared by the benchmark and the tiny models.

The shipped tiny models are trained on chunks from `sample_genome`; the synthetic benchmark
(`plantcad_flows.benchmark.synthetic`) plants the same features at the masked positions. A model that has
learned this genome therefore beats chance on the benchmark, and one that has not does not.

Generative model (plus strand only; bases upper case here, soft-masking is added by the benchmark):

* **Background**: i.i.d. bases with the species' GC content (maize 0.46, tomato 0.36).
* **Conserved-element library**: `NUM_ELEMENTS` fixed random sequences of 20-32 bp, drawn once
  from `GENOME_SEED` (so every caller sees the same library). Instances are copied with a
  `ELEMENT_MUTATION` per-base substitution rate; a base inside an instance is predictable from
  its neighbours, a background base is not.
* **Gene features**, each a context plus a core motif (canonical form first):
  * acceptor: branch point ``CTAAC`` - 3..8 bp spacer - 12..16 bp polypyrimidine tract - ``AG``
    - exon (starts with ``G``);
  * donor: exon ending ``CAG``/``AAG`` - ``GT`` - ``AAGT``/``GAGT`` - T-rich intron;
  * TIS: 5' UTR - Kozak ``GCCACC`` - ``ATG`` - ``GC`` - codons;
  * TTS: codons - stop codon (``TAA`` .5, ``TGA`` .3, ``TAG`` .2) - 3..8 bp - a poly-A signal
    whose middle matches the stop codon (``AATAAA`` / ``AATGAA`` / ``AATAGA``), so the stop codon
    is recoverable from downstream context only.
  Non-canonical motif instances (e.g. ``AC`` acceptors, ``GC`` donors, ``CTG`` starts, sense
  codons at a TTS) sit in the same contexts but are rare in the genome (`NONCANONICAL_RATE`).
* **Layout** (`sample_genome`): background gaps (geometric, mean `GAP_MEAN` = 15 bp) alternating with features:
  element instances 45%, each gene feature 12.5%, non-canonical sites the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

GENOME_SEED = 20_240_611
NUM_ELEMENTS = 24
ELEMENT_MUTATION = 0.02
NONCANONICAL_RATE = 0.05
GAP_MEAN = 15
SPECIES_GC = {"maize": 0.46, "tomato": 0.36}
DEFAULT_SPECIES = "maize"

ACGT = np.frombuffer(b"ACGT", dtype=np.uint8)
STOP_CODONS = (b"TAA", b"TGA", b"TAG")
STOP_WEIGHTS = (0.5, 0.3, 0.2)
POLYA_SIGNAL = {b"TAA": b"AATAAA", b"TGA": b"AATGAA", b"TAG": b"AATAGA"}

CANONICAL = {"acceptor": b"AG", "donor": b"GT", "tis": b"ATG"}
NONCANONICAL = {
    "acceptor": (b"AC", b"AA", b"GG", b"TG"),
    "donor": (b"GC", b"AT", b"GA", b"TT"),
    "tis": (b"CTG", b"GTG", b"ACG", b"TTG"),
    "tts": (b"TCA", b"TGG", b"CAA", b"TAC", b"GAA", b"AGA"),
}
SITE_KINDS = ("acceptor", "donor", "tis", "tts")


@dataclass(frozen=True)
class Site:
    """A feature's bases and where its core motif starts (`anchor`) and how long it is."""

    seq: np.ndarray  # uint8, upper case
    anchor: int
    motif_len: int


@lru_cache(maxsize=1)
def element_library() -> tuple[np.ndarray, ...]:
    """The conserved-element families, fixed by GENOME_SEED."""
    rng = np.random.default_rng(GENOME_SEED)
    lengths = rng.integers(20, 33, size=NUM_ELEMENTS)
    return tuple(ACGT[rng.integers(0, 4, size=int(n))] for n in lengths)


def background(rng: np.random.Generator, n: int, gc: float) -> np.ndarray:
    p = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
    return ACGT[rng.choice(4, size=n, p=p)]


def _b(s: bytes) -> np.ndarray:
    return np.frombuffer(s, dtype=np.uint8)


def _noisy(rng: np.random.Generator, s: bytes, rate: float) -> np.ndarray:
    out = _b(s).copy()
    hit = rng.random(len(out)) < rate
    out[hit] = ACGT[rng.integers(0, 4, size=int(hit.sum()))]
    return out


def _pyrimidines(rng: np.random.Generator, n: int) -> np.ndarray:
    return ACGT[rng.choice(4, size=n, p=[0.05, 0.3, 0.05, 0.6])]


def _codons(rng: np.random.Generator, n: int, gc: float) -> np.ndarray:
    """n sense codons (stop codons resampled away so that only the TTS carries one)."""
    out = background(rng, 3 * n, gc).reshape(n, 3)
    for i in range(n):
        while bytes(out[i]) in STOP_CODONS:
            out[i] = background(rng, 3, gc)
    return out.ravel()


def element_instance(rng: np.random.Generator, family: int) -> np.ndarray:
    return _noisy(rng, element_library()[family].tobytes(), ELEMENT_MUTATION)


def site(kind: str, rng: np.random.Generator, gc: float, canonical: bool = True) -> Site:
    """One gene feature of `kind` with its context; `canonical=False` swaps in a rare motif."""
    if kind == "tts":
        stop = STOP_CODONS[rng.choice(3, p=STOP_WEIGHTS)]
        motif = stop if canonical else NONCANONICAL["tts"][rng.integers(6)]
    else:
        choices = NONCANONICAL[kind]
        motif = CANONICAL[kind] if canonical else choices[rng.integers(len(choices))]
    m = _b(motif)
    if kind == "acceptor":
        left = [
            _noisy(rng, b"CTAAC", 0.05),
            background(rng, int(rng.integers(3, 9)), gc),
            _pyrimidines(rng, int(rng.integers(12, 17))),
        ]
        right = [_b(b"G"), background(rng, 10, gc)]
    elif kind == "donor":
        left = [background(rng, 8, gc), _b(b"CAG" if rng.random() < 0.7 else b"AAG")]
        right = [_b(b"AAGT" if rng.random() < 0.7 else b"GAGT"), _pyrimidines(rng, 8)]
    elif kind == "tis":
        left = [background(rng, 8, gc), _noisy(rng, b"GCCACC", 0.05)]
        right = [_b(b"GC"), _codons(rng, 6, gc)]
    elif kind == "tts":
        left = [_codons(rng, 6, gc)]
        right = [background(rng, int(rng.integers(3, 9)), gc), _b(POLYA_SIGNAL[stop]), background(rng, 6, gc)]
    else:
        raise ValueError(f"site kind {kind!r} not in {SITE_KINDS}")
    anchor = int(sum(len(x) for x in left))
    return Site(np.concatenate(left + [m] + right), anchor, len(m))


_FEATURE_P = np.array([0.45] + [0.125] * 4 + [NONCANONICAL_RATE])


def next_feature(rng: np.random.Generator, gc: float) -> np.ndarray:
    """One feature drawn from the genome's layout mixture."""
    k = rng.choice(len(_FEATURE_P), p=_FEATURE_P)
    if k == 0:
        return element_instance(rng, int(rng.integers(NUM_ELEMENTS)))
    if k <= 4:
        return site(SITE_KINDS[k - 1], rng, gc).seq
    return site(SITE_KINDS[rng.integers(4)], rng, gc, canonical=False).seq


def sample_genome(
    rng: np.random.Generator,
    length: int,
    species: str = DEFAULT_SPECIES,
    feature: Callable[[np.random.Generator, float], np.ndarray] = next_feature,
) -> np.ndarray:
    """`length` bases (uint8, upper case) of synthetic genome: gaps of background and features."""
    gc = SPECIES_GC[species]
    parts, total = [], 0
    # Start mid-gap or mid-feature, as a window into a longer genome would.
    skip = int(rng.integers(0, 40))
    while total < length + skip:
        gap = background(rng, int(rng.geometric(1 / GAP_MEAN)), gc)
        feat = feature(rng, gc)
        parts += [gap, feat]
        total += len(gap) + len(feat)
    return np.concatenate(parts)[skip : skip + length]


def to_str(arr: np.ndarray) -> str:
    return arr.tobytes().decode("ascii")
