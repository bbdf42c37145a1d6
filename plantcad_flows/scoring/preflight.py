"""What can be known about a model without loading its weights, checked before a run starts.

A run that would fail in its first shard task (after a minute of preparation, as a traceback per
cell) should fail before a flow run exists, with one line naming the model and the field, and no
GPU claimed. `check_model` does the cheap part of `loading.load_model` from `config.json` and the
tokenizer alone, for local directories and hub ids alike (a hub model's config and tokenizer
files, never its weights, are fetched at the commit the plan resolved):
* CUDA is asked for on a host that has it (when this host scores);
* the longest input the model will get (its `context_length`, or the split's length when
  shorter) is within the position limit its config declares (`max_position_embeddings`,
  `n_positions`, ...), when it declares one;
* transformers knows the architecture (`model_type`) and has the head the `type` needs (a
  masked-LM or causal-LM class), or the model ships its code (`auto_map`) and is trusted;
* the tokenizer has one token per base, every nucleotide in its vocabulary, and a mask token
  for a masked LM;
* a local directory's weight files are there and whole, from their headers (`weights.py`).
A model on `s3://` is checked when a worker has copied it (loading runs the same checks).
"""

from __future__ import annotations

import json
import logging
import os
import re

from plantcad_flows.config import ComputeConfig, ModelConfig, check_remote_code
from plantcad_flows.errors import DeviceError, ValidationError
from plantcad_flows.io.remote import hf_token, is_local
from plantcad_flows.io.retry import with_retries
from plantcad_flows.scoring.weights import check_weights

log = logging.getLogger(__name__)

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


POSITION_LIMIT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "max_sequence_length",
    "n_ctx",
)
# what a tokenizer and its config may need besides config.json (never weights)
HUB_FILES = (*TOKENIZER_FILES, "config.json", "special_tokens_map.json", "added_tokens.json", "merges.txt")


def model_directory(model: ModelConfig) -> str | None:
    """A local directory holding the model's config.json and tokenizer files: the model's own
    for a local model, the hub files at its resolved commit for a hub id; None for a model on an
    object store or a hub model whose files cannot be fetched from here (checked when it loads).

    Raises:
        ValidationError: naming `models[NAME].path`, a hub repo without config.json.
    """
    if not is_local(model.path):
        return None
    if os.path.isdir(model.path):
        return os.path.join(model.path, model.subfolder) if model.subfolder else model.path
    return hub_config_files(model)


