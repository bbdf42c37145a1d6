"""Bootstrap confidence intervals of the benchmark's metrics, vectorised over resamples.

A resample draws n examples with replacement. B resamples are a (B, n) index matrix from a
seeded generator, so the same (n, B, seed) always gives the same resamples, and two models
scored on the same examples can be resampled *together* (the paired bootstrap of a difference).

No Python loop runs over single resamples. Blocks of 64 rows of the index matrix at a time (to
bound memory) become a matrix of counts (how often each example was drawn); a resample is then
the full sample with those multiplicities, and every metric is a few array passes per block:
* accuracies are ratios of count-weighted sums, one matrix product each;
* AUROC is the rank statistic with mid-ranks for ties, over tie groups of the scores sorted
  once: sum over positives of (negatives scored lower + half the negatives tied), divided by
  P * N; equal to scikit-learn's `roc_auc_score` on the resampled examples;
* AP is scikit-learn's `average_precision_score`: sum over distinct thresholds, highest first,
  of (recall step) x precision; thresholds absent from a resample add a zero recall step.
A resample where a metric is undefined (one class only) is dropped from that metric's interval.

The point estimates stay those of `families.measures` (scikit-learn on the full sample); the
intervals are percentile intervals of the replicates. The standard error of an accuracy is
the ratio estimator's over examples (for motif accuracy this is the binomial sqrt(p(1-p)/n)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from plantcad_flows.families import MetricInputs, TaskFamily

LEVEL = 0.95
BLOCK = 64


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(B, n) example indices drawn with replacement; a pure function of (n, B, seed)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n), dtype=np.int64)


def index_counts(indices: np.ndarray, n: int, order: np.ndarray | None = None) -> np.ndarray:
    """(B, n) float64: how many times each example appears in each resample; with `order`,
    column k counts example `order[k]`."""
    if order is not None:
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        indices = rank[indices]
    b = indices.shape[0]
    flat = (indices + (np.arange(b, dtype=np.int64) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _blocks(indices: np.ndarray):
    # Resamples are processed BLOCK at a time: a (B, n) float matrix of 10,000 x 1,000 is 80 MB
    # per temporary, and blocks that stay in cache are faster than one pass over it.
    for start in range(0, indices.shape[0], BLOCK):
        yield indices[start : start + BLOCK]


@dataclass(frozen=True)
class Ranking:
    """Scores sorted once: the ascending order, the labels in that order, and where each group
    of tied scores starts (None when no two scores tie)."""

    order: np.ndarray
    labels: np.ndarray
    starts: np.ndarray | None

    @classmethod
    def of(cls, scores: np.ndarray, labels: np.ndarray) -> Ranking:
        scores = np.asarray(scores, dtype=np.float64)
        order = np.argsort(scores, kind="stable")
        s = scores[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        return cls(order, np.asarray(labels).astype(bool)[order], None if starts.size == s.size else starts)

    def class_counts(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(b, G) positives and negatives drawn in each tie group, ascending score."""
        c = index_counts(indices, self.order.size, self.order)
        pos = np.where(self.labels, c, 0.0)
        neg = c - pos
        if self.starts is not None:
            pos = np.add.reduceat(pos, self.starts, axis=1)
            neg = np.add.reduceat(neg, self.starts, axis=1)
        return pos, neg


def _auroc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    neg_below = np.cumsum(neg, axis=1) - neg
    p, n = pos.sum(axis=1), neg.sum(axis=1)
    num = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((p > 0) & (n > 0), num / (p * n), np.nan)


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    pos, neg = pos[:, ::-1], neg[:, ::-1]  # highest threshold first
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    p = tp[:, -1]
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p > 0, (pos * precision).sum(axis=1) / p, np.nan)


def classification_replicates(
    scores: np.ndarray, labels: np.ndarray, indices: np.ndarray, names: tuple[str, ...] = ("auroc", "auprc")
) -> dict[str, np.ndarray]:
    """(B,) AUROC and / or AUPRC of each resample (rows of `indices`); NaN where undefined."""
    ranking = Ranking.of(scores, labels)
    parts: dict[str, list[np.ndarray]] = {m: [] for m in names}
    for block in _blocks(indices):
        pos, neg = ranking.class_counts(block)
        if "auroc" in parts:
            parts["auroc"].append(_auroc(pos, neg))
        if "auprc" in parts:
            parts["auprc"].append(_average_precision(pos, neg))
    return {m: np.concatenate(v) if v else np.zeros(0) for m, v in parts.items()}


