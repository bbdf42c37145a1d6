"""A variant set end to end in one process, without Prefect: prepare, score the missing shards,
finalize. The flow runs the same three calls as tasks (shards on Ray); this is what the demo,
the tests and the benchmark call, and what a user can call from a notebook.

Layout under `out_dir` (local): `variants.parquet` (prepared), `shards/shard-*-of-*.parquet`
(+ sidecar records) per model, then the outputs of `variants.outputs.finalize_variant_set`.
"""

from __future__ import annotations

import os
from pathlib import Path

from plantcad_flows.config import ComputeConfig, ModelConfig
from plantcad_flows.families import VariantSetConfig
from plantcad_flows.layout.sharding import plan_shards
from plantcad_flows.scoring.loading import LoadedModel, load_model
from plantcad_flows.scoring.variant_llr import VariantShardOutput, score_variant_shard
from plantcad_flows.variants.outputs import finalize_variant_set
from plantcad_flows.variants.prepare import PreparedVariants, prepare_variant_set


def run_variant_set(
    cfg: VariantSetConfig,
    model: ModelConfig,
    out_dir: str | os.PathLike,
    compute: ComputeConfig | None = None,
    num_shards: int = 1,
    batch_size: int = 16,
    resamples: int = 1000,
    seed: int = 0,
    force: bool = False,
    loaded: LoadedModel | None = None,
    prepared: PreparedVariants | None = None,
    cache_root: str | os.PathLike | None = None,
) -> tuple[dict, list[VariantShardOutput]]:
    """Score `cfg` with `model`; returns (the metrics document, one output per shard).

    Every bad input raises `ValidationError` in `prepare_variant_set`, before the model loads.
    Shards already complete (file and sidecar match) are reused unless `force`.
    """
    out = Path(out_dir)
    prepared = prepared or prepare_variant_set(cfg, out, cache_root=cache_root)
    loaded = loaded or load_model(model, compute or ComputeConfig())
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for spec in plan_shards(prepared.num_variants, num_shards):
        results.append(
            score_variant_shard(
                loaded,
                model,
                prepared.path,
                cfg.fasta,
                spec,
                shard_dir / spec.filename,
                batch_size,
                force=force,
                cache_root=cache_root,
            )
        )
    doc = finalize_variant_set(
        prepared, [r.path for r in results], out, resamples, seed, subsets=cfg.subset_columns
    )
    return doc, results
