"""Preparing a variant set once: checks, then the normalised, scorable variants in one parquet file.

`prepare_variant_set` is model-independent (every model scores the same rows). It raises the
named errors before any model loads:

* a missing, plain-gzip or unindexable FASTA;
* a VCF whose header contigs, or whose records' chromosomes, are none of them in the FASTA;
* a label/target/subset field the VCF header (or the table) does not have;
* a label that is not binary;
* no scorable variant left after filtering (the counts per skip reason are in the message).

The output, `variants.parquet`, holds row_index (0..n-1, VCF order), chrom, pos, ref, alt and
the label/target/subset columns, written chunk by chunk in row groups of `ROW_GROUP` rows, so a
shard reads only its row groups (`shards.read_rows`). Memory is one input chunk, whatever the
number of variants.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from plantcad_flows.errors import ValidationError
from plantcad_flows.families import VariantSetConfig
from plantcad_flows.identity.content import local_data_fingerprint, remote_fingerprint
from plantcad_flows.io.remote import is_local
from plantcad_flows.layout.storage import to_path, write_bytes_atomic
from plantcad_flows.variants.classify import classify
from plantcad_flows.variants.records import (
    CHUNK_ROWS,
    check_table_fields,
    check_vcf_fields,
    iter_table,
    iter_vcf,
    table_columns,
)
from plantcad_flows.variants.reference import ReferenceGenome
from plantcad_flows.variants.sources import open_fasta, open_vcf, stage_table

VARIANTS = "variants.parquet"
ROW_GROUP = 65_536


class PreparedVariants(BaseModel):
    """What `prepare_variant_set` wrote: where, how many scorable rows, what was skipped why."""

    model_config = ConfigDict(frozen=True)
    name: str
    path: str
    num_variants: int
    num_records: int  # input rows after splitting multi-allelic records, scored or not
    skipped: dict[str, int]
    row_group_size: int
    columns: tuple[str, ...]


def fingerprints(cfg: VariantSetConfig) -> dict[str, str]:
    """Content fingerprints of the variants (vcf/table) and the FASTA, for the cell's identity:
    sha256 of local files, the store's ETag/size (or blob id) of remote ones."""

    def fp(url: str) -> str:
        return local_data_fingerprint(url, suffix=None) if is_local(url) else remote_fingerprint(url, None)

    return {"variants": fp(cfg.source), "fasta": fp(cfg.fasta)}


def _schema(cfg: VariantSetConfig) -> pa.Schema:
    fields = [
        pa.field("row_index", pa.int64()),
        pa.field("chrom", pa.string()),
        pa.field("pos", pa.int64()),
        pa.field("ref", pa.string()),
        pa.field("alt", pa.string()),
    ]
    if cfg.vcf is not None:
        fields.append(pa.field("id", pa.string()))  # the VCF's ID column (null for ".")
    if cfg.label:
        fields.append(pa.field("label", pa.int8()))
    if cfg.target:
        fields.append(pa.field("target", pa.float64()))
    fields += [pa.field(c, pa.string()) for c in cfg.subset_columns]
    return pa.schema(fields)


def _chunks(cfg: VariantSetConfig, genome: ReferenceGenome, cache_root, chunk_rows: int):
    import pysam

    where = f"variants[{cfg.name}]"
    if cfg.vcf is not None:
        vf = open_vcf(cfg.vcf, f"{where}.vcf", cache_root)
        check_vcf_fields(vf, cfg)
        declared = list(vf.header.contigs)
        if declared and not any(c in genome.lengths for c in declared):
            raise ValidationError(
                f"{where}.vcf",
                cfg.vcf,
                f"none of its contigs ({_few(declared)}) is in the FASTA",
                _hint(genome),
            )
        # htslib warns once per record on a contig the header does not declare; such records
        # are counted (missing_chrom) or scored all the same, so the warnings are only noise
        previous = pysam.set_verbosity(0)
        try:
            yield from iter_vcf(vf, cfg, chunk_rows)
        except OSError as e:  # htslib: a record it cannot parse
            raise ValidationError(f"{where}.vcf", cfg.vcf, f"unreadable record: {e}") from None
        finally:
            pysam.set_verbosity(previous)
            vf.close()
        return
    path = stage_table(cfg.table, f"{where}.table", cache_root)
    check_table_fields(table_columns(path), cfg)
    yield from iter_table(path, cfg, chunk_rows)


def _few(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def _hint(genome: ReferenceGenome) -> str:
    return f"FASTA contigs: {_few(list(genome.lengths))}; check the chr prefix"


def prepare_variant_set(
    cfg: VariantSetConfig,
    out_dir: str | os.PathLike,
    cache_root: str | os.PathLike | None = None,
    chunk_rows: int = CHUNK_ROWS,
    row_group_size: int = ROW_GROUP,
) -> PreparedVariants:
    """Check, normalise and filter `cfg`'s variants into `{out_dir}/variants.parquet`.

    `out_dir` may be remote (`s3://...`): the file is written locally, then uploaded.

    Raises:
        ValidationError: the bad inputs in the module docstring, each naming its field.
    """
    if not is_local(str(out_dir)):
        with tempfile.TemporaryDirectory(prefix="plantcad-variants-") as tmp:
            local = prepare_variant_set(cfg, tmp, cache_root, chunk_rows, row_group_size)
            dest = to_path(f"{str(out_dir).rstrip('/')}/{VARIANTS}")
            write_bytes_atomic(dest, Path(local.path).read_bytes())
            return local.model_copy(update={"path": str(dest)})
    where = f"variants[{cfg.name}]"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{VARIANTS}.partial-{os.getpid()}"
    schema = _schema(cfg)
    skipped: dict[str, int] = {}
    n_rows = n_records = 0
    seen_chroms: set[str] = set()
    with ReferenceGenome(open_fasta(cfg.fasta, f"{where}.fasta", cache_root)) as genome:
        try:
            with pq.ParquetWriter(tmp, schema) as writer:
                for chunk in _chunks(cfg, genome, cache_root, chunk_rows):
                    n_records += len(chunk)
                    seen_chroms.update(chunk["chrom"].unique().tolist())
                    kept, counts = classify(chunk, genome)
                    for k, v in counts.items():
                        skipped[k] = skipped.get(k, 0) + v
                    if kept.empty:
                        continue
                    kept.insert(0, "row_index", range(n_rows, n_rows + len(kept)))
                    table = pa.Table.from_pandas(kept[schema.names], schema=schema, preserve_index=False)
                    writer.write_table(table, row_group_size=row_group_size)
                    n_rows += len(kept)
            if n_records and not any(c in genome.lengths for c in seen_chroms):
                raise ValidationError(
                    f"{where}.{'vcf' if cfg.vcf else 'table'}",
                    cfg.source,
                    f"none of its chromosomes ({_few(sorted(seen_chroms))}) is in the FASTA",
                    _hint(genome),
                )
            if n_rows == 0:
                detail = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) or "no records"
                raise ValidationError(
                    f"{where}.{'vcf' if cfg.vcf else 'table'}",
                    cfg.source,
                    f"no scorable SNV after filtering ({detail})",
                )
            os.replace(tmp, out / VARIANTS)
        finally:
            tmp.unlink(missing_ok=True)
    return PreparedVariants(
        name=cfg.name,
        path=str(out / VARIANTS),
        num_variants=n_rows,
        num_records=n_records,
        skipped=dict(sorted(skipped.items())),
        row_group_size=row_group_size,
        columns=tuple(schema.names),
    )
