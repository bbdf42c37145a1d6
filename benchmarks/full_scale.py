"""Memory at the benchmark's real size: peak RSS of `plantcad-flows eval` on a 183,685 x 8,192 bp
conservation split (the largest PlantCAD2 split, ~1.5 GB of sequence) against a 2,048-row one.

Writes both splits as parquet (cheaply: one row group of 2,048 random sequences written again and
again, no dictionary encoding, so the file holds the full ~1.5 GB and every read decodes it), then
runs `eval` with the shipped tiny MLM (CPU, no Ray; context 32 by default, since what is measured
is the data path, not the forward pass) on each at `sampling.max_size` 64 and 10,000, each on a fresh prefix against one Prefect server started here (stopped by PID).
For every run it prints the wall time and the peak RSS of the CLI's process tree
(`benchmarks/proc_tree.py`, sampled every 0.25 s).

    .venv/bin/python benchmarks/full_scale.py [--work DIR] [--sizes 64,10000] [--rows 183685]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from proc_tree import cli_env, run_measured  # noqa: E402

from plantcad_flows.services.prefect_server import start_server  # noqa: E402

TASK, SPLIT, LENGTH = "conservation_within_andropogoneae", "test", 8192
FULL_ROWS, SMALL_ROWS, GROUP = 183_685, 2_048, 2_048
TINY_MLM = REPO / "plantcad_flows" / "assets" / "models" / "tiny-mlm"


def write_split(path: Path, rows: int, seed: int = 0) -> float:
    """`rows` x 8,192 bp in row groups of 2,048, one random group repeated; seconds taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, size=(GROUP, LENGTH))]
    seqs = pa.array(bases.view(f"S{LENGTH}").ravel().astype(str))
    schema = pa.schema([("sequence", pa.string()), ("label", pa.int64())])
    with pq.ParquetWriter(path, schema, use_dictionary=False, compression="snappy") as w:
        for start in range(0, rows, GROUP):
            n = min(GROUP, rows - start)
            labels = pa.array((np.arange(start, start + n) * 2654435761 >> 7) % 2)
            w.write_table(pa.table({"sequence": seqs.slice(0, n), "label": labels}, schema=schema))
    return time.perf_counter() - t0


def config(split_path: Path, prefix: Path, max_size: int, context: int) -> dict:
    return {
        "models": [{"path": str(TINY_MLM), "name": "tiny-mlm", "type": "mlm", "context_length": context}],
        "splits": [{"task": TASK, "split": SPLIT, "path": str(split_path)}],
        "compute": {"device": "cpu", "batch_size": 256},
        "sampling": {"max_size": max_size, "seed": 0},
        "executor": {"prefix": str(prefix)},
        "ray": {"enabled": False},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="work here (and keep it) instead of a temporary directory")
    parser.add_argument("--sizes", default="64,10000", help="sampling.max_size values, comma-separated")
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="rows of the large split")
    parser.add_argument("--context", type=int, default=32, help="the model's context length (bp)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="full-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    splits = {}
    for rows in (args.rows, SMALL_ROWS):
        path = work / f"{TASK}-{rows}.parquet"
        if not path.exists():
            secs = write_split(path, rows)
            print(
                f"wrote {path} ({rows:,} rows, {path.stat().st_size / 1e9:.2f} GB) in {secs:.1f} s",
                flush=True,
            )
        splits[rows] = path
    server = start_server(home=work / "prefect-home", log_path=work / "prefect-server.log")
    env = cli_env(server.api_url, work)
    cli = str(Path(sys.executable).parent / "plantcad-flows")
    table = []
    try:
        for max_size in (int(s) for s in args.sizes.split(",")):
            for rows, path in splits.items():
                prefix = work / f"evals-{rows}-{max_size}"
                shutil.rmtree(prefix, ignore_errors=True)
                cfg = work / f"eval-{rows}-{max_size}.yaml"
                cfg.write_text(yaml.safe_dump(config(path, prefix, max_size, args.context)))
                code, wall, peak, out = run_measured([cli, "eval", str(cfg)], cwd=work, env=env)
                (work / f"eval-{rows}-{max_size}.log").write_text(out)
                if code != 0:
                    raise SystemExit(f"eval failed ({code}); see {work}/eval-{rows}-{max_size}.log")
                counts = re.search(r"\d+ cells: .*", out)
                kept = min(rows, max_size)
                table.append((rows, max_size, kept, wall, peak))
                print(
                    f"rows={rows:>7,} max_size={max_size:>6,} kept={kept:>6,} wall={wall:7.1f} s "
                    f"peak_rss={peak / 2**20:7.0f} MiB  ({counts.group(0) if counts else '?'})",
                    flush=True,
                )
    finally:
        server.stop()
    print()
    print("| split rows | max_size | scored | wall (s) | peak RSS of the tree (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    for rows, max_size, kept, wall, peak in table:
        print(f"| {rows:,} | {max_size:,} | {kept:,} | {wall:.1f} | {peak / 2**20:.0f} |")
    by = {(r, m): p for r, m, _, _, p in table}
    for max_size in sorted({m for _, m, _, _, _ in table}):
        if (args.rows, max_size) in by and (SMALL_ROWS, max_size) in by:
            extra = (by[(args.rows, max_size)] - by[(SMALL_ROWS, max_size)]) / 2**20
            sampled = min(args.rows, max_size) * LENGTH / 2**20
            print(f"max_size {max_size:,}: full-size peak - 2,048-row peak = {extra:+.0f} MiB "
                  f"(sampled sequences: {sampled:.1f} MiB)")  # fmt: skip
    print(f"logs and outputs: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
