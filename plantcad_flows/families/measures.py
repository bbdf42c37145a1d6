"""The measures task families are built from: per-example scores and per-cell metrics, in plain
numpy and scikit-learn, and the per-example arrays a cell's bootstrap resamples.

Scores and metrics share this module so that scoring (which fills the predictions' `score`) and
metrics (which reduce them) cannot drift apart. Which of them a task reports is the family's
choice (`TaskFamily.metrics_of`). Inputs are arrays: `probs` (n, P, 4) with A,C,G,T
probabilities and `bases` (n, P) uint8 bytes of the true bases (any case; non-ACGT bytes excluded).

When a metric is undefined for the data (AUROC with one class, AUPRC without positives, motif
accuracy with no scorable position) its value is NaN and a reason is logged and, if the caller
passes a `notes` list, appended to it; nothing raises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from plantcad_flows.sequences import BASE_INDEX_LUT

log = logging.getLogger(__name__)

SV_EPSILON = 1e-12


def true_base_probs(probs: np.ndarray, bases: np.ndarray) -> np.ndarray:
    """(n, P) probability of the true base at each position; 0 where the base is not A/C/G/T."""
    idx = BASE_INDEX_LUT[bases]
    valid = idx >= 0
    picked = np.take_along_axis(probs, np.where(valid, idx, 0)[..., None], axis=-1)[..., 0]
    return np.where(valid, picked, 0.0)


def reference_scores(probs: np.ndarray, bases: np.ndarray) -> np.ndarray:
    """Conservation (P=1) and core/non-core score: mean over positions of p(true base)."""
    return true_base_probs(probs, bases).mean(axis=1)


def sv_scores(mut_probs: np.ndarray, ref_probs: np.ndarray, mut_bases: np.ndarray) -> np.ndarray:
    """Structural-variant score: -mean over the 2F flank bases b of log(max(p_mut,eps)/max(p_ref,eps)).

    `ref_probs` holds, for each MutSeq flank position, the probabilities at the matching RefSeq
    position; rows of NaN mark a RefSeq position outside the (cropped) model input. Bases that are
    not A/C/G/T, and positions without a RefSeq probability, contribute 0 (but still count in the
    mean's denominator, 2F).
    """
    idx = BASE_INDEX_LUT[mut_bases]
    valid = idx >= 0
    safe = np.where(valid, idx, 0)[..., None]
    p_mut = np.take_along_axis(mut_probs, safe, axis=-1)[..., 0].astype(np.float64)
    p_ref = np.take_along_axis(ref_probs, safe, axis=-1)[..., 0].astype(np.float64)
    valid &= ~np.isnan(p_ref) & ~np.isnan(p_mut)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.log(np.maximum(p_mut, SV_EPSILON) / np.maximum(p_ref, SV_EPSILON))
    return -np.where(valid, terms, 0.0).mean(axis=1)


def motif_correct(probs: np.ndarray, bases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correct, valid), both (n, P) bool: argmax over A/C/G/T equals the true base; valid = ACGT."""
    idx = BASE_INDEX_LUT[bases]
    return (probs.argmax(axis=-1) == idx) & (idx >= 0), idx >= 0


def _undefined(name: str, reason: str, notes: list[str] | None) -> float:
    msg = f"{name} is NaN: {reason}"
    log.warning(msg)
    if notes is not None:
        notes.append(msg)
    return float("nan")


def classification_metrics(
    scores: np.ndarray, labels: np.ndarray, with_auroc: bool = True, notes: list[str] | None = None
) -> dict[str, float | int]:
    # scikit-learn (and scipy under it) load here, not with the module: the CLI's config checks,
    # dry runs and bad-input exits import the families but compute no metric
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n, pos = int(labels.size), int(labels.sum())
    out: dict[str, float | int] = {}
    if with_auroc:
        out["auroc"] = (
            float(roc_auc_score(labels, scores))
            if 0 < pos < n
            else _undefined("auroc", f"only one class among {n} examples", notes)
        )
    out["auprc"] = (
        float(average_precision_score(labels, scores))
        if pos > 0
        else _undefined("auprc", f"no positive example among {n}", notes)
    )
    out.update(
        num_examples=n,
        num_positive_examples=pos,
        num_negative_examples=n - pos,
        balance=pos / n if n else float("nan"),
    )
    return out


def motif_metrics(
    probs: np.ndarray, bases: np.ndarray, notes: list[str] | None = None
) -> dict[str, float | int]:
    """token_accuracy over A/C/G/T positions; motif_accuracy over all-ACGT examples."""
    correct, valid = motif_correct(probs, bases)
    n_valid = int(valid.sum())
    token = (
        float(correct.sum() / n_valid)
        if n_valid
        else _undefined("token_accuracy", "no masked position has an A/C/G/T base", notes)
    )
    whole = valid.all(axis=1)
    motif = (
        float(correct[whole].all(axis=1).mean())
        if whole.any()
        else _undefined("motif_accuracy", "no example has an all-A/C/G/T motif", notes)
    )
    return {"token_accuracy": token, "motif_accuracy": motif, "num_examples": int(len(bases))}


def prediction_arrays(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The predictions frame's `probs` and `bases` columns as (n, P, 4) float32 and (n, P) uint8."""
    n = len(predictions)
    if n == 0:
        return np.zeros((0, 0, 4), np.float32), np.zeros((0, 0), np.uint8)
    probs = np.stack([np.asarray(p, dtype=np.float32) for p in predictions["probs"]]).reshape(n, -1, 4)
    bases = np.frombuffer("".join(predictions["bases"]).encode("ascii"), np.uint8).reshape(n, -1)
    return probs, bases


@dataclass(frozen=True)
class MetricInputs:
    """Per-example arrays a cell's metrics are computed from: scores and labels for the
    classification families, (correct, counted) per example for each accuracy; `names` are the
    metrics the family reports, its main metric first."""

    names: tuple[str, ...]
    n: int
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    ratios: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    @classmethod
    def classification(cls, names: tuple[str, ...], predictions: pd.DataFrame) -> MetricInputs:
        return cls(
            names,
            len(predictions),
            scores=predictions["score"].to_numpy(np.float64),
            labels=predictions["label"].to_numpy().astype(np.int64),
        )

    @classmethod
    def accuracies(cls, names: tuple[str, ...], predictions: pd.DataFrame) -> MetricInputs:
        probs, bases = prediction_arrays(predictions)
        correct, valid = motif_correct(probs, bases)
        whole = valid.all(axis=1)
        ratios = {
            "token_accuracy": (correct.sum(axis=1), valid.sum(axis=1)),
            "motif_accuracy": (whole & correct.all(axis=1), whole),
        }
        return cls(names, len(predictions), ratios=ratios)


# --- correlations (variant effects against a continuous target) ---------------------------


def _ranks(x: np.ndarray) -> np.ndarray:
    """Mid-ranks (ties share their average rank), as Spearman's rho uses."""
    order = np.argsort(x, kind="stable")
    s = x[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], s.size]
    mid = (starts + ends - 1) / 2.0 + 1.0
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(mid, ends - starts)
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def correlation_metrics(llr: np.ndarray, target: np.ndarray) -> dict[str, float | int]:
    ok = ~np.isnan(target) & ~np.isnan(llr)
    x, y = llr[ok], target[ok]
    return {
        "spearman": _pearson(_ranks(x), _ranks(y)) if x.size >= 2 else float("nan"),
        "pearson": _pearson(x, y),
        "num_with_target": int(ok.sum()),
    }
