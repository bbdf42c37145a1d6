"""The Caduceus masked LM: embeddings, blocks, backbone and LM head, as trained.

The module tree is the checkpoint's tensor names (`caduceus.backbone.embeddings.word_embeddings`,
`caduceus.backbone.layers.N.mixer[.submodule].mamba_fwd...`, `...layers.N.norm`,
`caduceus.backbone.norm_f`, `lm_head`), so weights load with a plain `load_state_dict` and the
ties `tied_names` lists.

Each block adds the mixer output to the residual stream and normalises the sum (Mamba's
pre-norm order: add, norm, mix). The residual stays float32 when `residual_in_fp32`; norms
compute in float32 and return the stream's dtype, as mamba_ssm's fused kernels do.

RCPS models carry 2 * d_model channels: the forward half and the reverse-complement half. Two
block forms exist upstream and both are kept exactly:
* unfused (`RCPSAddNormWrapper`): the first half is the forward stream, the second half is
  normalised as its reverse complement;
* fused add + norm (`RCPSMambaBlock` with `fused_add_norm`, how PlantCaduceus was trained): the
  *second* half is normalised as the forward stream and the first half as the reverse
  complement, and the halves of the output and of the residual are swapped. The final norm
  (`norm_f`) does not swap. Either way the model stays RC-equivariant, which the tests check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plantcad_flows.architectures.caduceus.config import CaduceusSpec
from plantcad_flows.architectures.caduceus.mixers import (
    BiMambaWrapper,
    Mamba,
    Mamba2,
    RCPSWrapper,
    in_place_ok,
    rc,
)


class RMSNorm(nn.Module):
    """RMSNorm with a weight and no bias (mamba_ssm's `RMSNorm`)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the parameters' dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)


def _norm(spec: CaduceusSpec) -> nn.Module:
    return (
        RMSNorm(spec.d_model, spec.norm_epsilon)
        if spec.rms_norm
        else LayerNorm(spec.d_model, spec.norm_epsilon)
    )


class RCPSAddNormWrapper(nn.Module):
    """Holds an unfused RCPS block's norm as `submodule` (its tensors are `norm.submodule.*`)."""

    def __init__(self, submodule: nn.Module):
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.submodule(x)


