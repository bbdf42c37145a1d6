"""Bootstrap intervals: hand-checked resamples with a fixed seed, agreement with scikit-learn on
every resample (ties included), intervals that shrink as n grows, the paired interval of a model
with itself exactly [0, 0], standard errors of accuracies, and what the resampling settings may
and may not change in cache keys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from plantcad_flows.families import get_family
from plantcad_flows.results.bootstrap import (
    ap_replicates,
    auroc_replicates,
    cell_intervals,
    index_counts,
    paired_difference,
    percentile_interval,
    ratio_replicates,
    ratio_stderr,
    replicates,
    resample_indices,
    stderrs,
)

CONSERVATION = get_family("evolutionary_conservation")
MOTIF = get_family("motif_recovery")
STRUCTURAL_VARIANT = get_family("structural_variant_effect")

# scikit-learn's own example: AUROC 0.75, AP 0.8333
SCORES = np.array([0.1, 0.4, 0.35, 0.8])
LABELS = np.array([0, 0, 1, 1])


def _classification_frame(scores, labels) -> pd.DataFrame:
    return pd.DataFrame({"row_index": np.arange(len(scores)), "label": labels, "score": scores})


def test_seeded_resamples_are_pinned():
    # The promise that makes paired comparisons possible: (n, B, seed) fixes the resamples.
    assert resample_indices(4, 3, 0).tolist() == [[3, 2, 2, 1], [1, 0, 0, 0], [0, 3, 2, 3]]
    assert np.array_equal(resample_indices(50, 7, 11), resample_indices(50, 7, 11))
    assert not np.array_equal(resample_indices(50, 7, 11), resample_indices(50, 7, 12))


def test_hand_checked_resamples_and_interval():
    idx = resample_indices(4, 3, 0)  # [[3,2,2,1], [1,0,0,0], [0,3,2,3]]
    # row 0: positives 0.8, 0.35, 0.35 vs the negative 0.4 -> 1 of 3 pairs ordered -> 1/3;
    #        AP: 0.8 (P=1, R=1/3), 0.4 (neg), 0.35 x2 (P=3/4, R=1) -> 1/3 + 2/3 * 3/4 = 5/6
    # row 1: negatives only -> undefined
    # row 2: positives 0.8, 0.35, 0.8 all above the negative 0.1 -> 1.0 and AP 1.0
    auroc = auroc_replicates(SCORES, LABELS, idx)
    ap = ap_replicates(SCORES, LABELS, idx)
    assert auroc[0] == pytest.approx(1 / 3) and np.isnan(auroc[1]) and auroc[2] == 1.0
    assert ap[0] == pytest.approx(5 / 6) and np.isnan(ap[1]) and ap[2] == 1.0
    # percentile interval of the defined replicates (linear interpolation between 1/3 and 1)
    intervals = cell_intervals(CONSERVATION, _classification_frame(SCORES, LABELS), 3, 0)
    assert intervals["auroc"] == pytest.approx([1 / 3 + 0.025 * 2 / 3, 1 / 3 + 0.975 * 2 / 3])
    assert intervals["auprc"] == pytest.approx([5 / 6 + 0.025 / 6, 5 / 6 + 0.975 / 6])
    # the structural-variant task reports AUPRC only
    assert set(cell_intervals(STRUCTURAL_VARIANT, _classification_frame(SCORES, LABELS), 3, 0)) == {"auprc"}


def test_ties_get_half_credit():
    scores, labels = np.array([0.5, 0.5, 0.2, 0.9]), np.array([1, 0, 0, 1])
    full = np.arange(4)[None, :]
    # pairs (pos, neg): (0.5, 0.5) ties = 1/2, the other three ordered -> 3.5 / 4
    assert auroc_replicates(scores, labels, full)[0] == 0.875
    assert auroc_replicates(scores, labels, full)[0] == roc_auc_score(labels, scores)
    assert ap_replicates(scores, labels, full)[0] == pytest.approx(average_precision_score(labels, scores))


@pytest.mark.parametrize("n,decimals", [(5, 1), (12, 1), (40, 2), (200, 3)])
def test_every_resample_equals_sklearn(n, decimals):
    rng = np.random.default_rng(n)
    scores = np.round(rng.random(n), decimals)  # rounding makes ties
    labels = rng.integers(0, 2, n)
    idx = resample_indices(n, 150, seed=3)
    auroc, ap = auroc_replicates(scores, labels, idx), ap_replicates(scores, labels, idx)
    for b, rows in enumerate(idx):
        y, s = labels[rows], scores[rows]
        if 0 < y.sum() < len(y):
            assert auroc[b] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        else:
            assert np.isnan(auroc[b])
        if y.sum() > 0:
            assert ap[b] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        else:
            assert np.isnan(ap[b])


def test_counts_and_ratio_replicates():
    idx = np.array([[0, 0, 2], [1, 2, 2]])
    assert index_counts(idx, 3).tolist() == [[2, 0, 1], [0, 1, 2]]
    numer, denom = np.array([1, 0, 2]), np.array([1, 1, 3])
    # row 0: (1+1+2)/(1+1+3) = 4/5; row 1: (0+2+2)/(1+3+3) = 4/7
    assert ratio_replicates(numer, denom, idx) == pytest.approx([4 / 5, 4 / 7])
    assert np.isnan(ratio_replicates(np.array([1, 0]), np.array([0, 0]), np.array([[0, 1]]))[0])


def test_percentile_interval_drops_undefined_resamples():
    assert percentile_interval(np.array([np.nan, np.nan])) is None
    low, high = percentile_interval(np.array([0.0, 1.0, np.nan]))
    assert (low, high) == pytest.approx((0.025, 0.975))


def _motif_frame(correct_rows: list[list[bool]]) -> pd.DataFrame:
    """Two masked positions per example; the true bases are A then C. A correct position puts
    0.7 on its true base, a wrong one 0.7 on T."""
    probs, bases = [], []
    for row in correct_rows:
        p = []
        for true, ok in zip((0, 1), row):
            v = [0.1, 0.1, 0.1, 0.1]
            v[true if ok else 3] = 0.7
            p += v
        probs.append(p)
        bases.append("AC")
    return pd.DataFrame(
        {"row_index": range(len(bases)), "label": 1, "probs": probs, "bases": bases, "score": 0.0}
    )


def test_accuracy_standard_errors_and_intervals():
    frame = _motif_frame([[True, True], [True, True], [True, True], [True, False]])
    inputs = MOTIF.metric_inputs(frame)
    se = stderrs(inputs)
    # motif accuracy 3/4 over 4 examples: binomial sqrt(p (1-p) / n)
    assert se["motif_accuracy"] == pytest.approx(np.sqrt(0.75 * 0.25 / 4))
    # token accuracy 7/8, examples as clusters: sqrt(sum (c_i - p v_i)^2) / sum v_i
    p = 7 / 8
    assert se["token_accuracy"] == pytest.approx(np.sqrt(3 * (2 - 2 * p) ** 2 + (1 - 2 * p) ** 2) / 8)
    assert ratio_stderr(np.array([0]), np.array([0])) is None
    idx = resample_indices(4, 50, 1)
    reps = replicates(inputs, idx)
    for b, rows in enumerate(idx):
        c = np.array([[1, 1], [1, 1], [1, 1], [1, 0]])[rows]
        assert reps["token_accuracy"][b] == pytest.approx(c.sum() / c.size)
        assert reps["motif_accuracy"][b] == pytest.approx(c.all(axis=1).mean())


def test_interval_shrinks_as_n_grows():
    widths = []
    for n in (50, 500, 5000):
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 2, n)
        scores = labels + rng.normal(0, 1.5, n)  # a fixed, modest effect
        interval = cell_intervals(CONSERVATION, _classification_frame(scores, labels), 400, 0)
        widths.append(interval["auroc"][1] - interval["auroc"][0])
    assert widths[0] > widths[1] > widths[2] > 0
    assert widths[0] / widths[2] > 5  # roughly sqrt(100) = 10


@pytest.mark.parametrize("family", [CONSERVATION, STRUCTURAL_VARIANT, MOTIF])
def test_paired_interval_of_a_model_with_itself_is_exactly_zero(family):
    rng = np.random.default_rng(5)
    if family == MOTIF:
        frame = _motif_frame(rng.random((60, 2)) > 0.4)
    else:
        frame = _classification_frame(rng.random(60), rng.integers(0, 2, 60))
    metric = "motif_accuracy" if family == MOTIF else "auprc"
    shuffled = frame.sample(frac=1.0, random_state=1)  # row order does not matter, row_index does
    d = paired_difference(family, metric, frame, shuffled, 500, 0)
    assert (d.low, d.high) == (0.0, 0.0) and d.diff == 0.0 and not d.is_drop


def test_paired_difference_tells_a_drop_from_noise():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 400)
    good = labels + rng.normal(0, 0.7, 400)
    old = _classification_frame(good, labels)
    worse = _classification_frame(rng.random(400), labels)
    noisy = _classification_frame(good + rng.normal(0, 0.02, 400), labels)
    drop = paired_difference(CONSERVATION, "auroc", old, worse, 500, 0)
    assert drop.diff < -0.2 and drop.high < 0 and drop.is_drop
    assert drop.old == pytest.approx(roc_auc_score(labels, good))  # point values: the protocol's
    same = paired_difference(CONSERVATION, "auroc", old, noisy, 500, 0)
    assert same.low < 0 < same.high and not same.is_drop
    # different examples cannot be paired
    assert paired_difference(CONSERVATION, "auroc", old, old.iloc[:-1], 100, 0) is None


def test_resampling_settings_key_the_intervals_only(tmp_path):
    from plantcad_flows.config import EvalConfig, MetricsConfig
    from plantcad_flows.layout.plan import build_cells
    from plantcad_flows.results.uncertainty import intervals_path

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    _classification_frame(SCORES, LABELS).to_parquet(tmp_path / "x")
    cfg = {
        "models": [{"path": str(tmp_path / "m"), "name": "m"}],
        "splits": [
            {"task": "conservation_within_andropogoneae", "split": "test", "path": str(tmp_path / "x")}
        ],
        "executor": {"prefix": str(tmp_path / "out")},
    }
    a = build_cells(EvalConfig.model_validate(cfg))[0]
    b = build_cells(EvalConfig.model_validate({**cfg, "metrics": {"bootstrap": 50, "seed": 3}}))[0]
    assert a.key == b.key and a.dir == b.dir  # scores (and their directory) are shared
    # the intervals, which the settings do change, are kept per setting inside the cell's directory
    m1, m2 = MetricsConfig(), MetricsConfig(bootstrap=50, seed=3)
    p1, p2 = (intervals_path(a.dir, m.bootstrap, m.seed) for m in (m1, m2))
    assert p1 != p2 and str(p1).startswith(a.dir) and str(p2).startswith(a.dir)
