"""Variant-effect throughput and memory at genome scale (CPU, the shipped tiny MLM).

Data (generated once into --data-dir, reused after): a 100 Mb synthetic genome (10 chromosomes
of 10 Mb, `variants.synthetic.scale_genome`) as a bgzipped FASTA, and bgzipped VCFs of 100,000
and 1,000,000 random SNVs on it (REF from the genome, a random label and AF in INFO).

Each phase runs in its own Python process, which prints its wall time and its own peak RSS
(`ru_maxrss`), so memory figures never mix phases:

* `prepare`: stream the VCF (pysam), split, classify against the FASTA (REF check by index),
  write `variants.parquet` in row groups: all N variants;
* `windows`: plan `--shards` shards over the prepared rows; each reads its row groups and
  fetches every variant's 512-bp reference window from the FASTA: all N variants, no model;
* `score`: the first `--score-n` variants scored through the flow's own step
  (`steps.score_shard`: reading the rows, fetching the windows, the batched and prefetched
  input pipeline, the forward, the LLR and the shard write), and, side by side on the same
  windows at the same batch size, the model's forward alone (pre-tokenised batches already on
  the device, `logits_at` at the centre): it prints variants/s of both and their ratio (the
  goal is >= 0.95; printed, never asserted). `--model` picks another MLM, `--device cuda` a GPU;
* `finalize`: merge the shards, write the parquet and bgzipped, tabix-indexed TSV and compute
  the family's metrics and `--bootstrap` intervals, for all N, from LLRs drawn at random (the
  model's values do not change this phase's cost).

Peak RSS of `prepare`, `windows` and `finalize` is printed for 100k and 1M variants: reading
and windowing stream (flat memory); finalize holds the scored table (it grows with N).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/variant_throughput.py [--sizes 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MLM = ROOT / "plantcad_flows" / "assets" / "models" / "tiny-mlm"
CONTEXT = 512
GENOME_MB = 100


def _rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries the forking parent's peak
    into a child's ru_maxrss across exec, which would charge the generator's memory to a phase."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_data(data: Path, sizes: list[int], seed: int = 0, genome_mb: int = GENOME_MB) -> None:
    from plantcad_flows.variants.synthetic import scale_genome, scale_variants, write_fasta, write_vcf

    marker = data / f"_done-{genome_mb}-{'-'.join(map(str, sizes))}"
    if marker.exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    chroms = scale_genome(seed, 10, genome_mb * 1_000_000 // 10)
    write_fasta(chroms, data / "genome.fa.gz", bgzip=True)
    frame = scale_variants(chroms, max(sizes), seed)
    contigs = {c: len(s) for c, s in chroms.items()}
    rng = np.random.default_rng(seed)
    for n in sizes:
        part = frame if n == len(frame) else frame.iloc[np.sort(rng.choice(len(frame), n, replace=False))]
        write_vcf(part.reset_index(drop=True), contigs, data / f"snvs-{n}.vcf.gz", bgzip=True)
    marker.touch()
    print(f"data: {genome_mb} Mb genome and VCFs of {sizes} written in {time.perf_counter() - t:.1f} s")


def _cfg(data: Path, n: int):
    from plantcad_flows.families import VariantSetConfig

    return VariantSetConfig(
        name=f"bench{n}",
        vcf=str(data / f"snvs-{n}.vcf.gz"),
        fasta=str(data / "genome.fa.gz"),
        label="INFO/DAMAGING",
    )


def phase(name: str, data: Path, work: Path, n: int, args) -> dict:
    from plantcad_flows.layout.sharding import plan_shards
    from plantcad_flows.variants.prepare import PreparedVariants, prepare_variant_set

    if name == "score":
        return score_phase(data, work, n, args)

    out = work / f"n{n}"
    cfg = _cfg(data, n)
    t = time.perf_counter()
    if name == "prepare":
        prepared = prepare_variant_set(cfg, out)
        (out / "prepared.json").write_text(prepared.model_dump_json())
        count = prepared.num_records
    else:
        prepared = PreparedVariants.model_validate_json((out / "prepared.json").read_text())
        t = time.perf_counter()
    if name == "windows":
        from plantcad_flows.layout.integrity import read_rows
        from plantcad_flows.variants.reference import ReferenceGenome
        from plantcad_flows.variants.sources import open_fasta
        from plantcad_flows.variants.steps import READ_COLUMNS, windows_frame

        count, checksum = 0, 0
        for spec in plan_shards(prepared.num_variants, args.shards):
            with open(prepared.path, "rb") as f:
                rows = read_rows(f, spec.start, spec.stop, READ_COLUMNS)
            with ReferenceGenome(open_fasta(cfg.fasta, "fasta")) as genome:
                for lo in range(0, len(rows), 4096):
                    frame = windows_frame(rows.iloc[lo : lo + 4096], genome, CONTEXT)
                    count += len(frame)
                    centre = frame["sequence"].str[CONTEXT // 2 - 1]
                    checksum += int((centre == frame["ref"]).sum())
        assert checksum == count, "a window's centre is not its REF base"
    elif name == "finalize":
        import pandas as pd

        from plantcad_flows.families import get_family
        from plantcad_flows.layout.sharding import merge_shards
        from plantcad_flows.results.bootstrap import cell_intervals
        from plantcad_flows.variants.outputs import scores_frame, write_outputs

        paths = []
        rng = np.random.default_rng(1)
        for spec in plan_shards(prepared.num_variants, args.shards):
            p = out / f"fake-{spec.filename}"
            llr = rng.normal(size=spec.size)
            pd.DataFrame({"row_index": np.arange(spec.start, spec.stop), "score": llr}).to_parquet(p)
            paths.append(p)
        t = time.perf_counter()
        merged = merge_shards(paths, np.arange(prepared.num_variants))
        frame = scores_frame(prepared.path, prepared.columns, merged)
        write_outputs(frame, out / "final")
        family = get_family("variant_effect")
        predictions = frame.assign(row_index=np.arange(len(frame)))
        family.metrics_of(predictions)
        cell_intervals(family, predictions, args.bootstrap, 0)
        count = prepared.num_variants
    seconds = time.perf_counter() - t
    return {
        "phase": name,
        "n": n,
        "count": count,
        "seconds": round(seconds, 2),
        "per_s": round(count / seconds),
        "peak_rss_mb": round(_rss_mb()),
    }


def score_phase(data: Path, work: Path, n: int, args) -> dict:
    """The flow's shard step against the model's forward alone, on the same windows."""
    import torch

    from plantcad_flows import steps
    from plantcad_flows.config import EvalConfig
    from plantcad_flows.layout.integrity import read_rows
    from plantcad_flows.layout.plan import build_cells
    from plantcad_flows.layout.sharding import ShardSpec
    from plantcad_flows.scoring.loading import logits_at
    from plantcad_flows.variants.reference import ReferenceGenome
    from plantcad_flows.variants.sources import open_fasta
    from plantcad_flows.variants.steps import READ_COLUMNS, windows_frame

    cfg = _cfg(data, n)
    config = EvalConfig.model_validate(
        {
            "models": [{"path": str(args.model), "type": "mlm", "context_length": CONTEXT}],
            "splits": [],
            "variants": [cfg.model_dump()],
            "compute": {"device": args.device, "batch_size": args.batch_size},
            "executor": {"prefix": str(work / "cells")},
        }
    )
    [cell] = build_cells(config)
    prepared = steps.prepare(cell.split_job)
    count = min(args.score_n, prepared.num_examples)
    loaded = steps.load_cached_model(cell)
    with open(prepared.examples, "rb") as f:
        rows = read_rows(f, 0, count, READ_COLUMNS)
    with ReferenceGenome(open_fasta(cfg.fasta, "fasta")) as genome:
        frame = windows_frame(rows, genome, CONTEXT)
    batch = steps._batch_size(cell, loaded, frame)
    # the forward alone: the same windows, tokenised and on the device before the clock starts
    c = CONTEXT // 2 - 1
    raw = np.frombuffer("".join(frame["sequence"]).encode(), np.uint8).reshape(count, CONTEXT)
    ids = loaded.table.encode(raw)
    ids[:, c] = loaded.mask_id
    batches = [torch.from_numpy(ids[lo : lo + batch]).to(loaded.device) for lo in range(0, count, batch)]
    pos = torch.full((batch, 1), c, dtype=torch.long, device=loaded.device)

    def sync():
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()

    def forward_only() -> float:
        sync()
        t = time.perf_counter()
        for b in batches:
            logits_at(loaded, b, pos[: len(b)]).float().cpu()
        sync()
        return time.perf_counter() - t

    def pipeline() -> float:
        t = time.perf_counter()
        steps.score_shard(cell, ShardSpec(0, 1, 0, count), prepared, force=True)
        return time.perf_counter() - t

    forward_only()  # warm-up (kernels, allocator), then alternate so drift hits both alike
    fwd_s, pipe_s = [], []
    for _ in range(args.repeats):
        fwd_s.append(forward_only())
        pipe_s.append(pipeline())
    fwd, pipe = min(fwd_s), min(pipe_s)
    return {
        "phase": "score",
        "n": n,
        "count": count,
        "seconds": round(pipe, 2),
        "per_s": round(count / pipe),
        "peak_rss_mb": round(_rss_mb()),
        "batch_size": batch,
        "forward_only_per_s": round(count / fwd),
        "ratio": round(fwd / pipe, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/plantcad-variant-bench/data"))
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/plantcad-variant-bench/work"))
    ap.add_argument("--phases", nargs="+", default=["prepare", "windows", "score", "finalize"])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--score-n", type=int, default=2000)
    ap.add_argument("--batch-size", default="32", help="an int, or auto (the probe benchmark shards use)")
    ap.add_argument("--model", type=Path, default=MLM, help="an MLM directory (default: the tiny MLM)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--genome-mb", type=int, default=GENOME_MB, help="synthetic genome size (10 chromosomes)")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--child", nargs=2, metavar=("PHASE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.batch_size != "auto":
        args.batch_size = int(args.batch_size)
    if args.child:
        print(json.dumps(phase(args.child[0], args.data_dir, args.work_dir, int(args.child[1]), args)))
        return
    make_data(args.data_dir, args.sizes, genome_mb=args.genome_mb)
    passthrough = [
        "--data-dir",
        str(args.data_dir),
        "--work-dir",
        str(args.work_dir),
        "--shards",
        str(args.shards),
        "--score-n",
        str(args.score_n),
        "--batch-size",
        str(args.batch_size),
        "--bootstrap",
        str(args.bootstrap),
        "--model",
        str(args.model),
        "--device",
        args.device,
        "--repeats",
        str(args.repeats),
    ]
    print(f"{'phase':9} {'variants':>9} {'counted':>9} {'seconds':>8} {'per s':>9} {'peak RSS MB':>11}")
    for n in args.sizes:
        for name in args.phases:
            if name == "score" and n != max(args.sizes):
                continue  # the model's rate does not depend on the size of the set
            res = subprocess.run(
                [sys.executable, __file__, "--child", name, str(n), *passthrough],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(
                f"{r['phase']:9} {n:>9} {r['count']:>9} {r['seconds']:>8} {r['per_s']:>9} {r['peak_rss_mb']:>11}",
                flush=True,
            )
            if "ratio" in r:
                print(
                    f"  score: {r['per_s']} variants/s through the step, {r['forward_only_per_s']} through "
                    f"the forward alone on the same windows (batch {r['batch_size']}): ratio {r['ratio']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
