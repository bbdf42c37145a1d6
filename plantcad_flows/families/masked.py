"""What the masked-position families share: masks, their checks, and how a model reads them.

Conservation, motif recovery and core/non-core all read the model's A/C/G/T probabilities at a
few masked positions of one sequence per example. MLMs see the mask token at every masked
position at once; CLMs see the unmasked sequence and position i is read from the logits at i-1.
CLM modes: `fwd_only`; `rc_only` runs on the reverse complement, reading the mirrored position
L-1-i (from logits at L-2-i), and flips back by swapping A<->T, C<->G (probabilities are gathered
in the original position order, which is the "reverse the positions" step); `fwd_rc_avg` is the
mean of the two. Sequences longer than the model's context are centre-cropped and positions
shifted by the trim.

Strands (`strands: [fwd, rc]`, one cell each): the rc strand of an MLM is the PlantCAD2
leaderboard's `right_reverse_complement` placement. The cropped window is reverse-complemented
(the centre crop is symmetric, so cropping first or last gives the same window), the mask token
goes to the mirrored positions L-1-i, the probabilities are read there and complemented back, in
the forward positions' order; true bases stay the forward sequence's. Per example this equals
reading the reverse complement's own motif, so every metric is the leaderboard's. Causal LMs
choose their reading with `motif_inference_mode` and have no rc cell.
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
    ModelLike,
    Runner,
    SplitLike,
    TaskFamily,
    checked_sequences,
    labels_of,
)
from plantcad_flows.families.measures import MetricInputs, classification_metrics, reference_scores
from plantcad_flows.families.tasks import TaskDef, centred_mask, check_mask_positions, check_settings
from plantcad_flows.sequences import crop_plan


class MaskSettings(FamilySettings):
    """A masked task's settings: the masked positions (0-based, in the task's `seq_length`) or
    their number, centred (`motif_len`); both when they agree."""

    mask_positions: tuple[int, ...] | None = None
    motif_len: int | None = Field(default=None, ge=1)


class MaskOverrides(FamilySettings):
    """What a split entry may override: the positions, or their number (centred)."""

    mask_token_indexes: tuple[int, ...] | None = None
    motif_len: int | None = Field(default=None, ge=1)


class MaskedFamily(TaskFamily):
    """A family scored at masked positions of one sequence column."""

    settings_model = MaskSettings
    overrides_model = MaskOverrides

    def num_masks(self, task: TaskDef) -> int:
        s = self.settings_of(task)
        return len(s.mask_positions) if s.mask_positions is not None else s.motif_len or 0

    def settings_text(self, task: TaskDef) -> str:
        s = self.settings_of(task)
        return str(list(s.mask_positions or centred_mask(self.num_masks(task), task.seq_length)))

    def settings_identity(self, task: TaskDef) -> dict:
        s = self.settings_of(task)
        positions = None if s.mask_positions is None else list(s.mask_positions)
        return {"mask_positions": positions, "num_masks": self.num_masks(task)}

    def cell_key_fields(self, split: SplitLike) -> dict[str, object]:
        return {"mask_positions": list(self.mask_positions(split)), "flanking": KEY_FLANKING}

    def check_task(self, where: str, task: TaskDef) -> None:
        s = self.settings_of(task)
        if s.mask_positions is None and s.motif_len is None:
            raise ValidationError(
                f"{where}.mask_positions", None, f"family {self.name} needs mask_positions or motif_len"
            )
        if s.mask_positions is not None:
            check_mask_positions(f"{where}.mask_positions", tuple(s.mask_positions), task.seq_length)
            if s.motif_len is not None and s.motif_len != len(s.mask_positions):
                raise ValidationError(
                    f"{where}.motif_len",
                    s.motif_len,
                    f"does not match the {len(s.mask_positions)} masked positions {list(s.mask_positions)}",
                )

    def check_split(self, split: SplitLike) -> None:
        where = f"splits[{split.key}].overrides"
        check_settings(where, self.name, self.overrides_model, split.overrides)
        o = self.overrides_of(split)
        if (
            o.mask_token_indexes is not None
            and o.motif_len is not None
            and o.motif_len != len(o.mask_token_indexes)
        ):
            raise ValidationError(
                f"{where}.motif_len",
                o.motif_len,
                f"does not match the {len(o.mask_token_indexes)} positions of mask_token_indexes",
            )
        check_mask_positions(f"{where}.mask_token_indexes", self.mask_positions(split), split.seq_length)

    def mask_positions(self, split: SplitLike) -> tuple[int, ...]:
        o, task = self.overrides_of(split), split.definition
        s = self.settings_of(task)
        if o.mask_token_indexes is not None:
            return tuple(o.mask_token_indexes)
        if o.motif_len is not None:
            return centred_mask(o.motif_len, split.seq_length)
        if s.mask_positions is not None and split.seq_length == task.seq_length:
            return tuple(s.mask_positions)
        return centred_mask(self.num_masks(task), split.seq_length)

    def check_model(self, where: str, model: ModelLike, split: SplitLike) -> None:
        if model.context_length >= split.seq_length:
            return
        trim = (split.seq_length - model.context_length) // 2
        shifted = tuple(p - trim for p in split.mask_positions)
        if shifted[0] < 0 or shifted[-1] >= model.context_length:
            raise ValidationError(
                f"{where}.context_length", model.context_length, f"crop removes the masks of {split.key}"
            )

    def sequence_columns(self, split: SplitLike) -> tuple[str, ...]:
        return (split.seq_column,)

    def frame(self, rows: pd.DataFrame, keep: np.ndarray, split: SplitLike) -> pd.DataFrame:
        out = pd.DataFrame({"row_index": keep})
        out["label"] = labels_of(rows, split, self.binary_labels)
        out["sequence"] = checked_sequences(rows, split.seq_column, split, keep)
        return out

    def strand_unsupported_reason(self, model_type: str, strand: str) -> str | None:
        if strand == "rc" and model_type == "clm":
            return "causal LMs read the reverse complement through motif_inference_mode (rc_only, fwd_rc_avg)"
        return None

    def probabilities(
        self, model: ModelLike, split: SplitLike, seqs, run: Runner, strand: str = "fwd"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(probs (n, P, 4), bases (n, P)) at the masked positions, per the model's type and mode
        and the strand (fwd, or rc: MLMs only, the mirrored positions of the reverse complement)."""
        plan = crop_plan(split.seq_length, model.context_length)
        length = plan.out_length
        masks = plan.shift(split.mask_positions)
        check_mask_positions(
            f"models[{model.label}].context_length (cropped masks of {split.key})",
            tuple(masks.tolist()),
            length,
        )
        base_positions = np.asarray(split.mask_positions, dtype=np.int64)[None, :]
        everywhere = np.ones_like(masks, dtype=bool)[None, :]

        def one(gather: np.ndarray, valid: np.ndarray, reverse: bool, mask: np.ndarray | None):
            inp = ModelInputs(
                seqs, plan, reverse, mask, gather[None, :], valid[None, :] & everywhere, base_positions
            )
            return run(inp)

        if model.type == "mlm":
            if strand == "rc":
                mirrored = length - 1 - masks
                return one(mirrored, everywhere[0], True, mirrored)
            return one(masks, everywhere[0], False, masks)
        if strand != "fwd":
            raise ValidationError(
                f"models[{model.label}].type", model.type, self.strand_unsupported_reason(model.type, strand)
            )
        mode = model.motif_inference_mode
        results = []
        if mode in ("fwd_only", "fwd_rc_avg"):
            results.append(one(masks - 1, masks >= 1, False, None))
        if mode in ("rc_only", "fwd_rc_avg"):
            mirrored = length - 1 - masks
            results.append(one(mirrored - 1, mirrored >= 1, True, None))
        if len(results) == 1:
            return results[0]
        stacked = np.stack([r[0] for r in results])
        with np.errstate(invalid="ignore"):
            avg = np.nanmean(stacked, axis=0) if np.isnan(stacked).any() else stacked.mean(axis=0)
        return avg.astype(np.float32), results[0][1]

    def score(self, model, split, frame, run, strand="fwd"):
        probs, bases = self.probabilities(model, split, frame["sequence"].tolist(), run, strand)
        return probs, bases, self.example_scores(probs, bases)

    def example_scores(self, probs: np.ndarray, bases: np.ndarray) -> np.ndarray:
        return np.full(len(probs), np.nan)

    # --- synthetic data -------------------------------------------------------------------
    def synthetic_labels(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.permutation(np.arange(n) % 2).astype(np.int64)

    def synthetic_example(
        self, rng, pool, task: TaskDef, label: int, length: int, gc: float, species: str, masks
    ) -> np.ndarray:
        raise NotImplementedError

    def corrupt(self, rng: np.random.Generator, seq: np.ndarray, masks: tuple[int, ...]) -> None:
        """Family-specific damage to a synthetic example (none by default)."""

    def synthetic(self, rng, task: TaskDef, split: str, n: int, length: int) -> pd.DataFrame:
        species = kit.SPLIT_SPECIES[split]
        gc = g.SPECIES_GC[species]
        masks = centred_mask(self.num_masks(task), length)
        labels = self.synthetic_labels(rng, n)
        seqs = []
        pool = g.sample_genome(rng, kit.POOL_LENGTH, species)
        for label in labels:
            seq = self.synthetic_example(rng, pool, task, int(label), length, gc, species, masks)
            self.corrupt(rng, seq, masks)
            seqs.append(kit.soft_mask_and_n(rng, seq, kit.protect(length)))
        return pd.DataFrame({"sequence": seqs, "label": labels})


class ReferenceClassification(MaskedFamily):
    """A masked family whose score is the mean probability of the true bases at the masks and
    whose metrics are AUROC and AUPRC of that score against a 0/1 label."""

    metrics = ("auroc", "auprc")
    curves = ("roc", "pr")

    def example_scores(self, probs, bases):
        return reference_scores(probs, bases)

    def metrics_of(self, predictions: pd.DataFrame, notes=None):
        return classification_metrics(
            predictions["score"].to_numpy(), predictions["label"].to_numpy(), notes=notes
        )

    def metric_inputs(self, predictions: pd.DataFrame) -> MetricInputs:
        return MetricInputs.classification(self.metrics, predictions)


def site_example(rng, pool, kind: str, canonical: bool, length: int, gc: float, species: str, masks):
    """A synthetic window with a splice / TIS / TTS site whose core motif sits at the masks."""
    seq = kit.genome_window(rng, pool, length, masks[0], species)
    s = g.site(kind, rng, gc, canonical=canonical)
    if s.motif_len != len(masks):
        raise ValidationError("synthetic.masks", list(masks), f"{kind} motif has {s.motif_len} bases")
    kit.plant(seq, s.seq, masks[0] - s.anchor)
    return seq
