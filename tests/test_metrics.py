"""Per-example scores and per-cell metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from plantcad_flows.families import get_family
from plantcad_flows.families.measures import (
    motif_metrics,
    reference_scores,
    sv_scores,
    true_base_probs,
)

CONSERVATION = get_family("evolutionary_conservation")
MOTIF = get_family("motif_recovery")
CORE_NONCORE = get_family("core_noncore_classification")
STRUCTURAL_VARIANT = get_family("structural_variant_effect")


def b(*rows: str) -> np.ndarray:
    return np.frombuffer("".join(rows).encode(), np.uint8).reshape(len(rows), -1)


def test_auroc_auprc_counts_by_hand():
    # Sorted by score: + - + - -. AUROC: positive pairs won 3 + 2 of 6 = 5/6.
    # AP: recall 0.5 at precision 1, recall 1 at precision 2/3 -> 0.5*1 + 0.5*2/3 = 5/6.
    frame = pd.DataFrame({"score": [0.9, 0.8, 0.7, 0.6, 0.5], "label": [1, 0, 1, 0, 0]})
    m = CONSERVATION.metrics_of(frame)
    assert m["auroc"] == pytest.approx(5 / 6)
    assert m["auprc"] == pytest.approx(5 / 6)
    assert (m["num_examples"], m["num_positive_examples"], m["num_negative_examples"]) == (5, 2, 3)
    assert m["balance"] == pytest.approx(0.4)


def test_auprc_with_ties_by_hand():
    # Scores 0.8 (+), 0.8 (-), 0.3 (+), 0.1 (-): the tie is one threshold step:
    # recall 0.5 at precision 1/2, recall 1 at precision 2/3 -> 0.5*0.5 + 0.5*2/3 = 7/12.
    # AUROC: (+0.8 vs -0.8 tie 0.5) + (+0.8 vs -0.1: 1) + (+0.3 vs -0.8: 0) + (+0.3 vs -0.1: 1) = 2.5/4
    frame = pd.DataFrame({"score": [0.8, 0.8, 0.3, 0.1], "label": [1, 0, 1, 0]})
    m = CORE_NONCORE.metrics_of(frame)
    assert m["auprc"] == pytest.approx(7 / 12)
    assert m["auroc"] == pytest.approx(2.5 / 4)


def test_sv_metrics_have_no_auroc():
    frame = pd.DataFrame({"score": [0.2, 0.1, 0.4], "label": [1, 0, 0]})
    m = STRUCTURAL_VARIANT.metrics_of(frame)
    assert "auroc" not in m
    assert m["auprc"] == pytest.approx(0.5)  # positive ranked 2nd: precision 1/2 at recall 1


def test_one_class_gives_nan_with_reason_not_a_crash():
    notes: list[str] = []
    m = CONSERVATION.metrics_of(pd.DataFrame({"score": [0.1, 0.2], "label": [0, 0]}), notes)
    assert math.isnan(m["auroc"]) and math.isnan(m["auprc"])
    assert m["num_positive_examples"] == 0 and len(notes) == 2 and "one class" in notes[0]
    m = CONSERVATION.metrics_of(pd.DataFrame({"score": [0.1, 0.2], "label": [1, 1]}))
    assert math.isnan(m["auroc"]) and m["auprc"] == 1.0


def test_reference_score_excludes_non_acgt_as_zero():
    probs = np.array(
        [[[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]], [[0.25, 0.25, 0.25, 0.25], [0.4, 0.3, 0.2, 0.1]]]
    )
    bases = b("Tc", "NA")
    np.testing.assert_allclose(true_base_probs(probs, bases), [[0.4, 0.1], [0.0, 0.4]])
    assert reference_scores(probs, bases).tolist() == pytest.approx([0.25, 0.2])


def test_motif_accuracy_by_hand_with_exclusions():
    p = np.eye(4)[[0, 1, 2, 3]] * 0.7 + 0.075  # argmax A, C, G, T
    probs = np.stack([p[[0, 1]], p[[0, 2]], p[[3, 3]], p[[1, 1]]])  # argmaxes: AC, AG, TT, CC
    bases = b("AC", "AC", "NT", "Cn")
    m = motif_metrics(probs, bases)
    # valid positions: 2 + 2 + 1 + 1 = 6; correct: A,C | A | T | C = 5
    assert m["token_accuracy"] == pytest.approx(5 / 6)
    # only the first two examples are all-ACGT; one of them fully right
    assert m["motif_accuracy"] == pytest.approx(0.5)
    assert m["num_examples"] == 4


def test_motif_metrics_through_the_predictions_frame():
    probs = [
        np.array([0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.7], np.float32),
        np.array([0.1, 0.7, 0.1, 0.1, 0.1, 0.1, 0.7, 0.1], np.float32),
    ]
    frame = pd.DataFrame({"probs": probs, "bases": ["AT", "CC"], "label": [-1, -1], "score": [np.nan] * 2})
    m = MOTIF.metrics_of(frame)
    assert m == {"token_accuracy": 0.75, "motif_accuracy": 0.5, "num_examples": 2}


def test_motif_with_no_valid_position_is_nan():
    notes: list[str] = []
    m = motif_metrics(np.full((1, 2, 4), 0.25), b("NN"), notes)
    assert math.isnan(m["token_accuracy"]) and math.isnan(m["motif_accuracy"]) and len(notes) == 2


def test_sv_score_from_known_tables():
    # F = 1: one MutSeq base left of the variant, one right; bases "AG".
    mut = np.array([[[0.5, 0.2, 0.2, 0.1], [0.1, 0.1, 0.6, 0.2]]])
    ref = np.array([[[0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.2, 0.6]]])
    expected = -(math.log(0.5 / 0.25) + math.log(0.6 / 0.2)) / 2
    assert sv_scores(mut, ref, b("AG"))[0] == pytest.approx(expected)
    # N contributes 0 but stays in the denominator; a NaN RefSeq row (outside the crop) too.
    assert sv_scores(mut, ref, b("NG"))[0] == pytest.approx(-math.log(3.0) / 2)
    ref_out = ref.copy()
    ref_out[0, 0] = np.nan
    assert sv_scores(mut, ref_out, b("AG"))[0] == pytest.approx(-math.log(3.0) / 2)
    # probabilities are floored at 1e-12
    zero = np.array([[[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]]])
    assert sv_scores(zero, ref, b("AA"))[0] == pytest.approx(
        -math.log(1e-12 / 0.25) / 2 - math.log(1e-12 / 0.1) / 2
    )
