"""Weight files checked before a run, from their headers: missing, truncated, sharded, `.bin`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from model_factory import save_tiny_mlm

from plantcad_flows.config import ComputeConfig, ModelConfig
from plantcad_flows.errors import ValidationError
from plantcad_flows.scoring.preflight import check_model
from plantcad_flows.scoring.weights import check_weights


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "mlm"
    save_tiny_mlm(path, max_len=64)
    return path


def _copy(tiny: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny, tmp_path / "model"))


def _check(path: Path) -> None:
    model = ModelConfig(path=str(path), type="mlm", name="m", context_length=64)
    check_model(model, ComputeConfig(device="cpu"), scores_here=True, seq_lengths=[64])


def test_whole_weights_pass(tiny):
    _check(tiny)


def test_missing_weights_are_named(tiny, tmp_path):
    model = _copy(tiny, tmp_path)
    (model / "model.safetensors").unlink()
    with pytest.raises(ValidationError) as e:
        _check(model)
    assert str(e.value) == (
        f"models[m].path={str(model)!r}: no weights in {model} (no model.safetensors or pytorch_model.bin)"
    )


@pytest.mark.parametrize("keep", [0.5, 0.999, 4], ids=["half", "last-bytes", "in-header"])
def test_truncated_safetensors_is_named(tiny, tmp_path, keep):
    model = _copy(tiny, tmp_path)
    weights = model / "model.safetensors"
    size = weights.stat().st_size
    os.truncate(weights, int(size * keep) if keep < 1 else keep)
    with pytest.raises(ValidationError) as e:
        _check(model)
    msg = str(e.value)
    assert msg.startswith(f"models[m].path={str(model)!r}: {weights} is truncated"), msg
    assert "\n" not in msg


def test_sharded_and_bin_weights(tiny, tmp_path):
    from transformers import AutoModelForMaskedLM

    loaded = AutoModelForMaskedLM.from_pretrained(tiny)
    sharded = tmp_path / "sharded"
    loaded.save_pretrained(sharded, max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    check_weights("m", str(sharded), str(sharded))
    (sharded / shards[-1]).unlink()
    with pytest.raises(ValidationError, match=f"{sharded / shards[-1]}: missing"):
        check_weights("m", str(sharded), str(sharded))

    import torch

    as_bin = Path(shutil.copytree(tiny, tmp_path / "bin"))
    (as_bin / "model.safetensors").unlink()
    torch.save(loaded.state_dict(), as_bin / "pytorch_model.bin")  # what older checkpoints hold
    check_weights("m", str(as_bin), str(as_bin))
    weights = as_bin / "pytorch_model.bin"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(ValidationError, match="pytorch_model.bin is truncated or not a PyTorch checkpoint"):
        check_weights("m", str(as_bin), str(as_bin))