def hub_config_files(model: ModelConfig) -> str | None:
    """Fetch a hub model's config.json, tokenizer files (and, when trusted, its code) at
    `model.revision`, through the hub client's cache; return the directory they are in."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import EntryNotFoundError

    api = HfApi(token=hf_token())
    what = f"fetch the config of {model.label}"
    folder = f"{model.subfolder.strip('/')}/" if model.subfolder else ""
    try:
        names = _hub_file_names(api, model.path, model.revision, what)
        wanted = [
            n
            for n in names
            if n.startswith(folder)
            and "/" not in n[len(folder) :]
            and (n[len(folder) :] in HUB_FILES or (model.trust_remote_code and n.endswith(".py")))
        ]
        if f"{folder}config.json" not in wanted:
            raise ValidationError(
                f"models[{model.label}].path",
                model.path,
                f"no {folder}config.json at revision {model.revision}",
            )
        local = [
            with_retries(lambda n=n: api.hf_hub_download(model.path, n, revision=model.revision), what)
            for n in wanted
        ]
    except (ValidationError, EntryNotFoundError):
        raise
    except Exception as e:  # offline, or the hub unreachable: loading checks the same later
        problem = " ".join(str(e).split())[:160]
        log.warning(
            "models[%s]: not checked before the run (%s); it is checked when it loads", model.label, problem
        )
        return None
    return os.path.dirname(local[wanted.index(f"{folder}config.json")])


_LISTINGS: dict[tuple[str, str], list[str]] = {}


def _hub_file_names(api, repo_id: str, revision: str | None, what: str) -> list[str]:
    """Every file path of `repo_id` at `revision`; listed once per commit in this process (a
    sweep's checkpoints are subfolders of one commit, and a commit's tree never changes)."""
    pinned = revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision) is not None
    if pinned and (repo_id, revision) in _LISTINGS:
        return _LISTINGS[(repo_id, revision)]
    tree = with_retries(lambda: list(api.list_repo_tree(repo_id, revision=revision, recursive=True)), what)
    names = [getattr(f, "path", "") for f in tree if getattr(f, "size", None) is not None]
    if pinned:
        _LISTINGS[(repo_id, revision)] = names
    return names


def longest_input(model: ModelConfig, seq_lengths: list[int]) -> int:
    """The longest sequence the model will be given: its context, or the longest split if shorter."""
    return min(model.context_length, max(seq_lengths)) if seq_lengths else model.context_length


def check_declared(model: ModelConfig, declared: dict, input_length: int) -> None:
    """What config.json alone tells: code to trust, an architecture transformers can load as
    the model's `type`, and a position limit the inputs fit.

    Raises:
        ValidationError: naming `models[NAME].trust_remote_code`, `.path`, `.type` or
        `.context_length`.
    """
    from transformers import __version__ as transformers_version
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    check_remote_code(model, declared)
    name = model.label
    auto_map = declared.get("auto_map")
    if not auto_map:  # with code of its own (trusted above), the architecture is the repo's
        model_type = declared.get("model_type")
        if not model_type:
            raise ValidationError(
                f"models[{name}].path",
                model.path,
                "config.json declares no model_type and ships no code (auto_map)",
            )
        if model_type not in CONFIG_MAPPING_NAMES:
            raise ValidationError(
                f"models[{name}].path",
                model.path,
                f"config.json model_type={model_type!r} is not known to transformers {transformers_version} "
                "and the model ships no code (auto_map)",
                "upgrade transformers, or use a model directory whose config.json maps its code",
            )
        heads = {"mlm": MODEL_FOR_MASKED_LM_MAPPING_NAMES, "clm": MODEL_FOR_CAUSAL_LM_MAPPING_NAMES}
        if model_type not in heads[model.type]:
            other = "clm" if model.type == "mlm" else "mlm"
            kind = {"mlm": "masked-LM", "clm": "causal-LM"}[model.type]
            raise ValidationError(
                f"models[{name}].type",
                model.type,
                f"transformers has no {kind} class for config.json model_type {model_type!r}",
                f"is it type {other}?" if model_type in heads[other] else None,
            )
    for key in POSITION_LIMIT_KEYS:
        limit = declared.get(key)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            if input_length > limit:
                raise ValidationError(
                    f"models[{name}].context_length",
                    model.context_length,
                    f"inputs of {input_length} bp exceed the model's position limit (config.json {key}: {limit})",
                    f"set context_length to at most {limit}",
                )
            break


def read_declared(model: ModelConfig, directory: str) -> dict:
    """config.json of `directory`, as a dict.

    Raises:
        ValidationError: naming `models[NAME].path`, when it is missing or not a JSON object.
    """
    path = os.path.join(directory, "config.json")
    try:
        with open(path) as f:
            declared = json.load(f)
    except FileNotFoundError:
        raise ValidationError(
            f"models[{model.label}].path", model.path, "no config.json in the model directory"
        ) from None
    except (OSError, ValueError) as e:
        raise ValidationError(
            f"models[{model.label}].path", model.path, f"config.json unreadable: {e}"
        ) from None
    if not isinstance(declared, dict):
        raise ValidationError(f"models[{model.label}].path", model.path, "config.json is not a JSON object")
    return declared


def check_tokenizer(model: ModelConfig, directory: str) -> None:
    """The tokenizer in `directory` can score: one token per base, every nucleotide in its
    vocabulary, and a mask token for a masked LM.

    Raises:
        ValidationError: naming `models[NAME].path`.
    """
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
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=model.trust_remote_code)
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


def check_model(
    model: ModelConfig, compute: ComputeConfig, scores_here: bool, seq_lengths: list[int] = ()
) -> None:
    """The device (only when this host scores: no Ray address, threads or a local Ray
    instance), then what config.json and the tokenizer say, for a local or hub model.

    Args:
        seq_lengths: the lengths of the splits this model will score (its inputs are the
            shorter of these and its context).
    """
    if scores_here:
        check_device(compute)
    directory = model_directory(model)
    if directory is None:
        return
    check_declared(model, read_declared(model, directory), longest_input(model, list(seq_lengths)))
    check_tokenizer(model, directory)
    if os.path.isdir(model.path):  # a hub model's weights are not fetched before the run
        check_weights(model.label, model.path, directory)
