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
* `score`: the tiny MLM scores the first `--score-n` variants through `score_variant_shard`
  (reading, windowing, tokenising, the forward and the shard write): full scoring of 1M on two
  shared cores would take hours, so the model rate is measured on this subset;
* `finalize`: merge the shards, write the parquet and bgzipped, tabix-indexed TSV and the
  metrics with `--bootstrap` resamples, for all N, from LLRs drawn at random (the model's
  values do not change this phase's cost).

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


def make_data(data: Path, sizes: list[int], seed: int = 0) -> None:
    from plantcad_flows.variants.synthetic import scale_genome, scale_variants, write_fasta, write_vcf

    marker = data / f"_done-{GENOME_MB}-{'-'.join(map(str, sizes))}"
    if marker.exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    chroms = scale_genome(seed, 10, GENOME_MB * 1_000_000 // 10)
    write_fasta(chroms, data / "genome.fa.gz", bgzip=True)
    frame = scale_variants(chroms, max(sizes), seed)
    contigs = {c: len(s) for c, s in chroms.items()}
    rng = np.random.default_rng(seed)
    for n in sizes:
        part = frame if n == len(frame) else frame.iloc[np.sort(rng.choice(len(frame), n, replace=False))]
        write_vcf(part.reset_index(drop=True), contigs, data / f"snvs-{n}.vcf.gz", bgzip=True)
    marker.touch()
    print(f"data: {GENOME_MB} Mb genome and VCFs of {sizes} written in {time.perf_counter() - t:.1f} s")


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
        from plantcad_flows.variants.reference import ReferenceGenome
        from plantcad_flows.variants.shards import iter_windows, read_rows
        from plantcad_flows.variants.sources import open_fasta

        count, checksum = 0, 0
        for spec in plan_shards(prepared.num_variants, args.shards):
            rows = read_rows(
                prepared.path, spec.start, spec.stop, ["row_index", "chrom", "pos", "ref", "alt"]
            )
            with ReferenceGenome(open_fasta(cfg.fasta, "fasta")) as genome:
                for _, windows, ref, _alt in iter_windows(rows, genome, CONTEXT):
                    count += len(windows)
                    checksum += int((windows[:, CONTEXT // 2 - 1] == ref).sum())
        assert checksum == count, "a window's centre is not its REF base"
    elif name == "score":
        from plantcad_flows.config import ComputeConfig, ModelConfig
        from plantcad_flows.layout.sharding import ShardSpec
        from plantcad_flows.scoring.loading import load_model
        from plantcad_flows.scoring.variant_llr import score_variant_shard

        model = ModelConfig(path=str(MLM), type="mlm", context_length=CONTEXT)
        loaded = load_model(model, ComputeConfig())
        t = time.perf_counter()
        count = min(args.score_n, prepared.num_variants)
        spec = ShardSpec(0, 1, 0, count)
        score_variant_shard(
            loaded, model, prepared.path, cfg.fasta, spec, out / "score-shard.parquet", args.batch_size
        )
    elif name == "finalize":
        import pandas as pd

        from plantcad_flows.variants.outputs import finalize_variant_set

        paths = []
        rng = np.random.default_rng(1)
        for spec in plan_shards(prepared.num_variants, args.shards):
            p = out / f"fake-{spec.filename}"
            llr = rng.normal(size=spec.size)
            pd.DataFrame({"row_index": np.arange(spec.start, spec.stop), "llr": llr}).to_parquet(p)
            paths.append(p)
        t = time.perf_counter()
        finalize_variant_set(prepared, paths, out / "final", resamples=args.bootstrap, seed=0)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/plantcad-variant-bench/data"))
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/plantcad-variant-bench/work"))
    ap.add_argument("--phases", nargs="+", default=["prepare", "windows", "score", "finalize"])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--score-n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--child", nargs=2, metavar=("PHASE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(phase(args.child[0], args.data_dir, args.work_dir, int(args.child[1]), args)))
        return
    make_data(args.data_dir, args.sizes)
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


if __name__ == "__main__":
    main()
