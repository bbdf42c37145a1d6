"""The Mamba mixers and the wrappers that make them bidirectional and RC-equivariant.

`Mamba` (v1) and `Mamba2` (v2) hold the parameters under mamba_ssm's names (`in_proj`,
`conv1d`, `x_proj`, `dt_proj`, `A_log`, `D`, `dt_bias`, `norm`, `out_proj`), so a Caduceus
checkpoint loads into them as it is. Their scans run through `scan` (plain PyTorch) unless
`use_kernels` was set on a CUDA host where mamba_ssm imports (`kernels.py`).

`BiMambaWrapper` runs `mamba_fwd` on the sequence and `mamba_rev` on the reversed sequence and
adds (or multiplies) the results; with weight tying the two share in_proj and out_proj.
`RCPSWrapper` runs its submodule on the first channel half and on the reverse complement of the
second half (length and channels flipped), and flips that output back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plantcad_flows.architectures.caduceus import kernels
from plantcad_flows.architectures.caduceus.config import CaduceusSpec, MambaSpec
from plantcad_flows.architectures.caduceus.scan import selective_scan, softplus, softplus_, ssd_scan


def in_place_ok() -> bool:
    """No autograd: intermediates may be overwritten in place, so a long window holds fewer
    full-length tensors at once (the function is the same)."""
    return not torch.is_grad_enabled()


def _causal_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """Depthwise causal conv + SiLU over (batch, length, channels), kept in that layout: one
    multiply-add per tap over the shifted sequence (no transposed copies), so the output is
    contiguous for the projections and the scan that read it."""
    weight = conv.weight[:, 0, :]  # (channels, taps); tap -1 meets the current position
    taps = weight.shape[1]
    out = x * weight[:, -1]
    if conv.bias is not None:
        out += conv.bias
    for back in range(1, min(taps, x.shape[1] + 1)):
        out[:, back:].addcmul_(x[:, :-back], weight[:, -1 - back])
    return F.silu(out, inplace=in_place_ok())


class Mamba(nn.Module):
    """Mamba v1 mixer: in_proj, causal conv + SiLU, x_proj into (dt, B, C), dt_proj + softplus,
    selective scan with the D skip, SiLU(z) gate, out_proj."""

    def __init__(self, spec: MambaSpec):
        super().__init__()
        d_inner, n = spec.d_inner, spec.d_state
        self.dt_rank, self.d_state, self.d_inner = spec.dt_rank, n, d_inner
        self.in_proj = nn.Linear(spec.d_model, 2 * d_inner, bias=spec.bias)
        self.conv1d = nn.Conv1d(
            d_inner, d_inner, spec.d_conv, groups=d_inner, padding=spec.d_conv - 1, bias=spec.conv_bias
        )
        self.x_proj = nn.Linear(d_inner, spec.dt_rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(spec.dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, spec.d_model, bias=spec.bias)
        self.use_kernels = False

    def _in_proj(self, hidden_states: torch.Tensor, part: int) -> torch.Tensor:
        """One half of in_proj (0: x, 1: z): z is computed after the scan, so the two are never
        alive together at full length."""
        rows = slice(part * self.d_inner, (part + 1) * self.d_inner)
        bias = self.in_proj.bias[rows] if self.in_proj.bias is not None else None
        return F.linear(hidden_states, self.in_proj.weight[rows], bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self._in_proj(hidden_states, 0)
        if self.use_kernels:
            y = kernels.mamba_v1_inner(self, x, self._in_proj(hidden_states, 1))
        else:
            x = _causal_conv(self.conv1d, x)
            dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
            # the bias joins in float32, inside the softplus, as mamba_ssm's scan adds it
            dt = F.linear(dt, self.dt_proj.weight).float()
            lean = in_place_ok()
            if lean:  # in place: one full-length tensor for dt, and y written over x
                dt = softplus_(dt.add_(self.dt_proj.bias.float()))
            else:
                dt = softplus(dt + self.dt_proj.bias.float())
            y = selective_scan(x, dt, -torch.exp(self.A_log.float()), B, C, self.D, overwrite_x=lean)
            del x, dt
            z = F.silu(self._in_proj(hidden_states, 1).float(), inplace=lean)
            y = y.mul_(z) if lean else y * z
        return self.out_proj(y.to(hidden_states.dtype))


class RMSNormGated(nn.Module):
    """Mamba v2's output norm: RMSNorm of `x * silu(z)` over each group of channels."""

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.group_size, self.eps = group_size, eps

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = x.float() * F.silu(z.float())
        grouped = x.unflatten(-1, (-1, self.group_size))
        grouped = grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + self.eps)
        return grouped.flatten(-2) * self.weight.float()


