"""`plantcad-flows generate-data`: write the synthetic benchmark."""

from __future__ import annotations

import argparse

from plantcad_flows.benchmark.synthetic import generate_benchmark

DEMO_DATA_DIR = "data/synthetic"


def cmd_generate(args: argparse.Namespace) -> int:
    paths = generate_benchmark(args.out, seed=args.seed)
    print(f"wrote {len(paths)} splits under {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate-data", help="write the synthetic benchmark")
    p.add_argument("--out", default=DEMO_DATA_DIR)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)
