"""Scoring throughput: our pipeline vs the old per-example pipeline, same model, data and device.

The model is a randomly initialised BertForMaskedLM of a few million parameters with a character
tokenizer (built here, nothing downloaded), scored at 512 context on tis_recovery (3 masks) with
8,192-bp sequences centre-cropped to the context. The BASELINE follows the old pipeline: the HF
tokenizer called once per example inside a torch Dataset's __getitem__, a DataLoader with one
worker, full-vocabulary logits at every position, then the masked ones selected. Repetitions are
interleaved so drift affects both alike. The last line is `ratio=X.XX` (ours / baseline).

    .venv/bin/python benchmarks/scoring_throughput.py --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_factory import save_tiny_mlm  # noqa: E402

from plantcad_flows.config import ComputeConfig, ModelConfig, SamplingConfig, SplitConfig  # noqa: E402
from plantcad_flows.data.splits import prepare_split  # noqa: E402
from plantcad_flows.scoring.inputs import StageTimings  # noqa: E402
from plantcad_flows.scoring.score import load_model, score_frame  # noqa: E402

CONTEXT, SEQ_LENGTH = 512, 8192


class OldDataset(torch.utils.data.Dataset):
    """The old pipeline: crop, tokenise and mask one example at a time."""

    def __init__(self, seqs, tokenizer, masks, context):
        self.seqs, self.tok, self.masks = seqs, tokenizer, masks
        self.trim, self.context = (len(seqs[0]) - context) // 2, context

    def __len__(self):
        return len(self.seqs)

    def __getitem__(self, i):
        s = self.seqs[i][self.trim : self.trim + self.context]
        ids = self.tok(s, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        ids[self.masks] = self.tok.mask_token_id
        return {"input_ids": ids, "bases": "".join(s[m] for m in self.masks).upper()}


def run_baseline(loaded, seqs, masks, batch_size, device):
    loader = torch.utils.data.DataLoader(
        OldDataset(seqs, loaded.tokenizer, masks, CONTEXT), batch_size=batch_size, num_workers=1
    )
    nuc = torch.as_tensor(loaded.nucleotide_ids, device=device)
    rows = []
    with torch.inference_mode():
        for batch in loader:
            logits = loaded.model(input_ids=batch["input_ids"].to(device)).logits  # (B, L, V)
            probs = torch.softmax(logits[:, masks][..., nuc].float(), dim=-1).cpu().numpy()
            for p, b in zip(probs, batch["bases"]):
                rows.append((p.reshape(-1), b))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="plantcad-bench-"))
    save_tiny_mlm(tmp / "mlm", layers=args.layers, hidden=args.hidden, max_len=CONTEXT)
    model_cfg = ModelConfig(path=str(tmp / "mlm"), type="mlm", context_length=CONTEXT)
    loaded = load_model(model_cfg, ComputeConfig(device=args.device))
    n_params = sum(p.numel() for p in loaded.model.parameters())

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 8, size=(args.examples, SEQ_LENGTH), dtype=np.uint8)
    seqs = [row.tobytes().decode() for row in np.frombuffer(b"ACGTacgt", np.uint8)[codes]]
    split = SplitConfig(task="tis_recovery", split="test_maize", path="synthetic")
    frame = prepare_split(split, SamplingConfig(), raw=pd.DataFrame({"sequence": seqs}))
    masks = [p - (SEQ_LENGTH - CONTEXT) // 2 for p in split.mask_positions]
    print(
        f"device={loaded.device} dtype={loaded.dtype} params={n_params / 1e6:.2f}M layers={args.layers} "
        f"hidden={args.hidden} examples={args.examples} batch={args.batch_size} context={CONTEXT} "
        f"fast_head={loaded.fast_head} torch_threads={torch.get_num_threads()}"
    )

    # Warm-up, and a check that both pipelines compute the same probabilities.
    ours_out = score_frame(loaded, model_cfg, split, frame.iloc[: args.batch_size], args.batch_size)
    base_out = run_baseline(loaded, seqs[: args.batch_size], masks, args.batch_size, loaded.device)
    diff = np.abs(np.stack(ours_out["probs"].to_list()) - np.stack([p for p, _ in base_out])).max()
    assert diff < 1e-3 and ours_out["bases"].tolist() == [b for _, b in base_out], diff

    ours_t, base_t, timings = [], [], StageTimings()
    for _ in range(args.reps):
        t0 = time.perf_counter()
        run_baseline(loaded, seqs, masks, args.batch_size, loaded.device)
        base_t.append(time.perf_counter() - t0)
        t = StageTimings()
        t0 = time.perf_counter()
        score_frame(loaded, model_cfg, split, frame, args.batch_size, timings=t)
        ours_t.append(time.perf_counter() - t0)
        timings = t

    ids = torch.as_tensor(loaded.table.encode(np.frombuffer(b"acgt", np.uint8)[codes[:, :CONTEXT] % 4]))
    ids = ids.to(loaded.device)
    fwd_t = []
    with torch.inference_mode():
        for _ in range(args.reps):
            if loaded.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for lo in range(0, args.examples, args.batch_size):
                _ = loaded.model(input_ids=ids[lo : lo + args.batch_size]).logits
            if loaded.device.type == "cuda":
                torch.cuda.synchronize()
            fwd_t.append(time.perf_counter() - t0)

    n = args.examples
    ours, base, fwd = (n / statistics.median(x) for x in (ours_t, base_t, fwd_t))
    print(f"baseline (per-example tokenizer, DataLoader, full-vocab logits): {base:.1f} seq/s")
    print(f"ours (vectorised prefetch pipeline, gathered LM head):          {ours:.1f} seq/s")
    print(f"model forward only (pre-tokenised, on device, full logits):     {fwd:.1f} seq/s")
    print(
        "ours, last repetition, seconds per stage: "
        + " ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in timings.as_dict().items()
        )
    )
    print(f"ratio={ours / base:.2f}")


if __name__ == "__main__":
    main()