class Mamba2(nn.Module):
    """Mamba v2 mixer: in_proj into (z, xBC, dt), causal conv + SiLU over xBC, SSD scan per head
    with dt_bias and the D skip, gated RMSNorm (or a SiLU(z) gate), out_proj."""

    def __init__(self, spec: MambaSpec):
        super().__init__()
        d_inner, g, n, h = spec.d_inner, spec.ngroups, spec.d_state, spec.nheads
        self.spec = spec
        self.in_proj = nn.Linear(spec.d_model, 2 * d_inner + 2 * g * n + h, bias=spec.bias)
        conv_dim = d_inner + 2 * g * n
        self.conv1d = nn.Conv1d(
            conv_dim, conv_dim, spec.d_conv, groups=conv_dim, padding=spec.d_conv - 1, bias=spec.conv_bias
        )
        self.dt_bias = nn.Parameter(torch.zeros(h))
        self.A_log = nn.Parameter(torch.log(torch.linspace(1, 16, h)))
        self.D = nn.Parameter(torch.ones(h))
        if spec.rmsnorm:
            self.norm = RMSNormGated(d_inner, group_size=d_inner // g)
        self.out_proj = nn.Linear(d_inner, spec.d_model, bias=spec.bias)
        self.use_kernels = False

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        s = self.spec
        gn = s.ngroups * s.d_state
        z, xbc, dt = self.in_proj(hidden_states).split([s.d_inner, s.d_inner + 2 * gn, s.nheads], dim=-1)
        xbc = _causal_conv(self.conv1d, xbc)
        x, B, C = xbc.split([s.d_inner, gn, gn], dim=-1)
        x = x.unflatten(-1, (s.nheads, s.headdim))
        B, C = B.unflatten(-1, (s.ngroups, s.d_state)), C.unflatten(-1, (s.ngroups, s.d_state))
        dt = softplus(dt.float() + self.dt_bias.float())
        A = -torch.exp(self.A_log.float())
        if self.use_kernels:
            y = kernels.ssd(x, dt, A, B, C, self.D, s.chunk_size)
        else:
            y = ssd_scan(x, dt, A, B, C, self.D, s.chunk_size)
        y = y.flatten(-2)
        y = self.norm(y, z) if s.rmsnorm else y * F.silu(z.float())
        return self.out_proj(y.to(hidden_states.dtype))


class BiMambaWrapper(nn.Module):
    """The forward mixer plus, when bidirectional, the reverse one run on the flipped sequence."""

    def __init__(self, spec: CaduceusSpec):
        super().__init__()
        mixer = Mamba if spec.mamba.version == "v1" else Mamba2
        self.strategy = spec.bidirectional_strategy
        self.weight_tie = spec.bidirectional and spec.bidirectional_weight_tie
        self.mamba_fwd = mixer(spec.mamba)
        self.mamba_rev = mixer(spec.mamba) if spec.bidirectional else None
        self.tie_weights()

    def tied(self) -> list[tuple[str, str]]:
        """(reverse name, forward name) of each tensor the reverse mixer shares."""
        if not self.weight_tie:
            return []
        pairs = []
        for proj in ("in_proj", "out_proj"):
            for kind in ("weight", "bias"):
                if getattr(self.mamba_fwd, proj).bias is not None or kind == "weight":
                    pairs.append((f"mamba_rev.{proj}.{kind}", f"mamba_fwd.{proj}.{kind}"))
        return pairs

    def tie_weights(self) -> None:
        for rev, fwd in self.tied():
            module, name = rev.rsplit(".", 1)
            setattr(self.get_submodule(module), name, self.get_parameter(fwd))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = self.mamba_fwd(hidden_states)
        if self.mamba_rev is None:
            return out
        rev = self.mamba_rev(hidden_states.flip(1)).flip(1)
        if in_place_ok():  # out is this call's own fresh tensor
            return out.add_(rev) if self.strategy == "add" else out.mul_(rev)
        return out + rev if self.strategy == "add" else out * rev


# tokens up to which an RCPS layer runs both strands as one batch (fewer, larger calls); beyond,
# one after the other, so a long window holds one strand's activations at a time
STRANDS_TOGETHER = 4096


def rc(x: torch.Tensor) -> torch.Tensor:
    """Reverse complement of RCPS channels: flip length and channels."""
    return x.flip(-2, -1)


class RCPSWrapper(nn.Module):
    """Its submodule on the first channel half, and on the reverse complement of the second."""

    def __init__(self, submodule: nn.Module):
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half, batch = x.shape[-1] // 2, x.shape[0]
        if batch * x.shape[1] > STRANDS_TOGETHER:  # long windows: one strand at a time, half the memory
            return torch.cat([self.submodule(x[..., :half]), rc(self.submodule(rc(x[..., half:])))], dim=-1)
        # both strands through the one submodule as one batch (half the calls, same function)
        out = self.submodule(torch.cat([x[..., :half], rc(x[..., half:])], dim=0))
        return torch.cat([out[:batch], rc(out[batch:])], dim=-1)
