"""Variant effects: a user's variants (VCF/BCF or a table) against a reference FASTA, scored
zero-shot by the log-likelihood ratio of ALT vs REF; AUROC/AUPRC against a binary label,
Spearman/Pearson against a continuous target, overall and per subset value.

A config's `variants:` entry (`VariantSetConfig`) becomes one split of a task of this family
(task = the set's name, split `variants`), so its cells (model x variant set) are planned,
prepared, scored, cached, reported, kept in the history and alerted on like every other cell.
The family owns its settings (`VariantSetConfig`, incl. `strands`), its score (below), its
metrics and main metric, and names its step bodies (`variants/steps.py`: prepare the set, fetch a
shard's windows, write the user's files); the data side (reading, checking, windows, outputs)
lives in `plantcad_flows.variants`; docs/variants.md defines the score exactly.

Metrics (`metrics_of`, on the cell's predictions: one row per scored variant, in VCF order):
* with a label: `auroc`, `auprc` of `-llr` against it (a damaging variant is one the model finds
  less likely than the reference, so it ranks low by LLR; as gpn and TraitGym), over the rows
  whose label is set; `num_with_label`, `num_positive_examples`, `num_negative_examples`;
* with a target: `spearman` and `pearson` of the LLR itself, over the rows whose target is set;
* with subsets: each of those metrics again as `METRIC[COLUMN=VALUE]` for the `MAX_SUBSET_VALUES`
  most frequent values of each subset column;
* always `num_scored`; the step adds `num_records` and `num_skipped_{reason}`.
The main metric is `auroc` when the set has a label, else `spearman` (`main_metric_of`). The
bootstrap intervals of AUROC and AUPRC come from `metric_inputs`, as for every family, with the
config's `metrics: {bootstrap, seed}`; `metrics.json` has every cell's schema.

Scores (`score`; docs/variants.md defines them exactly). A window is `L = context_length`
reference bases with the variant at `c = L // 2 - 1`; the family builds each pass as
`ModelInputs`, so windows go through the same batched, prefetched pipeline as benchmark shards.
`strands` (fwd | rc | both) says which strand is read:
* masked LM, fwd: the mask at c, `llr = log p(alt) - log p(ref)` there (= logit(alt) -
  logit(ref): the softmax's normaliser cancels); rc: the reverse-complemented window with the mask
  at its mirrored centre L-1-c, comparing the complemented bases; both: the mean of the two;
* causal LM: `llr = ll(alt window) - ll(ref window)` with `ll` the sum of log p(token | tokens
  before) over the full vocabulary; rc reads both windows reverse-complemented; both: the mean.
  A causal LM's `motif_inference_mode` still selects this when the set gives no `strands`
  (fwd_only = fwd, rc_only = rc, fwd_rc_avg = both); when both are given they must agree.
Field names of `VariantSetConfig` are the YAML's. Label, target and subset fields name a VCF INFO
key as `INFO/KEY` for a `vcf:` input, and a plain column name for a `table:` input.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plantcad_flows.errors import UnknownNameError, ValidationError
from plantcad_flows.families.base import ModelInputs, ModelLike, Runner, SplitLike, TaskFamily
from plantcad_flows.families.measures import MetricInputs, classification_metrics, correlation_metrics
from plantcad_flows.sequences import BASE_INDEX_LUT, crop_plan

# Columns every normalised variant row has; label, target and subset columns may not reuse them.
CORE_COLUMNS = ("row_index", "chrom", "pos", "ref", "alt", "llr", "label", "target")
SPLIT = "variants"  # the one split of a variant set's task
MAX_SUBSET_VALUES = 100  # per subset column, the most frequent values get their own metrics
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_INFO_RE = re.compile(r"INFO/([A-Za-z_][A-Za-z0-9_.]*)")
VARIANT_STRANDS = ("fwd", "rc", "both")
# a causal LM's motif_inference_mode, read as the strands of a variant set
_MODE_STRANDS = {"fwd_only": "fwd", "rc_only": "rc", "fwd_rc_avg": "both"}


class VariantSetConfig(BaseModel):
    """A variant set: variants (VCF/BCF or a table) against a reference FASTA."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Label in results and directory names")
    vcf: str | None = Field(default=None, description="VCF/BCF, plain or bgzipped (local, s3://, hf://)")
    table: str | None = Field(
        default=None, description="Parquet or TSV with chrom, pos (1-based), ref, alt (local, s3://, hf://)"
    )
    fasta: str = Field(description="Reference FASTA, plain or bgzipped; indexed on first use if no .fai")
    label: str | None = Field(default=None, description="Binary label (INFO/KEY or column) -> AUROC, AUPRC")
    target: str | None = Field(default=None, description="Continuous value -> Spearman, Pearson")
    subsets: tuple[str, ...] = Field(default=(), description="Fields whose values split the metrics")
    strands: str | None = Field(
        default=None,
        description="fwd, rc or both (the mean of the forward and reverse-complement LLR); "
        "default fwd (a causal LM: its motif_inference_mode)",
    )

    @field_validator("strands")
    @classmethod
    def _strands(cls, v: str | None) -> str | None:
        if v is not None and v not in VARIANT_STRANDS:
            raise UnknownNameError("variants[].strands", v, VARIANT_STRANDS)
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v):
            raise ValidationError("variants[].name", v, "use letters, digits, '.', '_' and '-' only")
        return v

    @model_validator(mode="after")
    def _source_and_fields(self) -> VariantSetConfig:
        where = f"variants[{self.name}]"
        if (self.vcf is None) == (self.table is None):
            raise ValidationError(f"{where}.vcf", self.vcf, "give exactly one of vcf and table")
        fields = [("label", self.label), ("target", self.target)]
        fields += [(f"subsets[{i}]", s) for i, s in enumerate(self.subsets)]
        seen: dict[str, str] = {}
        for field, value in fields:
            if value is None:
                continue
            column = self.column_of(value, f"{where}.{field}")
            if field.startswith("subsets") and column in CORE_COLUMNS:
                raise ValidationError(f"{where}.{field}", value, f"clashes with the output column {column!r}")
            if column in seen:
                raise ValidationError(f"{where}.{field}", value, f"already used as {seen[column]}")
            seen[column] = field
        return self

    def column_of(self, value: str, field: str = "variants[].label") -> str:
        """The INFO key (VCF input) or column (table input) a label/target/subset field names."""
        if self.vcf is not None:
            m = _INFO_RE.fullmatch(value)
            if not m:
                raise ValidationError(field, value, "a VCF field is named INFO/KEY")
            return m.group(1)
        if value.startswith("INFO/") or not value:
            raise ValidationError(field, value, "a table field is a column name (INFO/ is for vcf inputs)")
        return value

    @property
    def source(self) -> str:
        """The variants' location (vcf or table)."""
        return self.vcf if self.vcf is not None else self.table  # type: ignore[return-value]

    @property
    def source_field(self) -> str:
        return f"variants[{self.name}].{'vcf' if self.vcf is not None else 'table'}"

    @property
    def subset_columns(self) -> tuple[str, ...]:
        """Output column names of the subsets (the INFO key or the table column)."""
        return tuple(self.column_of(s) for s in self.subsets)

    def identity_fields(self) -> dict:
        """What, besides the files' content (the split's resolved identity), makes the prepared
        table: the fields read and how they are named. Locations are not part of it."""
        return {
            "input": "vcf" if self.vcf is not None else "table",
            "label": self.label,
            "target": self.target,
            "subsets": list(self.subsets),
        }


