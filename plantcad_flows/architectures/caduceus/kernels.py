"""mamba_ssm's CUDA kernels for the same weights, where they import (`implementation: kernels`).

The native scans in `scan.py` stay the reference; these swap in only the scan (and, for v1, the
causal conv when causal-conv1d imports), so a model switches between the two without reloading.
Nothing here is imported unless a model is loaded with kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def available() -> str | None:
    """None when the kernels can run here, else what is missing (one phrase)."""
    if not torch.cuda.is_available():
        return "CUDA"
    try:
        import mamba_ssm.ops.selective_scan_interface  # noqa: F401
        import mamba_ssm.ops.triton.ssd_combined  # noqa: F401
    except ImportError as e:
        return f"mamba_ssm ({e})"
    return None


def mamba_v1_inner(mixer, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Conv, projections and selective scan of a v1 mixer through mamba_ssm's kernel;
    (batch, length, channels) in, gated output (batch, length, channels) out."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    length = x.shape[1]
    xt = x.transpose(1, 2)
    try:
        from causal_conv1d import causal_conv1d_fn

        xt = causal_conv1d_fn(xt, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, activation="silu")
    except ImportError:
        xt = F.silu(mixer.conv1d(xt)[..., :length])
    dt, B, C = mixer.x_proj(xt.transpose(1, 2)).split([mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
    dt = F.linear(dt, mixer.dt_proj.weight).transpose(1, 2)
    y = selective_scan_fn(
        xt,
        dt.contiguous(),
        -torch.exp(mixer.A_log.float()),
        B.transpose(1, 2).contiguous(),
        C.transpose(1, 2).contiguous(),
        mixer.D.float(),
        z=z.transpose(1, 2).contiguous(),
        delta_bias=mixer.dt_proj.bias.float(),
        delta_softplus=True,
    )
    return y.transpose(1, 2)


def ssd(x, dt, A, B, C, D, chunk: int) -> torch.Tensor:
    """mamba_ssm's chunked SSD (Triton) on already-softplussed step sizes."""
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    y = mamba_chunk_scan_combined(
        x.contiguous(), dt.contiguous(), A, B.contiguous(), C.contiguous(), chunk, D=D.float()
    )
    return y.float()
