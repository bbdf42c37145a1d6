"""Evolutionary conservation: is the masked base conserved? Masked-position AUROC and AUPRC.

The score of an example is the model's probability of the true base, averaged over the masked
positions (one position in the PlantCAD2 tasks); label 1 = conserved.

Synthetic data: label 1 puts the centre base inside a conserved-element instance (library
families 0-11 for `..._andropogoneae`, 12-23 for `..._poaceae_non_tis`; the centre base keeps its
library value) or, for `..._poaceae_tis`, inside the Kozak-ATG-GC block of a TIS. Label 0 puts
it in neutral background: 17 fresh background bases around the centre, or (`_tis`) a third codon
position well inside a coding sequence after a TIS.
"""

from __future__ import annotations

from plantcad_flows.families import genome as g
from plantcad_flows.families import synthetic_kit as kit
from plantcad_flows.families.masked import ReferenceClassification
from plantcad_flows.families.tasks import centred_mask

_HALF = g.NUM_ELEMENTS // 2


class Conservation(ReferenceClassification):
    name = "evolutionary_conservation"
    description = "p(true base) at masked positions; AUROC of conserved vs neutral"
    short_affixes = ("conservation_within_", "")

    def synthetic_example(self, rng, pool, task, label, length, gc, species, masks):
        centre = centred_mask(1, length)[0]
        seq = kit.genome_window(rng, pool, length, centre, species)
        if task.name.endswith("_tis"):
            s = g.site("tis", rng, gc)
            if label:  # centre inside GCCACC-ATG-GC: 6 + 3 + 2 positions before the codons
                offset = s.anchor - 6 + int(rng.integers(0, 11))
            else:  # a third codon position of codons 3..6 after the ATG
                offset = s.anchor + 5 + 3 * int(rng.integers(2, 6)) + 2
            kit.plant(seq, s.seq, centre - offset)
        elif label:
            family = int(rng.integers(0, _HALF)) + (_HALF if "non_tis" in task.name else 0)
            inst = g.element_instance(rng, family)
            offset = int(rng.integers(4, len(inst) - 4))
            inst[offset] = g.element_library()[family][offset]
            kit.plant(seq, inst, centre - offset)
        else:
            kit.plant(seq, g.background(rng, 17, gc), centre - 8)
        return seq