def _classification(frame: pd.DataFrame, suffix: str, out: dict, notes: list[str] | None) -> None:
    has = frame["label"].notna().to_numpy() & ~np.isnan(frame["llr"].to_numpy(np.float64))
    labels = frame["label"].to_numpy(dtype=np.float64, na_value=np.nan)[has].astype(np.int64)
    m = classification_metrics(-frame["llr"].to_numpy(np.float64)[has], labels, notes=notes)
    out[f"auroc{suffix}"], out[f"auprc{suffix}"] = m["auroc"], m["auprc"]
    out[f"num_with_label{suffix}"] = int(has.sum())
    out[f"num_positive_examples{suffix}"] = m["num_positive_examples"]
    out[f"num_negative_examples{suffix}"] = m["num_negative_examples"]


def _group(frame: pd.DataFrame, suffix: str, out: dict, notes: list[str] | None) -> None:
    out[f"num_scored{suffix}"] = int(len(frame))
    if "label" in frame.columns:
        _classification(frame, suffix, out, notes)
    if "target" in frame.columns:
        c = correlation_metrics(frame["llr"].to_numpy(np.float64), frame["target"].to_numpy(np.float64))
        out[f"spearman{suffix}"], out[f"pearson{suffix}"] = c["spearman"], c["pearson"]
        out[f"num_with_target{suffix}"] = c["num_with_target"]


