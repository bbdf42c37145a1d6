"""`VariantSetConfig`: one set of variants to score, as a config entry under `variants:`.

Only pydantic and the named errors are imported, so the class can be embedded in any config
layer. Field names are the YAML's (docs/variants.md). Label, target and subset fields name a VCF
INFO key as `INFO/KEY` for a `vcf:` input, and a plain column name for a `table:` input.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plantcad_flows.errors import ValidationError

# Columns every normalised variant row has; label, target and subset columns may not reuse them.
CORE_COLUMNS = ("row_index", "chrom", "pos", "ref", "alt", "llr", "label", "target")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_INFO_RE = re.compile(r"INFO/([A-Za-z_][A-Za-z0-9_.]*)")


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
