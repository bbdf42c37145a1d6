"""Pieces the families' synthetic generators share: genome windows, planting, soft-masking.

Every synthetic example is a window of the synthetic genome (`families.genome`, whose docstring
describes the generative model) with one feature planted where the task's masks (or flanks)
read. Soft-masking: random stretches outside a protected centre are lower-cased (the models'
tokenizers lower-case everything); rare runs of `N` sit outside it too.
"""

from __future__ import annotations

import numpy as np

from plantcad_flows.families import genome as g

SPLIT_SPECIES = {"test_maize": "maize", "test_tomato": "tomato", "test": "maize"}
FRESH = 1536
POOL_LENGTH = 1 << 16


def plant(seq: np.ndarray, seg: np.ndarray, start: int) -> None:
    seq[start : start + len(seg)] = seg


def soft_mask_and_n(rng: np.random.Generator, seq: np.ndarray, protect: tuple[int, int]) -> str:
    """Lower-case a few stretches and add a rare N run, never inside `protect` (half-open)."""
    out = seq.copy()
    length = len(out)
    for _ in range(int(rng.integers(0, 4))):
        a = int(rng.integers(0, length))
        b = min(length, a + int(rng.integers(20, 200)))
        if b <= protect[0] or a >= protect[1]:
            out[a:b] |= 0x20  # ASCII letters: set the lower-case bit
    if rng.random() < 0.05:
        a = int(rng.integers(0, length - 50))
        if a + 50 <= protect[0] or a >= protect[1]:
            out[a : a + int(rng.integers(5, 50))] = ord("N")
    return g.to_str(out)


def genome_window(rng, pool: np.ndarray, length: int, centre: int, species: str) -> np.ndarray:
    """`length` bases: a random window of the split's genome pool, with fresh genome drawn for
    the `FRESH` bases around `centre` (which is all a 512-bp model sees). Drawing all 8 kb fresh
    per example would make generation 10x slower for bases no shipped model reads."""
    start = int(rng.integers(0, len(pool)))
    seq = np.resize(np.roll(pool, -start), length)
    a = max(0, centre - FRESH // 2)
    fresh = g.sample_genome(rng, min(FRESH, length - a), species)
    seq[a : a + len(fresh)] = fresh
    return seq


def protect(length: int, width: int = 400) -> tuple[int, int]:
    return max(0, length // 2 - width), min(length, length // 2 + width)


def site_kind(task: str) -> str:
    """The site a built-in site task is about: acceptor, donor, tis or tts (its name's first word)."""
    return task.split("_")[0]
