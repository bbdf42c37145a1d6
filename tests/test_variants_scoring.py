"""Variant effects, the model side: the LLR against an independent computation (the HF model
called directly on hand-built windows), MLM and CLM (forward and forward+RC), chromosome ends,
multi-allelic records, kill-and-resume per shard, and `s3://` inputs on a moto server."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import torch
from model_factory import save_tiny_clm, save_tiny_mlm
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
from variant_data import genome, hand_window, records, write_fasta, write_vcf

import plantcad_flows.scoring.variant_llr as variant_llr
from plantcad_flows.config import ComputeConfig, ModelConfig
from plantcad_flows.families import VariantSetConfig
from plantcad_flows.layout.sharding import plan_shards
from plantcad_flows.layout.storage import read_parquet
from plantcad_flows.scoring.loading import load_model
from plantcad_flows.scoring.rounding import SCORE_ATOL, SCORE_RTOL
from plantcad_flows.scoring.variant_llr import score_variant_shard
from plantcad_flows.scoring.variant_run import run_variant_set
from plantcad_flows.variants.outputs import finalize_variant_set
from plantcad_flows.variants.prepare import prepare_variant_set

CONTEXT = 64
COMP = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "mlm": save_tiny_mlm(root / "mlm", max_len=CONTEXT),
        "clm": save_tiny_clm(root / "clm", max_len=CONTEXT),
    }


@pytest.fixture
def inputs(tmp_path):
    seqs = genome()
    lines, expected = records(seqs)
    fasta = write_fasta(seqs, tmp_path / "ref.fa")
    vcf = write_vcf(tmp_path / "v.vcf", lines)
    cfg = VariantSetConfig(name="t", vcf=str(vcf), fasta=str(fasta), label="INFO/LAB")
    return seqs, cfg, expected


def _ids(tok, window: str) -> torch.Tensor:
    return torch.tensor([tok(window, add_special_tokens=False)["input_ids"]])


@functools.cache
def _hf(path, auto):
    return AutoTokenizer.from_pretrained(path), auto.from_pretrained(path).eval()


def direct_mlm_llr(path, window: str, ref: str, alt: str) -> float:
    """logit(alt) - logit(ref) at the masked centre, straight from the HF model."""
    tok, model = _hf(path, AutoModelForMaskedLM)
    ids = _ids(tok, window)
    c = len(window) // 2 - 1
    ids[0, c] = tok.mask_token_id
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, c]
    return float(
        logits[tok.convert_tokens_to_ids(alt.lower())] - logits[tok.convert_tokens_to_ids(ref.lower())]
    )


def direct_clm_ll(path, window: str) -> float:
    """Sum over tokens 1..L-1 of log p(token | previous tokens), straight from the HF model."""
    tok, model = _hf(path, AutoModelForCausalLM)
    ids = _ids(tok, window)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return float(sum(logp[i - 1, ids[0, i]] for i in range(1, ids.shape[1])))


def _rc(s: str) -> str:
    return "".join(COMP[b] for b in reversed(s))


def _alt_window(window: str, alt: str) -> str:
    c = len(window) // 2 - 1
    return window[:c] + alt + window[c + 1 :]


def _score(models, kind, cfg, tmp_path, **model_kw):
    model = ModelConfig(path=str(models[kind]), type=kind, context_length=CONTEXT, **model_kw)
    doc, shards = run_variant_set(
        cfg, model, tmp_path / f"out-{kind}", num_shards=2, batch_size=3, resamples=50
    )
    return pd.read_parquet(tmp_path / f"out-{kind}" / "variant_scores.parquet"), doc, shards


def test_mlm_llr_equals_the_model_called_directly(models, inputs, tmp_path):
    seqs, cfg, expected = inputs
    scores, doc, _ = _score(models, "mlm", cfg, tmp_path)
    assert len(scores) == len(expected)  # incl. both ALTs of the multi-allelic record, both chromosome ends
    for row in scores.itertuples():
        window = hand_window(seqs[row.chrom], row.pos, CONTEXT)
        assert row.llr == pytest.approx(direct_mlm_llr(models["mlm"], window, row.ref, row.alt), abs=1e-4)
    assert doc["n_skipped"] == {"indel": 1, "symbolic": 1, "ref_mismatch": 1, "mnv": 1, "missing_chrom": 1}


@pytest.mark.parametrize("mode", ["fwd_only", "fwd_rc_avg"])
def test_clm_llr_equals_the_model_called_directly(models, inputs, tmp_path, mode):
    seqs, cfg, _ = inputs
    scores, _, _ = _score(models, "clm", cfg, tmp_path, motif_inference_mode=mode)
    for row in scores.itertuples():
        ref_w = hand_window(seqs[row.chrom], row.pos, CONTEXT)
        alt_w = _alt_window(ref_w, row.alt)
        want = direct_clm_ll(models["clm"], alt_w) - direct_clm_ll(models["clm"], ref_w)
        if mode == "fwd_rc_avg":
            rc = direct_clm_ll(models["clm"], _rc(alt_w)) - direct_clm_ll(models["clm"], _rc(ref_w))
            want = (want + rc) / 2
        assert row.llr == pytest.approx(want, abs=1e-4)


def test_batches_give_the_same_scores_as_one_at_a_time(models, inputs):
    """No cross-talk between the rows of a batch (padding-free, same length windows)."""
    seqs, _, expected = inputs
    loaded = load_model(
        ModelConfig(path=str(models["mlm"]), type="mlm", context_length=CONTEXT), ComputeConfig()
    )
    windows = np.stack(
        [np.frombuffer(hand_window(seqs[c], p, CONTEXT).encode(), np.uint8) for c, p, *_ in expected]
    )
    ref = np.frombuffer("".join(r for _, _, r, *_ in expected).encode(), np.uint8)
    alt = np.frombuffer("".join(a for _, _, _, a, *_ in expected).encode(), np.uint8)
    single = variant_llr.mlm_llr(loaded, windows, ref, alt, batch_size=1)
    for size in (3, 4, len(expected)):
        batched = variant_llr.mlm_llr(loaded, windows, ref, alt, batch_size=size)
        np.testing.assert_allclose(batched, single, rtol=SCORE_RTOL, atol=SCORE_ATOL)
        # the same batching again: bit-identical (a resumed shard keeps its batch size)
        assert np.array_equal(variant_llr.mlm_llr(loaded, windows, ref, alt, batch_size=size), batched)
    order = np.random.default_rng(0).permutation(len(expected))  # another batch composition
    shuffled = variant_llr.mlm_llr(loaded, windows[order], ref[order], alt[order], batch_size=4)
    np.testing.assert_allclose(shuffled, single[order], rtol=SCORE_RTOL, atol=SCORE_ATOL)


def test_killed_run_resumes_with_the_missing_shards_only(models, inputs, tmp_path, monkeypatch):
    _, cfg, _ = inputs
    model = ModelConfig(path=str(models["mlm"]), type="mlm", context_length=CONTEXT)
    out = tmp_path / "run"
    real = variant_llr.variant_llr
    calls = {"n": 0}

    def dies_on_the_third_shard(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(variant_llr, "variant_llr", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        run_variant_set(cfg, model, out, num_shards=4, batch_size=2, resamples=0)
    done = sorted(p.name for p in (out / "shards").glob("shard-*.parquet"))
    assert done == ["shard-00000-of-00004.parquet", "shard-00001-of-00004.parquet"]
    before = {p: (out / "shards" / p).stat().st_mtime_ns for p in done}
    monkeypatch.setattr(variant_llr, "variant_llr", real)
    _, shards = run_variant_set(cfg, model, out, num_shards=4, batch_size=2, resamples=0)
    assert [s.computed for s in shards] == [False, False, True, True]
    assert {p: (out / "shards" / p).stat().st_mtime_ns for p in done} == before
    resumed = pd.read_parquet(out / "variant_scores.parquet")
    run_variant_set(cfg, model, tmp_path / "fresh", num_shards=1, batch_size=5, resamples=0)
    np.testing.assert_allclose(
        resumed["llr"],
        pd.read_parquet(tmp_path / "fresh" / "variant_scores.parquet")["llr"],
        rtol=SCORE_RTOL,
        atol=SCORE_ATOL,
    )


@pytest.fixture
def s3(tmp_path, monkeypatch):
    import boto3
    from servers import start_moto, stop

    url, proc = start_moto(tmp_path)
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }.items():
        monkeypatch.setenv(k, v)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    client.create_bucket(Bucket="variants")
    yield client
    stop(proc)


def test_s3_inputs_are_staged_and_score_like_local_ones(models, inputs, tmp_path, s3):
    import pysam

    seqs, local_cfg, _ = inputs
    bgz = tmp_path / "ref.fa.gz"
    pysam.tabix_compress(str(tmp_path / "ref.fa"), str(bgz))
    s3.upload_file(str(bgz), "variants", "g/ref.fa.gz")  # no index remotely: indexed on first use
    s3.upload_file(str(write_vcf(tmp_path / "up.vcf.gz", records(seqs)[0])), "variants", "v/up.vcf.gz")
    cfg = VariantSetConfig(
        name="t", vcf="s3://variants/v/up.vcf.gz", fasta="s3://variants/g/ref.fa.gz", label="INFO/LAB"
    )
    model = ModelConfig(path=str(models["mlm"]), type="mlm", context_length=CONTEXT)
    cache = tmp_path / "node-cache"
    # inputs and the cell's directory on S3: prepared, scored per shard and finished there
    cell = "s3://variants/cells/t"
    prepared = prepare_variant_set(cfg, cell, cache_root=cache)
    loaded = load_model(model, ComputeConfig())
    shards = [
        score_variant_shard(
            loaded,
            model,
            prepared.path,
            cfg.fasta,
            spec,
            f"{cell}/shards/{spec.filename}",
            4,
            cache_root=cache,
        )
        for spec in plan_shards(prepared.num_variants, 2)
    ]
    doc = finalize_variant_set(prepared, [s.path for s in shards], cell, 0)
    local, _ = run_variant_set(local_cfg, model, tmp_path / "local", resamples=0)
    assert doc["n_skipped"] == local["n_skipped"] and doc["n_scored"] == local["n_scored"]
    # 2 shards of batch 4 on S3 against 1 shard of batch 16 locally: the same rows and values,
    # the LLRs within float rounding of the batching (plantcad_flows/scoring/rounding.py)
    remote = read_parquet(f"{cell}/variant_scores.parquet")
    here = pd.read_parquet(tmp_path / "local" / "variant_scores.parquet")
    pd.testing.assert_frame_equal(remote.drop(columns="llr"), here.drop(columns="llr"))
    np.testing.assert_allclose(remote["llr"], here["llr"], rtol=SCORE_RTOL, atol=SCORE_ATOL)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="variants", Prefix="cells/t/")["Contents"]}
    names = [
        "variants.parquet",
        "variant_scores.parquet",
        "variant_scores.tsv.gz",
        "variant_scores.tsv.gz.tbi",
        "metrics.json",
    ]
    assert {f"cells/t/{n}" for n in names} <= keys
    assert {f"cells/t/shards/shard-0000{i}-of-00002.parquet" for i in (0, 1)} <= keys
    staged = sorted(p.name for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
    assert staged == ["ref.fa.gz", "ref.fa.gz.fai", "ref.fa.gz.gzi", "up.vcf.gz"]


@pytest.mark.slow
def test_the_tiny_mlm_finds_the_planted_signal(tmp_path):
    """The demo's synthetic VCF: SNVs that break the genome's motifs are labelled 1; the shipped
    tiny MLM (trained on that genome) must rank them above neutral ones."""
    from plantcad_flows.benchmark.synthetic import ASSETS_MODELS
    from plantcad_flows.variants.synthetic import make_demo

    paths = make_demo(tmp_path / "data", seed=1, lengths={"chr1": 100_000}, n_snvs=300)
    cfg = VariantSetConfig(
        name="demo", vcf=str(paths["vcf"]), fasta=str(paths["fasta"]), label="INFO/DAMAGING"
    )
    model = ModelConfig(path=str(ASSETS_MODELS / "tiny-mlm"), type="mlm", context_length=512)
    doc, _ = run_variant_set(cfg, model, tmp_path / "out", batch_size=32, resamples=200)
    m = doc["metrics"]["all"]
    assert m["num_positive_examples"] >= 140 and m["num_negative_examples"] >= 140
    assert m["intervals"]["auroc"][0] > 0.55, m
    assert set(doc["n_skipped"]) == {"indel", "symbolic", "ref_mismatch", "missing_chrom"}
