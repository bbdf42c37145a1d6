"""prepare_split: parquet sources, column mapping, sampling and row indices."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from plantcad_flows.config import SamplingConfig, SplitConfig
from plantcad_flows.data.splits import prepare_split, sample_indices
from plantcad_flows.families import NO_LABEL

L = 16


def seqs(n, seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGTNacgtn"), L)) for _ in range(n)]


def cons_split(path, **kw):
    return SplitConfig(
        task="conservation_within_andropogoneae", split="test", path=str(path), seq_length=L, **kw
    )


def test_sampling_is_seeded_permutation_then_floor_then_cap():
    perm = np.random.default_rng(3).permutation(10)
    kept = sample_indices(10, SamplingConfig(rate=0.55, seed=3))
    assert kept.tolist() == sorted(perm[: math.floor(10 * 0.55)].tolist())  # floor(5.5) = 5
    capped = sample_indices(10, SamplingConfig(rate=0.55, max_size=2, seed=3))
    assert capped.tolist() == sorted(perm[:2].tolist())
    assert sample_indices(4, SamplingConfig()).tolist() == [0, 1, 2, 3]
    assert sample_indices(10, SamplingConfig(max_size=3, seed=3)).tolist() == sorted(perm[:3].tolist())


def test_parquet_file_with_custom_columns_keeps_row_index(tmp_path):
    s = seqs(20)
    pd.DataFrame({"dna": s, "y": [i % 2 for i in range(20)]}).to_parquet(tmp_path / "x.parquet")
    split = cons_split(tmp_path / "x.parquet", seq_column="dna", label_column="y")
    out = prepare_split(split, SamplingConfig(rate=0.5, seed=1))
    assert len(out) == 10 and list(out.columns) == ["row_index", "label", "sequence"]
    for _, r in out.iterrows():
        assert r.sequence == s[r.row_index] and r.label == r.row_index % 2
    assert out["row_index"].is_monotonic_increasing


def test_parquet_directory_is_read_in_file_order(tmp_path):
    s = seqs(6, seed=1)
    d = tmp_path / "split"
    d.mkdir()
    pd.DataFrame({"sequence": s[3:], "label": [1, 0, 1]}).to_parquet(d / "part-1.parquet")
    pd.DataFrame({"sequence": s[:3], "label": [0, 1, 0]}).to_parquet(d / "part-0.parquet")
    out = prepare_split(cons_split(d), SamplingConfig())
    assert out["sequence"].tolist() == s and out["row_index"].tolist() == list(range(6))


def test_motif_split_without_label_column_gets_placeholder():
    split = SplitConfig(task="donor_recovery", split="test_tomato", path="x", seq_length=L)
    out = prepare_split(split, SamplingConfig(), raw=pd.DataFrame({"sequence": seqs(3)}))
    assert out["label"].tolist() == [NO_LABEL] * 3 and out["label"].dtype == np.int64


def test_sv_columns_are_mapped(tmp_path):
    raw = pd.DataFrame(
        {"RefSeq": seqs(2), "MutSeq": seqs(2, seed=2), "left": [7, 8], "right": [9, 8], "label": [1, 0]}
    )
    split = SplitConfig(task="structural_variant_effect_prediction", split="test", path="x", seq_length=L)
    out = prepare_split(split, SamplingConfig(), raw=raw)
    assert list(out.columns) == ["row_index", "label", "ref_seq", "mut_seq", "left", "right"]
    assert out["ref_seq"].tolist() == raw["RefSeq"].tolist() and out["left"].tolist() == [7, 8]


def test_hf_dataset_repo_is_loaded_by_config_and_split(tmp_path):
    repo = tmp_path / "repo"
    (repo / "tis_recovery").mkdir(parents=True)
    s = seqs(4, seed=4)
    pd.DataFrame({"sequence": s, "label": [0] * 4}).to_parquet(repo / "tis_recovery" / "test_maize.parquet")
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: tis_recovery\n  data_files:\n"
        "  - split: test_maize\n    path: tis_recovery/test_maize.parquet\n---\n"
    )
    split = SplitConfig(task="tis_recovery", split="test_maize", repo_id=str(repo), seq_length=L)
    out = prepare_split(split, SamplingConfig())
    assert out["sequence"].tolist() == s
