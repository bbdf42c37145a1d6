"""`plantcad-flows eval CONFIG` and `plantcad-flows demo`: plan, then run the zero-shot-eval flow.

Bad input exits with status 2 and one line per problem naming the field and value, before any
Prefect run is created or any model is loaded. A dry run prints the plan and imports neither
torch, Ray nor Prefect. A run whose cells failed exits with status 1; a run whose Prefect server
stopped answering for `PLANTCAD_API_LOST_AFTER` seconds (60) exits with status 3, naming the
server (`services/api_watchdog.py`), and the same command then resumes from what was completed. What a
run starts (a Prefect server, a local Ray instance) goes down with the CLI on SIGINT, SIGTERM and
SIGKILL alike: SIGTERM is turned into an orderly exit, and a SIGKILL is caught by the reaper
(`cluster/reaper.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from plantcad_flows.benchmark.synthetic import ensure_benchmark, write_demo_config
from plantcad_flows.cli.config_errors import bad_input
from plantcad_flows.cli.console import run_console, run_log_path
from plantcad_flows.cli.data import DEMO_DATA_DIR
from plantcad_flows.cli.preflight import preflight
from plantcad_flows.cluster.processes import start_reaper, stop_reaper
from plantcad_flows.config import EvalConfig, load_config
from plantcad_flows.errors import PlantCADError, StorageError
from plantcad_flows.services.api_watchdog import ApiWatchdog, lost_after_s
from plantcad_flows.services.prefect_server import prefect_api

DEMO_PREFIX = "outputs/demo"
DEFAULT_SERVER_PORT = 4200


def load(path: str, args: argparse.Namespace):
    return apply_overrides(load_config(path), args)


def apply_overrides(cfg, args: argparse.Namespace):
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
        # typed in the shell: relative to the current directory, as a shell path is
        data["executor"]["prefix"] = args.prefix if "://" in args.prefix else os.path.abspath(args.prefix)
    return EvalConfig.model_validate(data)


def environment_settings() -> float:
    """Check the run's settings that come from the environment; return the watchdog's bound.

    A command checks these before it writes or loads anything (`sweep-demo` writes its demo
    checkpoints first). Raises `ValidationError` naming the variable and its value.
    """
    from plantcad_flows.io.retry import task_retry_waits

    lost_after = lost_after_s()  # how long the server may be silent before the run ends
    task_retry_waits()  # the steps' retry waits
    return lost_after


def run(cfg, args: argparse.Namespace) -> int:
    from plantcad_flows.identity.resolve import resolve
    from plantcad_flows.layout.plan import format_plan, plan_cells

    # Identities first (hub revisions, content fingerprints, checkpoint discovery): what cannot be
    # resolved is bad input, one line and exit 2, before a flow run exists or a model loads.
    with bad_input(PlantCADError):
        lost_after = environment_settings()  # checked first
        resolution = resolve(cfg)
        planned = read_plan(cfg, lambda: plan_cells(cfg, resolution))
        if args.dry_run:
            print(format_plan(planned, resolution.discoveries))
            return 0
        preflight(cfg, cells_to_run(planned))

    home = os.environ.get("PREFECT_HOME")
    port = getattr(args, "server_port", None) or DEFAULT_SERVER_PORT
    with orderly_signals() as received, prefect_api(args.keep_server, home, server_log(), port) as server:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # what this run starts (a local Ray instance, the server) goes down with it, even on SIGKILL
        kept = [server.process.pid] if args.keep_server and server.process is not None else []
        reaper = start_reaper(spare=kept)
        # a server that dies mid-run ends the run (exit 3) instead of leaving it retrying for minutes
        watchdog = ApiWatchdog(server.api_url, lost_after).start()
        try:
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                from flows.zero_shot_eval import zero_shot_eval
                from plantcad_flows.cluster.ray_client import quiet_driver_console

                log_path = run_log_path(cfg.executor.prefix)
                print(f"full log: {log_path}{'' if args.verbose else ' (-v shows it here)'}", flush=True)
                quiet_driver_console(not args.verbose)
                # the run uses what was planned above, not a second resolve
                with run_console(log_path, args.verbose) as log_file:
                    state = zero_shot_eval(cfg, resolution, return_state=True)
                flow_run_id = state.state_details.flow_run_id
                log = log_file.describe()
                results = report(state, cfg, server.ui_url, flow_run_id, args.results_json, log)
        finally:
            watchdog.stop()  # before the server this run started is stopped on purpose
            stop_reaper(reaper)
        if args.keep_server and server.process is not None:
            print(f"Prefect server left running at {server.ui_url} (pid {server.process.pid})")
        elif server.process is not None:
            print(
                "  The Prefect server this command started stops now. To open the link, run again "
                "with the server kept up: `make demo ARGS=--keep-server` (or `--keep-server`), or "
                "start one first with `make server` in another terminal."
            )
    if received:
        print(f"interrupted by signal {received[0]}", file=sys.stderr)
        return 128 + received[0]
    return 0 if state.is_completed() and results is not None else 1


@contextmanager
def orderly_signals() -> Iterator[list[int]]:
    """SIGTERM and SIGINT exit through the cleanup code (servers and Ray stopped); Python's
    default for SIGTERM would end the process on the spot and leave them running.

    Yields the signals received, so that an interrupted command exits 128 + signal even when
    the signal lands while the run is already finishing (its cleanup must not swallow it).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def _exit(signum, frame):
        received.append(signum)
        raise SystemExit(128 + signum)

    def _interrupt(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = {
        sig: signal.signal(sig, handler)
        for sig, handler in ((signal.SIGTERM, _exit), (signal.SIGINT, _interrupt))
    }
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def read_plan(cfg, plan):
    """The plan, reading the prefix; a prefix that cannot be read (an S3 endpoint that does not
    answer, a bucket without access) is bad input naming `executor.prefix`, not a traceback."""

    try:
        return plan()
    except PlantCADError:
        raise
    except Exception as e:  # any backend's error while reading the prefix means the same here
        problem = " ".join(str(e).split())[:300]
        raise StorageError(
            f"executor.prefix={cfg.executor.prefix!r}: cannot be read ({type(e).__name__}: {problem})"
        ) from None


def cells_to_run(planned) -> list:
    """The plan's cells that this run will compute (not cached, not unsupported)."""
    from plantcad_flows.layout.plan import CellStatus

    return [p.cell for p in planned if p.status in (CellStatus.TO_RUN, CellStatus.FAILED_BEFORE)]


def server_log() -> str:
    Path("outputs").mkdir(exist_ok=True)
    return str(Path("outputs") / "prefect-server.log")


def report(state, cfg, ui_url: str, flow_run_id, results_json: str | None, log_path=None):
    """Print the pivoted results, one line per failed cell, where the outputs, trend plots and
    log are, and the UI link last."""
    from plantcad_flows.results.pivot import pivot_text
    from plantcad_flows.results.table import CellResult, rows

    try:
        raw = state.result()
    except Exception as e:
        failed = getattr(e, "results", None)
        if failed:  # cells failed: one line each, with its cause and file
            report = getattr(e, "report_error", None)
            also = f"; the run's report was not written: {_first_line(report)}" if report else ""
            print(f"run failed: {len(failed)} cell(s) failed{also} (tracebacks: {log_path})", file=sys.stderr)
            for cell_id, reason in failed:
                print(f"  failed {cell_id}: {_first_line(reason)}", file=sys.stderr)
        else:
            print(f"run failed: {_first_line(str(e))} (tracebacks: {log_path})", file=sys.stderr)
        raw = None
    results = [CellResult.model_validate(r) for r in raw] if raw else []
    prefix = cfg.executor.prefix
    if results:
        print(pivot_text(results))
        count = {s: sum(r.status == s for r in results) for s in ("completed", "cached", "skipped", "failed")}
        print(
            f"{len(results)} cells: {count['completed']} scored, {count['cached']} from cache, "
            f"{count['skipped']} skipped, {count['failed']} failed"
        )
        for line in variant_score_files(results):
            print(line)
        trends = trends_dir(cfg, results)
        if trends:
            print(f"trend plots: {trends}")
    print(
        f"outputs: {prefix if '://' in prefix else os.path.abspath(prefix)} (history: plantcad-flows history --prefix {prefix})"
    )
    if results_json and results:
        Path(results_json).parent.mkdir(parents=True, exist_ok=True)
        Path(results_json).write_text(json.dumps(rows(results), indent=2))
        print(f"results JSON: {results_json}")
    print(f"Prefect UI: {ui_url}/runs/flow-run/{flow_run_id}")
    return results if raw else None


def variant_score_files(results) -> list[str]:
    """One line per variant set that has scores: where its `variant_scores.parquet` is."""
    from plantcad_flows.layout.storage import to_path
    from plantcad_flows.variants.outputs import SCORES_PARQUET

    lines = []
    for r in results:
        if r.status in ("completed", "cached") and r.output_dir:
            path = to_path(r.output_dir) / SCORES_PARQUET
            if path.exists():
                lines.append(f"variant scores of {r.cell_id}: {path}")
    return lines


def _first_line(text: str, limit: int = 400) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def trends_dir(cfg, results) -> str | None:
    """Where this evaluation's trend PNGs are (the flow's `trend-report` task draws them)."""
    from plantcad_flows.layout.plan import plan_hash
    from plantcad_flows.layout.storage import to_path
    from plantcad_flows.results.report import artifact_scope
    from plantcad_flows.results.trends import TRENDS_DIR

    scope = artifact_scope(plan_hash(cfg), [r.model for r in results])
    d = to_path(cfg.executor.prefix) / TRENDS_DIR / scope
    return str(d) if d.exists() else None


def cmd_eval(args: argparse.Namespace) -> int:
    with bad_input(source=args.config):
        cfg = load(args.config, args)
    return run(cfg, args)


def demo_config(data_dir: str = DEMO_DATA_DIR, prefix: str = DEMO_PREFIX):
    """The embedded default: synthetic benchmark (generated if missing) + shipped tiny models."""

    ensure_benchmark(data_dir)
    path = Path(prefix) / "demo-config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    # the file's relative paths would be read against its own directory: write absolute ones
    local = "://" not in prefix
    write_demo_config(path, os.path.abspath(data_dir), os.path.abspath(prefix) if local else prefix)
    return load_config(path)


def cmd_demo(args: argparse.Namespace) -> int:
    with bad_input():
        cfg = apply_overrides(demo_config(args.data_dir, args.prefix or DEMO_PREFIX), args)
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
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show Prefect's task-run lines, tracebacks and Ray's worker output on the console "
        "(they are always in the run's log file and the Prefect UI)",
    )
    p.add_argument(
        "--server-port",
        type=int,
        default=DEFAULT_SERVER_PORT,
        help="without PREFECT_API_URL: share the Prefect server on 127.0.0.1 at this port if it outlives its "
        "users (make server), else start this run's own (there if the port is free)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="run the zero-shot-eval flow on a YAML config")
    p.add_argument("config")
    add_run_flags(p)
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("demo", help="the flow on the synthetic benchmark with the shipped tiny models")
    p.add_argument("--data-dir", default=DEMO_DATA_DIR)
    add_run_flags(p)
    p.set_defaults(func=cmd_demo)
