"""What the 95% bootstrap intervals cost, next to what scoring the same examples costs.

For 10,000 examples and 1,000 resamples (the default `metrics.bootstrap`) it times, on this
machine: the intervals of a classification cell (AUROC and AUPRC), of a motif cell (token and
motif accuracy, 3 masked positions) and a paired difference of two revisions (AUROC). Then it
scores real examples (a synthetic conservation split, 8,192 bp cropped to 512) with the shipped
tiny MLM on the same device, and prints the time those 10,000 examples take to score: measured
on `--score-examples` of them and scaled linearly (say so in what you quote). The shipped model
is the smallest there is; a PlantCAD2 model on a GPU is slower per example, not faster.

    .venv/bin/python benchmarks/bootstrap_cost.py [--examples 10000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plantcad_flows.families import get_family  # noqa: E402
from plantcad_flows.results.bootstrap import cell_intervals, paired_difference  # noqa: E402

CONSERVATION = get_family("evolutionary_conservation")
MOTIF = get_family("motif_recovery")

TINY_MLM = Path(__file__).resolve().parents[1] / "plantcad_flows" / "assets" / "models" / "tiny-mlm"


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def classification_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return pd.DataFrame({"row_index": np.arange(n), "label": labels, "score": labels + rng.normal(0, 1.2, n)})


def motif_frame(n: int, positions: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=(n, positions)).astype(np.float32)
    bases = np.array(list("ACGT"))[rng.integers(0, 4, (n, positions))]
    return pd.DataFrame(
        {
            "row_index": np.arange(n),
            "label": 1,
            "probs": list(probs.reshape(n, -1)),
            "bases": ["".join(b) for b in bases],
            "score": 0.0,
        }
    )


def scoring_seconds(n: int, device: str, batch_size: int) -> float:
    from plantcad_flows.benchmark.synthetic import build_split
    from plantcad_flows.config import ComputeConfig, ModelConfig, SamplingConfig, SplitConfig
    from plantcad_flows.data.splits import prepare_split
    from plantcad_flows.scoring.score import load_model, score_frame

    model = ModelConfig(path=str(TINY_MLM), type="mlm", context_length=512)
    loaded = load_model(model, ComputeConfig(device=device))
    split = SplitConfig(task="conservation_within_andropogoneae", split="test", path="synthetic")
    raw = build_split(split.task, split.split, seed=0, n_examples=n)
    frame = prepare_split(split, SamplingConfig(), raw=raw)
    score_frame(loaded, model, split, frame.iloc[:batch_size], batch_size)  # warm-up
    t0 = time.perf_counter()
    score_frame(loaded, model, split, frame, batch_size)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--score-examples", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    n, b = args.examples, args.resamples

    cls, motif = classification_frame(n, 0), motif_frame(n)
    # the other revision: the same examples (paired), scored a little differently
    other = cls.assign(score=cls["score"] + np.random.default_rng(2).normal(0, 0.3, n))
    assert paired_difference(CONSERVATION, "auroc", cls, other, 10, 0) is not None
    t_cls = timed(lambda: cell_intervals(CONSERVATION, cls, b, 0), args.repeats)
    t_motif = timed(lambda: cell_intervals(MOTIF, motif, b, 0), args.repeats)
    t_pair = timed(lambda: paired_difference(CONSERVATION, "auroc", cls, other, b, 0), args.repeats)
    print(f"bootstrap, {n:,} examples x {b:,} resamples (median of {args.repeats}):")
    print(f"  classification cell (AUROC + AUPRC intervals): {t_cls:8.3f} s")
    print(f"  motif cell (token + motif accuracy intervals): {t_motif:8.3f} s")
    print(f"  paired difference of two revisions (AUROC):    {t_pair:8.3f} s")

    measured = scoring_seconds(args.score_examples, args.device, args.batch_size)
    per_example = measured / args.score_examples
    scoring = per_example * n
    print(
        f"scoring with the shipped tiny MLM on {args.device}: {args.score_examples} examples in "
        f"{measured:.2f} s -> {scoring:,.1f} s for {n:,} examples (scaled linearly)"
    )
    print(f"intervals / scoring: {t_cls / scoring:.4f} (classification), {t_motif / scoring:.4f} (motif)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
