"""Reference windows read by index: the FASTA is never loaded whole.

The window of a variant at 1-based `pos` is `length` reference bases with the variant at 0-based
index `length // 2 - 1` (the position the conservation task scores: 255 of 512, 4095 of 8192),
i.e. reference positions `[pos - 1 - (length // 2 - 1), ... + length)` (0-based, half-open).
Bases before the chromosome start or past its end are `N`. Bases are upper-cased (soft-masking
is not information the models use here).

Fetching is clustered: variants of one chromosome, sorted, are cut where two neighbouring
windows are more than `GAP` bases apart, and each cluster is one `fetch` of the span of its
windows (a cluster spanning more than `MAX_SPAN` is cut into pieces of at most that span); the windows are then views of that buffer (no per-variant FASTA call). Memory is one
cluster's span plus the (n, length) window array.
"""

from __future__ import annotations

import numpy as np

_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a") : ord("z") + 1] -= 32
_N = ord("N")
GAP = 1 << 16  # windows further apart than this are fetched separately
MAX_SPAN = 1 << 24  # and no single fetch is longer than this


def centre_index(length: int) -> int:
    """0-based index of the variant in a window of `length` bases."""
    return length // 2 - 1


class ReferenceGenome:
    """Contig lengths and indexed reads of one FASTA (a `pysam.FastaFile`)."""

    def __init__(self, fasta) -> None:
        self.fasta = fasta
        self.lengths: dict[str, int] = dict(zip(fasta.references, fasta.lengths, strict=True))

    def close(self) -> None:
        self.fasta.close()

    def __enter__(self) -> ReferenceGenome:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fetch(self, chrom: str, start: int, stop: int) -> np.ndarray:
        """Bases [start, stop) of `chrom`, N outside the chromosome, upper case."""
        n = self.lengths[chrom]
        lo, hi = max(0, start), min(n, stop)
        out = np.full(stop - start, _N, dtype=np.uint8)
        if hi > lo:
            seq = self.fasta.fetch(chrom, lo, hi).encode("ascii")
            out[lo - start : hi - start] = _UPPER[np.frombuffer(seq, dtype=np.uint8)]
        return out

    def spans(self, chrom: np.ndarray, starts: np.ndarray, width: int):
        """Yield (row indices, buffer, buffer start) covering [starts, starts+width) of each row."""
        chrom = np.asarray(chrom, dtype=object)
        for c in dict.fromkeys(chrom.tolist()):
            rows = np.flatnonzero(chrom == c)
            order = rows[np.argsort(starts[rows], kind="stable")]
            s = starts[order]
            cut = np.flatnonzero(np.diff(s) > GAP)
            # a cluster longer than MAX_SPAN is cut greedily, each piece measured from its own start
            bounds = [0, *(cut + 1).tolist(), len(order)]
            for a, b in zip(bounds[:-1], bounds[1:], strict=False):
                i = a
                while i < b:
                    j = i + int(np.searchsorted(s[i:b], s[i] + MAX_SPAN, side="right"))
                    lo, hi = int(s[i]), int(s[j - 1]) + width
                    yield order[i:j], self._fetch(c, lo, hi), lo
                    i = j

    def bases(self, chrom: np.ndarray, pos0: np.ndarray, width: int = 1) -> np.ndarray:
        """(n, width) upper-case bases starting at 0-based `pos0` of each row (N off the ends)."""
        pos0 = np.asarray(pos0, dtype=np.int64)
        out = np.empty((len(pos0), width), dtype=np.uint8)
        for rows, buf, lo in self.spans(chrom, pos0, width):
            view = np.lib.stride_tricks.sliding_window_view(buf, width)
            out[rows] = view[pos0[rows] - lo]
        return out

    def windows(self, chrom: np.ndarray, pos: np.ndarray, length: int) -> np.ndarray:
        """(n, length) reference windows of variants at 1-based `pos` (see the module docstring)."""
        starts = np.asarray(pos, dtype=np.int64) - 1 - centre_index(length)
        return self.bases(chrom, starts, length)
