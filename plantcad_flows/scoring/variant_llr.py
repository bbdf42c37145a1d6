"""Variant-effect scores: the log-likelihood ratio of ALT against REF, batched on the model.

Definitions (docs/variants.md). A window is `L = context_length` reference bases with the variant
at 0-based index `c = L // 2 - 1` (`variants.reference`); tokens are one per base, no special
tokens (the model's `TokenTable`).

* **Masked LM**: position c of the reference window is the mask token; with `z` the logits at c,
  `llr = z[alt] - z[ref]`, which equals log p(alt) - log p(ref) (the softmax's normaliser cancels).
* **Causal LM**: `ll(w) = sum_{i=1}^{L-1} log_softmax(logits(w)[i-1])[w_i]`, every predicted token
  of the window, over the model's whole vocabulary; `llr = ll(alt window) - ll(ref window)`.
  `motif_inference_mode`: `fwd_only` as above; `rc_only` the same on the reverse complement of
  both windows; `fwd_rc_avg` the mean of the two.

Windows arrive as (n, L) uint8 arrays and leave as one (n,) float64 array: a forward per batch of
windows, never a model call per variant. A shard (`score_variant_shard`) reads its rows of the
prepared `variants.parquet`, fetches their windows from the FASTA by index, scores them and writes
`row_index, llr` with an integrity sidecar, so a killed run resumes with the missing shards only.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict

from plantcad_flows.config import ModelConfig
from plantcad_flows.errors import ValidationError
from plantcad_flows.layout.integrity import shard_ok, write_parquet_with_sidecar
from plantcad_flows.layout.sharding import ShardSpec
from plantcad_flows.layout.storage import to_path
from plantcad_flows.scoring.loading import LoadedModel, full_logits, logits_at
from plantcad_flows.sequences import BASE_INDEX_LUT, reverse_complement
from plantcad_flows.variants.reference import ReferenceGenome, centre_index
from plantcad_flows.variants.shards import iter_windows, read_rows
from plantcad_flows.variants.sources import open_fasta

FASTA_BATCH = 4096  # variants whose windows are fetched at once


def _base_columns(bases: np.ndarray, what: str) -> np.ndarray:
    idx = BASE_INDEX_LUT[np.asarray(bases, dtype=np.uint8)]
    if (idx < 0).any():
        bad = chr(int(np.asarray(bases)[idx < 0][0]))
        raise ValidationError(what, bad, "not one of A, C, G, T")
    return idx


def _tensor(loaded: LoadedModel, ids: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(ids)).to(loaded.device)


@torch.inference_mode()
def mlm_llr(
    loaded: LoadedModel, windows: np.ndarray, ref: np.ndarray, alt: np.ndarray, batch_size: int
) -> np.ndarray:
    """logit(alt) - logit(ref) at the masked centre of each reference window."""
    n, length = windows.shape
    c = centre_index(length)
    ref_i, alt_i = _base_columns(ref, "variants.ref"), _base_columns(alt, "variants.alt")
    out = np.empty(n, dtype=np.float64)
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        ids = loaded.table.encode(windows[lo:hi])
        ids[:, c] = loaded.mask_id
        pos = torch.full((hi - lo, 1), c, dtype=torch.long, device=loaded.device)
        z = logits_at(loaded, _tensor(loaded, ids), pos)[:, 0, :].float().cpu().numpy().astype(np.float64)
        rows = np.arange(hi - lo)
        out[lo:hi] = z[rows, alt_i[lo:hi]] - z[rows, ref_i[lo:hi]]
    return out


def window_loglik(loaded: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    """(n,) float64: sum over i >= 1 of log p(token i | tokens < i), full-vocabulary log-softmax."""
    logp = torch.log_softmax(full_logits(loaded.model, ids)[:, :-1].float(), dim=-1)
    picked = torch.gather(logp, 2, ids[:, 1:].unsqueeze(-1))[..., 0]
    return picked.double().sum(dim=1)


@torch.inference_mode()
def _clm_delta(loaded: LoadedModel, ref_w: np.ndarray, alt_w: np.ndarray, batch_size: int) -> np.ndarray:
    n = ref_w.shape[0]
    per = max(1, batch_size // 2)  # each variant is two model rows: its ref and alt windows
    out = np.empty(n, dtype=np.float64)
    for lo in range(0, n, per):
        hi = min(lo + per, n)
        ids = loaded.table.encode(np.concatenate([ref_w[lo:hi], alt_w[lo:hi]]))
        ll = window_loglik(loaded, _tensor(loaded, ids)).cpu().numpy()
        out[lo:hi] = ll[hi - lo :] - ll[: hi - lo]
    return out


def clm_llr(
    loaded: LoadedModel,
    windows: np.ndarray,
    ref: np.ndarray,
    alt: np.ndarray,
    batch_size: int,
    mode: str = "fwd_only",
) -> np.ndarray:
    """ll(alt window) - ll(ref window); with `fwd_rc_avg`, averaged with the reverse complement's."""
    c = centre_index(windows.shape[1])
    _base_columns(ref, "variants.ref")
    _base_columns(alt, "variants.alt")
    ref_w = windows.copy()
    ref_w[:, c] = ref  # the reference window holds REF at the centre (checked when prepared)
    alt_w = ref_w.copy()
    alt_w[:, c] = alt
    parts = []
    if mode in ("fwd_only", "fwd_rc_avg"):
        parts.append(_clm_delta(loaded, ref_w, alt_w, batch_size))
    if mode in ("rc_only", "fwd_rc_avg"):
        parts.append(_clm_delta(loaded, reverse_complement(ref_w), reverse_complement(alt_w), batch_size))
    if not parts:
        raise ValidationError(
            "models[].motif_inference_mode", mode, "expected fwd_only, rc_only or fwd_rc_avg"
        )
    return np.mean(parts, axis=0)


