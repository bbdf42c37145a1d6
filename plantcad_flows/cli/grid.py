"""`plantcad-flows grid COMMAND GRID.yaml ...`: the lifecycle of an experiment grid.

| command | does |
|---|---|
| `plan` | dry run: one line per cell (name, deployment, resources, state, command); submits nothing |
| `submit` | runs the `grid` flow: submits the cells that need it (`--overwrite`: all), or `--local`: runs them here |
| `status` | a table of cells (state, attempt, start, duration, worker) and a summary line |
| `logs CELL` | the tail of a cell's latest run's log |
| `errors` | each failed cell: its first error line and the last lines of its log |
| `purge` | cancels every running or scheduled run of the grid and waits until they stopped; `--outputs` also deletes the cells' outputs |
| `pickup DEST` | downloads each cell's outputs and writes one table of all results files, hyper-parameters as columns |
| `print` | the commands, one per line |

Every command reads and expands the spec first: a bad spec exits with status 2 and one line naming
the field, before anything is submitted or any server is asked. Commands that read run states need
a Prefect server (PREFECT_API_URL, or one on 127.0.0.1:4200); `submit --local` starts a temporary
one when there is none. Prefect is imported only once a command talks to the server.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pydantic
import yaml

from plantcad_flows.cli.config_errors import bad_input
from plantcad_flows.config import EvalConfig
from plantcad_flows.errors import ValidationError
from plantcad_flows.grid.collect import combine, download_filters
from plantcad_flows.grid.expand import expand_grid
from plantcad_flows.grid.runs import attempts_by_cell, format_plan, format_status, grid_tag, latest_by_cell
from plantcad_flows.grid.secret_env import cell_secret_names, with_secrets
from plantcad_flows.grid.spec import load_grid
from plantcad_flows.services.prefect_server import DEFAULT_HOST, DEFAULT_PORT, api_healthy, prefect_api

TERMINAL_WAIT_S = 300


class Usage(Exception):
    """A problem to report in one line with exit status 2 (no server, unknown cell)."""


def _check_eval(config: dict) -> dict:
    EvalConfig.model_validate(config)
    return config


def load(args: argparse.Namespace, target: str | None = None):
    """The checked spec and its cells (a relative local prefix made absolute for target `local`)."""
    from plantcad_flows.layout.storage import is_local

    spec = load_grid(args.spec)
    target = target or getattr(args, "target", None) or spec.target
    if target == "local" and is_local(spec.prefix):
        spec = spec.model_copy(update={"prefix": os.path.abspath(spec.prefix)})
    return spec, expand_grid(spec, target=target, check_eval=_check_eval)


def api_candidate() -> str:
    return os.environ.get("PREFECT_API_URL") or f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/api"


def configured_api() -> str | None:
    """PREFECT_API_URL (else 127.0.0.1:4200) when a server answers there, or None."""

    url = api_candidate()
    return url if api_healthy(url) else None


@contextmanager
def server(required: bool = True):
    """Prefect settings pointing at the configured server (yields its URL, or None)."""
    url = configured_api()
    if url is None:
        if required:
            raise Usage(
                f"no Prefect server answers at {api_candidate()}: set PREFECT_API_URL "
                "(or start one: plantcad-flows server)"
            )
        yield None
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url


def dotenv_secrets(path: str | None) -> dict[str, str]:
    """The `.env` values that become cell secrets (PREFECT_* settings left out)."""
    from deployments.setup import read_dotenv

    values = read_dotenv(Path(path)) if path else {}
    return {k: values[k] for k in cell_secret_names(values)}


# --- commands ------------------------------------------------------------------------------------


def cmd_plan(args) -> int:
    spec, cells = load(args)
    with server(required=False) as url:
        latest = None
        if url:
            from tasks.grid_runs import grid_runs

            latest = latest_by_cell(grid_runs(spec.project))
    print(format_plan(cells, latest))
    if args.manifests:
        from deployments.grid_jobs import write_manifests

        names = sorted(dotenv_secrets(args.env_file))
        for line in write_manifests(cells, Path(args.manifests), names, args.validate):
            print(line)
    return 0


def cmd_print(args) -> int:
    _, cells = load(args)
    for c in cells:
        print(c.command if c.kind == "command" else f"# {c.name}: zero-shot-eval of its eval config")
    return 0


def cmd_submit(args) -> int:
    spec, cells = load(args, target="local" if args.local else None)
    secrets = dotenv_secrets(args.env_file)
    if args.local:
        return _submit_local(spec, cells, secrets, args)

    with server() as url:
        from prefect import tags

        from deployments.preview_job import load_template
        from deployments.setup import save_dotenv_secrets
        from flows.grid import grid
        from tasks.grid_runs import deployment_pool, grid_runs

        for deployment in sorted({c.deployment for c in cells}):
            try:
                deployment_pool(deployment)
            except LookupError as e:
                raise Usage(str(e)) from None
        for block in save_dotenv_secrets(secrets):
            print(f"secret block {block}: saved")
        base = load_template()["variables"]["properties"]["secret_env"]["default"]
        cells = [with_secrets(c, sorted(secrets), base) for c in cells]
        with tags(grid_tag(spec.project)):
            state = grid.with_options(flow_run_name=_run_name(spec.project))(
                project=spec.project,
                cells=cells,
                overwrite=args.overwrite,
                wait=not args.no_wait,
                max_running=spec.max_running,
                secret_names=sorted(secrets),
                poll_s=args.poll,
                return_state=True,
            )
        _report(spec.project, cells, state, url, grid_runs)
    return 0 if state.is_completed() else 1


def _submit_local(spec, cells, secrets: dict[str, str], args) -> int:
    for key, value in secrets.items():
        os.environ.setdefault(key, value)  # the environment wins over .env, as in `setup`
    with prefect_api(log_path=os.devnull) as srv:
        from prefect import tags
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: srv.api_url}):
            from flows.grid import grid
            from tasks.grid_runs import grid_runs

            with tags(grid_tag(spec.project)):
                state = grid.with_options(flow_run_name=_run_name(spec.project))(
                    project=spec.project,
                    cells=cells,
                    overwrite=args.overwrite,
                    local=True,
                    secret_names=sorted(secrets),
                    return_state=True,
                )
            _report(spec.project, cells, state, srv.api_url, grid_runs)
    return 0 if state.is_completed() else 1


def _run_name(project: str) -> str:
    return f"{project}-{time.strftime('%Y%m%d-%H%M%S')}"


def _report(project: str, cells, state, url: str, grid_runs) -> None:
    print(format_status(cells, grid_runs(project)))
    flow_run_id = state.state_details.flow_run_id
    print(f"grid run: {state.name}  {url.removesuffix('/api')}/runs/flow-run/{flow_run_id}")


def cmd_status(args) -> int:
    spec, cells = load(args)
    with server():
        from tasks.grid_runs import grid_runs

        print(format_status(cells, grid_runs(spec.project)))
    return 0


def _find_cell(cells, name: str):
    exact = [c for c in cells if c.name == name]
    found = exact or [c for c in cells if name in c.name]
    if len(found) != 1:
        hint = f"{len(found)} cells match" if found else "no cell matches"
        raise Usage(f"cell={name!r}: {hint} (see `plantcad-flows grid plan`)")
    return found[0]


def cmd_logs(args) -> int:
    spec, cells = load(args)
    cell = _find_cell(cells, args.cell)
    with server():
        from tasks.grid_runs import grid_runs, run_logs

        run = latest_by_cell(grid_runs(spec.project)).get(cell.name)
        if run is None:
            print(f"{cell.name}: never ran")
            return 1
        print(f"{cell.name}: {run.state_name} (flow run {run.name}, {run.id})")
        for line in last_lines([m for _, m in run_logs(run.id, tail=args.lines)], args.lines):
            print(line)
    return 0


def last_lines(messages: list[str], n: int) -> list[str]:
    """The last `n` lines of `messages`: a log record (a command's output) may hold many."""
    lines = [line for message in messages for line in message.splitlines()]
    return lines[-n:] if n > 0 else []


def cmd_errors(args) -> int:
    spec, cells = load(args)
    with server():
        from tasks.grid_runs import grid_runs, run_logs

        records = grid_runs(spec.project)
        latest, attempts = latest_by_cell(records), attempts_by_cell(records)
        failed = [c for c in cells if c.name in latest and latest[c.name].state_type in ("FAILED", "CRASHED")]
        for c in failed:
            run = latest[c.name]
            logs = run_logs(run.id)
            errors = [m for level, m in logs if level >= 40]
            first = (errors[0] if errors else run.message or "no error message").splitlines()[0]
            print(f"{c.name}: {run.state_name} (attempt {attempts[c.name]})")
            print(f"  error: {first}")
            for _, message in logs[-args.lines :]:
                for line in message.splitlines()[:3]:
                    print(f"  | {line}")
    print(f"{len(failed)} failed cell(s) of {len(cells)}")
    return 0


def cmd_purge(args) -> int:
    spec, cells = load(args)
    with server():
        from tasks.grid_runs import cancel, grid_runs, read_runs

        asked = cancel(grid_runs(spec.project))
        print(f"cancelling {len(asked)} run(s)")
        deadline = time.monotonic() + args.timeout
        pending = [r.id for r in asked]
        while pending and time.monotonic() < deadline:
            time.sleep(1)
            pending = [r.id for r in read_runs(pending) if not r.is_final]
        if pending:
            print(f"{len(pending)} run(s) still stopping after {args.timeout:.0f}s: check their workers")
    for r in asked:
        print(f"{r.cell or 'grid run ' + r.name}: {r.state_name} -> Cancelled")
    if args.outputs:
        from plantcad_flows.layout.sync import remove_tree

        removed = [c.name for c in cells if remove_tree(c.output_uri)]
        print(f"deleted the outputs of {len(removed)} cell(s)")
    return 1 if pending else 0


def cmd_pickup(args) -> int:
    from plantcad_flows.layout.sync import sync

    _, cells = load(args)
    dest = Path(args.dest)
    for c in cells:
        include = download_filters(c)
        report = sync(c.output_uri, str(dest / c.name), include=include)
        if report.copied:
            print(f"{c.name}: {report.summary()}")
    table, missing = combine(cells, dest)
    out = dest / "grid-results"
    table.to_parquet(out.with_suffix(".parquet"), index=False)
    table.to_csv(out.with_suffix(".csv"), index=False)
    if missing:
        print(f"{len(missing)} cell(s) without complete results: {', '.join(missing)}")
    print(f"{len(table)} rows from {len(cells) - len(missing)} cell(s) -> {out}.parquet, {out}.csv")
    return 0


# --- wiring --------------------------------------------------------------------------------------

COMMANDS = {
    "plan": (cmd_plan, "dry run: every cell with its target, resources, state and command"),
    "submit": (cmd_submit, "submit the cells that need to run (or run them here with --local)"),
    "status": (cmd_status, "a table of the cells' states and a summary line"),
    "logs": (cmd_logs, "the tail of a cell's log"),
    "errors": (cmd_errors, "each failed cell's first error line and last log lines"),
    "purge": (cmd_purge, "cancel running and scheduled cells (--outputs: delete their outputs)"),
    "pickup": (cmd_pickup, "download the cells' outputs and combine their results into one table"),
    "print": (cmd_print, "the cells' commands, one per line"),
}


def run(args: argparse.Namespace) -> int:
    func = COMMANDS[args.grid_command][0]

    try:
        with bad_input(ValidationError, pydantic.ValidationError, yaml.YAMLError, source=args.spec):
            return func(args)
    except Usage as e:
        print(f"grid {args.grid_command}: {e}", file=sys.stderr)
        return 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "grid", help="experiment grids: plan, submit, status, logs, errors, purge, pickup, print"
    )
    gsub = p.add_subparsers(dest="grid_command", required=True, metavar="COMMAND")
    for name, (_, text) in COMMANDS.items():
        c = gsub.add_parser(name, help=text, description=text)
        c.add_argument("spec", metavar="GRID.yaml")
        if name != "submit":
            c.add_argument("--target", help="as if the spec said this target")
        c.set_defaults(func=run)
    parsers = gsub.choices
    parsers["plan"].add_argument(
        "--manifests", metavar="DIR", help="also write each cell's Kubernetes Job here"
    )
    parsers["plan"].add_argument("--validate", metavar="K8S_VERSION", help="validate those Jobs (e.g. 1.33)")
    for name in ("plan", "submit"):
        parsers[name].add_argument("--env-file", default=".env", help="secrets for the cells (default .env)")
    s = parsers["submit"]
    s.add_argument("--target", help="submit to this target instead of the spec's")
    s.add_argument("--overwrite", action="store_true", help="resubmit every cell, whatever its state")
    s.add_argument("--local", action="store_true", help="run every cell here, one after another")
    s.add_argument("--no-wait", action="store_true", help="submit and return; do not watch the cells")
    s.add_argument("--poll", type=float, default=5.0, help="seconds between state checks while watching")
    parsers["logs"].add_argument("cell", help="a cell's name (or a unique part of it)")
    parsers["logs"].add_argument("--lines", type=int, default=50)
    parsers["errors"].add_argument("--lines", type=int, default=10)
    parsers["purge"].add_argument("--outputs", action="store_true", help="also delete the cells' outputs")
    parsers["purge"].add_argument("--timeout", type=float, default=TERMINAL_WAIT_S, help="wait this long")
    parsers["pickup"].add_argument("dest", metavar="DEST", help="local directory for outputs and the table")
