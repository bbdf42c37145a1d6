"""DNA sequence handling: alphabet checks, centre crops, reverse complement, tokenisation.

Sequences travel through scoring as 2-D uint8 arrays (one ASCII byte per base, one row per
example), so that cropping is a slice, reverse complement is a table lookup plus a flip, and
tokenisation is one fancy-indexing call through a 256-entry table. The table is built from the
model's own tokenizer and checked against it on a mixed-case probe, so the ids are exactly those
the tokenizer would produce (called with `add_special_tokens=False`, so that token i is base i).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from plantcad_flows.errors import ValidationError

NUCLEOTIDES = "ACGT"
ALLOWED = "ACGTNacgtn"

_ALLOWED_LUT = np.zeros(256, dtype=bool)
_ALLOWED_LUT[np.frombuffer(ALLOWED.encode(), np.uint8)] = True

# Complement keeps case and maps every other byte (N, n) to itself.
_COMPLEMENT_LUT = np.arange(256, dtype=np.uint8)
for _a, _b in ("AT", "TA", "CG", "GC", "at", "ta", "cg", "gc"):
    _COMPLEMENT_LUT[ord(_a)] = ord(_b)

_UPPER_LUT = np.arange(256, dtype=np.uint8)
_UPPER_LUT[ord("a") : ord("z") + 1] -= 32

# Base byte -> column in the A,C,G,T probability block; -1 for anything else (N, ...).
BASE_INDEX_LUT = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate(NUCLEOTIDES):
    BASE_INDEX_LUT[ord(_c)] = _i
    BASE_INDEX_LUT[ord(_c.lower())] = _i

# Reverse complement of the probability columns A,C,G,T is T,G,C,A: a column reversal.
RC_COLUMNS = np.array([3, 2, 1, 0])


def to_bytes(seqs: Sequence[str], field: str = "sequence") -> np.ndarray:
    """Stack equal-length ASCII strings into an (n, L) uint8 array without a per-row loop.

    Raises:
        ValidationError: mixed lengths or non-ASCII characters.
    """
    n = len(seqs)
    if n == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    joined = "".join(seqs)
    try:
        raw = joined.encode("ascii")
    except UnicodeEncodeError as e:
        raise ValidationError(field, joined[e.start], "character outside A/C/G/T/N") from None
    if len(raw) % n or len(raw) // n != len(seqs[0]):
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=n)
        bad = int(np.flatnonzero(lengths != lengths[0])[0])
        raise ValidationError(
            field, int(lengths[bad]), f"mixed sequence lengths (row {bad}; row 0 has {lengths[0]})"
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(n, -1)


def check_alphabet(arr: np.ndarray, field: str = "sequence", row_index: np.ndarray | None = None) -> None:
    """Raise on the first byte that is not A/C/G/T/N in either case."""
    bad = ~_ALLOWED_LUT[arr]
    if bad.any():
        row, col = np.argwhere(bad)[0]
        where = int(row_index[row]) if row_index is not None else int(row)
        raise ValidationError(
            field, chr(arr[row, col]), f"character outside A/C/G/T/N at row {where}, position {col}"
        )


def reverse_complement(arr: np.ndarray) -> np.ndarray:
    """Reverse complement of every row of an (n, L) byte array (case kept)."""
    return _COMPLEMENT_LUT[arr[:, ::-1]]


def upper(arr: np.ndarray) -> np.ndarray:
    return _UPPER_LUT[arr]


def rows_to_str(arr: np.ndarray) -> list[str]:
    """(n, P) byte array -> n Python strings, through one numpy view rather than a loop."""
    n, p = arr.shape
    if p == 0:
        return [""] * n
    return np.ascontiguousarray(arr).view(f"S{p}").ravel().astype(f"U{p}").tolist()


@dataclass(frozen=True)
class CropPlan:
    """A centre crop from `seq_length` to `out_length`; `trim` bases go from each side."""

    seq_length: int
    out_length: int

    @property
    def trim(self) -> int:
        return (self.seq_length - self.out_length) // 2

    def apply(self, arr: np.ndarray) -> np.ndarray:
        return arr[:, self.trim : self.trim + self.out_length]

    def shift(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """Positions in the uncropped sequence -> positions in the cropped one (may fall outside)."""
        return np.asarray(positions, dtype=np.int64) - self.trim

    def inside(self, cropped_positions: np.ndarray) -> np.ndarray:
        return (cropped_positions >= 0) & (cropped_positions < self.out_length)


def crop_plan(seq_length: int, context_length: int, field: str = "models[].context_length") -> CropPlan:
    """Plan the centre crop of `seq_length`-bp sequences to a model context of `context_length`.

    No crop when the context is at least the sequence length. Both lengths must be even so the
    same number of bases is removed from each side (otherwise the centre would move).

    Raises:
        ValidationError: an odd length.
    """
    if context_length >= seq_length:
        return CropPlan(seq_length, seq_length)
    if seq_length % 2:
        raise ValidationError("splits[].seq_length", seq_length, "must be even to centre-crop")
    if context_length % 2:
        raise ValidationError(field, context_length, "must be even to centre-crop")
    return CropPlan(seq_length, context_length)


class TokenTable:
    """Byte -> token id table equal to the tokenizer on single-character tokens.

    Built by asking the tokenizer for each printable ASCII character once, then verified on a
    mixed-case probe; tokenizers that merge characters (BPE, k-mers) are rejected since one id per
    base is what scoring's position arithmetic relies on.
    """

    PROBE = "ACGTNacgtnAaCcGgTtNn" + "gattacaGATTACA" + "nNACGTacgt"

    def __init__(self, tokenizer) -> None:
        unk = tokenizer.unk_token_id
        lut = np.full(256, -1 if unk is None else unk, dtype=np.int64)
        for code in range(32, 127):
            ids = tokenizer(chr(code), add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                lut[code] = ids[0]
        self.lut = lut
        self._check_parity(tokenizer, self.PROBE)

    def _check_parity(self, tokenizer, probe: str) -> None:
        expected = tokenizer(probe, add_special_tokens=False)["input_ids"]
        got = self.encode(to_bytes([probe]))[0].tolist()
        if expected != got:
            raise ValidationError(
                "models[].path",
                type(tokenizer).__name__,
                "tokenizer is not one token per base (vectorised ids differ from the tokenizer's)",
            )

    def encode(self, arr: np.ndarray) -> np.ndarray:
        """(n, L) bytes -> (n, L) int64 token ids."""
        return self.lut[arr]
