"""Mamba v1's selective scan compiled for the CPU (numba), with the state in registers.

In plain PyTorch the v1 scan is memory-bound: its decay differs per channel and state, so every
formulation streams (length, channels, d_state) tensors through memory, and a loop over 8,192
positions of small ops is no faster. Here each thread walks the positions once for a group of
`LANES` channels, holding their (d_state, LANES) state in registers and computing
`exp(dt * A)` on the fly: a pass reads x, dt, B and C once and writes y once, whatever the
length, so memory is O(batch x length x channels) and never O(... x d_state).

`exp` is a vectorisable polynomial (Cephes' single-precision form, |relative error| < 1e-7 on
the scan's range x <= 0; arguments below -87 give exp(-87) ~ 1.6e-38 rather than a denormal,
which a product with a state cannot tell apart). Each (sequence, channel) is computed alone and
in a fixed order, so a sequence's output does not depend on what it is batched with or on the
thread count. Threads are plain Python threads over channel ranges (the kernel releases the
GIL), so no numba threading layer is involved and concurrent callers are safe.

Forward only: training goes through `scan.selective_scan_chunked` (autograd).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

# channels per group: one AVX-512 register of float32 (two AVX2 ones)
LANES = 16

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_FLOOR = np.float32(-87.0)


@intrinsic
def _float_bits(typingctx, bits):
    """The float32 whose bit pattern is this int32 (a register move, which vectorises)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@numba.njit(inline="always", fastmath=True)
def _exp_nonpositive(x):
    """exp(x) for x <= 0: 2^k * p(r) with r = x - k ln 2, |r| <= ln(2)/2."""
    x = max(x, _FLOOR)
    k = math.floor(x * _LOG2E + np.float32(0.5))
    r = x - k * _LN2_HI - k * _LN2_LO
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * (r * r) + r + np.float32(1.0)
    return p * _float_bits((np.int32(k) + np.int32(127)) << np.int32(23))


@numba.njit(nogil=True, fastmath=True, cache=True)
def _scan_groups(x, dt, A, B, C, D, y, first, last):
    """y[b, :, g*LANES:(g+1)*LANES] for every sequence b and channel group first <= g < last."""
    batch, length, _ = x.shape
    n = A.shape[1]
    h = np.empty((n, LANES), np.float32)
    a = np.empty((n, LANES), np.float32)
    acc = np.empty(LANES, np.float32)
    step = np.empty(LANES, np.float32)
    u = np.empty(LANES, np.float32)
    for b in range(batch):
        for g in range(first, last):
            d0 = g * LANES
            for s in range(n):
                for j in range(LANES):
                    a[s, j] = A[d0 + j, s]
                    h[s, j] = 0.0
            for t in range(length):
                for j in range(LANES):
                    step[j] = dt[b, t, d0 + j]
                    u[j] = step[j] * x[b, t, d0 + j]
                    acc[j] = D[d0 + j] * x[b, t, d0 + j]
                for s in range(n):
                    bs = B[b, t, s]
                    cs = C[b, t, s]
                    for j in range(LANES):
                        hv = _exp_nonpositive(step[j] * a[s, j]) * h[s, j] + u[j] * bs
                        h[s, j] = hv
                        acc[j] += hv * cs
                for j in range(LANES):
                    y[b, t, d0 + j] = acc[j]


_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


def _pool(workers: int) -> ThreadPoolExecutor:
    """This process's scan threads (a forked child makes its own; more are made if asked)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1] < workers:
        _POOL = (os.getpid(), workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="v1-scan"))
    return _POOL[2]


def selective_scan_cpu(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    overwrite_x: bool = False,
) -> torch.Tensor:
    """The v1 scan of `scan.selective_scan` (same arguments and result), on CPU tensors,
    without autograd. With `overwrite_x`, a contiguous float32 `x` whose channels fill whole
    groups receives y (each position's x is read before its y is written), saving a
    full-length tensor; otherwise y is new."""
    batch, length, channels = x.shape
    pad = (-channels) % LANES  # padded channels have dt = 0 and x = 0: their state stays 0
    overwrite_x = overwrite_x and not pad and x.dtype == torch.float32 and x.is_contiguous()

    def arr(t: torch.Tensor, channel_dim: int | None = None) -> np.ndarray:
        t = t.detach().float()
        if pad and channel_dim is not None:
            widths = [0, 0] * (t.dim() - 1 - channel_dim) + [0, pad]
            t = torch.nn.functional.pad(t, widths)
        return t.contiguous().numpy()

    xs, dts, As, Ds = arr(x, 2), arr(dt, 2), arr(A, 0), arr(D, 0)
    Bs, Cs = arr(B), arr(C)
    y = x.detach() if overwrite_x else torch.empty(batch, length, channels + pad, dtype=torch.float32)
    ys = y.numpy()
    groups = (channels + pad) // LANES
    workers = min(groups, max(1, torch.get_num_threads()))
    bounds = [groups * i // workers for i in range(workers + 1)]
    if workers == 1:
        _scan_groups(xs, dts, As, Bs, Cs, Ds, ys, 0, groups)
    else:
        jobs = [
            _pool(workers).submit(_scan_groups, xs, dts, As, Bs, Cs, Ds, ys, lo, hi)
            for lo, hi in zip(bounds, bounds[1:])
            if hi > lo
        ]
        for job in jobs:
            job.result()
    return y[..., :channels] if pad else y