def variant_llr(
    loaded: LoadedModel,
    model: ModelConfig,
    windows: np.ndarray,
    ref: np.ndarray,
    alt: np.ndarray,
    batch_size: int,
) -> np.ndarray:
    """The LLR of each variant from its reference window (MLM or CLM, per `loaded.type`)."""
    if windows.shape[1] != model.context_length:
        raise ValidationError(
            f"models[{model.label}].context_length",
            model.context_length,
            f"windows are {windows.shape[1]} bp",
        )
    if loaded.type == "mlm":
        return mlm_llr(loaded, windows, ref, alt, batch_size)
    return clm_llr(loaded, windows, ref, alt, batch_size, model.motif_inference_mode)


class VariantShardOutput(BaseModel):
    """What a scored shard left: small, JSON-serialisable (a task result)."""

    model_config = ConfigDict(frozen=True)
    path: str
    index: int
    count: int
    num_variants: int
    computed: bool
    seconds: float = 0.0


def variant_shard_done(path: str | os.PathLike, shard: ShardSpec) -> bool:
    """The shard's file and its sidecar exist and match (rows = the shard's size)."""
    return shard_ok(to_path(str(path)), shard.size)


def score_variant_shard(
    loaded: LoadedModel,
    model: ModelConfig,
    variants_path: str | os.PathLike,
    fasta: str,
    shard: ShardSpec,
    out_path: str | os.PathLike,
    batch_size: int,
    force: bool = False,
    cache_root: str | os.PathLike | None = None,
) -> VariantShardOutput:
    """Score rows [shard.start, shard.stop) of a prepared `variants.parquet`; write `row_index,
    llr` to `out_path` (then its sidecar). A complete shard file is reused unless `force`."""
    if not force and variant_shard_done(out_path, shard):
        return VariantShardOutput(
            path=str(out_path), index=shard.index, count=shard.count, num_variants=shard.size, computed=False
        )
    t0 = time.perf_counter()
    rows = read_rows(variants_path, shard.start, shard.stop, ["row_index", "chrom", "pos", "ref", "alt"])
    llr = np.empty(len(rows), dtype=np.float64)
    with ReferenceGenome(open_fasta(fasta, "variants[].fasta", cache_root)) as genome:
        for sl, windows, ref, alt in iter_windows(rows, genome, model.context_length, FASTA_BATCH):
            llr[sl] = variant_llr(loaded, model, windows, ref, alt, batch_size)
    frame = pd.DataFrame({"row_index": rows["row_index"].to_numpy(np.int64), "llr": llr})
    write_parquet_with_sidecar(to_path(str(out_path)), frame)
    return VariantShardOutput(
        path=str(out_path),
        index=shard.index,
        count=shard.count,
        num_variants=len(frame),
        computed=True,
        seconds=time.perf_counter() - t0,
    )
