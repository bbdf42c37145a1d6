"""Motif recovery: does the model's argmax at the masked motif recover the true bases?

Metrics: `motif_accuracy` (every base of an all-A/C/G/T motif right, over such examples) and
`token_accuracy` (over A/C/G/T masked positions). No label is needed; examples have no score.
Synthetic data: a canonical site with its core motif at the masks (TTS: the stop codon, which
only the downstream poly-A signal determines), label 1; about 1% of examples carry an `N` at a
mask position, exercising the non-ACGT exclusion.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from plantcad_flows.families import synthetic_kit as kit
from plantcad_flows.families.masked import MaskedFamily, site_example
from plantcad_flows.families.measures import MetricInputs, motif_metrics, prediction_arrays


class MotifRecovery(MaskedFamily):
    name = "motif_recovery"
    description = "argmax at the masked motif; motif and token accuracy"
    metrics = ("motif_accuracy", "token_accuracy")
    short_affixes = ("", "_recovery")
    label_required = False
    binary_labels = False

    def metrics_of(self, predictions: pd.DataFrame, notes=None):
        probs, bases = prediction_arrays(predictions)
        return motif_metrics(probs, bases, notes)

    def metric_inputs(self, predictions: pd.DataFrame) -> MetricInputs:
        return MetricInputs.accuracies(self.metrics, predictions)

    def synthetic_labels(self, rng, n):
        return np.ones(n, dtype=np.int64)

    def synthetic_example(self, rng, pool, task, label, length, gc, species, masks):
        return site_example(rng, pool, kit.site_kind(task.name), True, length, gc, species, masks)

    def corrupt(self, rng, seq, masks):
        if rng.random() < 0.01:
            seq[masks[int(rng.integers(len(masks)))]] = ord("N")
