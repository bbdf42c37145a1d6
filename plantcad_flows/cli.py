"""`plantcad-flows` command line: eval, demo, generate-data, server, setup, preview-job, env.

Bad input exits with status 2 and one line per problem naming the field and value, before any
Prefect run is created or any model is loaded. A run whose cells failed exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEMO_DATA_DIR = "data/synthetic"
DEMO_PREFIX = "outputs/demo"


def _config_error_lines(exc: Exception, source: str | None = None) -> list[str]:
    import pydantic
    import yaml

    if isinstance(exc, yaml.YAMLError):
        # PyYAML's message spans several lines (with a caret drawing); keep only where and what
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        return [f"config error: invalid YAML in {source or 'config'}{where}: {problem}"]
    if isinstance(exc, pydantic.ValidationError):
        out = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "config"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {loc.rsplit('.', 1)[-1]!r}"
            out.append(f"config error at {loc}: {msg}")
        return out
    return [f"config error: {' '.join(str(exc).split())}"]


def _load(path: str, args: argparse.Namespace):
    from plantcad_flows.config import load_config

    cfg = load_config(path)
    return _apply_overrides(cfg, args)


def _apply_overrides(cfg, args: argparse.Namespace):
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


def _run(cfg, args: argparse.Namespace) -> int:
    from plantcad_flows.cells import format_plan, plan_cells

    if args.dry_run:
        print(format_plan(plan_cells(cfg)))
        return 0
    from plantcad_flows.local_server import prefect_api

    home = os.environ.get("PREFECT_HOME")
    with prefect_api(keep=args.keep_server, home=home, log_path=_server_log()) as server:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            from flows.zero_shot_eval import zero_shot_eval

            state = zero_shot_eval(cfg, return_state=True)
            flow_run_id = state.state_details.flow_run_id
            results = _report(state, cfg, server.ui_url, flow_run_id, args.results_json)
        if args.keep_server and server.process is not None:
            print(f"Prefect server left running at {server.ui_url} (pid {server.process.pid})")
    return 0 if state.is_completed() and results is not None else 1


def _server_log() -> str:
    Path("outputs").mkdir(exist_ok=True)
    return str(Path("outputs") / "prefect-server.log")


def _report(state, cfg, ui_url: str, flow_run_id, results_json: str | None):
    from plantcad_flows.results import CellResult, format_table, rows

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
    print(f"outputs: {os.path.abspath(cfg.executor.prefix) if '://' not in cfg.executor.prefix else cfg.executor.prefix}")
    print(f"Prefect UI: {ui_url}/runs/flow-run/{flow_run_id}")
    if results_json and results:
        Path(results_json).parent.mkdir(parents=True, exist_ok=True)
        Path(results_json).write_text(json.dumps(rows(results), indent=2))
        print(f"results JSON: {results_json}")
    return results if raw else None


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args.config, args)
    except Exception as e:
        for line in _config_error_lines(e, args.config):
            print(line, file=sys.stderr)
        return 2
    return _run(cfg, args)


def demo_config(data_dir: str = DEMO_DATA_DIR, prefix: str = DEMO_PREFIX):
    """The embedded default: synthetic benchmark (generated if missing) + shipped tiny models."""
    from plantcad_flows.config import load_config
    from plantcad_flows.synthetic import ensure_benchmark, write_demo_config

    ensure_benchmark(data_dir)
    path = Path(prefix) / "demo-config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_demo_config(path, data_dir, prefix)
    return load_config(path)


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        cfg = _apply_overrides(demo_config(args.data_dir, args.prefix or DEMO_PREFIX), args)
    except Exception as e:
        for line in _config_error_lines(e):
            print(line, file=sys.stderr)
        return 2
    return _run(cfg, args)


def cmd_generate(args: argparse.Namespace) -> int:
    from plantcad_flows.synthetic import generate_benchmark

    paths = generate_benchmark(args.out, seed=args.seed)
    print(f"wrote {len(paths)} splits under {args.out}")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from plantcad_flows.local_server import DEFAULT_HOST, prefect_executable

    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    os.execvpe(prefect_executable(), [prefect_executable(), "server", "start", "--host",
                                      DEFAULT_HOST, "--port", str(args.port)], env)
    return 0


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-json", help="write the results rows here as a JSON list")
    p.add_argument("--force", action="store_true", help="recompute every step")
    p.add_argument("--dry-run", action="store_true", help="print the plan; load nothing")
    p.add_argument("--only", metavar="REGEX", help="run only cells whose id (model/task/split) matches")
    p.add_argument("--ray-address", metavar="ADDRESS", help="join a Ray cluster: auto, host:port or ray://host:port")
    p.add_argument("--no-ray", action="store_true", help="score in local threads instead of Ray")
    p.add_argument("--prefix", help="override executor.prefix (local dir, s3://..., hf://datasets/...)")
    p.add_argument("--keep-server", action="store_true", help="leave the local Prefect server running")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plantcad-flows", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("eval", help="run the zero-shot-eval flow on a YAML config")
    p.add_argument("config")
    _add_run_flags(p)
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("demo", help="the flow on the synthetic benchmark with the shipped tiny models")
    p.add_argument("--data-dir", default=DEMO_DATA_DIR)
    _add_run_flags(p)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("generate-data", help="write the synthetic benchmark")
    p.add_argument("--out", default=DEMO_DATA_DIR)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("server", help="run a local Prefect server (127.0.0.1) in the foreground")
    p.add_argument("--port", type=int, default=4200)
    p.set_defaults(func=cmd_server)
    for name, text in (
        ("setup", "create work pools, blocks and deployments (see infra/README.md)"),
        ("preview-job", "print the Kubernetes Job a run would submit for --job-variables JSON"),
        ("env", "report where this process runs: scheduler, hosts, GPUs, Ray address"),
    ):
        sub.add_parser(name, help=text, add_help=False)
    return parser


DELEGATED = {"setup": "deployments.setup", "preview-job": "deployments.preview_job",
             "env": "plantcad_flows.cluster_env"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        # these commands own their flags (argparse.REMAINDER would swallow `--x` options)
        import importlib

        return importlib.import_module(DELEGATED[argv[0]]).main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
