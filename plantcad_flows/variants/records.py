"""Streaming the variants: VCF/BCF records or table rows -> chunks of normalised rows, in order.

A chunk is a DataFrame of at most `chunk_rows` rows with columns chrom, pos (1-based), ref, alt
(upper case), plus `label` (nullable int8), `target` (float64, NaN when absent) and one string
column per subset, when the config names them. A multi-allelic record becomes one row per ALT,
in ALT order. Nothing is held beyond one chunk: the input is never loaded whole.

VCF fields come from INFO. A per-ALT field (Number=A) takes the ALT's own value, Number=R the
ALT's (index + 1), anything else the record's value. A Flag is 1 when present and 0 when absent;
any other absent value is null (kept out of the metrics, not of the scores).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from plantcad_flows.errors import ValidationError
from plantcad_flows.families import VariantSetConfig

CHUNK_ROWS = 100_000
REQUIRED = ("chrom", "pos", "ref", "alt")
# True/False also match 1, 0, 1.0, 0.0 and numpy integers (equal values hash alike)
_BINARY = {
    True: 1,
    False: 0,
    "1": 1,
    "0": 0,
    "true": 1,
    "false": 0,
    "True": 1,
    "False": 0,
    "TRUE": 1,
    "FALSE": 0,
}


def binary_labels(values, field: str) -> pd.Series:
    """Values -> nullable int8 0/1. Raises ValidationError on the first value that is not binary."""
    out = np.full(len(values), -1, dtype=np.int8)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        try:
            out[i] = _BINARY[v]
        except (KeyError, TypeError):
            raise ValidationError(field, v, "the label is not binary (expected 0/1 or true/false)") from None
    s = pd.Series(out, dtype="Int8")
    return s.mask(out < 0)


def numeric_targets(values, field: str) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise ValidationError(field, v, "the target is not a number") from None
    return out


def subset_values(values) -> list[str | None]:
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values]


def _fields(cfg: VariantSetConfig) -> list[tuple[str, str, str]]:
    """(output column, source key, config field) of the label, target and subsets."""
    where = f"variants[{cfg.name}]"
    out = []
    if cfg.label:
        out.append(("label", cfg.column_of(cfg.label), f"{where}.label"))
    if cfg.target:
        out.append(("target", cfg.column_of(cfg.target), f"{where}.target"))
    for i, s in enumerate(cfg.subsets):
        col = cfg.column_of(s)
        out.append((col, col, f"{where}.subsets[{i}]"))
    return out


def _frame(cols: dict[str, list], fields, values: dict[str, list]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "chrom": pd.array(cols["chrom"], dtype=object),
            "pos": np.asarray(cols["pos"], dtype=np.int64),
            "ref": pd.Series(cols["ref"], dtype=object).str.upper(),
            "alt": pd.Series(cols["alt"], dtype=object).str.upper(),
        }
    )
    if "id" in cols:
        frame["id"] = pd.array(cols["id"], dtype=object)
    for out, _, field in fields:
        if out == "label":
            frame[out] = binary_labels(values[out], field).to_numpy()
        elif out == "target":
            frame[out] = numeric_targets(values[out], field)
        else:
            frame[out] = subset_values(values[out])
    return frame


# ------------------------------------------------------------------ VCF / BCF


def check_vcf_fields(vf, cfg: VariantSetConfig) -> None:
    """Every INFO key the config names is declared in the VCF header.

    Raises:
        UnknownNameError-like ValidationError naming the field and the keys the header declares.
    """
    from plantcad_flows.errors import UnknownNameError

    declared = list(vf.header.info.keys())
    for _, key, field in _fields(cfg):
        if key not in vf.header.info:
            raise UnknownNameError(field, f"INFO/{key}", [f"INFO/{k}" for k in declared] or ["(none)"])


def iter_vcf(vf, cfg: VariantSetConfig, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Chunks of normalised rows from an open `pysam.VariantFile`, in file order."""
    fields = _fields(cfg)
    meta = {out: (key, vf.header.info[key].number, vf.header.info[key].type) for out, key, _ in fields}
    cols: dict[str, list] = {k: [] for k in (*REQUIRED, "id")}
    values: dict[str, list] = {out: [] for out in meta}
    chrom_l, pos_l, ref_l, alt_l = cols["chrom"], cols["pos"], cols["ref"], cols["alt"]
    for rec in vf:
        alts = rec.alts or (None,)
        n = len(alts)
        cols["id"].extend([rec.id] * n)  # None for "."
        chrom_l.extend([rec.chrom] * n)
        pos_l.extend([rec.pos] * n)
        ref_l.extend([rec.ref] * n)
        alt_l.extend(alts)
        info = rec.info
        for out, (key, number, kind) in meta.items():
            if kind == "Flag":
                values[out].extend([key in info] * n)
                continue
            v = info.get(key)
            if isinstance(v, tuple):
                if number == "A" and len(v) == n:
                    values[out].extend(v)
                    continue
                if number == "R" and len(v) == n + 1:
                    values[out].extend(v[1:])
                    continue
                v = v[0] if len(v) == 1 else ",".join(map(str, v))
            values[out].extend([v] * n)
        if len(chrom_l) >= chunk_rows:
            yield _frame(cols, fields, values)
            for lst in (*cols.values(), *values.values()):
                lst.clear()
    if chrom_l:
        yield _frame(cols, fields, values)


