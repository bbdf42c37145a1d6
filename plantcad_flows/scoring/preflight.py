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
  masked-LM or causal-LM class), or the model ships its code (`auto_map`) and is trusted, and
  every package that code imports is installed here;
* or this project implements the architecture natively (Caduceus: PlantCaduceus, PlantCAD2):
  then every config.json key is one we implement, the type is mlm, and there is no position
  limit (Mamba reads any length);
* the tokenizer has one token per base, every nucleotide in its vocabulary, and a mask token
  for a masked LM; for an RC-equivariant (RCPS) model, the config's complement map pairs the
  tokenizer's a with t and c with g;
* a local directory's weight files are there and whole, from their headers (`weights.py`).
A model on `s3://` is checked when a worker has copied it (loading runs the same checks).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import logging
import os
import re
import sys

import numpy as np

from plantcad_flows.config import (
    NATIVE_MODEL_TYPES,
    ComputeConfig,
    ModelConfig,
    check_remote_code,
    runs_natively,
)
from plantcad_flows.errors import DeviceError, ValidationError
from plantcad_flows.io.remote import hf_token, is_local
from plantcad_flows.io.retry import with_retries
from plantcad_flows.scoring.weights import check_weights
from plantcad_flows.sequences import NUCLEOTIDES, TokenTable

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
    if runs_natively(model, declared):
        from plantcad_flows.scoring.native import native_spec

        native_spec(model, declared)
        return  # Mamba has no position limit
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


def _top_level_imports(source: str) -> set[str]:
    """Packages a module imports unconditionally (not inside try/except or a function)."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def check_remote_imports(model: ModelConfig, directory: str, declared: dict) -> None:
    """The trusted code a model ships imports only packages installed on this host.

    Raises:
        ValidationError: naming `models[NAME].path`, the file and the missing package.
    """
    if not model.trust_remote_code or not declared.get("auto_map"):
        return
    for file in sorted(os.listdir(directory)):
        if not file.endswith(".py"):
            continue
        try:
            with open(os.path.join(directory, file)) as f:
                imports = _top_level_imports(f.read())
        except (OSError, SyntaxError, ValueError):
            continue  # transformers reports it, naming the file, when it loads
        local = {n[:-3] for n in os.listdir(directory) if n.endswith(".py")}
        for package in sorted(imports - local - set(sys.builtin_module_names)):
            if importlib.util.find_spec(package) is None:
                native = declared.get("model_type") in NATIVE_MODEL_TYPES
                hint = "use implementation: native, which needs no code of the model's" if native else None
                raise ValidationError(
                    f"models[{model.label}].path",
                    model.path,
                    f"its code ({file}) imports {package}, which is not installed on this host",
                    hint,
                )


def nucleotide_token_ids(tokenizer, table: TokenTable) -> np.ndarray:
    """Token ids of A, C, G, T, found case-insensitively in the vocabulary.

    When both cases are in the vocabulary, the one the tokenizer itself produces for the base wins.

    Raises:
        ValidationError: a base has no token.
    """
    vocab = tokenizer.get_vocab()
    ids = []
    for base in NUCLEOTIDES:
        candidates = {vocab[k] for k in vocab if k.lower() == base.lower()}
        if not candidates:
            raise ValidationError("models[].path", base, "nucleotide missing from the tokenizer vocabulary")
        produced = int(table.lut[ord(base.lower())])
        ids.append(produced if produced in candidates else min(candidates))
    return np.array(ids, dtype=np.int64)


def _check_complement(model: ModelConfig, tokenizer, table, complement: tuple[int, ...]) -> None:
    a, c, g, t = (int(i) for i in nucleotide_token_ids(tokenizer, table))
    pairs = {a: t, t: a, c: g, g: c}
    for token, partner in pairs.items():
        if token >= len(complement) or complement[token] != partner:
            raise ValidationError(
                f"models[{model.label}].path",
                model.path,
                f"config.json complement_map sends token {token} to "
                f"{complement[token] if token < len(complement) else None}, the tokenizer's complement is {partner}",
            )


class _NativeConfigNotice(logging.Filter):
    """Drops transformers' notice that a config.json of a type it does not ship (`caduceus`)
    "instantiates a model of type ``": AutoTokenizer reads config.json to pick a class, and for a
    model this project runs natively that is expected, not a problem to show the user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "to instantiate a model of type ``" not in record.getMessage()


