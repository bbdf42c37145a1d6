"""Content hashes of step configurations: what moves a cache key and what must not.

A step's identity is a small dict of the fields that change its output. Everything else
(batch size, worker count, device index, shard count, output prefix, display names) is left out
on purpose, so that re-running with more GPUs or a bigger batch reuses earlier work.
`tests/test_hashing.py` pins this down field by field.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from plantcad_flows import CODE_VERSION
from plantcad_flows.config import ComputeConfig, ModelConfig, SamplingConfig, SplitConfig


def stable_hash(fields: Any) -> str:
    """sha256 of the canonical JSON form of `fields` (sorted keys, no whitespace)."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def short_hash(fields: Any, n: int = 10) -> str:
    return stable_hash(fields)[:n]


_EDGE = 1 << 20  # bytes read from each end of a weight file for its fingerprint


def local_model_fingerprint(path: str, subfolder: str = "") -> str | None:
    """A cheap content fingerprint of a local model directory, None for a hub id.

    A hub model is pinned by its revision; a local directory is not, and retraining into the
    same path must not serve the old model's cached scores. Names, sizes and the first and last
    MiB of every file are hashed, which is enough to tell checkpoints apart without reading GBs.
    """
    root = os.path.join(path, subfolder) if subfolder else path
    if not os.path.isdir(root):
        return None
    h = hashlib.sha256()
    for name in sorted(os.listdir(root)):
        full = os.path.join(root, name)
        if not os.path.isfile(full):
            continue
        size = os.path.getsize(full)
        h.update(f"{name}:{size}".encode())
        with open(full, "rb") as f:
            h.update(f.read(_EDGE))
            if size > 2 * _EDGE:
                f.seek(-_EDGE, os.SEEK_END)
                h.update(f.read(_EDGE))
    return h.hexdigest()[:16]


def split_fields(split: SplitConfig, sampling: SamplingConfig) -> dict[str, Any]:
    """What determines a prepared (loaded, validated, sampled) split."""
    return {
        "step": "prepare_split",
        "code_version": CODE_VERSION,
        "task": split.task,
        "split": split.split,
        "source": split.source,
        "seq_column": split.seq_column,
        "label_column": split.label_column,
        "seq_length": split.seq_length,
        "sampling": {"rate": sampling.rate, "max_size": sampling.max_size, "seed": sampling.seed},
    }


def precision_fields(compute: ComputeConfig) -> dict[str, str]:
    """Only what changes the numbers: device type and precision, never the index or batch."""
    return {"device_type": compute.device_type, "precision": compute.precision}


def cell_fields(
    model: ModelConfig, split: SplitConfig, sampling: SamplingConfig, compute: ComputeConfig
) -> dict[str, Any]:
    """What determines the scores of one (model, split) cell."""
    return {
        "step": "score_cell",
        "code_version": CODE_VERSION,
        "model": {
            "path": model.path,
            "revision": model.revision,
            "subfolder": model.subfolder,
            "type": model.type,
            "context_length": model.context_length,
            "motif_inference_mode": model.motif_inference_mode,
            "local_fingerprint": local_model_fingerprint(model.path, model.subfolder),
        },
        "data": split_fields(split, sampling),
        "mask_positions": list(split.mask_positions),
        "flanking": split.flanking,
        "compute": precision_fields(compute),
    }
