"""`plantcad-flows eval CONFIG` and `plantcad-flows demo`: plan, then run the zero-shot-eval flow.

Bad input exits with status 2 and one line per problem naming the field and value, before any
Prefect run is created or any model is loaded. A dry run prints the plan and imports neither
torch, Ray nor Prefect. A run whose cells failed exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from plantcad_flows.cli.config_errors import config_error_lines
from plantcad_flows.cli.data import DEMO_DATA_DIR

DEMO_PREFIX = "outputs/demo"


def load(path: str, args: argparse.Namespace):
    from plantcad_flows.config import load_config

    return apply_overrides(load_config(path), args)


def apply_overrides(cfg, args: argparse.Namespace):
    from plantcad_flows.config import EvalConfig

    data = cfg.model_dump()
    if getattr(args, "force", False):
        data["force"] = True
    if getattr(args, "only", None):
        data["only"] = args.only
    if getattr(args, "ray_address", None):
        data["ray"]["address"] = args.ray_address
        data["ray"]["enabled"] = True
    if getattr(args, "no_ray", False):
        data["ray"]["enabled"] = False
    if getattr(args, "prefix", None):
        data["executor"]["prefix"] = args.prefix
    return EvalConfig.model_validate(data)


def run(cfg, args: argparse.Namespace) -> int:
    from plantcad_flows.layout.plan import format_plan, plan_cells

    if args.dry_run:
        print(format_plan(plan_cells(cfg)))
        return 0
    from plantcad_flows.cli.prefect_server import prefect_api

    home = os.environ.get("PREFECT_HOME")
    with prefect_api(keep=args.keep_server, home=home, log_path=server_log()) as server:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            from flows.zero_shot_eval import zero_shot_eval

            state = zero_shot_eval(cfg, return_state=True)
            flow_run_id = state.state_details.flow_run_id
            results = report(state, cfg, server.ui_url, flow_run_id, args.results_json)
        if args.keep_server and server.process is not None:
            print(f"Prefect server left running at {server.ui_url} (pid {server.process.pid})")
    return 0 if state.is_completed() and results is not None else 1


def server_log() -> str:
    Path("outputs").mkdir(exist_ok=True)
    return str(Path("outputs") / "prefect-server.log")


def report(state, cfg, ui_url: str, flow_run_id, results_json: str | None):
    from plantcad_flows.results.table import CellResult, format_table, rows

    try:
        raw = state.result()
    except Exception as e:
        print(f"run failed: {e}", file=sys.stderr)
        raw = None
    results = [CellResult.model_validate(r) for r in raw] if raw else []
    if results:
        print(format_table(results))
        skipped = [r for r in results if r.status == "skipped"]
        for r in skipped:
            print(f"skipped {r.cell_id}: {r.reason}")
        cached = sum(r.status == "cached" for r in results)
        print(f"{len(results)} cells: {cached} from cache, {len(skipped)} skipped")
    prefix = cfg.executor.prefix
    print(f"outputs: {prefix if '://' in prefix else os.path.abspath(prefix)}")
    print(f"Prefect UI: {ui_url}/runs/flow-run/{flow_run_id}")
    if results_json and results:
        Path(results_json).parent.mkdir(parents=True, exist_ok=True)
        Path(results_json).write_text(json.dumps(rows(results), indent=2))
        print(f"results JSON: {results_json}")
    return results if raw else None


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config, args)
    except Exception as e:
        for line in config_error_lines(e, args.config):
            print(line, file=sys.stderr)
        return 2
    return run(cfg, args)


def demo_config(data_dir: str = DEMO_DATA_DIR, prefix: str = DEMO_PREFIX):
    """The embedded default: synthetic benchmark (generated if missing) + shipped tiny models."""
    from plantcad_flows.benchmark.synthetic import ensure_benchmark, write_demo_config
    from plantcad_flows.config import load_config

    ensure_benchmark(data_dir)
    path = Path(prefix) / "demo-config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_demo_config(path, data_dir, prefix)
    return load_config(path)


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        cfg = apply_overrides(demo_config(args.data_dir, args.prefix or DEMO_PREFIX), args)
    except Exception as e:
        for line in config_error_lines(e):
            print(line, file=sys.stderr)
        return 2
    return run(cfg, args)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-json", help="write the results rows here as a JSON list")
    p.add_argument("--force", action="store_true", help="recompute every step")
    p.add_argument("--dry-run", action="store_true", help="print the plan; load nothing")
    p.add_argument("--only", metavar="REGEX", help="run only cells whose id (model/task/split) matches")
    p.add_argument(
        "--ray-address", metavar="ADDRESS", help="join a Ray cluster: auto, host:port or ray://host:port"
    )
    p.add_argument("--no-ray", action="store_true", help="score in local threads instead of Ray")
    p.add_argument("--prefix", help="override executor.prefix (local dir, s3://..., hf://datasets/...)")
    p.add_argument("--keep-server", action="store_true", help="leave the local Prefect server running")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="run the zero-shot-eval flow on a YAML config")
    p.add_argument("config")
    add_run_flags(p)
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("demo", help="the flow on the synthetic benchmark with the shipped tiny models")
    p.add_argument("--data-dir", default=DEMO_DATA_DIR)
    add_run_flags(p)
    p.set_defaults(func=cmd_demo)
