"""Core / non-core classification: is the site's motif the canonical one? AUROC and AUPRC.

The score is the mean probability of the true bases at the motif's masked positions; label 1 =
canonical (core) motif. Synthetic data: the motif-recovery site contexts, label 1 with the
canonical motif, label 0 with a non-canonical one (`genome.NONCANONICAL`).
"""

from __future__ import annotations

from plantcad_flows.families import synthetic_kit as kit
from plantcad_flows.families.masked import ReferenceClassification, site_example


class CoreNoncore(ReferenceClassification):
    name = "core_noncore_classification"
    description = "mean p(true base) over the motif; AUROC of canonical vs non-canonical sites"
    short_affixes = ("", "_core_noncore_classification")

    def synthetic_example(self, rng, pool, task, label, length, gc, species, masks):
        return site_example(rng, pool, kit.site_kind(task.name), bool(label), length, gc, species, masks)
