"""The two state-space scans, each as what runs and as the reference (sequential).

Mamba v1's selective scan keeps a state of (channels, d_state) per sequence,
`h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * x_t`, `y_t = <C_t, h_t> + D * x_t`. Its decay
differs per channel and state, so no matmul form exists. On a CPU `selective_scan` runs the
compiled kernels of `cpu_scan` (the state in registers, one pass over the inputs; a compiled
backward for training). Elsewhere (CUDA or MPS without mamba_ssm) it runs
`selective_scan_chunked`, which takes the channels a block at a time (so an 8 kb window never
materialises its whole (batch, channels, length, state) tensor), cuts the sequence into chunks,
steps through the positions of all chunks at once, then carries each chunk's final state into
the next: `chunk + length / chunk` Python steps, not `length`. Every step multiplies by decays
<= 1, so both are stable whatever dt and A are (nothing is divided by a cumulative product).

Mamba v2's decay is one scalar per head, so the scan within a chunk is a masked matmul (the
"state space dual" form of Dao and Gu, 2024) and only the state crosses chunk borders;
`ssd_scan` loops over chunks, not positions.

Both run in float32 whatever the model's dtype, as mamba_ssm's kernels accumulate. The
sequential scans (`selective_scan_reference`, `ssd_scan_reference`) are the readable definition
the tests compare against and the benchmark times; nothing else runs them.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F

from plantcad_flows.architectures.caduceus.cpu_scan import selective_scan_cpu, selective_scan_cpu_with_grad

# elements of the (batch, length, channels, d_state) slab one pass of the v1 scan holds (128 MiB)
V1_SLAB = 1 << 25


_SCRATCH = threading.local()


def _workspace(slab: tuple[int, ...], carry: tuple[int, ...], device: torch.device):
    """Two float32 slabs and a carry buffer of these shapes, reused by this thread from call to
    call (grown when too small): a fresh large tensor is paged in on first touch, which costs
    as much as a pass over it."""
    size = math.prod(slab) * 2 + math.prod(carry)
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.numel() < size or buf.device != device:
        buf = _SCRATCH.buf = torch.empty(size, dtype=torch.float32, device=device)
    k, m = math.prod(slab), math.prod(carry)
    return buf[:k].view(slab), buf[k : 2 * k].view(slab), buf[2 * k : 2 * k + m].view(carry)


def _v1_chunk(length: int) -> int:
    """About sqrt(length), a power of two: the chunk steps and the carry steps balance."""
    return 2 ** max(0, round(math.log2(math.sqrt(max(length, 1)))))


def selective_scan(x, dt, A, B, C, D, overwrite_x: bool = False) -> torch.Tensor:
    """Mamba v1's scan (arguments as `selective_scan_chunked`): on CPU tensors the compiled
    kernel (`cpu_scan`; with its compiled backward when autograd is needed), elsewhere the
    chunked PyTorch form. With `overwrite_x`, inference on a CPU may write y into x's memory
    (x is not needed afterwards)."""
    if x.device.type != "cpu":
        return selective_scan_chunked(x, dt, A, B, C, D)
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (x, dt, A, B, C, D))
    if training:
        return selective_scan_cpu_with_grad(x, dt, A, B, C, D)
    return selective_scan_cpu(x, dt, A, B, C, D, overwrite_x=overwrite_x)


def selective_scan_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    chunk: int | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """Mamba v1's scan, a block of channels at a time, chunked along the sequence.

    Args:
        x: (batch, length, channels) the conv output.
        dt: (batch, length, channels) step sizes, already through softplus.
        A: (channels, d_state), negative.
        B, C: (batch, length, d_state).
        D: (channels,) skip.
        chunk: positions per chunk (default about sqrt(length)).
        block: channels per pass (default: as many as fit `V1_SLAB`).

    Returns:
        y: (batch, length, channels), float32, before the gate.
    """
    x, dt, A, B, C = x.float(), dt.float(), A.float(), B.float(), C.float()
    batch, length, channels = x.shape
    n = A.shape[1]
    chunk = min(chunk or _v1_chunk(length), length)
    block = block or max(1, min(channels, V1_SLAB // (batch * length * n)))
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (x, dt, A, B, C))
    pad = (-length) % chunk
    if pad:  # steps with dt = 0 change no state; cut off below
        x, dt, B, C = (F.pad(t, (0, 0, 0, pad)) for t in (x, dt, B, C))
    chunks = (length + pad) // chunk
    Bc = B.reshape(batch, chunks, chunk, 1, n)
    Cc = C.reshape(batch, chunks, chunk, n)
    out = []
    for start in range(0, channels, block):
        sl = slice(start, start + block)
        width = min(channels, start + block) - start
        dtb = dt[..., sl].reshape(batch, chunks, chunk, width)
        dtx = (dtb * x[..., sl].reshape(batch, chunks, chunk, width)).unsqueeze(-1)
        # the decay from each chunk's start to each position: exp(A * running sum of dt)
        since_start = torch.cumsum(dtb, dim=2).unsqueeze(-1)
        shape = (batch, chunks, chunk, width, n)
        if training:  # autograd keeps every step's state: out of place
            decay = torch.exp(dtb.unsqueeze(-1) * A[sl])
            states = [dtx[:, :, 0] * Bc[:, :, 0]]
            for t in range(1, chunk):
                states.append(torch.addcmul(dtx[:, :, t] * Bc[:, :, t], decay[:, :, t], states[-1]))
            h, decay = torch.stack(states, dim=2), torch.exp(since_start * A[sl])
            carried = [h.new_zeros(batch, width, n)]
            for c in range(1, chunks):
                carried.append(torch.addcmul(h[:, c - 1, -1], decay[:, c - 1, -1], carried[-1]))
            h = torch.addcmul(h, decay, torch.stack(carried, dim=1).unsqueeze(2))
        else:  # in place, in this thread's reused buffers (fresh large tensors cost page faults)
            decay, h, carried = _workspace(shape, (batch, chunks, width, n), x.device)
            torch.mul(dtb.unsqueeze(-1), A[sl], out=decay).exp_()
            torch.mul(dtx, Bc, out=h)
            for t in range(1, chunk):  # every chunk at once, each from a zero state
                h[:, :, t].addcmul_(decay[:, :, t], h[:, :, t - 1])
            torch.mul(since_start, A[sl], out=decay).exp_()
            carried[:, 0].zero_()
            for c in range(1, chunks):  # the state entering each chunk
                torch.addcmul(h[:, c - 1, -1], decay[:, c - 1, -1], carried[:, c - 1], out=carried[:, c])
            h.addcmul_(decay, carried.unsqueeze(2))
        out.append(torch.einsum("bctdn,bctn->bctd", h, Cc).reshape(batch, chunks * chunk, width))
    y = torch.cat(out, dim=-1)[:, :length]
    return y + x[:, :length] * D.float()


def selective_scan_reference(x, dt, A, B, C, D) -> torch.Tensor:
    """The same scan, one position at a time (the definition; slow). In float32, or in float64
    when given float64 (the tests' exact answer)."""
    x, dt, A, B, C, D = (t.to(torch.promote_types(t.dtype, torch.float32)) for t in (x, dt, A, B, C, D))
    h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, dim=1) + x * D


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    chunk: int,
) -> torch.Tensor:
    """Mamba v2's scan in SSD form, chunk by chunk (heads leading, so every product is a
    batched matmul; C.B is computed once per group, not per head).

    Args:
        x: (batch, length, heads, headdim).
        dt: (batch, length, heads), already through softplus.
        A: (heads,), negative.
        B, C: (batch, length, groups, d_state); head h reads group h // (heads / groups).
        D: (heads,) skip.

    Returns:
        y: (batch, length, heads, headdim), float32, before the gated norm.
    """
    x, dt, A, B, C = x.float(), dt.float(), A.float(), B.float(), C.float()
    batch, length, heads, headdim = x.shape
    groups, n = B.shape[2], B.shape[3]
    per = heads // groups
    xdt_all = (x * dt.unsqueeze(-1)).permute(0, 2, 1, 3)  # (b, h, l, p)
    log_decay = (dt * A).permute(0, 2, 1)  # (b, h, l)
    Bg, Cg = B.permute(0, 2, 1, 3), C.permute(0, 2, 1, 3)  # (b, g, l, n)
    state = x.new_zeros(batch, groups, per * headdim, n)  # heads of a group side by side
    out = []
    for start in range(0, length, chunk):
        sl = slice(start, start + chunk)
        t = log_decay[..., sl].shape[-1]
        cum = torch.cumsum(log_decay[..., sl], dim=-1)  # (b, h, t): log decay since the chunk start
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        decay = torch.exp((cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(~causal, float("-inf")))
        scores = (Cg[:, :, sl] @ Bg[:, :, sl].transpose(-1, -2)).unsqueeze(2)  # (b, g, 1, t, s)
        scores = (decay.view(batch, groups, per, t, t) * scores).view(batch, heads, t, t)
        xdt = xdt_all[:, :, sl]  # (b, h, t, p)
        y = scores @ xdt
        # what the state entering the chunk adds, decayed to each position
        carried = (Cg[:, :, sl] @ state.transpose(-1, -2)).view(batch, groups, t, per, headdim)
        y = y + carried.permute(0, 1, 3, 2, 4).reshape(batch, heads, t, headdim) * torch.exp(cum).unsqueeze(
            -1
        )
        to_end = torch.exp(cum[..., -1:] - cum).unsqueeze(-1) * xdt  # (b, h, t, p)
        to_end = (
            to_end.view(batch, groups, per, t, headdim)
            .permute(0, 1, 2, 4, 3)
            .reshape(batch, groups, per * headdim, t)
        )
        end_decay = torch.exp(cum[..., -1]).view(batch, groups, per, 1).repeat_interleave(headdim, dim=2)
        state = state * end_decay.view(batch, groups, per * headdim, 1) + to_end @ Bg[:, :, sl]
        out.append(y)
    y = torch.cat(out, dim=2).permute(0, 2, 1, 3)
    return y + x * D.float().view(1, 1, -1, 1)


def ssd_scan_reference(x, dt, A, B, C, D) -> torch.Tensor:
    """Mamba v2's scan, one position at a time (the definition; slow)."""
    x, dt, A, B, C = x.float(), dt.float(), A.float(), B.float(), C.float()
    heads = x.shape[2]
    group_of = torch.arange(heads, device=x.device) // (heads // B.shape[2])
    state = x.new_zeros(x.shape[0], heads, x.shape[3], B.shape[-1])
    ys = []
    for t in range(x.shape[1]):
        Bt, Ct = B[:, t][:, group_of], C[:, t][:, group_of]  # (b, h, n)
        state = torch.exp(dt[:, t] * A)[..., None, None] * state + torch.einsum(
            "bh,bhp,bhn->bhpn", dt[:, t], x[:, t], Bt
        )
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ct))
    return torch.stack(ys, dim=1) + x * D.float().view(1, 1, -1, 1)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """mamba_ssm's softplus (float32, linear above 20)."""
    return F.softplus(x.float())


# positions per slice of `softplus_`: a few MiB of temporaries at a time
_SOFTPLUS_ROWS = 512


def softplus_(x: torch.Tensor) -> torch.Tensor:
    """`softplus` written back into a float32 (batch, length, ...) tensor without autograd, a
    slice of positions at a time (the same values, without a second full-length tensor)."""
    for start in range(0, x.shape[1], _SOFTPLUS_ROWS):
        part = x[:, start : start + _SOFTPLUS_ROWS]
        part.copy_(F.softplus(part))
    return x
