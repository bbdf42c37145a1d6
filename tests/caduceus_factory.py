"""Small Caduceus models for tests: config.json dicts in the two published layouts, random
weights, and checkpoint directories written as upstream writes them (nothing downloaded).

`caduceus_config` gives the flat PlantCaduceus layout for v1 and the nested PlantCAD2 layout
(`layer_cfg` / `norm_cfg`) for v2, with PlantCaduceus's vocabulary facts: 7 tokens
(`[PAD] [MASK] [UNK] a c g t`) padded to 8, a<->t (3<->6), c<->g (4<->5).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from plantcad_flows.architectures.caduceus.config import parse_config
from plantcad_flows.architectures.caduceus.model import CaduceusForMaskedLM
from plantcad_flows.architectures.caduceus.tokenizer import plantcad_tokenizer

PLANTCAD_COMPLEMENT = {"0": 0, "1": 1, "2": 2, "3": 6, "4": 5, "5": 4, "6": 3, "7": 7}


def caduceus_config(
    rcps: bool = False,
    version: str = "v1",
    fused_add_norm: bool = True,
    d_model: int = 16,
    n_layer: int = 2,
    auto_map: bool = True,
) -> dict:
    """A config.json dict: flat (PlantCaduceus) for v1, nested (PlantCAD2 development) for v2."""
    common = {
        "model_type": "caduceus",
        "architectures": ["CaduceusForMaskedLM"],
        "d_model": d_model,
        "n_layer": n_layer,
        "vocab_size": 8,
        "residual_in_fp32": True,
        "pad_vocab_size_multiple": 8,
        "initializer_cfg": {
            "initializer_range": 0.02,
            "rescale_prenorm_residual": True,
            "n_residuals_per_layer": 1,
        },
        "bidirectional": True,
        "bidirectional_strategy": "add",
        "bidirectional_weight_tie": True,
        "rcps": rcps,
        "complement_map": dict(PLANTCAD_COMPLEMENT),
    }
    if auto_map:
        common["auto_map"] = {
            "AutoConfig": "configuration_caduceus.CaduceusConfig",
            "AutoModelForMaskedLM": "modeling_caduceus.CaduceusForMaskedLM",
        }
    if version == "v1":
        return {
            **common,
            "ssm_cfg": {
                "d_state": 4 if d_model <= 64 else 16,
                "d_conv": 4,
                "expand": 2,
                "dt_rank": "auto",
                "dt_min": 0.001,
                "dt_max": 0.1,
                "dt_init": "random",
                "dt_scale": 1.0,
                "dt_init_floor": 1e-4,
                "conv_bias": True,
                "bias": False,
                "use_fast_path": True,
            },
            "rms_norm": True,
            "fused_add_norm": fused_add_norm,
            "norm_epsilon": 1e-5,
        }
    small = d_model <= 64
    ssm = {"d_state": 8, "headdim": 8, "ngroups": 1, "chunk_size": 16} if small else {}
    return {
        **common,
        "layer_cfg": {"mode": "mamba-only", "mamba_cfg": {"version": "v2", "ssm_cfg": ssm}},
        "norm_cfg": {"fused_add_norm": fused_add_norm, "rms_norm": True, "norm_epsilon": 1e-5},
    }


def random_caduceus(config: dict, seed: int = 0) -> CaduceusForMaskedLM:
    """The model of `config` with every parameter random (norm weights near 1), in eval mode."""
    model = CaduceusForMaskedLM(parse_config(config))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("A_log"):
                p.copy_(torch.log(torch.rand(p.shape, generator=gen) * 4 + 0.5))
            elif "norm" in name:
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.3 * noise)
    return model.eval()


def save_caduceus(
    model: CaduceusForMaskedLM,
    config: dict,
    path: str | Path,
    fmt: str = "safetensors",
    code: str | None = None,
) -> Path:
    """A checkpoint directory: config.json, the PlantCAD tokenizer and the weights as upstream
    writes them: `bin` is the full state dict (tied tensors under every name, the complement
    buffers included); `safetensors` keeps one name per shared tensor. `code`, when given, is
    written as the auto_map's modelling files."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    plantcad_tokenizer().save_pretrained(path)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if fmt == "bin":
        if model.spec.rcps:
            comp = torch.tensor(model.spec.complement_map)
            state["caduceus.backbone.embeddings.word_embeddings.complement_map"] = comp
            state["lm_head.complement_map"] = comp.clone()
        torch.save(state, path / "pytorch_model.bin")
    else:
        for alias, _ in model.tied_names():
            state.pop(alias)
        save_file(state, str(path / "model.safetensors"))
    if code is not None:
        for name in ("configuration_caduceus.py", "modeling_caduceus.py"):
            (path / name).write_text(code)
    return path
