"""A Caduceus checkpoint through the project's own loading and preflight (issue 26).

Its `auto_map` code is never imported (here that code raises on import), it needs no
`trust_remote_code`, the fast LM-head path is verified on it, and what it cannot be is refused
before anything loads: a key we do not implement, a causal type, native asked for an
architecture we do not implement, `remote` without trust, a complement map the tokenizer
contradicts, and trusted code that imports a package this host lacks. `implementation` never
moves a cache key: native, kernels and remote compute the same function.
"""

from __future__ import annotations

import json

import pytest
import torch
from caduceus_factory import caduceus_config, random_caduceus, save_caduceus
from model_factory import save_tiny_mlm

from plantcad_flows.architectures.caduceus import MODEL_TYPE
from plantcad_flows.config import NATIVE_MODEL_TYPES, ComputeConfig, ModelConfig, SamplingConfig, SplitConfig
from plantcad_flows.errors import ValidationError
from plantcad_flows.identity.records import Identity
from plantcad_flows.layout.hashing import cell_fields, stable_hash
from plantcad_flows.scoring.loading import load_model, logits_at
from plantcad_flows.scoring.preflight import check_model

RAISING_CODE = "raise RuntimeError('the repository code was imported')\n"


def test_native_model_types_agree_with_the_architectures():
    assert {MODEL_TYPE} == NATIVE_MODEL_TYPES


@pytest.fixture
def rcps_dir(tmp_path):
    config = caduceus_config(rcps=True)
    model = random_caduceus(config)
    return save_caduceus(model, config, tmp_path / "cad", fmt="safetensors", code=RAISING_CODE), model


@pytest.mark.parametrize("trust", [False, True])
def test_model_whose_auto_map_code_raises_loads_natively(rcps_dir, trust):
    path, reference = rcps_dir
    loaded = load_model(ModelConfig(path=str(path), trust_remote_code=trust), ComputeConfig())
    assert loaded.fast_head  # backbone + head verified against the full forward
    assert loaded.mask_id == 1 and loaded.nucleotide_ids.tolist() == [3, 4, 5, 6]
    ids = torch.randint(3, 7, (2, 40), generator=torch.Generator().manual_seed(0))
    pos = torch.tensor([[0, 20, 39]] * 2)
    with torch.no_grad():
        expected = reference(ids)[0].gather(1, pos.unsqueeze(-1).expand(-1, -1, 8))[..., 3:7]
    torch.testing.assert_close(logits_at(loaded, ids, pos), expected, rtol=1e-5, atol=1e-5)


def test_preflight_accepts_a_native_model_and_any_length(rcps_dir):
    path, _ = rcps_dir
    check_model(ModelConfig(path=str(path), context_length=8192), ComputeConfig(), True, [8192])


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_preflight_refuses_an_unimplemented_key_naming_it(rcps_dir):
    path, _ = rcps_dir
    _edit_config(path, ssm_cfg={"d_state": 4, "mystery": 1})
    with pytest.raises(ValidationError, match=r"models\[.*\]\.path=.*config\.json ssm_cfg\.mystery=1") as e:
        check_model(ModelConfig(path=str(path)), ComputeConfig(), True)
    assert "\n" not in str(e.value)


def test_preflight_refuses_a_complement_map_the_tokenizer_contradicts(rcps_dir):
    path, _ = rcps_dir
    _edit_config(path, complement_map={"3": 5, "5": 3, "4": 6, "6": 4})
    with pytest.raises(ValidationError, match="complement_map sends token 3 to 5"):
        check_model(ModelConfig(path=str(path)), ComputeConfig(), True)


def test_causal_type_is_refused(rcps_dir):
    path, _ = rcps_dir
    with pytest.raises(ValidationError, match=r"models\[.*\]\.type='clm': Caduceus is a masked LM"):
        check_model(ModelConfig(path=str(path), type="clm"), ComputeConfig(), True)


def test_remote_needs_trust_and_native_needs_an_architecture_we_implement(rcps_dir, tmp_path):
    path, _ = rcps_dir
    with pytest.raises(ValueError, match=r"models\[\]\.implementation='remote'"):
        ModelConfig(path=str(path), implementation="remote")
    bert = save_tiny_mlm(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"implementation='native': config\.json model_type 'bert'"):
        ModelConfig(path=str(bert), implementation="native")
    with pytest.raises(ValueError, match=r"implementation='kernel'.*did you mean 'kernels'"):
        ModelConfig(path=str(path), implementation="kernel")


def test_kernels_on_a_cpu_host_is_refused_before_loading(rcps_dir):
    path, _ = rcps_dir
    with pytest.raises(ValidationError, match=r"implementation='kernels'"):
        check_model(ModelConfig(path=str(path), implementation="kernels"), ComputeConfig(), True)


def test_remote_code_importing_a_missing_package_is_refused(rcps_dir):
    path, _ = rcps_dir
    (path / "modeling_caduceus.py").write_text("import torch\nfrom no_such_kernels.ops import scan\n")
    (path / "configuration_caduceus.py").write_text("from transformers import PretrainedConfig\n")
    model = ModelConfig(path=str(path), trust_remote_code=True, implementation="remote")
    with pytest.raises(
        ValidationError, match=r"modeling_caduceus\.py\) imports no_such_kernels, which is not installed"
    ):
        check_model(model, ComputeConfig(), True)


def test_implementation_never_moves_the_cell_key(rcps_dir):
    path, _ = rcps_dir
    split = SplitConfig(task="tis_recovery", split="test_maize")
    ident = Identity(kind="local", fingerprint="f")
    keys = {
        stable_hash(
            cell_fields(
                ModelConfig(path=str(path), implementation=impl, trust_remote_code=True),
                split,
                SamplingConfig(),
                ComputeConfig(),
                ident,
                ident,
            )
        )
        for impl in ("auto", "native", "kernels", "remote")
    }
    assert len(keys) == 1
