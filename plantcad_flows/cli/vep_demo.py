"""`plantcad-flows vep-demo` (`make vep-demo`): variant effects end to end on this machine.

Writes a synthetic genome and a VCF with a planted signal (`variants.synthetic`: SNVs that break
the genome's motifs are labelled 1) in seconds, scores it with the shipped tiny models (in this
process, without Prefect, through the flow's own steps: `steps.run_variant_set`), and prints the metrics, the
skipped records by reason and where the scores are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_OUT = "outputs/vep-demo"


def register(sub) -> None:
    p = sub.add_parser("vep-demo", help="score a synthetic VCF with the tiny models (variant effects)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--models", nargs="+", choices=("mlm", "clm"), default=["mlm"])
    p.add_argument("--snvs", type=int, default=1000, help="planted SNVs (half of them damaging)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from plantcad_flows.benchmark.synthetic import ASSETS_MODELS
    from plantcad_flows.config import ComputeConfig, ModelConfig
    from plantcad_flows.families import VariantSetConfig
    from plantcad_flows.steps import run_variant_set
    from plantcad_flows.variants.synthetic import make_demo

    out = Path(args.out)
    paths = make_demo(out / "data", seed=args.seed, n_snvs=args.snvs)
    cfg = VariantSetConfig(
        name="demo-snvs",
        vcf=str(paths["vcf"]),
        fasta=str(paths["fasta"]),
        label="INFO/DAMAGING",
        target="INFO/AF",
        subsets=("INFO/CLASS",),
    )
    print(f"synthetic genome: {paths['fasta']}\nvariants:         {paths['vcf']}")
    for kind in args.models:
        extra = {"motif_inference_mode": "fwd_rc_avg"} if kind == "clm" else {}
        model = ModelConfig(
            path=str(ASSETS_MODELS / f"tiny-{kind}"),
            name=f"tiny-{kind}",
            type=kind,
            context_length=512,
            **extra,
        )
        compute = ComputeConfig(batch_size=args.batch_size)
        result, _ = run_variant_set(cfg, model, str(out / "cells"), compute, seed=args.seed)
        m = result.metrics
        ci = result.intervals.get("auroc") or [None, None]
        skipped = {k.removeprefix("num_skipped_"): v for k, v in m.items() if k.startswith("num_skipped_")}
        print(f"\n{model.label}: {m['num_scored']} SNVs scored, skipped {json.dumps(skipped)}")
        print(
            f"  AUROC {m['auroc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]  AUPRC {m['auprc']:.3f}  "
            f"Spearman(LLR, AF) {m['spearman']:.3f}  Pearson {m['pearson']:.3f}"
        )
        for key in sorted(k for k in m if k.startswith("num_scored[CLASS=")):
            value = key.removeprefix("num_scored[CLASS=").removesuffix("]")
            print(f"  CLASS={value:9} n={m[key]:5}  AUROC {m[f'auroc[CLASS={value}]']:.3f}")
        cell = Path(result.output_dir)
        print(f"  scores: {cell / 'variant_scores.parquet'}, {cell / 'variant_scores.tsv.gz'}")
        print(f"  metrics: {cell / 'metrics.json'}")
    if out == Path(DEFAULT_OUT):
        print(
            "\nthe same set through the flow (cached, history, trends): plantcad-flows eval configs/variants-demo.yaml"
        )
    return 0
