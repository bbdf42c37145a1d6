"""A Caduceus config.json, read into one frozen spec of what the network computes.

Two layouts exist. The published Caduceus one (PlantCaduceus, Caduceus-Ph/-PS) keeps the Mamba
settings in `ssm_cfg` and the norm settings at the top level; the PlantCAD2 development code
(eric-czech/caduceus, Mamba2 branches) nests them: `layer_cfg.mamba_cfg.{version, ssm_cfg}` and
`norm_cfg.{fused_add_norm, rms_norm, norm_epsilon}`. Both become one `CaduceusSpec`.

Nothing is guessed: a key this module does not know, or a value it does not implement, raises
`UnsupportedConfig` naming it. Keys that only shape training (initialisation ranges, fast-path
switches) are accepted and have no effect on the function. Defaults are upstream's defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

MODEL_TYPE = "caduceus"

# What transformers writes into any config.json, and what the upstream config classes store but
# never read in the forward pass: accepted, no effect.
_BOOKKEEPING = frozenset(
    {
        "architectures",
        "auto_map",
        "model_type",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "_name_or_path",
        "_commit_hash",
        "initializer_cfg",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "sep_token_id",
        "tokenizer_class",
        "output_hidden_states",
        "return_dict",
        "use_return_dict",
        "tie_word_embeddings",
        "id2label",
        "label2id",
        "problem_type",
        "num_labels",
        "name_or_path",
    }
)
# Mamba v1 (mamba_ssm.modules.mamba_simple.Mamba) arguments that only shape the initial weights
# or pick a kernel; the function is the same whatever their value.
_V1_INIT_ONLY = frozenset({"dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor", "use_fast_path"})
_V1_KEYS = frozenset({"d_state", "d_conv", "expand", "dt_rank", "conv_bias", "bias"}) | _V1_INIT_ONLY
# Mamba v2 (mamba_ssm.modules.mamba2.Mamba2) likewise.
_V2_INIT_ONLY = frozenset(
    {"conv_init", "A_init_range", "dt_min", "dt_max", "dt_init_floor", "use_mem_eff_path", "layer"}
)
_V2_KEYS = (
    frozenset(
        {
            "d_state",
            "d_conv",
            "expand",
            "headdim",
            "d_ssm",
            "ngroups",
            "D_has_hdim",
            "rmsnorm",
            "norm_before_gate",
            "dt_limit",
            "bias",
            "conv_bias",
            "chunk_size",
        }
    )
    | _V2_INIT_ONLY
)


class UnsupportedConfig(ValueError):
    """A config.json key or value the native Caduceus does not implement; `key` is its dotted path."""

    def __init__(self, key: str, value: object, problem: str):
        self.key, self.value, self.problem = key, value, problem
        super().__init__(f"config.json {key}={value!r}: {problem}")


@dataclass(frozen=True)
class MambaSpec:
    """One Mamba mixer (forward or reverse direction); `version` picks v1 or v2."""

    version: Literal["v1", "v2"]
    d_model: int
    d_state: int
    d_conv: int
    expand: int
    bias: bool
    conv_bias: bool
    dt_rank: int = 0  # v1
    headdim: int = 64  # v2
    ngroups: int = 1  # v2
    rmsnorm: bool = True  # v2: gated RMSNorm before out_proj
    chunk_size: int = 256  # v2: SSD chunk length (the result does not depend on it)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim


@dataclass(frozen=True)
class CaduceusSpec:
    """The whole network: sizes, norms, bidirectionality, RCPS and the mixer."""

    d_model: int
    n_layer: int
    vocab_size: int  # padded to `pad_vocab_size_multiple`, as upstream pads it
    mamba: MambaSpec
    rms_norm: bool
    fused_add_norm: bool
    norm_epsilon: float
    residual_in_fp32: bool
    bidirectional: bool
    bidirectional_strategy: Literal["add", "ew_multiply"]
    bidirectional_weight_tie: bool
    rcps: bool
    complement_map: tuple[int, ...] | None  # token id -> its complement's id, over the padded vocab
    flip_lm_head_channels: bool = True


def _take(section: dict, key: str, path: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = section.get(key, default)
    if value is None and default is None:
        return None
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise UnsupportedConfig(path + key, value, f"expected {getattr(kind, '__name__', kind)}")
    return value


def _positive(value: int, key: str) -> int:
    if value < 1:
        raise UnsupportedConfig(key, value, "must be >= 1")
    return value


def _unknown(section: dict, known: frozenset[str], path: str) -> None:
    for key in section:
        if key not in known:
            raise UnsupportedConfig(path + key, section[key], "not implemented by the native Caduceus")


def _mamba(version: str, ssm: dict, d_model: int, path: str) -> MambaSpec:
    if not isinstance(ssm, dict):
        raise UnsupportedConfig(path.rstrip("."), ssm, "expected a mapping")
    common = dict(
        version=version,
        d_model=d_model,
        d_conv=_positive(_take(ssm, "d_conv", path, int, 4), path + "d_conv"),
        expand=_positive(_take(ssm, "expand", path, int, 2), path + "expand"),
        bias=_take(ssm, "bias", path, bool, False),
        conv_bias=_take(ssm, "conv_bias", path, bool, True),
    )
    if version == "v1":
        _unknown(ssm, _V1_KEYS, path)
        rank = ssm.get("dt_rank", "auto")
        if rank == "auto":
            rank = math.ceil(d_model / 16)
        elif not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise UnsupportedConfig(path + "dt_rank", rank, "expected 'auto' or a positive int")
        d_state = _positive(_take(ssm, "d_state", path, int, 16), path + "d_state")
        return MambaSpec(d_state=d_state, dt_rank=rank, **common)
    _unknown(ssm, _V2_KEYS, path)
    spec = MambaSpec(
        d_state=_positive(_take(ssm, "d_state", path, int, 128), path + "d_state"),
        headdim=_positive(_take(ssm, "headdim", path, int, 64), path + "headdim"),
        ngroups=_positive(_take(ssm, "ngroups", path, int, 1), path + "ngroups"),
        rmsnorm=_take(ssm, "rmsnorm", path, bool, True),
        chunk_size=_positive(_take(ssm, "chunk_size", path, int, 256), path + "chunk_size"),
        **common,
    )
    d_ssm = ssm.get("d_ssm")
    if d_ssm is not None and d_ssm != spec.d_inner:
        raise UnsupportedConfig(path + "d_ssm", d_ssm, f"only d_ssm = expand * d_model ({spec.d_inner})")
    if _take(ssm, "D_has_hdim", path, bool, False):
        raise UnsupportedConfig(path + "D_has_hdim", True, "only one D per head (false)")
    if _take(ssm, "norm_before_gate", path, bool, False):
        raise UnsupportedConfig(path + "norm_before_gate", True, "only the gate before the norm (false)")
    limit = ssm.get("dt_limit", [0.0, math.inf])
    if not (isinstance(limit, (list, tuple)) and len(limit) == 2 and limit[0] == 0 and limit[1] == math.inf):
        raise UnsupportedConfig(path + "dt_limit", limit, "only no limit ([0.0, inf])")
    if spec.d_inner % spec.headdim:
        raise UnsupportedConfig(path + "headdim", spec.headdim, f"must divide d_inner {spec.d_inner}")
    if spec.nheads % spec.ngroups:
        raise UnsupportedConfig(path + "ngroups", spec.ngroups, f"must divide the {spec.nheads} heads")
    return spec


def _complement_map(raw: object, vocab_size: int) -> tuple[int, ...]:
    if not isinstance(raw, dict):
        raise UnsupportedConfig("complement_map", raw, "rcps needs a mapping of token id to complement id")
    try:
        pairs = {int(k): int(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise UnsupportedConfig("complement_map", raw, "keys and values must be token ids") from None
    # upstream extends the map with identities for the ids vocabulary padding adds
    table = tuple(pairs.get(i, i) for i in range(vocab_size))
    if set(pairs) - set(range(vocab_size)) or sorted(table) != list(range(vocab_size)):
        raise UnsupportedConfig("complement_map", raw, f"not a permutation of the {vocab_size} token ids")
    if any(table[table[i]] != i for i in range(vocab_size)):
        raise UnsupportedConfig("complement_map", raw, "complementing twice must give the token back")
    return table


_FLAT_KEYS = frozenset({"ssm_cfg", "rms_norm", "fused_add_norm", "norm_epsilon"})
_NESTED_KEYS = frozenset({"layer_cfg", "norm_cfg", "flip_lm_head_channels"})
_COMMON_KEYS = frozenset(
    {
        "d_model",
        "n_layer",
        "vocab_size",
        "residual_in_fp32",
        "pad_vocab_size_multiple",
        "bidirectional",
        "bidirectional_strategy",
        "bidirectional_weight_tie",
        "rcps",
        "complement_map",
    }
)


def parse_config(declared: dict) -> CaduceusSpec:
    """The spec of a Caduceus config.json (flat or nested layout).

    Raises:
        UnsupportedConfig: naming the first key or value that is not implemented.
    """
    model_type = declared.get("model_type")
    if model_type != MODEL_TYPE:
        raise UnsupportedConfig("model_type", model_type, f"the native Caduceus reads {MODEL_TYPE!r}")
    nested = "layer_cfg" in declared or "norm_cfg" in declared
    if nested and _FLAT_KEYS & set(declared):
        both = sorted(_FLAT_KEYS & set(declared))[0]
        raise UnsupportedConfig(both, declared[both], "flat and nested (layer_cfg/norm_cfg) layouts mixed")
    _unknown(declared, _BOOKKEEPING | _COMMON_KEYS | (_NESTED_KEYS if nested else _FLAT_KEYS), "")

    d_model = _positive(_take(declared, "d_model", "", int, 2560), "d_model")
    vocab = _positive(_take(declared, "vocab_size", "", int, 50277), "vocab_size")
    multiple = _positive(_take(declared, "pad_vocab_size_multiple", "", int, 8), "pad_vocab_size_multiple")
    vocab += (-vocab) % multiple
    if nested:
        layer = declared.get("layer_cfg") or {}
        norm = declared.get("norm_cfg") or {}
        for key, section in (("layer_cfg", layer), ("norm_cfg", norm)):
            if not isinstance(section, dict):
                raise UnsupportedConfig(key, section, "expected a mapping")
        _unknown(layer, frozenset({"mode", "mamba_cfg"}), "layer_cfg.")
        if layer.get("mode", "mamba-only") != "mamba-only":
            raise UnsupportedConfig("layer_cfg.mode", layer["mode"], "only 'mamba-only'")
        mamba_cfg = layer.get("mamba_cfg") or {}
        if not isinstance(mamba_cfg, dict):
            raise UnsupportedConfig("layer_cfg.mamba_cfg", mamba_cfg, "expected a mapping")
        _unknown(mamba_cfg, frozenset({"version", "ssm_cfg"}), "layer_cfg.mamba_cfg.")
        version = mamba_cfg.get("version", "v2")
        if version not in ("v1", "v2"):
            raise UnsupportedConfig("layer_cfg.mamba_cfg.version", version, "only 'v1' or 'v2'")
        mamba = _mamba(version, mamba_cfg.get("ssm_cfg") or {}, d_model, "layer_cfg.mamba_cfg.ssm_cfg.")
        _unknown(norm, frozenset({"fused_add_norm", "rms_norm", "norm_epsilon"}), "norm_cfg.")
        norms, npath = norm, "norm_cfg."
    else:
        mamba = _mamba("v1", declared.get("ssm_cfg") or {}, d_model, "ssm_cfg.")
        norms, npath = declared, ""
    strategy = declared.get("bidirectional_strategy", "add")
    if strategy is None:
        strategy = "add"
    if strategy not in ("add", "ew_multiply"):
        raise UnsupportedConfig("bidirectional_strategy", strategy, "only 'add' or 'ew_multiply'")
    rcps = _take(declared, "rcps", "", bool, False)
    spec = CaduceusSpec(
        d_model=d_model,
        n_layer=_positive(_take(declared, "n_layer", "", int, 64), "n_layer"),
        vocab_size=vocab,
        mamba=mamba,
        rms_norm=_take(norms, "rms_norm", npath, bool, True),
        fused_add_norm=_take(norms, "fused_add_norm", npath, bool, True),
        norm_epsilon=_take(norms, "norm_epsilon", npath, float, 1e-5),
        residual_in_fp32=_take(declared, "residual_in_fp32", "", bool, True),
        bidirectional=_take(declared, "bidirectional", "", bool, True),
        bidirectional_strategy=strategy,
        bidirectional_weight_tie=_take(declared, "bidirectional_weight_tie", "", bool, True),
        rcps=rcps,
        complement_map=_complement_map(declared.get("complement_map"), vocab) if rcps else None,
        flip_lm_head_channels=_take(declared, "flip_lm_head_channels", "", bool, True),
    )
    return spec
