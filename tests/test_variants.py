"""Variant effects, the pure side: config, streaming reader, classification and skip counts,
reference windows (N padding), bgzipped and plain-gzip inputs, bad input, shards, metrics and
the output files. No model here (tests/test_variants_scoring.py scores)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score
from variant_data import (
    CHROMS,
    INFO_HEADER,
    SKIPS,
    genome,
    hand_window,
    records,
    write_fasta,
    write_plain_gzip,
    write_vcf,
)

from plantcad_flows.errors import ValidationError
from plantcad_flows.families import VariantSetConfig, get_family
from plantcad_flows.layout.integrity import read_rows
from plantcad_flows.layout.sharding import merge_shards, plan_shards
from plantcad_flows.results.bootstrap import cell_intervals
from plantcad_flows.variants.outputs import scores_frame, write_outputs
from plantcad_flows.variants.prepare import prepare_variant_set
from plantcad_flows.variants.reference import ReferenceGenome
from plantcad_flows.variants.sources import open_fasta

COLUMNS = ["chrom", "pos", "ref", "alt", "label", "target", "CSQ"]


@pytest.fixture
def inputs(tmp_path):
    seqs = genome()
    lines, expected = records(seqs)
    fasta = write_fasta(seqs, tmp_path / "ref.fa", lower_from=180)
    vcf = write_vcf(tmp_path / "v.vcf", lines)
    return seqs, fasta, vcf, expected


def _cfg(vcf, fasta, **kw) -> VariantSetConfig:
    base = dict(
        name="t", vcf=str(vcf), fasta=str(fasta), label="INFO/LAB", target="INFO/SCORE", subsets=["INFO/CSQ"]
    )
    return VariantSetConfig(**{**base, **kw})


def _expected_frame(expected) -> pd.DataFrame:
    return pd.DataFrame(expected, columns=COLUMNS)


def _prepared_frame(prepared) -> pd.DataFrame:
    frame = pd.read_parquet(prepared.path)
    assert frame["row_index"].tolist() == list(range(len(frame)))
    return frame[COLUMNS].astype({"label": "int64"})


# ------------------------------------------------------------------ config


def test_config_is_strict_and_names_fields():
    ok = _cfg("v.vcf", "g.fa")
    assert ok.subset_columns == ("CSQ",) and ok.column_of("INFO/LAB") == "LAB"
    with pytest.raises(pydantic.ValidationError, match="extra"):
        VariantSetConfig(name="t", vcf="v.vcf", fasta="g.fa", labels="INFO/X")
    with pytest.raises(pydantic.ValidationError, match=r"variants\[t\]\.vcf.*exactly one of vcf and table"):
        VariantSetConfig(name="t", vcf="v.vcf", table="v.tsv", fasta="g.fa")
    with pytest.raises(pydantic.ValidationError, match=r"variants\[t\]\.label='LAB'.*INFO/KEY"):
        VariantSetConfig(name="t", vcf="v.vcf", fasta="g.fa", label="LAB")
    with pytest.raises(pydantic.ValidationError, match=r"variants\[t\]\.target='INFO/x'.*column name"):
        VariantSetConfig(name="t", table="v.tsv", fasta="g.fa", target="INFO/x")
    with pytest.raises(pydantic.ValidationError, match=r"subsets\[0\]='pos'.*clashes"):
        VariantSetConfig(name="t", table="v.tsv", fasta="g.fa", subsets=["pos"])
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        ok.name = "x"


# ------------------------------------------------------------------ reading and classification


def test_vcf_rows_split_trimmed_and_skips_counted(inputs, tmp_path):
    _, fasta, vcf, expected = inputs
    prepared = prepare_variant_set(_cfg(vcf, fasta), tmp_path / "out", chunk_rows=3)
    pd.testing.assert_frame_equal(_prepared_frame(prepared), _expected_frame(expected))
    assert prepared.skipped == SKIPS
    assert prepared.num_variants == len(expected)
    assert prepared.num_records == len(expected) + sum(SKIPS.values())


def test_bgzipped_vcf_and_fasta_indexed_on_first_use(inputs, tmp_path):
    seqs, fasta, vcf, expected = inputs
    import pysam

    bgz_fasta = tmp_path / "ref.fa.gz"
    pysam.tabix_compress(str(fasta), str(bgz_fasta))
    bgz_vcf = write_vcf(tmp_path / "v.vcf.gz", records(seqs)[0])
    assert not (tmp_path / "ref.fa.gz.fai").exists()
    prepared = prepare_variant_set(_cfg(bgz_vcf, bgz_fasta), tmp_path / "out")
    assert (tmp_path / "ref.fa.gz.fai").exists() and (tmp_path / "ref.fa.gz.gzi").exists()
    pd.testing.assert_frame_equal(_prepared_frame(prepared), _expected_frame(expected))
    assert prepared.skipped == SKIPS


def test_table_inputs_tsv_and_parquet_match_the_vcf(inputs, tmp_path):
    seqs, fasta, vcf, expected = inputs
    rows = [line.split("\t") for line in records(seqs)[0]]
    table = pd.DataFrame(
        {
            "chrom": [r[0] for r in rows],
            "pos": [int(r[1]) for r in rows],
            "ref": [r[3] for r in rows],
            "alt": [r[4] for r in rows],
            "LAB": [dict(kv.split("=") for kv in r[7].split(";"))["LAB"] for r in rows],
            "SCORE": [float(dict(kv.split("=") for kv in r[7].split(";"))["SCORE"]) for r in rows],
            "CSQ": [dict(kv.split("=") for kv in r[7].split(";"))["CSQ"] for r in rows],
        }
    )
    # a table's multi-allelic label cannot be per ALT: give the split row's label in a plain column
    table.loc[table["alt"].str.contains(","), "LAB"] = "1"
    want = _expected_frame(expected)
    want.loc[(want["pos"] == 120), "label"] = 1
    table.to_csv(tmp_path / "v.tsv", sep="\t", index=False)
    table.to_parquet(tmp_path / "v.parquet")
    for name in ("v.tsv", "v.parquet"):
        cfg = VariantSetConfig(
            name="t",
            table=str(tmp_path / name),
            fasta=str(fasta),
            label="LAB",
            target="SCORE",
            subsets=["CSQ"],
        )
        prepared = prepare_variant_set(cfg, tmp_path / name.replace(".", "_"))
        pd.testing.assert_frame_equal(_prepared_frame(prepared), want)
        assert prepared.skipped == SKIPS


def test_windows_are_padded_with_n_at_chromosome_ends(inputs):
    seqs, fasta, _, _ = inputs
    with ReferenceGenome(open_fasta(str(fasta), "fasta")) as g:
        for length in (8, 64, 512):
            cases = [("chr1", p) for p in (1, 2, 3, 100, 199, 200)] + [("chr2", p) for p in (1, 75, 150)]
            chrom = np.array([c for c, _ in cases], dtype=object)
            pos = np.array([p for _, p in cases])
            got = g.windows(chrom, pos, length)
            for (c, p), row in zip(cases, got, strict=True):
                assert row.tobytes().decode() == hand_window(seqs[c], p, length)
                assert chr(row[length // 2 - 1]) == seqs[c][p - 1].upper()


def test_windows_fetch_by_clusters_far_apart(inputs, monkeypatch):
    """Windows further apart than GAP are separate fetches; the result is the same."""
    import plantcad_flows.variants.reference as reference

    seqs, fasta, _, _ = inputs
    pos = np.array([5, 60, 61, 190])
    chrom = np.array(["chr1"] * 4, dtype=object)
    with ReferenceGenome(open_fasta(str(fasta), "fasta")) as g:
        together = g.windows(chrom, pos, 16)
        monkeypatch.setattr(reference, "GAP", 10)
        assert len(list(g.spans(chrom, pos - 8, 16))) == 3
        np.testing.assert_array_equal(g.windows(chrom, pos, 16), together)


def test_dense_variants_over_more_than_max_span_are_few_fetches(tmp_path):
    """20,000 SNVs every 1 kb over 20 Mb of one chromosome: every gap is below GAP, so the only
    cuts are the MAX_SPAN (16 Mb) pieces: 2 fetches, and the windows are the FASTA's bases."""
    import pysam

    from plantcad_flows.variants.reference import MAX_SPAN

    n = 20_000_000
    rng = np.random.default_rng(0)
    seq = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, n)].tobytes()
    fasta = tmp_path / "big.fa"
    with open(fasta, "wb") as f:
        f.write(b">chrBig\n")
        f.write(b"\n".join(seq[i : i + 1_000_000] for i in range(0, n, 1_000_000)) + b"\n")
    pysam.faidx(str(fasta))
    pos = np.arange(1_000, n, 1_000)
    chrom = np.array(["chrBig"] * len(pos), dtype=object)
    fetches = []

    class Counting(pysam.FastaFile):
        def fetch(self, *args):
            fetches.append(args)
            return super().fetch(*args)

    with ReferenceGenome(Counting(str(fasta))) as g:
        got = g.windows(chrom, pos, 8)
    assert len(fetches) == -(-(pos[-1] - pos[0]) // MAX_SPAN) == 2
    for i in (0, len(pos) // 2, len(pos) - 1):
        assert got[i].tobytes() == seq[pos[i] - 4 : pos[i] + 4]


# ------------------------------------------------------------------ bad input


def test_bad_inputs_raise_named_errors(inputs, tmp_path):
    seqs, fasta, vcf, _ = inputs
    out = tmp_path / "out"
    with pytest.raises(ValidationError, match=r"variants\[t\]\.fasta=.*no such file"):
        prepare_variant_set(_cfg(vcf, tmp_path / "missing.fa"), out)
    gz = write_plain_gzip(fasta, tmp_path / "plain.fa.gz")
    with pytest.raises(ValidationError, match=r"variants\[t\]\.fasta=.*not bgzip.*bgzip"):
        prepare_variant_set(_cfg(vcf, gz), out)
    (tmp_path / "junk.fa").write_text("not a fasta\n")
    with pytest.raises(ValidationError, match=r"variants\[t\]\.fasta=.*not a FASTA"):
        prepare_variant_set(_cfg(vcf, tmp_path / "junk.fa"), out)
    renamed = write_vcf(tmp_path / "renamed.vcf", [], contigs={"1": 200, "2": 150})
    with pytest.raises(
        ValidationError, match=r"variants\[t\]\.vcf=.*none of its contigs \(1, 2\).*chr prefix"
    ):
        prepare_variant_set(_cfg(renamed, fasta), out)
    no_contigs = write_vcf(tmp_path / "nc.vcf", ["1\t5\t.\tA\tG\t.\tPASS\tLAB=0"], contigs={})
    with pytest.raises(ValidationError, match=r"none of its chromosomes \(1\) is in the FASTA"):
        prepare_variant_set(_cfg(no_contigs, fasta, target=None, subsets=[]), out)
    with pytest.raises(ValidationError, match=r"variants\[t\]\.label='INFO/LABEL'.*did you mean 'INFO/LAB'"):
        prepare_variant_set(_cfg(vcf, fasta, label="INFO/LABEL"), out)
    with pytest.raises(ValidationError, match=r"variants\[t\]\.target='INFO/AF'"):
        prepare_variant_set(_cfg(vcf, fasta, target="INFO/AF"), out)
    with pytest.raises(ValidationError, match=r"variants\[t\]\.label=2: the label is not binary"):
        prepare_variant_set(_cfg(vcf, fasta, label="INFO/BAD"), out)
    only_skips = write_vcf(
        tmp_path / "skips.vcf", [line for line in records(seqs)[0] if line.split("\t")[1] in ("140", "150")]
    )
    with pytest.raises(ValidationError, match=r"no scorable SNV after filtering \(indel: 1, symbolic: 1\)"):
        prepare_variant_set(_cfg(only_skips, fasta), out)
    assert not (out / "variants.parquet").exists()


# ------------------------------------------------------------------ shards, metrics, outputs


def test_a_shard_reads_only_its_row_groups(inputs, tmp_path):
    import pyarrow.parquet as pq

    _, fasta, vcf, _ = inputs
    prepared = prepare_variant_set(_cfg(vcf, fasta), tmp_path / "out", chunk_rows=4, row_group_size=2)
    assert pq.ParquetFile(prepared.path).num_row_groups >= 5
    full = pd.read_parquet(prepared.path)
    for spec in plan_shards(prepared.num_variants, 3):
        with open(prepared.path, "rb") as f:
            part = read_rows(f, spec.start, spec.stop)
        pd.testing.assert_frame_equal(
            part.reset_index(drop=True), full.iloc[spec.start : spec.stop].reset_index(drop=True)
        )


def _fake_shards(prepared, tmp_path, llr, n_shards=2) -> list:
    paths = []
    for spec in plan_shards(prepared.num_variants, n_shards):
        p = tmp_path / spec.filename
        pd.DataFrame(
            {"row_index": np.arange(spec.start, spec.stop), "score": llr[spec.start : spec.stop]}
        ).to_parquet(p)
        paths.append(p)
    return paths


def test_finalize_writes_scores_in_vcf_order_and_metrics(inputs, tmp_path):
    import pysam

    _, fasta, vcf, expected = inputs
    prepared = prepare_variant_set(_cfg(vcf, fasta), tmp_path / "out")
    llr = np.linspace(-2, 1, prepared.num_variants)
    merged = merge_shards(_fake_shards(prepared, tmp_path, llr), np.arange(prepared.num_variants))
    frame = scores_frame(prepared.path, prepared.columns, merged)
    outputs = write_outputs(frame, tmp_path / "out")
    assert outputs == {
        "parquet": "variant_scores.parquet",
        "tsv": "variant_scores.tsv.gz",
        "tabix_index": True,
    }
    scores = pd.read_parquet(tmp_path / "out" / "variant_scores.parquet")
    assert list(scores.columns) == ["chrom", "pos", "id", "ref", "alt", "llr", "label", "target", "CSQ"]
    assert scores["id"].isna().all()  # every ID in this VCF is "."
    want = _expected_frame(expected)
    pd.testing.assert_frame_equal(scores.drop(columns=["llr", "id"]).astype({"label": "int64"}), want)
    np.testing.assert_allclose(scores["llr"], llr)
    # the bgzipped TSV: BGZF, tabix-indexed (the VCF is in position order), same rows
    tsv = tmp_path / "out" / "variant_scores.tsv.gz"
    with pysam.TabixFile(str(tsv)) as tbx:
        region = [line.split("\t") for line in tbx.fetch("chr1", 99, 131)]
    assert [(r[0], int(r[1])) for r in region] == [("chr1", 100), ("chr1", 120), ("chr1", 120), ("chr1", 131)]
    back = pd.read_csv(tsv, sep="\t", compression="gzip")
    assert back.columns[0] == "#chrom" and len(back) == len(scores)
    np.testing.assert_allclose(back["llr"], scores["llr"], rtol=1e-5)
    # metrics (the family's, one authority): the classification metrics rank -llr (a low LLR
    # marks a damaging variant); the intervals are every family's bootstrap
    family = get_family("variant_effect")
    predictions = frame.assign(row_index=np.arange(len(frame)))
    m = family.metrics_of(predictions)
    labels = scores["label"].to_numpy()
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, -llr))
    assert m["auprc"] == pytest.approx(average_precision_score(labels, -llr))
    low, high = cell_intervals(family, predictions, 200, 0)["auroc"]
    assert low <= m["auroc"] <= high
    assert m["spearman"] == pytest.approx(spearmanr(llr, scores["target"]).statistic)
    assert m["pearson"] == pytest.approx(pearsonr(llr, scores["target"]).statistic)
    assert {k for k in m if k.startswith("num_scored[")} == {"num_scored[CSQ=a]", "num_scored[CSQ=b]"}
    a = scores["CSQ"] == "a"
    assert m["auroc[CSQ=a]"] == pytest.approx(roc_auc_score(labels[a], -llr[a]))
    assert m["num_scored[CSQ=a]"] == int(a.sum())
    assert m["num_scored"] == len(expected) and prepared.skipped == SKIPS
    assert family.main_metric_of(m) == "auroc"


