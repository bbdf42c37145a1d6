"""Orchestration at sweep scale: `plantcad-flows eval` on N cells of tiny data, on a Prefect server
backed by SQLite or PostgreSQL.

N/20 checkpoints of the tiny MLM (`plantcad_flows.benchmark.checkpoints`, a `checkpoints:` entry
discovered at plan time) x the 20 splits of the synthetic benchmark, 4 examples each, on the CPU
with no Ray, one shard per cell and one scoring worker (so that scoring time is a plain sum), at
a context of 32 bp by default (the forward pass is not what is measured). A
Prefect server is started here on a free port with its database under the work directory
(`--database postgres`: a local PostgreSQL, `plantcad_flows/services/postgres.py`), and stopped by
PID. Prints:

* wall time of the `eval` command (planning, the flow, results; not the server's start);
* scoring time: the summed run time of the `score-shard` task runs (model loads included), and
  orchestration overhead per cell, (wall - scoring) / N;
* task runs created, counted through the Prefect API;
* whether "database is locked" or another API error was logged by the server or the CLI.

    .venv/bin/python benchmarks/many_cells.py --cells 1000 --database postgres [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from proc_tree import cli_env, run_measured  # noqa: E402

from plantcad_flows.benchmark.checkpoints import write_checkpoint  # noqa: E402
from plantcad_flows.benchmark.synthetic import ensure_benchmark  # noqa: E402
from plantcad_flows.families import all_task_splits  # noqa: E402
from plantcad_flows.services.prefect_server import start_server  # noqa: E402

SPLITS = all_task_splits()  # the 20 demo splits
EXAMPLES = 4
API_ERRORS = re.compile(
    r"database is locked|OperationalError|QueuePool limit|Encountered exception in request|"
    r"PrefectHTTPStatusError|HTTP/1\.1\" 5\d\d|status code 5\d\d|Internal Server Error"
)


def api(url: str, path: str, body: dict) -> object:
    req = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def task_runs(url: str) -> list[dict]:
    """Every task run on the server (paged)."""
    out, offset = [], 0
    while True:
        page = api(url, "/task_runs/filter", {"limit": 200, "offset": offset})
        out += page
        if len(page) < 200:
            return out
        offset += 200


def config(work: Path, data: Path, checkpoints: int, context: int) -> dict:
    run_dir = work / "training-run"
    for i in range(checkpoints):
        if not (run_dir / f"step-{i + 1}" / "config.json").exists():
            write_checkpoint(run_dir, i + 1, final_step=checkpoints)
    return {
        "checkpoints": [{"path": str(run_dir), "name": "tiny-mlm", "type": "mlm", "context_length": context}],
        "splits": [{"task": t, "split": s, "path": str(data / t / f"{s}.parquet")} for t, s in SPLITS],
        "compute": {"device": "cpu", "batch_size": 8, "num_workers": 1},
        "sampling": {"max_size": EXAMPLES, "seed": 0},
        "executor": {"prefix": str(work / "evals")},
        "ray": {"enabled": False, "num_shards": 1},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1000, help="cells (a multiple of 20)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--work", help="work here (and keep it) instead of a temporary directory")
    parser.add_argument("--context", type=int, default=32, help="the model's context length (bp)")
    args = parser.parse_args()
    if args.cells < 20 or args.cells % 20:
        parser.error("--cells must be a positive multiple of 20")
    work = Path(args.work or tempfile.mkdtemp(prefix=f"many-cells-{args.database}-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o711)  # as root, PostgreSQL runs as `postgres` and must reach its directory
    data = work / "data"
    ensure_benchmark(data, n_examples=16)
    cfg = work / "eval.yaml"
    cfg.write_text(yaml.safe_dump(config(work, data, args.cells // 20, args.context)))

    settings, pg = {}, None
    if args.database == "postgres":
        from plantcad_flows.services.postgres import local_postgres, server_settings

        pg = local_postgres(work / "pg").start()
        settings = server_settings(pg.url)
    server_log = work / "prefect-server.log"
    server = start_server(home=work / "prefect-home", log_path=server_log, settings=settings)
    env = cli_env(server.api_url, work)
    try:
        cli = str(Path(sys.executable).parent / "plantcad-flows")
        code, wall, peak, out = run_measured([cli, "eval", str(cfg)], cwd=work, env=env)
        (work / "eval.log").write_text(out)
        runs = task_runs(server.api_url)
    finally:
        server.stop()
        if pg is not None:
            pg.stop()
    by_kind: dict[str, list[float]] = {}
    for r in runs:
        kind = r["name"].split(" ", 1)[0]
        by_kind.setdefault(kind, []).append(float(r.get("total_run_time") or 0.0))
    scoring = sum(by_kind.get("score", []))
    metrics = sum(by_kind.get("metrics", []))
    errors = [m.group(0) for m in API_ERRORS.finditer(server_log.read_text() + "\n" + out)]
    counts = re.search(r"\d+ cells: .*", out)
    print(f"database:            {args.database}")
    print(
        f"cells:               {args.cells} ({args.cells // 20} checkpoints x 20 splits, {EXAMPLES} examples each)"
    )
    print(f"eval exit status:    {code} ({counts.group(0) if counts else 'no summary line'})")
    print(f"wall:                {wall:.1f} s (peak RSS of the CLI tree {peak / 2**20:.0f} MiB)")
    print(f"scoring:             {scoring:.1f} s in {len(by_kind.get('score', []))} score-shard task runs")
    print(f"metrics tasks:       {metrics:.1f} s in {len(by_kind.get('metrics', []))} task runs")
    print(f"overhead per cell:   {(wall - scoring) / args.cells:.3f} s  ((wall - scoring) / N)")
    print(f"task runs created:   {len(runs)} " + json.dumps({k: len(v) for k, v in sorted(by_kind.items())}))
    print(f"API errors logged:   {len(errors)}" + (f" (first: {errors[0]!r})" if errors else ""))
    print(f"logs and outputs:    {work}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