@contextlib.contextmanager
def native_config_quiet(native: bool):
    """While a natively run model's tokenizer loads, hold back `_NativeConfigNotice`'s notice."""
    if not native:
        yield
        return
    logger, notice = logging.getLogger("transformers.configuration_utils"), _NativeConfigNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def check_tokenizer(
    model: ModelConfig, directory: str, native: bool = False, complement: tuple[int, ...] | None = None
) -> None:
    """The tokenizer in `directory` can score: one token per base, every nucleotide in its
    vocabulary, and a mask token for a masked LM; `complement` (an RCPS model's map of token
    ids), when given, pairs its a with t and c with g.

    Raises:
        ValidationError: naming `models[NAME].path`.
    """
    from transformers import AutoTokenizer

    field = f"models[{model.label}].path"
    # transformers makes an empty tokenizer of the config's class when a directory has none
    if not any(os.path.isfile(os.path.join(directory, n)) for n in TOKENIZER_FILES):
        raise ValidationError(
            field, model.path, f"no tokenizer in the model directory (none of {', '.join(TOKENIZER_FILES)})"
        )
    try:
        # a natively run model's tokenizer is read without the repository's code, as it loads
        with native_config_quiet(native):
            tokenizer = AutoTokenizer.from_pretrained(
                directory, trust_remote_code=model.trust_remote_code and not native
            )
    except (OSError, ValueError, KeyError, TypeError) as e:
        problem = " ".join(str(e).split())[:200]
        raise ValidationError(
            field, model.path, f"no usable tokenizer ({type(e).__name__}: {problem})"
        ) from None
    tokenizer_tables(model, tokenizer, complement)


def tokenizer_tables(model: ModelConfig, tokenizer, complement: tuple[int, ...] | None = None):
    """The checks a loaded tokenizer must pass, shared by the preflight and the loader: one
    token per base, every nucleotide in the vocabulary, a mask token for a masked LM, and an RCPS
    model's `complement` map pairing a with t and c with g.

    Returns:
        (the tokenizer's `TokenTable`, the (4,) token ids of A, C, G, T).

    Raises:
        ValidationError: naming `models[NAME].path`.
    """
    field = f"models[{model.label}].path"
    try:
        table = TokenTable(tokenizer)
        ids = nucleotide_token_ids(tokenizer, table)
    except ValidationError as e:
        # the message of the inner error names the tokenizer; say which model it belongs to
        raise ValidationError(field, model.path, str(e).split(": ", 1)[-1]) from None
    if model.type == "mlm" and tokenizer.mask_token_id is None:
        raise ValidationError(field, model.path, "type mlm but the tokenizer has no mask token")
    if complement is not None:
        _check_complement(model, tokenizer, table, complement)
    return table, ids


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
    declared = read_declared(model, directory)
    check_declared(model, declared, longest_input(model, list(seq_lengths)))
    complement, native = None, runs_natively(model, declared)
    if native:
        from plantcad_flows.scoring.native import native_spec, use_kernels

        complement = native_spec(model, declared).complement_map
        if scores_here and model.implementation == "kernels":
            import torch

            use_kernels(model, torch.device(compute.device_type))
    else:
        check_remote_imports(model, directory, declared)
    check_tokenizer(model, directory, native, complement)
    if os.path.isdir(model.path):  # a hub model's weights are not fetched before the run
        check_weights(model.label, model.path, directory)