def test_finalize_refuses_incomplete_shards(inputs, tmp_path):
    from plantcad_flows.errors import IncompleteShardsError

    _, fasta, vcf, _ = inputs
    prepared = prepare_variant_set(_cfg(vcf, fasta), tmp_path / "out")
    paths = _fake_shards(prepared, tmp_path, np.zeros(prepared.num_variants), n_shards=3)
    with pytest.raises(IncompleteShardsError, match="missing"):
        merge_shards(paths[:2], np.arange(prepared.num_variants))


def test_flag_label_is_one_when_present_and_zero_when_absent(inputs, tmp_path):
    seqs, fasta, _, _ = inputs
    s = seqs["chr1"]
    lines = [
        f"chr1\t{p}\t.\t{s[p - 1]}\t{'A' if s[p - 1] != 'A' else 'C'}\t.\tPASS\t{info}"
        for p, info in ((10, "HIT"), (20, "."))
    ]
    vcf = write_vcf(tmp_path / "flag.vcf", lines, info=['##INFO=<ID=HIT,Number=0,Type=Flag,Description="x">'])
    prepared = prepare_variant_set(
        VariantSetConfig(name="t", vcf=str(vcf), fasta=str(fasta), label="INFO/HIT"), tmp_path / "o"
    )
    assert pd.read_parquet(prepared.path)["label"].tolist() == [1, 0]