def auroc_replicates(scores: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(B,) AUROC of each resample (NaN where it holds one class only)."""
    return classification_replicates(scores, labels, indices, ("auroc",))["auroc"]


def ap_replicates(scores: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(B,) average precision of each resample (NaN where it holds no positive)."""
    return classification_replicates(scores, labels, indices, ("auprc",))["auprc"]


def ratio_replicates(numer: np.ndarray, denom: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(B,) sum(numer) / sum(denom) over each resample (NaN where the denominator is 0)."""
    both = np.stack([numer, denom], axis=1).astype(np.float64)
    sums = np.concatenate(
        [index_counts(b, both.shape[0]) @ both for b in _blocks(indices)] or [np.zeros((0, 2))]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[:, 1] > 0, sums[:, 0] / sums[:, 1], np.nan)


def ratio_stderr(numer: np.ndarray, denom: np.ndarray) -> float | None:
    """Standard error of sum(numer)/sum(denom) with examples as the unit (linearisation).

    With 0/1 `denom` this is the binomial sqrt(p(1-p)/m) over the m examples that count.
    """
    numer, denom = numer.astype(np.float64), denom.astype(np.float64)
    total = denom.sum()
    if total <= 0:
        return None
    p = numer.sum() / total
    return float(np.sqrt(((numer - p * denom) ** 2).sum()) / total)


def replicates(
    inputs: MetricInputs, indices: np.ndarray, names: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """Each metric (or those named) over each resample (rows of the (B, n) index matrix)."""
    names = inputs.names if names is None else names
    if inputs.ratios is not None:
        return {m: ratio_replicates(*inputs.ratios[m], indices) for m in names}
    return classification_replicates(inputs.scores, inputs.labels, indices, names)


def stderrs(inputs: MetricInputs) -> dict[str, float | None]:
    """Standard errors of the accuracies (none for AUROC / AUPRC)."""
    return {m: ratio_stderr(*inputs.ratios[m]) for m in inputs.names} if inputs.ratios else {}


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """The percentile interval of the defined replicates, None if none is defined."""
    ok = replicates[~np.isnan(replicates)]
    if ok.size == 0:
        return None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(ok, [tail, 100 - tail])
    return float(low), float(high)


def cell_intervals(
    family: TaskFamily, predictions: pd.DataFrame, resamples: int, seed: int, level: float = LEVEL
) -> dict[str, list[float | None]]:
    """metric -> [low, high] (None where undefined); empty when `resamples` is 0 or no examples."""
    inputs = family.metric_inputs(predictions)
    if resamples <= 0 or inputs.n == 0:
        return {}
    indices = resample_indices(inputs.n, resamples, seed)
    out: dict[str, list[float | None]] = {}
    for name, reps in replicates(inputs, indices).items():
        interval = percentile_interval(reps, level)
        out[name] = list(interval) if interval else [None, None]
    return out


@dataclass(frozen=True)
class PairedDifference:
    """new - old of one metric on the same examples, with its paired bootstrap interval."""

    metric: str
    old: float
    new: float
    low: float | None
    high: float | None
    n: int

    @property
    def diff(self) -> float:
        return self.new - self.old

    @property
    def is_drop(self) -> bool:
        """A drop beyond the noise: the whole interval of the difference lies below zero."""
        return self.drops_beyond(0.0)

    def drops_beyond(self, margin: float) -> bool:
        """A drop larger than `margin` beyond the noise: the whole interval lies below -margin."""
        return self.high is not None and self.high < -margin


def aligned(old: pd.DataFrame, new: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Both frames in one row order (by `row_index`), or None when they hold different
    examples (then no paired comparison is meaningful)."""
    a, b = old.sort_values("row_index"), new.sort_values("row_index")
    if len(a) != len(b) or not np.array_equal(a["row_index"].to_numpy(), b["row_index"].to_numpy()):
        return None
    if not np.array_equal(a["label"].to_numpy(), b["label"].to_numpy()):
        return None
    return a.reset_index(drop=True), b.reset_index(drop=True)


def paired_difference(
    family: TaskFamily,
    metric: str,
    old: pd.DataFrame,
    new: pd.DataFrame,
    resamples: int,
    seed: int,
    level: float = LEVEL,
) -> PairedDifference | None:
    """The paired bootstrap of new - old: the same resampled examples score both.

    Returns None when the two prediction frames do not hold the same examples.
    """
    pair = aligned(old, new)
    if pair is None:
        return None
    a = family.metric_inputs(pair[0])
    b = family.metric_inputs(pair[1])
    old_v = float(family.metrics_of(pair[0])[metric])
    new_v = float(family.metrics_of(pair[1])[metric])
    indices = resample_indices(a.n, resamples, seed)
    diff = replicates(b, indices, (metric,))[metric] - replicates(a, indices, (metric,))[metric]
    interval = percentile_interval(diff, level)
    low, high = interval if interval else (None, None)
    return PairedDifference(metric, old_v, new_v, low, high, a.n)
