"""What can be known about a model without loading its weights, checked before a run starts.

A run that would fail in its first shard task because the model directory has no tokenizer, its
tokenizer merges bases, or CUDA is asked for on a host without it, should fail before a flow run
exists, with one line naming the field and the value, and no GPU claimed. `check_model` does the
cheap part of `loading.load_model` (device availability, config.json, the tokenizer and its
token table) and nothing more: no weights are read and no CUDA context is created.

Hub models are checked when they load (a tokenizer download at plan time would need the network
from wherever the CLI runs); local directories here.
"""

from __future__ import annotations

import os

from plantcad_flows.config import ComputeConfig, ModelConfig
from plantcad_flows.errors import DeviceError, ValidationError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")


def check_device(compute: ComputeConfig) -> None:
    """CUDA asked for on a host that has none (or fewer devices than the index).

    Raises:
        DeviceError: naming `compute.device`.
    """
    if compute.device_type != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise DeviceError("compute.device", compute.device, "CUDA is not available on this host")
    index = int(compute.device.split(":")[1]) if ":" in compute.device else 0
    if index >= torch.cuda.device_count():
        raise DeviceError(
            "compute.device", compute.device, f"only {torch.cuda.device_count()} CUDA device(s)"
        )


def check_local_model(model: ModelConfig) -> None:
    """A local model directory has a tokenizer that scoring can use: one token per base, every
    nucleotide in its vocabulary, and a mask token for a masked LM. Hub ids are left to loading.

    Raises:
        ValidationError: naming `models[NAME].path`.
    """
    directory = os.path.join(model.path, model.subfolder) if model.subfolder else model.path
    if not os.path.isdir(directory):
        return
    from transformers import AutoTokenizer

    from plantcad_flows.scoring.loading import nucleotide_token_ids
    from plantcad_flows.sequences import TokenTable

    field = f"models[{model.label}].path"
    # transformers makes an empty tokenizer of the config's class when a directory has none
    if not any(os.path.isfile(os.path.join(directory, n)) for n in TOKENIZER_FILES):
        raise ValidationError(
            field, model.path, f"no tokenizer in the model directory (none of {', '.join(TOKENIZER_FILES)})"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model.path, subfolder=model.subfolder, trust_remote_code=model.trust_remote_code
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        problem = " ".join(str(e).split())[:200]
        raise ValidationError(
            field, model.path, f"no usable tokenizer ({type(e).__name__}: {problem})"
        ) from None
    try:
        table = TokenTable(tokenizer)
        nucleotide_token_ids(tokenizer, table)
    except ValidationError as e:
        # the message of the inner error names the tokenizer; say which model it belongs to
        raise ValidationError(field, model.path, str(e).split(": ", 1)[-1]) from None
    if model.type == "mlm" and tokenizer.mask_token_id is None:
        raise ValidationError(field, model.path, "type mlm but the tokenizer has no mask token")


def check_model(model: ModelConfig, compute: ComputeConfig, scores_here: bool) -> None:
    """Everything `check_device` and `check_local_model` check; the device only when this host
    scores (no Ray address: threads or a local Ray instance)."""
    if scores_here:
        check_device(compute)
    check_local_model(model)
