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

Training runs the same way backwards (`CompiledScan`, an autograd Function): the forward keeps
the state entering every `CHECKPOINT`-position chunk; the backward walks the chunks from the
end, recomputes a chunk's states from its checkpoint and carries the adjoint back through them
(dx, d dt, dA, dD per channel group; dB and dC, sums over channels, as one partial per thread).
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
def _scan_groups(x, dt, A, B, C, D, y, states, every, first, last):
    """y[b, :, g*LANES:(g+1)*LANES] for every sequence b and channel group first <= g < last; with
    `every` > 0, also the state entering each `every`-position chunk into states[b, chunk]."""
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
                if every > 0 and t % every == 0:
                    for s in range(n):
                        for j in range(LANES):
                            states[b, t // every, s, d0 + j] = h[s, j]
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


# rows of `_scan_grad_groups`'s scratch: per state (A, the carried adjoint a_{t+1} g_{t+1}, dA)
# and per lane (this position's dt, dt * x, x, dy, du, d dt; and dD over the positions)
_A, _CARRY, _DA = 0, 1, 2
_STEP, _U, _X, _DY, _DU, _DSTEP, _DD = 0, 1, 2, 3, 4, 5, 6


@numba.njit(nogil=True, fastmath=True, cache=True)
def _scan_grad_groups(x, dt, A, B, C, D, dy, states, every, dx, ddt, dA, dD, dB, dC, first, last):
    """The gradients of `_scan_groups`'s y for channel groups first <= g < last: dx, ddt, dA and
    dD for those channels, and their share of dB and dC added into `dB`, `dC` (this thread's).

    Chunk by chunk from the end: the chunk's states are recomputed forward from its checkpoint,
    then the adjoint g_t = dy_t C_t + a_{t+1} g_{t+1} is carried back through it, so h_{t-1} is
    never recovered by dividing by a decay. The scratch lives in two buffers (`per_state`,
    `per_lane`) whose rows LLVM can tell apart, so the lane loops vectorise (with a dozen
    separate arrays it cannot rule out aliasing and the loops stay scalar, 2x slower)."""
    batch, length, _ = x.shape
    n = A.shape[1]
    chunks = states.shape[1]
    hs = np.empty((every + 1, n, LANES), np.float32)  # hs[i + 1]: after position i
    decays = np.empty((every, n, LANES), np.float32)
    per_state = np.empty((n, 3, LANES), np.float32)
    per_lane = np.empty((7, LANES), np.float32)
    for g in range(first, last):
        d0 = g * LANES
        for s in range(n):
            for j in range(LANES):
                per_state[s, _A, j] = A[d0 + j, s]
                per_state[s, _DA, j] = 0.0
        for j in range(LANES):
            per_lane[_DD, j] = 0.0
        for b in range(batch):
            for s in range(n):
                for j in range(LANES):
                    per_state[s, _CARRY, j] = 0.0
            for c in range(chunks - 1, -1, -1):
                t0 = c * every
                t1 = min(length, t0 + every)
                for s in range(n):
                    for j in range(LANES):
                        hs[0, s, j] = states[b, c, s, d0 + j]
                for t in range(t0, t1):
                    i = t - t0
                    for j in range(LANES):
                        per_lane[_STEP, j] = dt[b, t, d0 + j]
                        per_lane[_U, j] = per_lane[_STEP, j] * x[b, t, d0 + j]
                    for s in range(n):
                        bs = B[b, t, s]
                        for j in range(LANES):
                            av = _exp_nonpositive(per_lane[_STEP, j] * per_state[s, _A, j])
                            decays[i, s, j] = av
                            hs[i + 1, s, j] = av * hs[i, s, j] + per_lane[_U, j] * bs
                for t in range(t1 - 1, t0 - 1, -1):
                    i = t - t0
                    for j in range(LANES):
                        per_lane[_STEP, j] = dt[b, t, d0 + j]
                        per_lane[_X, j] = x[b, t, d0 + j]
                        per_lane[_U, j] = per_lane[_STEP, j] * per_lane[_X, j]
                        per_lane[_DY, j] = dy[b, t, d0 + j]
                        per_lane[_DU, j] = 0.0
                        per_lane[_DSTEP, j] = 0.0
                    for s in range(n):
                        bs = B[b, t, s]
                        cs = C[b, t, s]
                        acc_b = np.float32(0.0)
                        acc_c = np.float32(0.0)
                        for j in range(LANES):
                            gv = per_lane[_DY, j] * cs + per_state[s, _CARRY, j]
                            av = decays[i, s, j]
                            q = gv * hs[i, s, j] * av  # the gradient of log a_t
                            per_state[s, _DA, j] += q * per_lane[_STEP, j]
                            per_lane[_DSTEP, j] += q * per_state[s, _A, j]
                            per_lane[_DU, j] += gv * bs
                            acc_b += gv * per_lane[_U, j]
                            acc_c += per_lane[_DY, j] * hs[i + 1, s, j]
                            per_state[s, _CARRY, j] = av * gv
                        dB[b, t, s] += acc_b
                        dC[b, t, s] += acc_c
                    for j in range(LANES):
                        dx[b, t, d0 + j] = (
                            per_lane[_DU, j] * per_lane[_STEP, j] + per_lane[_DY, j] * D[d0 + j]
                        )
                        ddt[b, t, d0 + j] = per_lane[_DSTEP, j] + per_lane[_DU, j] * per_lane[_X, j]
                        per_lane[_DD, j] += per_lane[_DY, j] * per_lane[_X, j]
        for j in range(LANES):
            dD[d0 + j] = per_lane[_DD, j]
            for s in range(n):
                dA[d0 + j, s] = per_state[s, _DA, j]


_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


def _pool(workers: int) -> ThreadPoolExecutor:
    """This process's scan threads (a forked child makes its own; more are made if asked)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1] < workers:
        _POOL = (os.getpid(), workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="v1-scan"))
    return _POOL[2]


def _thread_ranges(groups: int) -> list[tuple[int, int]]:
    """Channel-group ranges, one per thread (torch's thread count, at most one per group)."""
    workers = min(groups, max(1, torch.get_num_threads()))
    return [(groups * i // workers, groups * (i + 1) // workers) for i in range(workers)]


def _run(kernel, ranges: list[tuple[int, int]], args_of) -> None:
    """kernel(*args_of(i), first, last) for each thread's range i, in this process's pool."""
    if len(ranges) == 1:
        kernel(*args_of(0), *ranges[0])
        return
    jobs = [_pool(len(ranges)).submit(kernel, *args_of(i), lo, hi) for i, (lo, hi) in enumerate(ranges)]
    for job in jobs:
        job.result()


def _array(t: torch.Tensor, channel_dim: int | None = None) -> np.ndarray:
    """A contiguous float32 array of `t`, its channel dim (if given) padded to a multiple of
    LANES with zeros."""
    t = t.detach().float()
    pad = (-t.shape[channel_dim]) % LANES if channel_dim is not None else 0
    if pad:
        t = torch.nn.functional.pad(t, [0, 0] * (t.dim() - 1 - channel_dim) + [0, pad])
    return t.contiguous().numpy()


def _arrays(x, dt, A, B, C, D) -> tuple[np.ndarray, ...]:
    """The scan's inputs as `_array`s: padded channels have dt = 0 and x = 0, so their state
    stays 0, and so do their gradients."""
    return _array(x, 2), _array(dt, 2), _array(A, 0), _array(B), _array(C), _array(D, 0)


def _forward(
    arrays: tuple[np.ndarray, ...], every: int, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """y (padded channels; into `out` when given) and, with `every` > 0, the states entering
    each `every`-chunk."""
    xs, dts, As, Bs, Cs, Ds = arrays
    batch, length, padded = xs.shape
    shape = (batch, -(-length // every), As.shape[1], padded) if every else (1, 1, 1, 1)
    states = np.empty(shape, np.float32)
    y = torch.empty(batch, length, padded, dtype=torch.float32) if out is None else out
    ys = y.numpy()
    _run(_scan_groups, _thread_ranges(padded // LANES), lambda i: (*arrays, ys, states, every))
    return y, states


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
    channels = x.shape[2]
    in_place = overwrite_x and channels % LANES == 0 and x.dtype == torch.float32 and x.is_contiguous()
    y, _ = _forward(_arrays(x, dt, A, B, C, D), 0, out=x.detach() if in_place else None)
    return y[..., :channels]


# positions between the states the forward keeps for the backward: the backward recomputes
# the states within a chunk, so memory is (batch, length / CHECKPOINT, d_state, channels)
CHECKPOINT = 64


class CompiledScan(torch.autograd.Function):
    """The compiled scan with its compiled backward (`_scan_grad_groups`); float32 inside, y
    float32, each gradient in its input's dtype. The inputs are saved as autograd saves them
    (an in-place change before the backward is an error), the checkpointed states on `ctx`."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D):
        every = max(1, min(CHECKPOINT, x.shape[1]))
        y, ctx.states = _forward(_arrays(x, dt, A, B, C, D), every)
        ctx.save_for_backward(x, dt, A, B, C, D)
        ctx.every = every
        ctx.dtypes, ctx.channels = [t.dtype for t in (x, dt, A, B, C, D)], x.shape[2]
        return y[..., : x.shape[2]].contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        arrays = _arrays(*ctx.saved_tensors)
        xs, dts, As, Bs, Cs, Ds = arrays
        batch, length, padded = xs.shape
        n, channels = As.shape[1], ctx.channels
        dys = _array(dy, 2)
        dx, ddt = np.empty_like(xs), np.empty_like(dts)
        dA, dD = np.empty_like(As), np.empty_like(Ds)
        ranges = _thread_ranges(padded // LANES)
        dB_parts = np.zeros((len(ranges), batch, length, n), np.float32)  # each thread's share
        dC_parts = np.zeros_like(dB_parts)
        _run(
            _scan_grad_groups,
            ranges,
            lambda i: (*arrays, dys, ctx.states, ctx.every, dx, ddt, dA, dD, dB_parts[i], dC_parts[i]),
        )
        grads = [dx, ddt, dA, dB_parts.sum(0), dC_parts.sum(0), dD]
        grads = [torch.from_numpy(g) for g in grads]
        grads[0], grads[1] = grads[0][..., :channels], grads[1][..., :channels]
        grads[2], grads[5] = grads[2][:channels], grads[5][:channels]
        ctx.states = None
        return tuple(
            g.to(dtype) if needed else None
            for g, dtype, needed in zip(grads, ctx.dtypes, ctx.needs_input_grad)
        )


def selective_scan_cpu_with_grad(x, dt, A, B, C, D) -> torch.Tensor:
    """`selective_scan_cpu` with autograd: the backward is compiled too (`CompiledScan`)."""
    return CompiledScan.apply(x, dt, A, B, C, D)