def test_fingerprints_follow_content_not_path(inputs, tmp_path):
    import shutil

    from plantcad_flows.variants.prepare import fingerprints

    _, fasta, vcf, _ = inputs
    first = fingerprints(_cfg(vcf, fasta))
    (tmp_path / "moved").mkdir()
    moved_fa, moved_vcf = (shutil.copy(p, tmp_path / "moved") for p in (fasta, vcf))
    assert fingerprints(_cfg(moved_vcf, moved_fa)) == first
    text = open(moved_fa).read()
    open(moved_fa, "w").write(text[:20] + ("A" if text[20] != "A" else "C") + text[21:])
    changed = fingerprints(_cfg(moved_vcf, moved_fa))
    assert changed["fasta"] != first["fasta"] and changed["variants"] == first["variants"]


def test_bcf_input_matches_the_vcf(inputs, tmp_path):
    import pysam

    seqs, fasta, _, expected = inputs
    # BCF needs every contig declared (htslib exits the process on an undeclared one) and, for
    # the symbolic record, INFO/END (which htslib adds to its header only after writing began)
    end = '##INFO=<ID=END,Number=1,Type=Integer,Description="end">'
    vcf = write_vcf(
        tmp_path / "all.vcf", records(seqs)[0], contigs={**CHROMS, "chrUn": 100}, info=[*INFO_HEADER, end]
    )
    bcf = tmp_path / "v.bcf"
    with pysam.VariantFile(str(vcf)) as src, pysam.VariantFile(str(bcf), "wb", header=src.header) as dst:
        for rec in src:
            dst.write(rec)
    prepared = prepare_variant_set(_cfg(bcf, fasta), tmp_path / "out")
    pd.testing.assert_frame_equal(_prepared_frame(prepared), _expected_frame(expected))
    assert prepared.skipped == SKIPS