def _rcps_norm(norm: nn.Module, residual: torch.Tensor, swap: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise the two halves of an RCPS stream; returns (normalised, residual).

    Without `swap` the first half is the forward stream; with it (the fused kernel path) the
    second half is, and both outputs come back with their halves swapped."""
    half = residual.shape[-1] // 2
    fwd, rev = (
        (residual[..., half:], residual[..., :half]) if swap else (residual[..., :half], residual[..., half:])
    )
    out = torch.cat([norm(fwd), rc(norm(rc(rev)))], dim=-1)
    return out, (torch.cat([fwd, rev], dim=-1) if swap else residual)


class Block(nn.Module):
    """Add the mixer output to the residual, normalise, mix (`mixer`, `norm`)."""

    def __init__(self, spec: CaduceusSpec):
        super().__init__()
        self.rcps, self.fused = spec.rcps, spec.fused_add_norm
        self.residual_in_fp32 = spec.residual_in_fp32
        mixer = BiMambaWrapper(spec)
        self.mixer = RCPSWrapper(mixer) if spec.rcps else mixer
        self.norm = RCPSAddNormWrapper(_norm(spec)) if spec.rcps and not spec.fused_add_norm else _norm(spec)

    def add_norm(
        self, hidden_states: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised input of the mixer, new residual)."""
        dtype = hidden_states.dtype
        if residual is None:
            residual = hidden_states.float() if self.residual_in_fp32 else hidden_states
        elif in_place_ok():  # the residual is this forward's own: add in place
            residual = residual.add_(hidden_states.to(residual.dtype))
        else:
            residual = hidden_states.to(residual.dtype) + residual
        if self.rcps:
            normed, residual = _rcps_norm(self.norm, residual, swap=self.fused)
        else:
            normed = self.norm(residual)
        return normed.to(dtype), residual

    def forward(
        self, hidden_states: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        normed, residual = self.add_norm(hidden_states, residual)
        return self.mixer(normed), residual


def _complement_buffer(spec: CaduceusSpec) -> torch.Tensor:
    """The complement map as a buffer, made on the CPU even while the model is built on the meta
    device (`weights.load_caduceus`): it comes from config.json, never from the checkpoint."""
    return torch.tensor(spec.complement_map, device="cpu")


class RCPSEmbedding(nn.Module):
    """Token embeddings and, beside them, the embeddings of the reverse complement, flipped back."""

    def __init__(self, spec: CaduceusSpec):
        super().__init__()
        self.embedding = nn.Embedding(spec.vocab_size, spec.d_model)
        self.register_buffer("complement_map", _complement_buffer(spec), persistent=False)

    @property
    def weight(self) -> nn.Parameter:
        return self.embedding.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rc_ids = self.complement_map[input_ids.flip(-1)]
        return torch.cat([self.embedding(input_ids), rc(self.embedding(rc_ids))], dim=-1)


class CaduceusEmbeddings(nn.Module):
    def __init__(self, spec: CaduceusSpec):
        super().__init__()
        self.word_embeddings = (
            RCPSEmbedding(spec) if spec.rcps else nn.Embedding(spec.vocab_size, spec.d_model)
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(input_ids)


class CaduceusMixerModel(nn.Module):
    """Embeddings, the blocks and the final add + norm."""

    def __init__(self, spec: CaduceusSpec):
        super().__init__()
        self.spec = spec
        self.embeddings = CaduceusEmbeddings(spec)
        self.layers = nn.ModuleList(Block(spec) for _ in range(spec.n_layer))
        self.norm_f = (
            RCPSAddNormWrapper(_norm(spec)) if spec.rcps and not spec.fused_add_norm else _norm(spec)
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden_states = self.embeddings(input_ids)
        dtype = hidden_states.dtype
        residual = None
        for layer in self.layers:  # Block.forward, with the last output freed before the mixer runs
            normed, residual = layer.add_norm(hidden_states, residual)
            del hidden_states
            hidden_states = layer.mixer(normed)
            del normed
        residual = hidden_states.to(residual.dtype) + residual if residual is not None else hidden_states
        if self.spec.rcps:
            out, _ = _rcps_norm(self.norm_f, residual, swap=False)
        else:
            out = self.norm_f(residual)
        return out.to(dtype)


class Caduceus(nn.Module):
    """The backbone under the name the checkpoint gives it (`caduceus.backbone`)."""

    def __init__(self, spec: CaduceusSpec):
        super().__init__()
        self.backbone = CaduceusMixerModel(spec)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.backbone(input_ids),)


class RCPSLMHead(nn.Module):
    """Logits from both halves: the forward half through the head, the reverse-complement half
    (channels flipped back) through the complement-permuted head, summed."""

    def __init__(self, spec: CaduceusSpec):
        super().__init__()
        self.lm_head = nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        self.register_buffer("complement_map", _complement_buffer(spec), persistent=False)
        self.flip_channels = spec.flip_lm_head_channels

    @property
    def weight(self) -> nn.Parameter:
        return self.lm_head.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        fwd = F.linear(x[..., :half], self.weight)
        if self.flip_channels:
            return fwd + F.linear(x[..., half:].flip(-1), self.weight[self.complement_map])
        return fwd + F.linear(x[..., half:], self.weight)


class CaduceusForMaskedLM(nn.Module):
    """Backbone (`caduceus`, also `base_model`) plus the LM head tied to the embeddings.

    `forward` returns a 1-tuple of float32 logits (batch, length, vocab); no attention mask
    exists (Mamba reads the whole window)."""

    def __init__(self, spec: CaduceusSpec):
        super().__init__()
        self.spec = spec
        self.caduceus = Caduceus(spec)
        self.lm_head = RCPSLMHead(spec) if spec.rcps else nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        self.tie_weights()

    @property
    def base_model(self) -> Caduceus:
        return self.caduceus

    def _embedding_name(self) -> str:
        leaf = "embedding.weight" if self.spec.rcps else "weight"
        return f"caduceus.backbone.embeddings.word_embeddings.{leaf}"

    def _head_name(self) -> str:
        return "lm_head.lm_head.weight" if self.spec.rcps else "lm_head.weight"

    def tied_names(self) -> list[tuple[str, str]]:
        """(alias, source) of every tensor that is another's: the head's weight is the
        embedding's, and each reverse mixer's projections are the forward mixer's."""
        pairs = [(self._head_name(), self._embedding_name())]
        for i, layer in enumerate(self.caduceus.backbone.layers):
            wrapper = layer.mixer.submodule if self.spec.rcps else layer.mixer
            prefix = f"caduceus.backbone.layers.{i}.mixer." + ("submodule." if self.spec.rcps else "")
            pairs += [(prefix + alias, prefix + source) for alias, source in wrapper.tied()]
        return pairs

    def tie_weights(self) -> None:
        """Make every tie in `tied_names` one shared parameter (again)."""
        for alias, source in self.tied_names():
            module, name = alias.rsplit(".", 1)
            setattr(self.get_submodule(module), name, self.get_parameter(source))

    def use_kernels(self, on: bool) -> None:
        """Run the scans through mamba_ssm's kernels (`kernels.py`) or the native scans."""
        for module in self.modules():
            if isinstance(module, (Mamba, Mamba2)):
                module.use_kernels = on

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor]:
        (hidden,) = self.caduceus(input_ids)
        return (self.lm_head(hidden).float(),)
