"""`plantcad-flows sweep-demo` (`make sweep-demo`): a checkpoint sweep, end to end, on this machine.

Writes the demo training run (`plantcad_flows.benchmark.checkpoints`: the tiny MLM at four steps
of increasing quality, made in seconds, not shipped), then evaluates it through a `checkpoints:`
entry on four splits of the synthetic benchmark, and says where the trend plots are. Run it
again after adding a checkpoint (`--steps 1000,2000,3000,4000,5000`) and only the new one is
scored; the history and the trends grow by one point.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plantcad_flows.benchmark.checkpoints import write_checkpoint
from plantcad_flows.benchmark.synthetic import ensure_benchmark
from plantcad_flows.cli.config_errors import bad_input
from plantcad_flows.cli.data import DEMO_DATA_DIR
from plantcad_flows.cli.run import add_run_flags, apply_overrides, environment_settings, run
from plantcad_flows.config import EvalConfig

SWEEP_PREFIX = "outputs/sweep-demo"
SWEEP_NAME = "tiny-mlm-sweep"
SPLITS = (
    ("conservation_within_andropogoneae", "test"),
    ("donor_recovery", "test_maize"),
    ("acceptor_core_noncore_classification", "test_maize"),
    ("structural_variant_effect_prediction", "test"),
)


def sweep_config(prefix: str, data_dir: str, steps: tuple[int, ...], max_size: int):
    ensure_benchmark(data_dir)
    run_dir = Path(prefix) / "training-run"
    write_demo_checkpoints(run_dir, steps)
    return EvalConfig.model_validate(
        {
            "checkpoints": [{"path": str(run_dir), "name": SWEEP_NAME, "type": "mlm", "context_length": 512}],
            "splits": [{"task": t, "split": s, "path": f"{data_dir}/{t}/{s}.parquet"} for t, s in SPLITS],
            "compute": {"device": "cpu", "batch_size": 16},
            "sampling": {"max_size": max_size, "seed": 0},
            "executor": {"prefix": prefix},
            "ray": {"enabled": False},
        }
    )


def write_demo_checkpoints(run_dir: Path, steps: tuple[int, ...]) -> None:
    """One checkpoint per step, the last step being the shipped model: with a fixed final step
    (4000), every later step (5000) held the same weights as it. Written each time (they are
    deterministic, under a second each): a checkpoint left by a sweep with another last step
    holds another blend. Unchanged bytes keep their content fingerprint, so cells stay cached."""

    for step in steps:
        write_checkpoint(run_dir, step, final_step=max(steps))


def cmd_sweep_demo(args: argparse.Namespace) -> int:
    try:
        steps = tuple(int(s) for s in args.steps.split(","))
    except ValueError:
        print(f"--steps={args.steps!r}: expected comma-separated integers", file=sys.stderr)
        return 2
    prefix = args.prefix or SWEEP_PREFIX
    with bad_input():
        environment_settings()  # before the demo checkpoints are written
        cfg = apply_overrides(sweep_config(prefix, args.data_dir, steps, args.max_size), args)
    code = run(cfg, args)
    if args.dry_run:
        return code
    from plantcad_flows.layout.plan import plan_hash
    from plantcad_flows.layout.storage import to_path
    from plantcad_flows.results.report import artifact_scope
    from plantcad_flows.results.trends import TRENDS_DIR

    trends = to_path(prefix) / TRENDS_DIR / artifact_scope(plan_hash(cfg), [f"{SWEEP_NAME}@step-0"])
    main = trends / f"{SPLITS[0][0]}-{SPLITS[0][1]}-auroc.png"
    if main.exists():
        print(f"trend plot (AUROC against checkpoint step): {main}")
        print(f"all trend plots: {trends}")
    return code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep-demo", help="evaluate a demo checkpoint sweep and draw its trends")
    p.add_argument("--data-dir", default=DEMO_DATA_DIR)
    p.add_argument(
        "--steps", default="1000,2000,3000,4000", help="checkpoint steps to write (comma-separated)"
    )
    p.add_argument("--max-size", type=int, default=100, help="examples per split")
    add_run_flags(p)
    p.set_defaults(func=cmd_sweep_demo)
