"""The two state-space scans, each as what runs (chunked) and as the reference (sequential).

Mamba v1's selective scan keeps a state of (channels, d_state) per sequence,
`h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * x_t`, `y_t = <C_t, h_t> + D * x_t`. Its decay
differs per channel and state, so no matmul form exists; `selective_scan` cuts the sequence into
chunks, runs a log-depth (doubling) scan inside each chunk and carries the state between chunks.
Only one chunk's (batch, chunk, channels, d_state) tensor is ever alive: an 8 kb window never
materialises its whole (batch, channels, length, state) tensor.

Mamba v2's decay is one scalar per head, so the scan within a chunk is a masked matmul (the
"state space dual" form of Dao and Gu, 2024) and only the state crosses chunk borders;
`ssd_scan` loops over chunks, not positions.

Both run in float32 whatever the model's dtype, as mamba_ssm's kernels accumulate. The
sequential scans (`selective_scan_reference`, `ssd_scan_reference`) are the readable definition
the tests compare against; nothing else runs them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

V1_CHUNK = 64


def _doubling_scan(decay: torch.Tensor, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive scan of `h_t = decay_t * h_{t-1} + inputs_t` along dim 1 from h = 0, in
    log2(T) steps; also the running product of the decays (what multiplies a carried-in state)."""
    h, a = inputs, decay
    step, length = 1, inputs.shape[1]
    while step < length:
        h = torch.cat([h[:, :step], torch.addcmul(h[:, step:], a[:, step:], h[:, :-step])], dim=1)
        a = torch.cat([a[:, :step], a[:, step:] * a[:, :-step]], dim=1)
        step *= 2
    return h, a


def selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    chunk: int = V1_CHUNK,
) -> torch.Tensor:
    """Mamba v1's scan, chunked.

    Args:
        x: (batch, length, channels) the conv output.
        dt: (batch, length, channels) step sizes, already through softplus.
        A: (channels, d_state), negative.
        B, C: (batch, length, d_state).
        D: (channels,) skip.

    Returns:
        y: (batch, length, channels), float32, before the gate.
    """
    x, dt, B, C = x.float(), dt.float(), B.float(), C.float()
    batch, length, channels = x.shape
    state = x.new_zeros(batch, channels, A.shape[1])
    A = A.float()
    out = []
    for start in range(0, length, chunk):
        sl = slice(start, start + chunk)
        dt_c = dt[:, sl]
        decay = torch.exp(dt_c.unsqueeze(-1) * A)  # (b, t, d, n)
        inputs = (dt_c * x[:, sl]).unsqueeze(-1) * B[:, sl].unsqueeze(2)
        h, carry = _doubling_scan(decay, inputs)
        h = torch.addcmul(h, carry, state.unsqueeze(1))
        out.append(torch.einsum("btdn,btn->btd", h, C[:, sl]))
        state = h[:, -1]
    y = torch.cat(out, dim=1)
    return y + x * D.float()


def selective_scan_reference(x, dt, A, B, C, D) -> torch.Tensor:
    """The same scan, one position at a time (the definition; slow)."""
    x, dt, A, B, C = x.float(), dt.float(), A.float(), B.float(), C.float()
    h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, dim=1) + x * D.float()


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    chunk: int,
) -> torch.Tensor:
    """Mamba v2's scan in SSD form, chunk by chunk.

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
    group_of = torch.arange(heads, device=x.device) // (heads // B.shape[2])
    state = x.new_zeros(batch, heads, headdim, B.shape[-1])
    out = []
    for start in range(0, length, chunk):
        sl = slice(start, start + chunk)
        t = x[:, sl].shape[1]
        cum = torch.cumsum(dt[:, sl] * A, dim=1)  # (b, t, h): log of the decay since the chunk start
        seg = cum.unsqueeze(2) - cum.unsqueeze(1)  # (b, t_out, t_in, h)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        decay = torch.exp(seg.masked_fill(~causal[None, :, :, None], float("-inf")))
        Bh, Ch = B[:, sl][:, :, group_of], C[:, sl][:, :, group_of]  # (b, t, h, n)
        xdt = x[:, sl] * dt[:, sl].unsqueeze(-1)
        scores = torch.einsum("bthn,bshn->btsh", Ch, Bh) * decay
        y = torch.einsum("btsh,bshp->bthp", scores, xdt)
        y = y + torch.einsum("bthn,bhpn->bthp", Ch, state) * torch.exp(cum).unsqueeze(-1)
        to_end = torch.exp(cum[:, -1:] - cum)  # (b, t, h)
        state = state * torch.exp(cum[:, -1]).unsqueeze(-1).unsqueeze(-1) + torch.einsum(
            "bth,bthn,bthp->bhpn", to_end, Bh, xdt
        )
        out.append(y)
    return torch.cat(out, dim=1) + x * D.float().view(1, 1, -1, 1)


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
