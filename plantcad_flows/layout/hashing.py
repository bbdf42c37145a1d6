"""Content hashes of step configurations: what moves a cache key and what must not.

A step's identity is a small dict of the fields that change its output. Everything else
(batch size, worker count, device index, shard count, output prefix, display names) is left out
on purpose, so that re-running with more GPUs or a bigger batch reuses earlier work.
`tests/test_hashing.py` pins this down field by field.

What a model or a split *is* enters through its resolved `Identity` (commit sha or content
fingerprint, `plantcad_flows.identity`), computed once at plan time and carried by the cell:
never a branch name or a path alone, and nothing here touches the disk or the network.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from plantcad_flows import CODE_VERSION
from plantcad_flows.config import ComputeConfig, ModelConfig, SamplingConfig, SplitConfig
from plantcad_flows.identity.records import Identity


def stable_hash(fields: Any) -> str:
    """sha256 of the canonical JSON form of `fields` (sorted keys, no whitespace)."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def short_hash(fields: Any, n: int = 10) -> str:
    return stable_hash(fields)[:n]


def split_fields(split: SplitConfig, sampling: SamplingConfig, data: Identity) -> dict[str, Any]:
    """What determines a prepared (loaded, validated, sampled) split.

    The task's definition enters by its content (`TaskDef.identity_fields`, with its `version`),
    shipped or from a user's task file alike: editing a task's YAML moves its splits' and
    cells' keys and no other. (Until code version 2026.12.1 a shipped definition stood in the
    key only through the one global code version.) The family adds what it owns
    (`split_key_fields`)."""
    fields = {
        "step": "prepare_split",
        "code_version": CODE_VERSION,
        "task": split.task,
        "split": split.split,
        "source": split.source,
        "identity": data.key,
        "seq_column": split.seq_column,
        "label_column": split.label_column,
        "seq_length": split.seq_length,
        "sampling": {"rate": sampling.rate, "max_size": sampling.max_size, "seed": sampling.seed},
    }
    fields["definition"] = split.definition.identity_fields()
    fields |= split.family.split_key_fields(split)
    return fields


def precision_fields(compute: ComputeConfig) -> dict[str, str]:
    """Only what changes the numbers: device type and precision, never the index or batch."""
    return {"device_type": compute.device_type, "precision": compute.precision}


def cell_fields(
    model: ModelConfig,
    split: SplitConfig,
    sampling: SamplingConfig,
    compute: ComputeConfig,
    model_identity: Identity,
    data_identity: Identity,
    strand: str = "fwd",
) -> dict[str, Any]:
    """What determines the scores of one (model, split, strand) cell at one context. The model's
    revision enters as the commit it resolved to (in `model_identity`), never as the branch name
    the config gives. The strand enters only when it is rc, so that every forward cell keeps the
    key it had before strands were an axis; the context was always there (`context_length`).
    The task's family adds what it reads (`cell_key_fields`: the benchmark families their mask
    positions and flanking, as these keys always held; a variant set its strands)."""
    fields = {
        "step": "score_cell",
        "code_version": CODE_VERSION,
        "model": {
            "path": model.path,
            "subfolder": model.subfolder,
            "type": model.type,
            "context_length": model.context_length,
            "motif_inference_mode": model.motif_inference_mode,
            "identity": model_identity.key,
        },
        "data": split_fields(split, sampling, data_identity),
        "compute": precision_fields(compute),
    }
    if strand != "fwd":
        fields["strand"] = strand
    fields |= split.family.cell_key_fields(split)
    return fields