def test_an_unreadable_record_names_the_file(inputs, tmp_path):
    seqs, fasta, _, _ = inputs
    vcf = write_vcf(tmp_path / "broken.vcf", [*records(seqs)[0][:2], "chr1\tnotapos\t.\tA\tG\t.\tPASS\t."])
    with pytest.raises(ValidationError, match=r"variants\[t\]\.vcf=.*broken.vcf.*unreadable record"):
        prepare_variant_set(_cfg(vcf, fasta), tmp_path / "out")


def test_the_vcf_id_is_kept(inputs, tmp_path):
    _, fasta, vcf, _ = inputs
    lines = vcf.read_text().splitlines()
    body = [ln for ln in lines if not ln.startswith("#")]
    named = [ln.split("\t") for ln in body[:3]]
    named[0][2], named[2][2] = "rs1", "rs3;alias"
    with_ids = write_vcf(tmp_path / "ids.vcf", ["\t".join(f) for f in named])
    prepared = prepare_variant_set(_cfg(with_ids, fasta), tmp_path / "out")
    llr = np.zeros(prepared.num_variants)
    merged = merge_shards(_fake_shards(prepared, tmp_path, llr), np.arange(prepared.num_variants))
    write_outputs(scores_frame(prepared.path, prepared.columns, merged), tmp_path / "out")
    scores = pd.read_parquet(tmp_path / "out" / "variant_scores.parquet")
    assert [None if pd.isna(v) else v for v in scores["id"]] == ["rs1", None, "rs3;alias"]