def strands_of(model: ModelLike, variants: VariantSetConfig) -> str:
    """fwd, rc or both: what a variant set's `strands` says, else (a causal LM) its
    motif_inference_mode, else fwd.

    Raises:
        ValidationError: the set's strands and a causal LM's motif_inference_mode disagree.
    """
    mode = _MODE_STRANDS.get(model.motif_inference_mode, "fwd")
    if variants.strands is None:
        return mode if model.type == "clm" else "fwd"
    if model.type == "clm" and model.motif_inference_mode != "fwd_only" and mode != variants.strands:
        raise ValidationError(
            f"models[{model.label}].motif_inference_mode",
            model.motif_inference_mode,
            f"disagrees with variants[{variants.name}].strands = {variants.strands}",
            "the variant set's strands decides; drop motif_inference_mode or make them agree",
        )
    return variants.strands


def _base_indices(bases: pd.Series, what: str) -> np.ndarray:
    arr = np.frombuffer("".join(bases.tolist()).encode("ascii"), dtype=np.uint8)
    idx = BASE_INDEX_LUT[arr]
    if (idx < 0).any():
        raise ValidationError(what, chr(int(arr[idx < 0][0])), "not one of A, C, G, T")
    return idx.astype(np.int64)


class VariantEffect(TaskFamily):
    name = "variant_effect"
    description = "LLR of ALT vs REF in a reference window; AUROC/AUPRC, Spearman/Pearson"
    metrics = ("auroc", "auprc", "spearman", "pearson")
    label_required = False
    steps = "plantcad_flows.variants.steps:VariantSteps"
    prepare_in_preflight = True

    def strand_unsupported_reason(self, model_type: str, strand: str) -> str | None:
        if strand == "fwd":
            return None
        return "a variant set reads its strands as one cell: variants[].strands (fwd, rc or both)"

    def main_metric_of(self, metrics) -> str:
        names = set(metrics)
        return "auroc" if "auroc" in names or "spearman" not in names else "spearman"

    def check_model(self, where: str, model: ModelLike, split: SplitLike) -> None:
        variants = getattr(split, "variants", None)
        if variants is not None:
            strands_of(model, variants)

    # --- identity -------------------------------------------------------------------------
    def content_files(self, split: SplitLike) -> dict[str, str]:
        v = split.variants
        return {v.source_field: v.source, f"variants[{v.name}].fasta": v.fasta}

    def split_key_fields(self, split: SplitLike) -> dict[str, object]:
        # content only: the split's identity covers the variants and the FASTA, not their paths
        return {"source": "variants", "variants": split.variants.identity_fields()}

    def cell_key_fields(self, split: SplitLike) -> dict[str, object]:
        # only a set that names its strands adds them (fwd cells keep their keys; a causal LM's
        # motif_inference_mode is in the model's fields already)
        return {} if split.variants.strands is None else {"variant_strands": split.variants.strands}

    # --- scoring --------------------------------------------------------------------------
    def score(self, model, split, frame, run: Runner, strand: str = "fwd"):
        """(probs (n, S, 4) at the centre per strand read (MLM; none for a CLM), bases, llr)."""
        n = len(frame)
        seqs = frame["sequence"].tolist()
        length = len(seqs[0]) if n else model.context_length
        if length != model.context_length:
            raise ValidationError(
                f"models[{model.label}].context_length", model.context_length, f"windows are {length} bp"
            )
        ref = _base_indices(frame["ref"], "variants.ref")
        alt = _base_indices(frame["alt"], "variants.alt")
        which = strands_of(model, split.variants)
        reads = ("fwd", "rc") if which == "both" else (which,)
        plan = crop_plan(length, length)
        c = length // 2 - 1
        centre = np.array([[c]], dtype=np.int64)
        rows = np.arange(n)
        parts, probs = [], []
        if model.type == "mlm":
            for s in reads:
                at = c if s == "fwd" else length - 1 - c
                inp = ModelInputs(
                    seqs, plan, s == "rc", np.array([at]), np.array([[at]]), np.ones((1, 1), bool), centre
                )
                p, bases = run(inp)
                with np.errstate(divide="ignore"):
                    logp = np.log(p[:, 0, :].astype(np.float64))
                parts.append(logp[rows, alt] - logp[rows, ref])
                probs.append(p)
            return np.concatenate(probs, axis=1), bases, np.mean(parts, axis=0)
        alt_seqs = [w[:c] + a + w[c + 1 :] for w, a in zip(seqs, frame["alt"].tolist(), strict=True)]
        none = np.zeros((1, 0), dtype=np.int64)
        for s in reads:
            lls = []
            for windows in (seqs, alt_seqs):
                inp = ModelInputs(windows, plan, s == "rc", None, none, none.astype(bool), none, "loglik")
                lls.append(run(inp)[0])
            parts.append(lls[1] - lls[0])
        empty = np.zeros((n, 0, 4), dtype=np.float32)
        return empty, np.zeros((n, 0), dtype=np.uint8), np.mean(parts, axis=0)

    def check_split(self, split: SplitLike) -> None:
        if getattr(split, "variants", None) is None:
            raise ValidationError(
                f"splits[{split.key}].task",
                split.task,
                "a variant_effect task is given under variants:, not splits:",
            )

    def metrics_of(self, predictions: pd.DataFrame, notes: list[str] | None = None) -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        _group(predictions, "", out, notes)
        fixed = set(CORE_COLUMNS)
        for col in (c for c in predictions.columns if c not in fixed and c != "score"):
            counts = predictions[col].value_counts(dropna=True)
            if len(counts) > MAX_SUBSET_VALUES and notes is not None:
                notes.append(
                    f"{col}: {len(counts)} values, metrics for the {MAX_SUBSET_VALUES} most frequent"
                )
            for value in sorted(counts.index[:MAX_SUBSET_VALUES], key=str):
                _group(predictions[predictions[col] == value], f"[{col}={value}]", out, None)
        return out

    def metric_inputs(self, predictions: pd.DataFrame) -> MetricInputs:
        if "label" not in predictions.columns:
            return MetricInputs((), 0)
        has = predictions["label"].notna().to_numpy() & ~np.isnan(predictions["llr"].to_numpy(np.float64))
        labels = predictions["label"].to_numpy(dtype=np.float64, na_value=np.nan)[has].astype(np.int64)
        scores = -predictions["llr"].to_numpy(np.float64)[has]
        return MetricInputs(("auroc", "auprc"), int(has.sum()), scores=scores, labels=labels)
