"""CUDA devices as torch sees them.

The environment report and the Ray client ask how many GPUs a machine has; torch answers when
nvidia-smi is not installed. The question is asked here so that torch stays inside `scoring/`,
and torch is imported only when the answer needs it (a dry run never does).
"""

from __future__ import annotations

import sys


def cuda_devices() -> tuple[int, str | None]:
    """(number of visible CUDA devices, name of the first), (0, None) without torch or CUDA."""
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except ImportError:
            return 0, None
    if not torch.cuda.is_available():
        return 0, None
    n = torch.cuda.device_count()
    return n, (torch.cuda.get_device_name(0) if n else None)


def device_name(device) -> str:
    """The model name of a CUDA device (what the batch-size memo is keyed by)."""
    import torch

    return torch.cuda.get_device_name(device)
