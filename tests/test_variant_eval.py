"""Variant sets as cells of the `variant_effect` family: a config's `variants:` entry is planned,
prepared, scored, finalised, cached and reported by the same steps (and the same `eval` command)
as every benchmark split (the in-process `steps.run_variant_set` calls them too), with one
`metrics.json` schema, the config's bootstrap, a main metric that follows what the set measures,
and an identity that is the content of the VCF and FASTA.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from model_factory import save_tiny_mlm
from servers import run_cli
from variant_data import genome, records, write_fasta, write_vcf

from plantcad_flows import steps
from plantcad_flows.config import EvalConfig
from plantcad_flows.errors import ValidationError
from plantcad_flows.layout.plan import build_cells
from plantcad_flows.layout.sharding import plan_shards
from plantcad_flows.layout.storage import SUCCESS

CONTEXT = 64


@pytest.fixture(scope="module")
def mlm(tmp_path_factory) -> Path:
    return save_tiny_mlm(tmp_path_factory.mktemp("models") / "mlm", max_len=CONTEXT)


@pytest.fixture
def inputs(tmp_path) -> tuple[Path, Path]:
    seqs = genome()
    lines, _ = records(seqs)
    return write_fasta(seqs, tmp_path / "ref.fa"), write_vcf(tmp_path / "v.vcf", lines)


def _raw(mlm: Path, fasta: Path, vcf: Path, prefix: Path, **variant_set) -> dict:
    entry = {"name": "snvs", "vcf": str(vcf), "fasta": str(fasta), "label": "INFO/LAB", **variant_set}
    return {
        "models": [{"name": "mlm", "path": str(mlm), "type": "mlm", "context_length": CONTEXT}],
        "variants": [entry],
        "compute": {"device": "cpu", "batch_size": 8},
        "executor": {"prefix": str(prefix)},
    }


def test_a_variants_entry_is_the_split_of_a_variant_effect_task(mlm, inputs, tmp_path):
    fasta, vcf = inputs
    config = EvalConfig.model_validate(_raw(mlm, fasta, vcf, tmp_path / "out", target="INFO/SCORE"))
    [split] = config.splits
    assert split.key == "snvs/variants" and split.family.name == "variant_effect"
    assert split.variants.fasta == str(fasta) and split.source == str(vcf)
    # the flow receives the config as a parameter: its dump validates to the same config
    assert EvalConfig.model_validate(config.model_dump()) == config


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "tis_recovery"}, "variants[tis_recovery].name"),
        ({"label": "AF"}, "variants[snvs].label"),
        ({"fasta": "missing.fa"}, None),  # found at resolution: below
    ],
)
def test_bad_variant_sets_name_their_field(mlm, inputs, tmp_path, change, field):
    fasta, vcf = inputs
    raw = _raw(mlm, fasta, vcf, tmp_path / "out")
    raw["variants"][0] |= change
    if field is None:
        with pytest.raises(ValidationError) as e:
            build_cells(EvalConfig.model_validate(raw))
        assert str(e.value).startswith("variants[snvs].fasta='missing.fa'"), str(e.value)
        return
    with pytest.raises(Exception) as e:
        EvalConfig.model_validate(raw)
    assert field in str(e.value)


def test_a_plain_split_of_the_family_is_refused(mlm, inputs, tmp_path):
    """A variant_effect task is only ever made from a `variants:` entry."""
    from plantcad_flows.config import SplitConfig
    from plantcad_flows.families import TaskDef

    definition = TaskDef(name="mine", family="variant_effect", splits=("variants",))
    with pytest.raises(ValueError, match="given under variants:"):
        SplitConfig(definition=definition, task="mine", split="variants", path=str(inputs[1]))


def test_the_cell_is_identified_by_content_not_path(mlm, inputs, tmp_path):
    fasta, vcf = inputs
    [cell] = build_cells(EvalConfig.model_validate(_raw(mlm, fasta, vcf, tmp_path / "out")))
    moved = tmp_path / "moved"
    moved.mkdir()
    m_fasta, m_vcf = shutil.copy(fasta, moved / "genome.fa"), shutil.copy(vcf, moved / "calls.vcf")
    [same] = build_cells(EvalConfig.model_validate(_raw(mlm, m_fasta, m_vcf, tmp_path / "out")))
    assert same.key == cell.key  # the same bytes elsewhere: the same cell

    text = Path(m_fasta).read_text().splitlines()
    text[1] = ("C" if text[1][0] != "C" else "G") + text[1][1:]  # one reference base differs
    Path(m_fasta).write_text("\n".join(text) + "\n")
    [other] = build_cells(EvalConfig.model_validate(_raw(mlm, m_fasta, m_vcf, tmp_path / "out")))
    assert other.key != cell.key and other.split_job.key != cell.split_job.key

    [relabelled] = build_cells(
        EvalConfig.model_validate(_raw(mlm, fasta, vcf, tmp_path / "out", target="INFO/SCORE"))
    )
    assert relabelled.split_job.key != cell.split_job.key  # another field read: another table


def test_steps_score_a_variant_cell_with_every_cells_files_and_reuse_it(mlm, inputs, tmp_path):
    from plantcad_flows.results.bootstrap import cell_intervals
    from plantcad_flows.results.history import read_predictions
    from plantcad_flows.results.uncertainty import with_intervals

    fasta, vcf = inputs
    config = EvalConfig.model_validate(
        _raw(mlm, fasta, vcf, tmp_path / "out", target="INFO/SCORE", subsets=["INFO/CSQ"])
    )
    [cell] = build_cells(config)
    prepared = steps.prepare(cell.split_job)
    shards = plan_shards(prepared.num_examples, 2)
    outputs = [steps.score_shard(cell, s, prepared) for s in shards]
    result = steps.finalize_cell(cell, outputs, prepared)
    assert result.status == "completed" and all(o.computed for o in outputs)

    cell_dir = Path(cell.dir)
    scores = pd.read_parquet(cell_dir / "variant_scores.parquet")
    assert (cell_dir / "variant_scores.tsv.gz").exists()
    m = result.metrics
    assert m["num_scored"] == len(scores) and m["num_records"] >= len(scores) and m["num_skipped_indel"] >= 1
    assert {"auroc", "auprc", "spearman", "pearson"} <= set(m)
    assert sum(v for k, v in m.items() if k.startswith("num_scored[CSQ=")) == len(scores)
    # one metrics.json schema for every cell: the flat metrics (undefined ones null) and notes
    doc = json.loads((cell_dir / "metrics.json").read_text())
    assert (
        set(doc) == {"schema_version", "metrics", "notes"} and doc["schema_version"] == steps.METRICS_SCHEMA
    )
    assert doc["metrics"] == {k: (None if v != v else v) for k, v in m.items()}

    # `metrics: {bootstrap, seed}` is honoured as for every family: its own intervals file
    with_b = with_intervals(result, 37, 3)
    frame = read_predictions(str(cell_dir))
    assert with_b.intervals == cell_intervals(cell.split.family, frame, 37, 3)
    assert (cell_dir / "intervals-b37-s3.json").exists()
    assert with_b.intervals != with_intervals(result, 37, 4).intervals

    # the next run scores nothing: every step finds its files complete
    again = steps.prepare(cell.split_job)
    reused = [steps.score_shard(cell, s, again) for s in shards]
    assert not any(o.computed for o in reused)
    assert steps.finalize_cell(cell, reused, again).status == "cached"
    assert (cell_dir / SUCCESS).exists()


def test_the_main_metric_follows_what_the_set_measures(mlm, inputs, tmp_path):
    """A set with a label leads with AUROC; one with a target only leads with Spearman, and shows
    it in the pivot (and so in trends and alerts, which ask the same family method)."""
    from plantcad_flows.results.pivot import pivot_markdown

    fasta, vcf = inputs
    results = {}
    for name, fields in (("labelled", {}), ("measured", {"label": None, "target": "INFO/SCORE"})):
        raw = _raw(mlm, fasta, vcf, tmp_path / "out", **fields)
        raw["variants"][0]["name"] = name
        [cell] = build_cells(EvalConfig.model_validate(raw))
        prepared = steps.prepare(cell.split_job)
        outputs = [steps.score_shard(cell, s, prepared) for s in plan_shards(prepared.num_examples, 1)]
        results[name] = steps.finalize_cell(cell, outputs, prepared)
    family = results["measured"].family
    from plantcad_flows.families import get_family

    assert get_family(family).main_metric_of(results["labelled"].metrics) == "auroc"
    assert "auroc" not in results["measured"].metrics
    assert get_family(family).main_metric_of(results["measured"].metrics) == "spearman"
    text = pivot_markdown(list(results.values()))
    assert "(auroc / spearman, 95% CI)" in text
    assert f"{results['measured'].metrics['spearman']:.4f}" in text
    assert f"{results['labelled'].metrics['auroc']:.4f}" in text


@pytest.mark.prefect
def test_eval_scores_a_variant_set_beside_a_benchmark_split_then_serves_it_from_cache(
    mlm, inputs, tmp_path, synthetic_dir, prefect_server
):
    fasta, vcf = inputs
    raw = _raw(mlm, fasta, vcf, tmp_path / "evals")
    raw["splits"] = [
        {
            "task": "tis_recovery",
            "split": "test_maize",
            "path": str(synthetic_dir / "tis_recovery" / "test_maize.parquet"),
        }
    ]
    raw["ray"] = {"enabled": False}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "results.json"
    proc = run_cli("eval", path, "--results-json", out, cwd=tmp_path, api_url=prefect_server, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["task"]: r for r in json.loads(out.read_text())}
    assert rows.keys() == {"snvs", "tis_recovery"}
    snvs = rows["snvs"]
    assert snvs["num_scored"] > 0 and snvs["num_skipped_indel"] >= 1 and 0 <= snvs["auroc"] <= 1
    assert snvs["auroc_ci_low"] <= snvs["auroc"] <= snvs["auroc_ci_high"]  # the pipeline's bootstrap
    assert "variant_effect - auroc" in proc.stdout
    where = re.search(r"variant scores of (\S+): (\S+)", proc.stdout)
    assert where and where.group(1).endswith("/snvs/variants"), proc.stdout
    assert Path(where.group(2)).name == "variant_scores.parquet" and Path(where.group(2)).is_file()

    proc = run_cli("eval", path, "--results-json", out, cwd=tmp_path, api_url=prefect_server, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 scored, 2 from cache" in proc.stdout
    assert {r["task"]: r for r in json.loads(out.read_text())}["snvs"] == snvs  # the same row


@pytest.mark.prefect
def test_eval_refuses_a_bad_variant_set_with_one_line_before_a_run(mlm, inputs, tmp_path):
    fasta, vcf = inputs
    raw = _raw(mlm, fasta, vcf, tmp_path / "evals", label="INFO/BAD")  # 2: not binary
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = run_cli("eval", path, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "variants[snvs].label" in lines[0] and "not binary" in lines[0], lines
    assert not list((tmp_path / "evals").glob("prepare_split-*"))  # nothing half-written


def test_a_damaged_prepared_table_is_never_scored_and_is_prepared_again(mlm, inputs, tmp_path):
    from plantcad_flows.errors import CorruptFileError

    fasta, vcf = inputs
    [cell] = build_cells(EvalConfig.model_validate(_raw(mlm, fasta, vcf, tmp_path / "out")))
    prepared = steps.prepare(cell.split_job)
    table = Path(prepared.examples)
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    table.write_bytes(bytes(data))
    [shard] = plan_shards(prepared.num_examples, 1)
    with pytest.raises(CorruptFileError, match="variants.parquet"):
        steps.score_shard(cell, shard, prepared)
    assert not steps.prepared_ok(cell.split_job)  # the step is incomplete again
    again = steps.prepare(cell.split_job)
    assert again.examples_sha256 == prepared.examples_sha256  # rewritten from the inputs
    assert steps.score_shard(cell, shard, again).computed
