"""Metrics of a scored variant set: AUROC/AUPRC against a binary label (with bootstrap
intervals), Spearman/Pearson against a continuous target, overall and per subset value.

The score is the LLR (alt vs ref): a higher LLR means the model finds the ALT more likely. For a
label where 1 marks damaging variants, the LLR ranks them *low*, so the classification metrics
use `-llr` (as gpn and TraitGym do) and report it; the correlations are those of the LLR itself.

Rows with a null label are left out of the classification metrics, rows with a NaN target out of
the correlations. The point estimates are scikit-learn's (`results.metrics.classification_metrics`);
the 95% intervals are percentile intervals of `results.bootstrap.classification_replicates`,
drawn `BLOCK_ELEMENTS` indices at a time so that a million variants never needs a (B, n) matrix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from plantcad_flows.families.measures import classification_metrics, correlation_metrics
from plantcad_flows.results.bootstrap import LEVEL, classification_replicates, percentile_interval

BLOCK_ELEMENTS = 1 << 22  # resampled indices held at once
MAX_SUBSET_VALUES = 100  # per subset column, the most frequent values get their own metrics


def bootstrap_intervals(
    scores: np.ndarray, labels: np.ndarray, resamples: int, seed: int, level: float = LEVEL
) -> dict[str, list[float | None]]:
    """metric -> [low, high] of AUROC and AUPRC over `resamples` bootstrap resamples."""
    n = scores.size
    if resamples <= 0 or n == 0:
        return {}
    rng = np.random.default_rng(seed)
    per_block = max(1, min(resamples, BLOCK_ELEMENTS // n))
    parts: dict[str, list[np.ndarray]] = {"auroc": [], "auprc": []}
    done = 0
    while done < resamples:
        b = min(per_block, resamples - done)
        reps = classification_replicates(scores, labels, rng.integers(0, n, size=(b, n), dtype=np.int64))
        for k in parts:
            parts[k].append(reps[k])
        done += b
    out: dict[str, list[float | None]] = {}
    for k, v in parts.items():
        interval = percentile_interval(np.concatenate(v), level)
        out[k] = list(interval) if interval else [None, None]
    return out


def _group_metrics(frame: pd.DataFrame, resamples: int, seed: int) -> dict:
    llr = frame["llr"].to_numpy(np.float64)
    out: dict = {"num_scored": int(len(frame))}
    if "label" in frame.columns:
        has = frame["label"].notna().to_numpy() & ~np.isnan(llr)
        labels = frame["label"].to_numpy(dtype=np.float64, na_value=np.nan)[has].astype(np.int64)
        scores = -llr[has]
        m = classification_metrics(scores, labels)
        out.update({k: m[k] for k in ("auroc", "auprc", "num_positive_examples", "num_negative_examples")})
        out["num_with_label"] = int(has.sum())
        out["intervals"] = (
            bootstrap_intervals(scores, labels, resamples, seed) if 0 < labels.sum() < labels.size else {}
        )
    if "target" in frame.columns:
        out.update(correlation_metrics(llr, frame["target"].to_numpy(np.float64)))
    return out


def variant_metrics(
    frame: pd.DataFrame, subsets: tuple[str, ...] = (), resamples: int = 1000, seed: int = 0
) -> dict:
    """Metrics of a scored frame (llr, and label / target / subset columns when present).

    Returns:
        {"all": {...}, "subsets": {column: {value: {...}}}, "notes": [...]}, where each {...}
        holds num_scored and, as available, auroc, auprc, intervals, spearman, pearson.
    """
    notes: list[str] = []
    result: dict = {"all": _group_metrics(frame, resamples, seed), "subsets": {}, "notes": notes}
    for col in subsets:
        counts = frame[col].value_counts(dropna=True)
        if len(counts) > MAX_SUBSET_VALUES:
            notes.append(f"{col}: {len(counts)} values, metrics for the {MAX_SUBSET_VALUES} most frequent")
            counts = counts.iloc[:MAX_SUBSET_VALUES]
        groups = {}
        for value in sorted(counts.index, key=str):
            groups[str(value)] = _group_metrics(frame[frame[col] == value], resamples, seed)
        result["subsets"][col] = groups
    return result
