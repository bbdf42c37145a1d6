"""Variant effects, the model side: the LLR against an independent computation (the HF model
called directly on hand-built windows), MLM and CLM on each of `strands: fwd | rc | both`,
chromosome ends, multi-allelic records, kill-and-resume per shard, and `s3://` inputs on a moto
server. Everything runs through the flow's own steps (`steps.run_variant_set`)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
import torch
from model_factory import save_tiny_clm, save_tiny_mlm
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
from variant_data import genome, hand_window, records, write_fasta, write_vcf

import plantcad_flows.scoring.score as score_module
from plantcad_flows.config import ComputeConfig, EvalConfig, ModelConfig
from plantcad_flows.families import VariantSetConfig
from plantcad_flows.layout.storage import read_parquet
from plantcad_flows.scoring.loading import load_model
from plantcad_flows.scoring.rounding import SCORE_ATOL, SCORE_RTOL
from plantcad_flows.scoring.score import score_frame
from plantcad_flows.steps import run_variant_set

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


def direct_mlm_llr(path, window: str, ref: str, alt: str, at: int | None = None) -> float:
    """logit(alt) - logit(ref) at the masked position `at` (default: the centre), straight from
    the HF model."""
    tok, model = _hf(path, AutoModelForMaskedLM)
    ids = _ids(tok, window)
    c = len(window) // 2 - 1 if at is None else at
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
    result, shards = run_variant_set(
        cfg, model, str(tmp_path / f"out-{kind}"), ComputeConfig(batch_size=3), num_shards=2, resamples=50
    )
    return pd.read_parquet(Path(result.output_dir) / "variant_scores.parquet"), result, shards


def _skipped(result) -> dict:
    return {
        k.removeprefix("num_skipped_"): v for k, v in result.metrics.items() if k.startswith("num_skipped_")
    }


def _mlm_want(path, window: str, ref: str, alt: str, strands: str) -> float:
    """The hand-computed LLR: forward at the centre; reverse complement at the mirrored centre
    with the complemented bases; both: their mean."""
    fwd = direct_mlm_llr(path, window, ref, alt)
    rc = direct_mlm_llr(path, _rc(window), COMP[ref], COMP[alt], at=len(window) - 1 - (len(window) // 2 - 1))
    return {"fwd": fwd, "rc": rc, "both": (fwd + rc) / 2}[strands]


@pytest.mark.parametrize("strands", [None, "fwd", "rc", "both"])
def test_mlm_llr_equals_the_model_called_directly(models, inputs, tmp_path, strands):
    seqs, cfg, expected = inputs
    cfg = cfg.model_copy(update={"strands": strands})
    scores, result, _ = _score(models, "mlm", cfg, tmp_path)
    assert len(scores) == len(expected)  # incl. both ALTs of the multi-allelic record, both chromosome ends
    rc_differs = False
    for row in scores.itertuples():
        window = hand_window(seqs[row.chrom], row.pos, CONTEXT)
        want = _mlm_want(models["mlm"], window, row.ref, row.alt, strands or "fwd")
        assert row.llr == pytest.approx(want, abs=1e-4)
        fwd = _mlm_want(models["mlm"], window, row.ref, row.alt, "fwd")
        rc_differs |= abs(fwd - _mlm_want(models["mlm"], window, row.ref, row.alt, "rc")) > 1e-3
    assert rc_differs  # the strands read different things: the test can tell them apart
    assert _skipped(result) == {"indel": 1, "symbolic": 1, "ref_mismatch": 1, "mnv": 1, "missing_chrom": 1}


@pytest.mark.parametrize(
    ("mode", "strands"),
    [("fwd_only", None), ("fwd_rc_avg", None), ("fwd_only", "rc"), ("fwd_only", "both"), ("rc_only", "rc")],
)
def test_clm_llr_equals_the_model_called_directly(models, inputs, tmp_path, mode, strands):
    seqs, cfg, _ = inputs
    cfg = cfg.model_copy(update={"strands": strands})
    scores, _, _ = _score(models, "clm", cfg, tmp_path, motif_inference_mode=mode)
    read = strands or {"fwd_only": "fwd", "fwd_rc_avg": "both", "rc_only": "rc"}[mode]
    for row in scores.itertuples():
        ref_w = hand_window(seqs[row.chrom], row.pos, CONTEXT)
        alt_w = _alt_window(ref_w, row.alt)
        fwd = direct_clm_ll(models["clm"], alt_w) - direct_clm_ll(models["clm"], ref_w)
        rc = direct_clm_ll(models["clm"], _rc(alt_w)) - direct_clm_ll(models["clm"], _rc(ref_w))
        want = {"fwd": fwd, "rc": rc, "both": (fwd + rc) / 2}[read]
        assert row.llr == pytest.approx(want, abs=1e-4)


def test_strands_and_a_disagreeing_motif_mode_are_one_clear_error(models, inputs, tmp_path):
    _, cfg, _ = inputs
    model = ModelConfig(
        path=str(models["clm"]), type="clm", context_length=CONTEXT, motif_inference_mode="fwd_rc_avg"
    )
    # raised while the config validates, before anything is read or loaded
    with pytest.raises(
        pydantic.ValidationError, match=r"motif_inference_mode.*disagrees with variants\[t\]\.strands"
    ):
        run_variant_set(cfg.model_copy(update={"strands": "fwd"}), model, str(tmp_path / "x"), resamples=0)
    with pytest.raises(
        pydantic.ValidationError, match=r"variants\[\]\.strands='forward': unknown name \(did you mean 'fwd'"
    ):
        VariantSetConfig(name="t", vcf="v.vcf", fasta="r.fa", strands="forward")


def test_batches_give_the_same_scores_as_one_at_a_time(models, inputs):
    """No cross-talk between the rows of a batch (padding-free, same length windows)."""
    seqs, _, expected = inputs
    _, cfg, _ = inputs
    model = ModelConfig(path=str(models["mlm"]), type="mlm", context_length=CONTEXT)
    loaded = load_model(model, ComputeConfig())
    split = EvalConfig.model_validate(
        {"models": [model.model_dump()], "variants": [cfg.model_dump()]}
    ).splits[0]
    frame = pd.DataFrame(
        {
            "row_index": np.arange(len(expected)),
            "label": -1,
            "sequence": [hand_window(seqs[c], p, CONTEXT) for c, p, *_ in expected],
            "ref": [r for _, _, r, *_ in expected],
            "alt": [a for _, _, _, a, *_ in expected],
        }
    )

    def llr(f, size):
        return score_frame(loaded, model, split, f.reset_index(drop=True), size)["score"].to_numpy()

    single = llr(frame, 1)
    for size in (3, 4, len(expected)):
        batched = llr(frame, size)
        np.testing.assert_allclose(batched, single, rtol=SCORE_RTOL, atol=SCORE_ATOL)
        # the same batching again: bit-identical (a resumed shard keeps its batch size)
        assert np.array_equal(llr(frame, size), batched)
    order = np.random.default_rng(0).permutation(len(expected))  # another batch composition
    shuffled = llr(frame.iloc[order], 4)
    np.testing.assert_allclose(shuffled, single[order], rtol=SCORE_RTOL, atol=SCORE_ATOL)


def test_killed_run_resumes_with_the_missing_shards_only(models, inputs, tmp_path, monkeypatch):
    _, cfg, _ = inputs
    model = ModelConfig(path=str(models["mlm"]), type="mlm", context_length=CONTEXT)
    out = tmp_path / "run"
    real = score_module.score_frame
    calls = {"n": 0}

    def dies_on_the_third_shard(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    compute = ComputeConfig(batch_size=2)
    monkeypatch.setattr(score_module, "score_frame", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        run_variant_set(cfg, model, str(out), compute, num_shards=4, resamples=0)
    [shard_dir] = list(out.glob("score_cell-*/shards"))
    done = sorted(p.name for p in shard_dir.glob("shard-*.parquet"))
    assert done == ["shard-00000-of-00004.parquet", "shard-00001-of-00004.parquet"]
    before = {p: (shard_dir / p).stat().st_mtime_ns for p in done}
    monkeypatch.setattr(score_module, "score_frame", real)
    result, shards = run_variant_set(cfg, model, str(out), compute, num_shards=4, resamples=0)
    assert [s.computed for s in shards] == [False, False, True, True]
    assert {p: (shard_dir / p).stat().st_mtime_ns for p in done} == before
    resumed = pd.read_parquet(Path(result.output_dir) / "variant_scores.parquet")
    fresh, _ = run_variant_set(cfg, model, str(tmp_path / "fresh"), ComputeConfig(batch_size=5), resamples=0)
    np.testing.assert_allclose(
        resumed["llr"],
        pd.read_parquet(Path(fresh.output_dir) / "variant_scores.parquet")["llr"],
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


def test_s3_inputs_are_staged_and_score_like_local_ones(models, inputs, tmp_path, s3, monkeypatch):
    import pysam

    seqs, local_cfg, _ = inputs
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the node cache lands here
    bgz = tmp_path / "ref.fa.gz"
    pysam.tabix_compress(str(tmp_path / "ref.fa"), str(bgz))
    s3.upload_file(str(bgz), "variants", "g/ref.fa.gz")  # no index remotely: indexed on first use
    s3.upload_file(str(write_vcf(tmp_path / "up.vcf.gz", records(seqs)[0])), "variants", "v/up.vcf.gz")
    cfg = VariantSetConfig(
        name="t", vcf="s3://variants/v/up.vcf.gz", fasta="s3://variants/g/ref.fa.gz", label="INFO/LAB"
    )
    model = ModelConfig(path=str(models["mlm"]), type="mlm", context_length=CONTEXT)
    # inputs and the cells on S3: prepared, scored per shard and finished there
    remote_result, _ = run_variant_set(
        cfg, model, "s3://variants/cells", ComputeConfig(batch_size=4), num_shards=2, resamples=0
    )
    local, _ = run_variant_set(
        local_cfg, model, str(tmp_path / "local"), ComputeConfig(batch_size=16), resamples=0
    )
    assert (
        _skipped(remote_result) == _skipped(local)
        and remote_result.metrics["num_scored"] == local.metrics["num_scored"]
    )
    # 2 shards of batch 4 on S3 against 1 shard of batch 16 locally: the same rows and values,
    # the LLRs within float rounding of the batching (plantcad_flows/scoring/rounding.py)
    cell = remote_result.output_dir.rstrip("/")
    remote = read_parquet(f"{cell}/variant_scores.parquet")
    here = pd.read_parquet(Path(local.output_dir) / "variant_scores.parquet")
    pd.testing.assert_frame_equal(remote.drop(columns="llr"), here.drop(columns="llr"))
    np.testing.assert_allclose(remote["llr"], here["llr"], rtol=SCORE_RTOL, atol=SCORE_ATOL)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="variants", Prefix="cells/")["Contents"]}
    cell_key = cell.removeprefix("s3://variants/")
    names = ["variant_scores.parquet", "variant_scores.tsv.gz", "variant_scores.tsv.gz.tbi", "metrics.json"]
    assert {f"{cell_key}/{n}" for n in names} <= keys
    assert {f"{cell_key}/shards/shard-0000{i}-of-00002.parquet" for i in (0, 1)} <= keys
    assert any(k.endswith("/variants.parquet") for k in keys)
    cache = tmp_path / "home" / ".cache" / "plantcad-flows" / "node-cache"
    staged = {p.name for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    assert {"ref.fa.gz", "ref.fa.gz.fai", "ref.fa.gz.gzi", "up.vcf.gz"} <= staged


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
    result, _ = run_variant_set(
        cfg, model, str(tmp_path / "out"), ComputeConfig(batch_size=32), resamples=200
    )
    m = result.metrics
    assert m["num_positive_examples"] >= 140 and m["num_negative_examples"] >= 140
    assert result.intervals["auroc"][0] > 0.55, m
    assert set(_skipped(result)) == {"indel", "symbolic", "ref_mismatch", "missing_chrom"}
