"""Models this project implements itself (`plantcad_flows.architectures`), loaded without the
repository's code: config.json read into a spec, the weight files read strictly.

`load_native` is `load_model`'s branch for them: a hub model's config, tokenizer and weight files
(never its `.py` files) are fetched at the revision, the spec comes from config.json, and the
weights load into our modules. Whether mamba_ssm's kernels run the scans is decided here
(`implementation: kernels`, or `auto` on CUDA when they import); the function is the same.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from plantcad_flows.architectures.caduceus import UnsupportedConfig, parse_config
from plantcad_flows.architectures.caduceus import kernels as caduceus_kernels
from plantcad_flows.architectures.caduceus.weights import CheckpointError, load_caduceus
from plantcad_flows.config import ModelConfig
from plantcad_flows.errors import DeviceError, ValidationError
from plantcad_flows.io.remote import hf_token, is_local
from plantcad_flows.io.retry import with_retries

log = logging.getLogger(__name__)

# what a native load reads from a hub repo: never its code
NATIVE_FILES = ("*.json", "*.safetensors", "pytorch_model.bin", "tokenizer.model", "vocab.txt", "merges.txt")


def native_spec(model: ModelConfig, declared: dict):
    """The architecture spec of `model`'s config.json.

    Raises:
        ValidationError: naming `models[NAME].path` and the config.json key not implemented,
            or `models[NAME].type` when it is not mlm.
    """
    try:
        spec = parse_config(declared)
    except UnsupportedConfig as e:
        raise ValidationError(
            f"models[{model.label}].path", model.path, f"{e} (native Caduceus)", "set implementation: remote"
        ) from None
    if model.type != "mlm":
        raise ValidationError(
            f"models[{model.label}].type", model.type, "Caduceus is a masked LM", "is it type mlm?"
        )
    return spec


def use_kernels(model: ModelConfig, device: torch.device) -> bool:
    """Whether mamba_ssm's kernels run the scans: asked for, or `auto` on CUDA where they import.

    Raises:
        DeviceError: `implementation: kernels` where they cannot run.
    """
    if model.implementation == "kernels":
        missing = caduceus_kernels.available()
        if missing is not None or device.type != "cuda":
            raise DeviceError(
                f"models[{model.label}].implementation",
                "kernels",
                f"mamba_ssm's kernels need {missing or 'a CUDA device'} on this host",
            )
        return True
    return model.implementation == "auto" and device.type == "cuda" and caduceus_kernels.available() is None


def model_files(model: ModelConfig, path: str, subfolder: str) -> str:
    """A local directory with the model's config, tokenizer and weights (a hub snapshot of
    those files only, at the model's revision)."""
    if is_local(path) and os.path.isdir(path):
        return os.path.join(path, subfolder) if subfolder else path
    from huggingface_hub import snapshot_download

    folder = f"{subfolder.strip('/')}/" if subfolder else ""
    local = with_retries(
        lambda: snapshot_download(
            path,
            revision=model.revision,
            allow_patterns=[folder + p for p in NATIVE_FILES],
            token=hf_token(),
        ),
        f"load {model.label}",
    )
    return os.path.join(local, subfolder) if subfolder else local


def load_native(
    model: ModelConfig, declared: dict, directory: str, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """Our own module for `model`, its weights loaded, on `device` in `dtype`, in eval mode.

    Raises:
        ValidationError: config.json or the checkpoint does not fit the architecture (naming
            the key or the tensor).
    """
    spec = native_spec(model, declared)
    try:
        module = load_caduceus(directory, spec)
    except CheckpointError as e:
        raise ValidationError(f"models[{model.label}].path", model.path, f"checkpoint tensor {e}") from None
    except FileNotFoundError as e:
        raise ValidationError(f"models[{model.label}].path", model.path, str(e)) from None
    module = module.to(device=device, dtype=dtype)
    module.tie_weights()
    kernels = use_kernels(model, device)
    module.use_kernels(kernels)
    log.info(
        "models[%s]: native Caduceus (%s), scans: %s",
        model.label,
        spec.mamba.version,
        "mamba_ssm kernels" if kernels else "native",
    )
    return module.eval()
