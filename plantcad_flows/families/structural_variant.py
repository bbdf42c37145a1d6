"""Structural-variant effect: does a deletion disturb the model at its junction? AUPRC.

MLM only. Both RefSeq and MutSeq run unmasked. The read positions are the 2F central MutSeq
bases and the matching RefSeq bases (1-based left-F..left-1, right+1..right+F), F = `flanking`.
The score is -mean over the 2F flank bases b of log(max(p_mut(b), eps) / max(p_ref(b), eps))
(`measures.sv_scores`). After a centre crop, a RefSeq position that falls outside the model input
gets NaN probabilities and contributes 0 to the score (as does a non-ACGT base). The task reports
AUPRC only, as the published evaluation does.

Synthetic data: every variant is a presence/absence polymorphism: RefSeq holds the segment
[left, right] (1-based, 10-150 bp, centred), MutSeq lacks it and is centred on the junction, so
its central 2F bases are the F bases left and right of the segment. Label 1: the junction cuts a
conserved-element instance (the F bases left of the segment are inside it). Label 0: the segment
and 20 bases either side of it are neutral background.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from plantcad_flows.errors import ValidationError
from plantcad_flows.families import genome as g
from plantcad_flows.families import synthetic_kit as kit
from plantcad_flows.families.base import (
    KEY_FLANKING,
    FamilySettings,
    ModelInputs,
    SplitLike,
    TaskFamily,
    checked_sequences,
    labels_of,
)
from plantcad_flows.families.measures import MetricInputs, classification_metrics, sv_scores
from plantcad_flows.families.tasks import TaskDef, check_settings
from plantcad_flows.sequences import crop_plan

DEFAULT_FLANKING = KEY_FLANKING


class FlankSettings(FamilySettings):
    """A structural-variant task's (and split's) setting: F, the flank bases read each side."""

    flanking: int = Field(default=DEFAULT_FLANKING, ge=1)


class StructuralVariant(TaskFamily):
    name = "structural_variant_effect"
    description = "flank log-ratio of MutSeq vs RefSeq; AUPRC"
    metrics = ("auprc",)
    curves = ("pr",)
    settings_model = FlankSettings
    overrides_model = FlankSettings
    column_roles = {"ref": "RefSeq", "alt": "MutSeq", "left": "left", "right": "right"}

    def flanking(self, split: SplitLike) -> int:
        """The split's override, else the task's, else 5."""
        return split.overrides.get("flanking") or self.settings_of(split.definition).flanking

    def settings_text(self, task: TaskDef) -> str:
        return f"flanking {self.settings_of(task).flanking}"

    def cell_key_fields(self, split: SplitLike) -> dict[str, object]:
        return {"mask_positions": [], "flanking": self.flanking(split)}

    def check_task(self, where: str, task: TaskDef) -> None:
        flanking = self.settings_of(task).flanking
        if 2 * flanking > task.seq_length:
            raise ValidationError(
                f"{where}.flanking", flanking, f"2 x flanking exceeds the {task.seq_length}-bp sequences"
            )

    def check_split(self, split: SplitLike) -> None:
        where = f"splits[{split.key}].overrides"
        check_settings(where, self.name, self.overrides_model, split.overrides)
        if 2 * self.flanking(split) > split.seq_length:
            raise ValidationError(
                f"{where}.flanking",
                self.flanking(split),
                f"2 x flanking exceeds the {split.seq_length}-bp sequences",
            )

    def unsupported_reason(self, model_type: str) -> str | None:
        if model_type == "clm":
            return (
                "structural-variant effect has no published definition for causal LMs "
                "(the PlantCAD2 score uses bidirectional per-position probabilities)"
            )
        return None

    def check_model(self, where, model, split) -> None:
        flanking = self.flanking(split)
        if model.type == "mlm" and 2 * flanking > min(model.context_length, split.seq_length):
            raise ValidationError(
                f"{where}.context_length",
                model.context_length,
                f"crop removes the central flanks of {split.key} (flanking {flanking})",
            )

    def _columns(self, split: SplitLike) -> dict[str, str]:
        return {role: split.definition.column(role) for role in self.column_roles}

    def sequence_columns(self, split: SplitLike) -> tuple[str, ...]:
        c = self._columns(split)
        return (c["ref"], c["alt"])

    def other_columns(self, split: SplitLike) -> tuple[str, ...]:
        c = self._columns(split)
        return (c["left"], c["right"])

    def frame(self, rows: pd.DataFrame, keep: np.ndarray, split: SplitLike) -> pd.DataFrame:
        c = self._columns(split)
        out = pd.DataFrame({"row_index": keep})
        out["label"] = labels_of(rows, split, binary=True)
        out["ref_seq"] = checked_sequences(rows, c["ref"], split, keep)
        out["mut_seq"] = checked_sequences(rows, c["alt"], split, keep)
        for role in ("left", "right"):
            out[role] = pd.to_numeric(rows[c[role]]).to_numpy(np.int64)
        bad = (out["left"] < 1) | (out["right"] < out["left"]) | (out["right"] > split.seq_length)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValidationError(
                f"splits[{split.key}].left/right",
                (int(out["left"][i]), int(out["right"][i])),
                f"row {int(keep[i])}: need 1 <= left <= right <= {split.seq_length}",
            )
        return out

    def score(self, model, split, frame, run, strand="fwd"):
        f, length = self.flanking(split), split.seq_length
        plan = crop_plan(length, model.context_length)
        mut_pos = np.arange(length // 2 - f, length // 2 + f, dtype=np.int64)[None, :]
        left = frame["left"].to_numpy(np.int64)[:, None]
        right = frame["right"].to_numpy(np.int64)[:, None]
        steps = np.arange(f, dtype=np.int64)[None, :]
        # 1-based left-F..left-1 and right+1..right+F, as 0-based indices.
        ref_pos = np.concatenate([left - f - 1 + steps, right + steps], axis=1)

        def one(column: str, positions: np.ndarray):
            shifted = plan.shift(positions)
            return run(
                ModelInputs(
                    frame[column].tolist(), plan, False, None, shifted, plan.inside(shifted), positions
                )
            )

        mut_probs, mut_bases = one("mut_seq", mut_pos)
        ref_probs, ref_bases = one("ref_seq", ref_pos)
        score = sv_scores(mut_probs, ref_probs, mut_bases)
        return (
            np.concatenate([mut_probs, ref_probs], axis=1),
            np.concatenate([mut_bases, ref_bases], axis=1),
            score,
        )

    def metrics_of(self, predictions: pd.DataFrame, notes=None):
        return classification_metrics(
            predictions["score"].to_numpy(), predictions["label"].to_numpy(), with_auroc=False, notes=notes
        )

    def metric_inputs(self, predictions: pd.DataFrame) -> MetricInputs:
        return MetricInputs.classification(self.metrics, predictions)

    def synthetic(self, rng, task: TaskDef, split: str, n: int, length: int) -> pd.DataFrame:
        labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
        rows = []
        pool = g.sample_genome(rng, kit.POOL_LENGTH, "maize")
        flank = self.settings_of(task).flanking
        for label in labels:
            ref, mut, left, right = _sv_example(rng, pool, int(label), length, g.SPECIES_GC["maize"], flank)
            keep = (left - 1 - 40, right + 40)
            rows.append(
                (
                    kit.soft_mask_and_n(rng, ref, keep),
                    kit.soft_mask_and_n(rng, mut, kit.protect(length, 60)),
                    left,
                    right,
                )
            )
        ref, alt, left, right, label = (task.column(r) for r in ("ref", "alt", "left", "right", "label"))
        frame = pd.DataFrame(rows, columns=[ref, alt, left, right])
        frame[left] = frame[left].astype(np.int64)
        frame[right] = frame[right].astype(np.int64)
        frame[label] = labels
        return frame


def _sv_example(rng, pool, label: int, length: int, gc: float, flank: int):
    """(RefSeq, MutSeq, left, right) of one presence/absence variant; see the module docstring."""
    d = int(rng.integers(10, 151))
    s = length
    region = kit.genome_window(
        rng, pool, length * 2 + d, s, "maize"
    )  # the variant occupies region[s : s + d]
    if label:
        family = int(rng.integers(g.NUM_ELEMENTS))
        inst = g.element_instance(rng, family)
        cut = int(rng.integers(flank + 3, len(inst) - 2))  # bases of inst left of the junction
        kit.plant(region, inst, s - cut)
    else:
        kit.plant(region, g.background(rng, d + 40, gc), s - 20)
    mut = np.concatenate([region[:s], region[s + d :]])
    mut_seq = mut[s - length // 2 : s + length // 2]
    c = s + d // 2
    ref_seq = region[c - length // 2 : c + length // 2]
    left = s - (c - length // 2) + 1
    return ref_seq, mut_seq, left, left + d - 1
