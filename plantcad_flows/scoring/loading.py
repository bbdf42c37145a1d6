"""Loading a DNA language model: device and precision, tokenizer tables, fast LM-head path.

Any Hugging Face masked or causal LM is loaded through the Auto classes; a model whose config.json
names an architecture this project implements (Caduceus: PlantCaduceus, PlantCAD2) is loaded by
our own code instead (`scoring/native.py`), never by the repository's. The device is checked
before anything is loaded, so a CPU-only host fails fast. For speed, scoring applies the LM head only at the few
positions it reads: `split_head` finds the backbone and the head module, and `load_model` checks
that backbone+head equals the full forward on a probe before trusting it (else it falls back).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from plantcad_flows.config import ComputeConfig, ModelConfig, check_remote_code, runs_natively
from plantcad_flows.data.node_cache import local_copy
from plantcad_flows.errors import DeviceError, ValidationError
from plantcad_flows.io.remote import is_local
from plantcad_flows.io.retry import with_retries
from plantcad_flows.sequences import TokenTable

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(compute: ComputeConfig) -> tuple[torch.device, torch.dtype]:
    """The torch device and dtype for `compute`.

    cpu -> fp32; cuda -> bf16 at compute capability >= 8, fp16 at >= 6, else fp32. A forced
    `compute.precision` wins.

    Raises:
        DeviceError: CUDA asked for but not available, or the device index does not exist.
    """
    device = torch.device(compute.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("compute.device", compute.device, "CUDA is not available on this host")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                "compute.device", compute.device, f"only {torch.cuda.device_count()} CUDA device(s)"
            )
        device = torch.device("cuda", index)
    if compute.precision != "auto":
        return device, _DTYPES[compute.precision]
    if device.type != "cuda":
        return device, torch.float32
    major, _ = torch.cuda.get_device_capability(device)
    if major >= 8:
        return device, torch.bfloat16
    if major >= 6:
        return device, torch.float16
    return device, torch.float32


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(backbone, LM head) when the model is `base_model` plus exactly one other child, else None."""
    backbone = getattr(model, "base_model", None)
    if backbone is None or backbone is model:
        return None
    others = [m for m in model.children() if m is not backbone]
    if len(others) != 1:
        return None
    return backbone, others[0]


@dataclass
class LoadedModel:
    """A model ready to score: the module, its tokenizer table and the ids scoring needs."""

    model: nn.Module
    tokenizer: object
    table: TokenTable
    nucleotide_ids: np.ndarray  # (4,) ids of A, C, G, T
    mask_id: int | None
    type: str  # "mlm" | "clm"
    device: torch.device
    dtype: torch.dtype
    head: tuple[nn.Module, nn.Module] | None  # (backbone, head) when the fast path is verified

    @property
    def fast_head(self) -> bool:
        return self.head is not None


def hidden_states(backbone: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    out = backbone(input_ids=input_ids)
    if isinstance(out, (tuple, list)):
        return out[0]
    return out.last_hidden_state


def full_logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=input_ids)
    return out[0] if isinstance(out, (tuple, list)) else out.logits


