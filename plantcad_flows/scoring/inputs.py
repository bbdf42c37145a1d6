"""The batching input pipeline: a background thread prepares batch k+1 while the model runs batch k.

Preparing a batch is numpy only (join the batch's strings into one byte buffer, centre-crop by
slicing, reverse-complement and tokenise through lookup tables, place mask tokens, gather the true
bases) and ends in a (pinned, on CUDA) tensor, so the GPU never waits on Python per example. The
main thread copies it to the device with `non_blocking=True`, runs the model, gathers the few
positions it needs and softmaxes the four nucleotide logits in fp32.

Each stage's time is added to a `StageTimings`, which the caller owns and logs. The prepare and
tokenise stages run on the background thread, so they overlap the forward; `wait_s` is how long
the main thread sat idle waiting for a batch (the part of input preparation that was not hidden).
On CUDA, `forward_s` includes the device-to-host copy of the probabilities, which synchronises.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from plantcad_flows.families import ModelInputs
from plantcad_flows.scoring.loading import LoadedModel, full_logits, logits_at
from plantcad_flows.sequences import RC_COLUMNS, reverse_complement, to_bytes

_N = ord("N")


@dataclass
class StageTimings:
    """Seconds spent per stage, summed over batches (and over calls sharing the collector)."""

    prepare_s: float = 0.0  # strings -> bytes, crop, reverse complement, true bases
    tokenise_s: float = 0.0  # lookup-table ids, mask tokens, tensor (+ pin)
    wait_s: float = 0.0  # main thread waiting for the next prepared batch
    h2d_s: float = 0.0
    forward_s: float = 0.0
    postprocess_s: float = 0.0
    examples: int = 0
    batches: int = 0

    def add(self, other: StageTimings) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _prepare(
    inp: ModelInputs, loaded: LoadedModel, lo: int, hi: int, pin: bool, t: StageTimings
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    t0 = time.perf_counter()
    raw = to_bytes(list(inp.sequences[lo:hi]))
    bpos = inp.rows(inp.base_positions, lo, hi)
    inside = (bpos >= 0) & (bpos < raw.shape[1])
    bases = np.where(inside, np.take_along_axis(raw, np.clip(bpos, 0, raw.shape[1] - 1), 1), _N)
    arr = inp.plan.apply(raw)
    if inp.reverse:
        arr = reverse_complement(arr)
    t1 = time.perf_counter()
    ids = loaded.table.encode(arr)
    if inp.mask_positions is not None:
        ids[:, inp.mask_positions] = loaded.mask_id
    valid = inp.rows(inp.valid, lo, hi)
    gather = np.where(valid, inp.rows(inp.gather, lo, hi), 0)
    ids_t, gather_t = torch.from_numpy(ids), torch.from_numpy(np.ascontiguousarray(gather))
    if pin:
        ids_t, gather_t = ids_t.pin_memory(), gather_t.pin_memory()
    t.prepare_s += t1 - t0
    t.tokenise_s += time.perf_counter() - t1
    return ids_t, gather_t, np.array(valid), bases.astype(np.uint8)


def run_inputs(
    loaded: LoadedModel, inp: ModelInputs, batch_size: int, timings: StageTimings | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Run the model over every example of `inp`.

    Returns:
        probs (n, P, 4) float32 A,C,G,T probabilities in forward orientation (NaN where not
        valid) and bases (n, P) uint8 true bases. With `inp.readout == "loglik"`, the first
        array is instead each input's (n,) float64 log-likelihood (`window_loglik`).
    """
    n, p = len(inp.sequences), inp.gather.shape[1]
    loglik = inp.readout == "loglik"
    probs = np.full((n, p, 4), np.nan, dtype=np.float32)
    lls = np.full(n, np.nan, dtype=np.float64)
    bases = np.full((n, p), _N, dtype=np.uint8)
    t = StageTimings()
    pin = loaded.device.type == "cuda"
    starts = list(range(0, n, batch_size))
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            for lo in starts:
                if stop.is_set():
                    return
                hi = min(lo + batch_size, n)
                q.put((lo, hi, _prepare(inp, loaded, lo, hi, pin, t)))
            q.put(None)
        except BaseException as e:  # noqa: BLE001 - re-raised on the main thread
            q.put(e)

    if pin:
        worker = threading.Thread(target=produce, name="plantcad-prefetch", daemon=True)
        worker.start()
    else:
        # On the CPU the model's own threads use every core; a prefetch thread would only steal
        # cycles from them (and stall their spin-waits), so batches are prepared inline.
        worker = None

    def next_item():
        if worker is not None:
            return q.get()
        if not starts_left:
            return None
        lo = starts_left.pop(0)
        hi = min(lo + batch_size, n)
        return lo, hi, _prepare(inp, loaded, lo, hi, pin, t)

    starts_left = list(starts)
    try:
        while True:
            t0 = time.perf_counter()
            item = next_item()
            if worker is not None:  # inline preparation is already counted in prepare/tokenise
                t.wait_s += time.perf_counter() - t0
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            lo, hi, (ids_t, gather_t, valid, batch_bases) = item
            t0 = time.perf_counter()
            ids_d = ids_t.to(loaded.device, non_blocking=True)
            gather_d = gather_t.to(loaded.device, non_blocking=True)
            t1 = time.perf_counter()
            if loglik:
                lls[lo:hi] = window_loglik(loaded, ids_d).cpu().numpy()
                t2 = time.perf_counter()
            else:
                logits = logits_at(loaded, ids_d, gather_d)
                batch_probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                t2 = time.perf_counter()
                if inp.reverse:
                    batch_probs = batch_probs[..., RC_COLUMNS]
                probs[lo:hi] = np.where(valid[..., None], batch_probs, np.nan)
            bases[lo:hi] = batch_bases
            t.h2d_s += t1 - t0
            t.forward_s += t2 - t1
            t.postprocess_s += time.perf_counter() - t2
            t.batches += 1
    finally:
        stop.set()
        while worker is not None and worker.is_alive():  # unblock a producer stuck on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
    t.examples += n
    if timings is not None:
        timings.add(t)
    return (lls if loglik else probs), bases


@torch.inference_mode()
def window_loglik(loaded: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    """(n,) float64: sum over i >= 1 of log p(token i | tokens < i), full-vocabulary log-softmax
    in fp32 (a causal LM's reading of a whole window)."""
    logp = torch.log_softmax(full_logits(loaded.model, ids)[:, :-1].float(), dim=-1)
    picked = torch.gather(logp, 2, ids[:, 1:].unsqueeze(-1))[..., 0]
    return picked.double().sum(dim=1)
