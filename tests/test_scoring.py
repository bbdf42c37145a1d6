"""Scoring against direct computations with the model's own tokenizer and full forward."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from model_factory import save_tiny_clm, save_tiny_mlm

from plantcad_flows.config import ComputeConfig, ModelConfig, SamplingConfig, SplitConfig
from plantcad_flows.data.splits import prepare_split
from plantcad_flows.errors import DeviceError, ValidationError
from plantcad_flows.scoring.inputs import StageTimings
from plantcad_flows.scoring.loading import full_logits, logits_at, resolve_device
from plantcad_flows.scoring.score import load_model, score_frame, unsupported_reason

L = 48
CONS, TIS, CORE = "conservation_within_andropogoneae", "tis_recovery", "tis_core_noncore_classification"
SV = "structural_variant_effect_prediction"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"mlm": str(save_tiny_mlm(root / "mlm")), "clm": str(save_tiny_clm(root / "clm"))}


@pytest.fixture(scope="module")
def mlm(paths):
    cfg = ModelConfig(path=paths["mlm"], type="mlm", context_length=L)
    return cfg, load_model(cfg, ComputeConfig())


@pytest.fixture(scope="module")
def clm(paths):
    cfg = ModelConfig(path=paths["clm"], type="clm", context_length=L)
    return cfg, load_model(cfg, ComputeConfig())


def random_seqs(n, length, seed=0, alphabet="ACGTacgtN"):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(alphabet), length)) for _ in range(n)]


def frame_for(task, split, seqs, labels=None, seq_length=L):
    cfg = SplitConfig(task=task, split=split, path="unused", seq_length=seq_length)
    raw = pd.DataFrame(
        {"sequence": seqs, "label": labels if labels is not None else [i % 2 for i in range(len(seqs))]}
    )
    return cfg, prepare_split(cfg, SamplingConfig(), raw=raw)


def nuc_softmax(loaded, logits_row):
    return torch.softmax(logits_row[..., torch.as_tensor(loaded.nucleotide_ids)].float(), -1).numpy()


def direct_logits(loaded, seq, mask_positions=()):
    ids = loaded.tokenizer(seq, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids[0, list(mask_positions)] = loaded.mask_id
    with torch.no_grad():
        return full_logits(loaded.model, ids)[0]


def probs_of(out):
    return np.stack(out["probs"].to_list()).reshape(len(out), -1, 4)


def test_models_load_through_auto_classes_with_fast_head(mlm, clm):
    for _cfg, loaded in (mlm, clm):
        assert loaded.fast_head and loaded.dtype == torch.float32 and loaded.device.type == "cpu"
        assert loaded.nucleotide_ids.tolist() == [5, 6, 7, 8]
    assert type(mlm[1].model).__name__ == "BertForMaskedLM" and mlm[1].mask_id == 4
    assert type(clm[1].model).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize("which", ["mlm", "clm"])
def test_fast_head_equals_full_forward(which, mlm, clm):
    _, loaded = mlm if which == "mlm" else clm
    ids = torch.as_tensor(
        loaded.table.encode(np.frombuffer("".join(random_seqs(3, L)).encode(), np.uint8).reshape(3, L))
    )
    pos = torch.tensor([[0, 5, 47], [1, 2, 3], [40, 20, 10]])
    fast = logits_at(loaded, ids, pos)
    head, loaded.head = loaded.head, None
    try:
        full = logits_at(loaded, ids, pos)
    finally:
        loaded.head = head
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


def test_mlm_masks_all_positions_and_softmaxes_four_nucleotides(mlm):
    cfg, loaded = mlm
    seqs = random_seqs(5, L, seed=1)
    split, frame = frame_for(TIS, "test_maize", seqs)
    out = score_frame(loaded, cfg, split, frame, batch_size=2)
    masks = split.mask_positions
    assert masks == (22, 23, 24)
    probs = probs_of(out)
    for i, s in enumerate(seqs):
        expected = nuc_softmax(loaded, direct_logits(loaded, s, masks)[list(masks)])
        np.testing.assert_allclose(probs[i], expected, atol=1e-5)
        assert out["bases"][i] == "".join(s[p] for p in masks).upper()
    assert out["score"].isna().all() and out["row_index"].tolist() == list(range(5))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_score_is_mean_true_base_probability_with_n_as_zero(mlm):
    cfg, loaded = mlm
    seqs = random_seqs(4, L, seed=2)
    seqs[0] = seqs[0][:22] + "NaG" + seqs[0][25:]
    split, frame = frame_for(CORE, "test_maize", seqs)
    out = score_frame(loaded, cfg, split, frame, batch_size=3)
    assert out["bases"][0] == "NAG"
    p = probs_of(out)[0]
    assert out["score"][0] == pytest.approx((0 + p[1, 0] + p[2, 2]) / 3, rel=1e-6)


def test_batch_size_does_not_change_results(mlm):
    cfg, loaded = mlm
    split, frame = frame_for(CONS, "test", random_seqs(7, L, seed=3))
    a = score_frame(loaded, cfg, split, frame, batch_size=1)
    b = score_frame(loaded, cfg, split, frame, batch_size=7)
    np.testing.assert_allclose(probs_of(a), probs_of(b), atol=1e-6)


def test_clm_reads_position_i_from_logits_at_i_minus_1(clm):
    cfg, loaded = clm
    seqs = random_seqs(3, L, seed=4)
    split, frame = frame_for(TIS, "test_maize", seqs)
    out = score_frame(loaded, cfg, split, frame, batch_size=2)
    probs = probs_of(out)
    for i, s in enumerate(seqs):
        logits = direct_logits(loaded, s)
        expected = nuc_softmax(loaded, logits[[21, 22, 23]])
        np.testing.assert_allclose(probs[i], expected, atol=1e-5)
        # and not from the logits at i itself
        assert not np.allclose(probs[i], nuc_softmax(loaded, logits[[22, 23, 24]]), atol=1e-3)


def test_clm_rc_flip_and_average(paths, clm):
    _, loaded = clm
    seqs = random_seqs(3, L, seed=5)
    split, frame = frame_for(TIS, "test_maize", seqs)
    comp = str.maketrans("ACGTNacgtn", "TGCANtgcan")
    rc_cfg = ModelConfig(path=paths["clm"], type="clm", context_length=L, motif_inference_mode="rc_only")
    avg_cfg = ModelConfig(path=paths["clm"], type="clm", context_length=L, motif_inference_mode="fwd_rc_avg")
    rc = probs_of(score_frame(loaded, rc_cfg, split, frame, 2))
    fwd = probs_of(score_frame(loaded, clm[0], split, frame, 2))
    avg = probs_of(score_frame(loaded, avg_cfg, split, frame, 2))
    for i, s in enumerate(seqs):
        rcs = s.translate(comp)[::-1]
        logits = direct_logits(loaded, rcs)
        for k, pos in enumerate((22, 23, 24)):
            mirrored = L - 1 - pos
            p = nuc_softmax(loaded, logits[mirrored - 1])  # A,C,G,T on the reverse strand
            np.testing.assert_allclose(rc[i, k], p[[3, 2, 1, 0]], atol=1e-5)  # T,G,C,A -> A,C,G,T
    np.testing.assert_allclose(avg, (fwd + rc) / 2, atol=1e-6)


@pytest.mark.parametrize("which", ["mlm", "clm"])
def test_crop_realigns_masks(which, paths):
    long_len, ctx = 96, L
    seqs = random_seqs(4, long_len, seed=6)
    cropped = [s[24:72] for s in seqs]
    cfg_long = ModelConfig(path=paths[which], type=which, context_length=ctx)
    loaded = load_model(cfg_long, ComputeConfig())
    split_long, frame_long = frame_for(TIS, "test_maize", seqs, seq_length=long_len)
    split_short, frame_short = frame_for(TIS, "test_maize", cropped, seq_length=ctx)
    assert split_long.mask_positions == (46, 47, 48)
    a = score_frame(loaded, cfg_long, split_long, frame_long, 3)
    b = score_frame(loaded, cfg_long, split_short, frame_short, 3)
    np.testing.assert_allclose(probs_of(a), probs_of(b), atol=1e-6)
    assert a["bases"].tolist() == [s[46:49].upper() for s in seqs] == b["bases"].tolist()


def sv_frame(n, length, flank, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        ref = "".join(rng.choice(list("ACGT"), length))
        left = int(rng.integers(flank + 2, length // 2))
        right = left + int(rng.integers(0, 4))
        # MutSeq: an insertion/deletion whose flanks sit at the centre, padded to `length`.
        core = ref[left - 1 - flank : left - 1] + ref[right : right + flank]
        pad = (length - 2 * flank) // 2
        mut = "".join(rng.choice(list("ACGT"), pad)) + core + "".join(rng.choice(list("ACgt"), pad))
        rows.append({"RefSeq": ref, "MutSeq": mut, "left": left, "right": right, "label": len(rows) % 2})
    return pd.DataFrame(rows)


def direct_sv_score(loaded, ref, mut, left, right, flank, lo=0, hi=None):
    """Loop-by-loop SV score on the (cropped) window [lo, hi) of each sequence."""
    hi = len(ref) if hi is None else hi
    pm = nuc_softmax(loaded, direct_logits(loaded, mut[lo:hi]))
    pr = nuc_softmax(loaded, direct_logits(loaded, ref[lo:hi]))
    mut_pos = list(range(len(mut) // 2 - flank, len(mut) // 2 + flank))
    ref_pos = list(range(left - flank - 1, left - 1)) + list(range(right, right + flank))
    total = 0.0
    for mp, rp in zip(mut_pos, ref_pos):
        base = mut[mp].upper()
        if base not in "ACGT" or not lo <= rp < hi:
            continue
        k = "ACGT".index(base)
        total += math.log(max(pm[mp - lo, k], 1e-12) / max(pr[rp - lo, k], 1e-12))
    return -total / (2 * flank)


@pytest.mark.parametrize("context", [64, 32])
def test_sv_score_matches_direct_computation(mlm, paths, context):
    _, loaded = mlm
    cfg = ModelConfig(path=paths["mlm"], type="mlm", context_length=context)
    length, flank = 64, 3
    raw = sv_frame(6, length, flank, seed=7)
    split = SplitConfig(
        task=SV, split="test", path="unused", seq_length=length, overrides={"flanking": flank}
    )
    frame = prepare_split(split, SamplingConfig(), raw=raw)
    out = score_frame(loaded, cfg, split, frame, batch_size=4)
    lo = (length - context) // 2
    for i, r in raw.iterrows():
        expected = direct_sv_score(loaded, r.RefSeq, r.MutSeq, r.left, r.right, flank, lo, lo + context)
        assert out["score"][i] == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert out["bases"][i][: 2 * flank] == r.MutSeq[length // 2 - flank : length // 2 + flank].upper()
    assert probs_of(out).shape == (6, 4 * flank, 4)
    if context == 32:  # some RefSeq flank positions fall outside the crop: NaN probabilities
        assert np.isnan(probs_of(out)).any()


def test_clm_sv_is_unsupported_with_reason(clm):
    cfg, loaded = clm
    split = SplitConfig(task=SV, split="test", path="unused", seq_length=64)
    assert "structural-variant" in unsupported_reason(cfg, split)
    assert unsupported_reason(cfg, SplitConfig(task=CONS, split="test", path="x")) is None
    with pytest.raises(ValidationError, match=r"models\[.*\]\.type='clm'"):
        score_frame(loaded, cfg, split, prepare_split(split, SamplingConfig(), raw=sv_frame(2, 64, 5, 0)), 2)


def test_timings_are_collected(mlm):
    cfg, loaded = mlm
    split, frame = frame_for(CONS, "test", random_seqs(10, L, seed=8))
    t = StageTimings()
    score_frame(loaded, cfg, split, frame, batch_size=4, timings=t)
    assert t.examples == 10 and t.batches == 3 and t.forward_s > 0 and t.prepare_s > 0


def test_cuda_without_gpu_fails_before_loading(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("host has CUDA")
    missing = ModelConfig(path=str(tmp_path / "does-not-exist"))
    with pytest.raises(DeviceError, match=r"compute\.device='cuda:1': CUDA is not available"):
        load_model(missing, ComputeConfig(device="cuda:1"))


def test_precision_resolution_on_cpu():
    assert resolve_device(ComputeConfig()) == (torch.device("cpu"), torch.float32)
    assert resolve_device(ComputeConfig(precision="bf16"))[1] == torch.bfloat16