@torch.inference_mode()
def logits_at(loaded: LoadedModel, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits of the 4 nucleotide tokens at `positions` ((n, P) long) of each row: (n, P, 4).

    Through the fast path only the gathered hidden states meet the LM head; otherwise the full
    forward's logits are gathered.
    """
    nuc = torch.as_tensor(loaded.nucleotide_ids, device=input_ids.device)
    if loaded.head is not None:
        backbone, head = loaded.head
        h = hidden_states(backbone, input_ids)
        idx = positions.unsqueeze(-1).expand(-1, -1, h.shape[-1])
        logits = head(torch.gather(h, 1, idx))
        return logits[..., nuc]
    logits = full_logits(loaded.model, input_ids)
    idx = positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    return torch.gather(logits, 1, idx)[..., nuc]


def _verify_head(loaded: LoadedModel, length: int = 32) -> bool:
    """Whether backbone+head at gathered positions equals the full forward on a probe batch."""
    if loaded.head is None:
        return False
    gen = torch.Generator().manual_seed(0)
    ids = torch.as_tensor(loaded.nucleotide_ids)[torch.randint(0, 4, (2, length), generator=gen)]
    ids = ids.to(loaded.device)
    pos = torch.tensor([[0, length // 2, length - 1]] * 2, device=loaded.device)
    try:
        fast = logits_at(loaded, ids, pos).float()
    except Exception as e:  # noqa: BLE001 - an unrecognised structure just means no fast path
        log.info("fast LM-head path unavailable (%s); using the full forward", e)
        return False
    head, loaded.head = loaded.head, None
    full = logits_at(loaded, ids, pos).float()
    loaded.head = head
    tol = 1e-4 if loaded.dtype == torch.float32 else 3e-2
    return bool(torch.allclose(fast, full, atol=tol * max(1.0, full.abs().max().item()), rtol=tol))


def load_model(model: ModelConfig, compute: ComputeConfig) -> LoadedModel:
    """Load `model` through transformers' Auto classes onto `compute`'s device.

    Raises:
        ValidationError: before loading anything, when the model ships modelling code and
            `trust_remote_code` is false (and does not run natively), or its config.json has a
            key the native implementation does not implement.
        DeviceError: before loading anything, when the device is unavailable.
        ValidationError: a tokenizer that is not one token per base, or lacks a mask token (MLM);
            weights that do not load (naming the directory and the cause; never retried).
    """
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, PretrainedConfig

    path, subfolder = model.path, model.subfolder
    if not is_local(path):  # s3:// and other stores: a node-local copy, fetched once per version
        path, subfolder = str(local_copy(f"{path.rstrip('/')}/{subfolder}" if subfolder else path)), ""
    kwargs = dict(revision=model.revision, trust_remote_code=model.trust_remote_code)
    if subfolder:
        kwargs["subfolder"] = subfolder
    what = f"load {model.label}"  # hub downloads retry on 429 / 5xx / connection errors only
    # config.json alone (no code runs): a model that ships code is refused before the device is
    # touched. Local directories were already checked with the config; this covers hub ids.
    try:
        declared, _ = with_retries(
            lambda: PretrainedConfig.get_config_dict(path, revision=model.revision, subfolder=subfolder), what
        )
    except OSError:
        declared = {}  # no config.json: loading below fails naming the model, after the device check
    check_remote_code(model, declared)
    native, complement = runs_natively(model, declared), None
    if native:
        from plantcad_flows.scoring.native import model_files, native_spec

        # a key we do not implement fails before any download
        complement = native_spec(model, declared).complement_map
        path, subfolder = model_files(model, path, subfolder), ""
        # the tokenizer too is read without the repository's code
        kwargs = dict(trust_remote_code=False)
    device, dtype = resolve_device(compute)
    from plantcad_flows.scoring.preflight import native_config_quiet, tokenizer_tables

    with native_config_quiet(native):
        tokenizer = with_retries(lambda: AutoTokenizer.from_pretrained(path, **kwargs), what)
    # the preflight's own tokenizer checks, before any weights load
    table, nucleotide_ids = tokenizer_tables(model, tokenizer, complement)
    if native:
        from plantcad_flows.scoring.native import load_native

        module = load_native(model, declared, path, device, dtype)
    else:
        auto = AutoModelForMaskedLM if model.type == "mlm" else AutoModelForCausalLM
        try:
            module = with_retries(lambda: auto.from_pretrained(path, dtype=dtype, **kwargs), what)
        except Exception as e:  # weights that cannot load will not load on a retry: one line, the files
            where = (
                os.path.abspath(os.path.join(path, subfolder))
                if os.path.isdir(path)
                else f"{path}@{model.revision}"
            )
            cause = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")[:300]
            raise ValidationError(
                f"models[{model.label}].path",
                model.path,
                f"cannot load the weights in {where}: {type(e).__name__}: {cause}",
            ) from e
        module = module.to(device).eval()
    loaded = LoadedModel(
        model=module,
        tokenizer=tokenizer,
        table=table,
        nucleotide_ids=nucleotide_ids,
        mask_id=tokenizer.mask_token_id,
        type=model.type,
        device=device,
        dtype=dtype,
        head=split_head(module),
    )
    if not _verify_head(loaded):
        loaded.head = None
    log.info(
        "loaded %s (%s) on %s as %s; fast LM head: %s",
        model.label,
        model.type,
        device,
        dtype,
        loaded.fast_head,
    )
    return loaded
