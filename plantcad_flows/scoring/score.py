"""Zero-shot scoring: one (model, split) cell's frame of examples -> per-example probabilities.

This is where a task's family meets the model. The family (`split.family`) builds each pass over
the model as `ModelInputs` (masked positions, crops, reverse complement, the positions read) and
turns the probabilities into a score; this module runs those passes through the batching input
pipeline (`scoring.inputs.run_inputs`). The families' docstrings define each score exactly.
Stage timings go to the optional `timings` collector (a `scoring.inputs.StageTimings`) the caller
passes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from plantcad_flows.config import ComputeConfig, ModelConfig, SplitConfig, unsupported_reason
from plantcad_flows.errors import ValidationError
from plantcad_flows.families import ModelInputs
from plantcad_flows.scoring.inputs import StageTimings, run_inputs
from plantcad_flows.scoring.loading import LoadedModel
from plantcad_flows.scoring.loading import load_model as _load_model
from plantcad_flows.sequences import rows_to_str, upper

__all__ = ["load_model", "score_frame", "unsupported_reason", "StageTimings"]


def load_model(model: ModelConfig, compute: ComputeConfig) -> LoadedModel:
    """See `plantcad_flows.scoring.loading.load_model` (re-exported: part of the scoring contract)."""
    return _load_model(model, compute)


def score_frame(
    loaded: LoadedModel,
    model: ModelConfig,
    split: SplitConfig,
    frame: pd.DataFrame,
    batch_size: int,
    timings: StageTimings | None = None,
    strand: str = "fwd",
) -> pd.DataFrame:
    """Score every example of `frame` (from `data.prepare_split`) with `loaded`.

    Args:
        timings: optional collector; per-stage seconds of this call are added to it.
        strand: fwd, or rc (the reverse complement, where the split's family supports it).

    Returns:
        One row per input row, same order: row_index, label, probs (list of P*4 float32),
        bases (str of P upper-case bases), score (float; NaN where the family has none).

    Raises:
        ValidationError: an unsupported (model, split) cell, or a crop that moves the masks.
    """
    reason = unsupported_reason(model, split, strand)
    if reason:
        raise ValidationError(f"models[{model.label}].type", model.type, f"{split.key}: {reason}")

    def run(inputs: ModelInputs) -> tuple[np.ndarray, np.ndarray]:
        return run_inputs(loaded, inputs, batch_size, timings)

    probs, bases, score = split.family.score(model, split, frame, run, strand=strand)
    n = len(frame)
    return pd.DataFrame(
        {
            "row_index": frame["row_index"].to_numpy(np.int64),
            "label": frame["label"].to_numpy(np.int64),
            "probs": list(probs.reshape(n, -1)),
            "bases": rows_to_str(upper(bases)),
            "score": np.asarray(score, dtype=np.float64),
        }
    )
