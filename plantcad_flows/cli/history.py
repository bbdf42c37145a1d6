"""`plantcad-flows history`: the evaluation history under a prefix, printed or exported.

One row per result, de-duplicated by cell key: a cell served from cache night after night
appears once, with the run that first recorded it. `--model` and `--task` filter by regular
expression; `--csv OUT` writes every column instead of printing. Reads files only: no Prefect.
"""

from __future__ import annotations

import argparse
import re
import sys

import pandas as pd

from plantcad_flows.cli.config_errors import bad_input
from plantcad_flows.config import load_config
from plantcad_flows.tables import text_table

DEFAULT_PREFIX = "outputs/demo"
SHOWN = (
    "model",
    "step",
    "task",
    "split",
    "strand",
    "ctx",
    "metric",
    "value",
    "95% CI",
    "n",
    "revision",
    "recorded",
    "run",
)


def _prefix(args: argparse.Namespace) -> str:
    if args.prefix:
        return args.prefix
    if args.config:
        return load_config(args.config).executor.prefix
    return DEFAULT_PREFIX


def _text_rows(frame) -> list[list[str]]:
    out = []
    for _, r in frame.iterrows():
        ci = (
            ""
            if pd.isna(r["ci_low"]) or pd.isna(r["ci_high"])
            else f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
        )
        revision = r["model_revision"] if isinstance(r["model_revision"], str) else r["cell_key"]
        out.append(
            [
                str(r["model"]),
                "" if pd.isna(r["step"]) else str(int(r["step"])),
                str(r["task"]),
                str(r["split"]),
                str(r["strand"]) if isinstance(r["strand"], str) else "fwd",
                "" if pd.isna(r["context_bp"]) else str(int(r["context_bp"])),
                str(r["metric"]),
                "" if pd.isna(r["value"]) else f"{r['value']:.4f}",
                ci,
                "" if pd.isna(r["n"]) else str(int(r["n"])),
                str(revision or "")[:12],
                r["time"].strftime("%Y-%m-%d %H:%M"),
                str(r["run_name"]),
            ]
        )
    return out


def format_history(frame) -> str:
    body = _text_rows(frame)
    return "\n".join(text_table(SHOWN, body, rule="  "))


def cmd_history(args: argparse.Namespace) -> int:
    for flag, value in (("--model", args.model), ("--task", args.task)):
        if value is not None:
            try:
                re.compile(value)
            except re.error as e:
                print(f"{flag}={value!r}: invalid regular expression ({e})", file=sys.stderr)
                return 2
    with bad_input(source=args.config):
        prefix = _prefix(args)
    from plantcad_flows.results.history import deduplicated, read_history, select

    frame = select(deduplicated(read_history(prefix)), args.model, args.task)
    if args.csv:
        frame.to_csv(args.csv, index=False)
        print(f"{len(frame)} row(s) written to {args.csv}")
        return 0
    if frame.empty:
        print(
            f"no history under {prefix} matches"
            if (args.model or args.task)
            else f"no history under {prefix}"
        )
        return 0
    print(format_history(frame))
    print(
        f"{len(frame)} result(s), {frame['cell_key'].nunique()} cell(s), from {frame['run_id'].nunique()} run(s)"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="print or export the evaluation history (one row per result)")
    p.add_argument(
        "--prefix", help=f"storage prefix (default: --config's executor.prefix, else {DEFAULT_PREFIX})"
    )
    p.add_argument("--config", help="take the prefix from this YAML config")
    p.add_argument("--model", metavar="REGEX", help="only models whose name matches")
    p.add_argument("--task", metavar="REGEX", help="only tasks whose name matches")
    p.add_argument("--csv", metavar="OUT", help="write the rows (every column) to this CSV file")
    p.set_defaults(func=cmd_history)
