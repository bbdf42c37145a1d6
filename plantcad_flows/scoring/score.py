"""Zero-shot scoring: one (model, split) cell's frame of examples -> per-example probabilities.

This is where the benchmark's definitions meet the model (see docs/ARCHITECTURE.md for the
frame contract):

* Masked families (conservation, motif, core/non-core): MLMs see the mask token at every masked
  position at once; CLMs see the unmasked sequence and position i is read from the logits at
  i-1. CLM modes: `fwd_only`; `rc_only` runs on the reverse complement, reading the mirrored
  position L-1-i (from logits at L-2-i), and flips back by swapping A<->T, C<->G (probabilities
  are gathered in the original position order, which is the "reverse the positions" step);
  `fwd_rc_avg` is the mean of the two.
* Structural variants (MLM only): both RefSeq and MutSeq run unmasked. The read positions are the
  2F central MutSeq bases and the matching RefSeq bases (1-based left-F..left-1, right+1..right+F).
  After a centre crop, a RefSeq position that falls outside the model input gets NaN
  probabilities and contributes 0 to the score (as does a non-ACGT base).

Sequences longer than the model's context are centre-cropped and positions shifted by the trim.
Stage timings go to the optional `timings` collector (a `scoring.inputs.StageTimings`) the caller passes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from plantcad_flows.benchmark.registry import Family
from plantcad_flows.config import (
    ComputeConfig,
    ModelConfig,
    SplitConfig,
    check_mask_positions,
    unsupported_reason,
)
from plantcad_flows.data.sequences import crop_plan, rows_to_str, upper
from plantcad_flows.errors import ValidationError
from plantcad_flows.results.metrics import reference_scores, sv_scores
from plantcad_flows.scoring.inputs import ModelInputs, StageTimings, run_inputs
from plantcad_flows.scoring.loading import LoadedModel
from plantcad_flows.scoring.loading import load_model as _load_model

__all__ = ["load_model", "score_frame", "unsupported_reason", "StageTimings"]


def load_model(model: ModelConfig, compute: ComputeConfig) -> LoadedModel:
    """See `plantcad_flows.scoring.loading.load_model` (re-exported: part of the scoring contract)."""
    return _load_model(model, compute)


def _masked_probs(
    loaded: LoadedModel,
    model: ModelConfig,
    split: SplitConfig,
    seqs,
    batch_size: int,
    timings: StageTimings | None,
) -> tuple[np.ndarray, np.ndarray]:
    plan = crop_plan(split.seq_length, model.context_length)
    length = plan.out_length
    masks = plan.shift(split.mask_positions)
    check_mask_positions(
        f"models[{model.label}].context_length (cropped masks of {split.key})", tuple(masks.tolist()), length
    )
    base_positions = np.asarray(split.mask_positions, dtype=np.int64)[None, :]
    everywhere = np.ones_like(masks, dtype=bool)[None, :]

    def run(gather: np.ndarray, valid: np.ndarray, reverse: bool, mask: np.ndarray | None):
        inp = ModelInputs(
            seqs, plan, reverse, mask, gather[None, :], valid[None, :] & everywhere, base_positions
        )
        return run_inputs(loaded, inp, batch_size, timings)

    if loaded.type == "mlm":
        return run(masks, everywhere[0], False, masks)
    mode = model.motif_inference_mode
    results = []
    if mode in ("fwd_only", "fwd_rc_avg"):
        results.append(run(masks - 1, masks >= 1, False, None))
    if mode in ("rc_only", "fwd_rc_avg"):
        mirrored = length - 1 - masks
        results.append(run(mirrored - 1, mirrored >= 1, True, None))
    if len(results) == 1:
        return results[0]
    stacked = np.stack([r[0] for r in results])
    with np.errstate(invalid="ignore"):
        avg = np.nanmean(stacked, axis=0) if np.isnan(stacked).any() else stacked.mean(axis=0)
    return avg.astype(np.float32), results[0][1]


def _sv_probs(
    loaded: LoadedModel,
    model: ModelConfig,
    split: SplitConfig,
    frame: pd.DataFrame,
    batch_size: int,
    timings: StageTimings | None,
):
    f, length = split.flanking, split.seq_length
    plan = crop_plan(length, model.context_length)
    mut_pos = np.arange(length // 2 - f, length // 2 + f, dtype=np.int64)[None, :]
    left = frame["left"].to_numpy(np.int64)[:, None]
    right = frame["right"].to_numpy(np.int64)[:, None]
    steps = np.arange(f, dtype=np.int64)[None, :]
    # 1-based left-F..left-1 and right+1..right+F, as 0-based indices.
    ref_pos = np.concatenate([left - f - 1 + steps, right + steps], axis=1)

    def run(column: str, positions: np.ndarray):
        shifted = plan.shift(positions)
        inp = ModelInputs(frame[column].tolist(), plan, False, None, shifted, plan.inside(shifted), positions)
        return run_inputs(loaded, inp, batch_size, timings)

    mut_probs, mut_bases = run("mut_seq", mut_pos)
    ref_probs, ref_bases = run("ref_seq", ref_pos)
    return mut_probs, mut_bases, ref_probs, ref_bases


def score_frame(
    loaded: LoadedModel,
    model: ModelConfig,
    split: SplitConfig,
    frame: pd.DataFrame,
    batch_size: int,
    timings: StageTimings | None = None,
) -> pd.DataFrame:
    """Score every example of `frame` (from `data.prepare_split`) with `loaded`.

    Args:
        timings: optional collector; per-stage seconds of this call are added to it.

    Returns:
        One row per input row, same order: row_index, label, probs (list of P*4 float32),
        bases (str of P upper-case bases), score (float; NaN for motif recovery).

    Raises:
        ValidationError: an unsupported (model, split) cell, or a crop that moves the masks.
    """
    reason = unsupported_reason(model, split)
    if reason:
        raise ValidationError(f"models[{model.label}].type", model.type, f"{split.key}: {reason}")
    if split.family == Family.STRUCTURAL_VARIANT:
        mut_probs, mut_bases, ref_probs, ref_bases = _sv_probs(
            loaded, model, split, frame, batch_size, timings
        )
        score = sv_scores(mut_probs, ref_probs, mut_bases)
        probs = np.concatenate([mut_probs, ref_probs], axis=1)
        bases = np.concatenate([mut_bases, ref_bases], axis=1)
    else:
        probs, bases = _masked_probs(loaded, model, split, frame["sequence"].tolist(), batch_size, timings)
        if split.family == Family.MOTIF:
            score = np.full(len(frame), np.nan)
        else:
            score = reference_scores(probs, bases)
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