# ------------------------------------------------------------------ tables (parquet / TSV)


def _table_batches(path: Path, columns: list[str], chunk_rows: int, field: str, url: str):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        pf = pq.ParquetFile(path)
        have = pf.schema_arrow.names
        _check_columns(have, columns, field, url)
        yield from pf.iter_batches(batch_size=chunk_rows, columns=columns)
        return
    if not any(name.endswith(s) for s in (".tsv", ".tsv.gz", ".txt", ".txt.gz", ".tsv.bgz")):
        raise ValidationError(field, url, "a variant table is .parquet or .tsv (optionally .gz)")
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        convert_options=pacsv.ConvertOptions(
            column_types={"chrom": "string", "ref": "string", "alt": "string"}
        ),
    )
    _check_columns(reader.schema.names, columns, field, url)
    for batch in reader:
        yield batch.select(columns)


def _check_columns(have: list[str], columns: list[str], field: str, url: str) -> None:
    for c in columns:
        if c not in have:
            raise ValidationError(field, url, f"no column {c!r} (columns: {', '.join(have)})")


def check_table_fields(columns: list[str], cfg: VariantSetConfig) -> None:
    from plantcad_flows.errors import UnknownNameError

    for _, key, field in _fields(cfg):
        if key not in columns:
            raise UnknownNameError(field, key, columns)


def table_columns(path: Path) -> list[str]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.name.lower().endswith((".parquet", ".pq")):
        return pq.ParquetFile(path).schema_arrow.names
    reader = pacsv.open_csv(path, parse_options=pacsv.ParseOptions(delimiter="\t"))
    return reader.schema.names


def iter_table(path: Path, cfg: VariantSetConfig, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Chunks of normalised rows from a parquet / TSV table; `alt` with commas is split."""
    fields = _fields(cfg)
    columns = list(dict.fromkeys([*REQUIRED, *(key for _, key, _ in fields)]))
    for batch in _table_batches(path, columns, chunk_rows, cfg.source_field, cfg.source):
        df = batch.to_pandas()
        if df.empty:
            continue
        alt = df["alt"].astype(object)
        if alt.str.contains(",", na=False).any():
            df = df.assign(alt=alt.str.split(",")).explode("alt", ignore_index=True)
        pos = pd.to_numeric(df["pos"], errors="coerce")
        if pos.isna().any():
            bad = df["pos"][pos.isna()].iloc[0]
            raise ValidationError(f"{cfg.source_field}:pos", bad, "pos is not an integer")
        cols = {
            "chrom": df["chrom"].astype(str).tolist(),
            "pos": pos.to_numpy(np.int64),
            "ref": df["ref"].tolist(),
            "alt": df["alt"].tolist(),
        }
        values = {out: df[key].astype(object).where(df[key].notna(), None).tolist() for out, key, _ in fields}
        yield _frame(cols, fields, values)
