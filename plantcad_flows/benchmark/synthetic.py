"""The synthetic PlantCAD2 benchmark: all 12 task splits in the public schema, deterministic by seed.

Each task's family writes its examples (`TaskFamily.synthetic`; the families' docstrings say how
each one plants its signal in the synthetic genome of `families.genome`, so that the benchmark's
masked positions or flanks land on it). Each split draws from
`numpy.random.default_rng([seed, task#, split#])` (task# and split# in the shipped task file's
order), so the same seed gives byte-identical parquet and splits are independent of one another
and of `n_examples` ordering.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from plantcad_flows.errors import ValidationError
from plantcad_flows.families import BUILTIN_TASK_FILE, NATIVE_SEQ_LENGTH, builtin_tasks

ASSETS_MODELS = Path(__file__).resolve().parents[1] / "assets" / "models"
FAMILIES_DIR = Path(__file__).resolve().parents[1] / "families"
MARKER = "_COMPLETE.json"
DEFAULT_N_EXAMPLES = 200


def build_split(
    task: str,
    split: str,
    seed: int = 0,
    n_examples: int = DEFAULT_N_EXAMPLES,
    seq_length: int = NATIVE_SEQ_LENGTH,
) -> pd.DataFrame:
    """One task split as a frame in the public schema (see the module docstring)."""
    tasks = builtin_tasks()
    if task not in tasks or split not in tasks[task].splits:
        raise ValidationError("synthetic.task", f"{task}/{split}", "not a benchmark task split")
    if seq_length % 2 or seq_length < 512:
        raise ValidationError("synthetic.seq_length", seq_length, "must be even and >= 512")
    if n_examples < 2:
        raise ValidationError("synthetic.n_examples", n_examples, "must be >= 2")
    definition = tasks[task]
    rng = np.random.default_rng([seed, list(tasks).index(task), definition.splits.index(split)])
    return definition.family_object.synthetic(rng, definition, split, n_examples, seq_length)


def generate_benchmark(
    out_dir: str | Path,
    seed: int = 0,
    n_examples: int = DEFAULT_N_EXAMPLES,
    seq_length: int = NATIVE_SEQ_LENGTH,
) -> dict[tuple[str, str], Path]:
    """Write every task split to `{out_dir}/{task}/{split}.parquet`; returns their paths."""
    out = Path(out_dir)
    paths = {}
    for task, spec in builtin_tasks().items():
        for split in spec.splits:
            frame = build_split(task, split, seed, n_examples, seq_length)
            path = out / task / f"{split}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".parquet.tmp")
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, path)
            paths[(task, split)] = path
    return paths


def generator_version() -> str:
    """The generator's version: a hash of its source (this module, the families with their genome
    model, and the shipped task file), so data written by an older generator is never taken for
    current data, with no number to bump.
    An edit that does not change the output regenerates the same bytes, which keep their cache
    keys (split files enter keys by content)."""
    h = hashlib.sha256()
    for module in (*sorted(FAMILIES_DIR.glob("*.py")), BUILTIN_TASK_FILE, Path(__file__)):
        h.update(Path(module).read_bytes())
    return h.hexdigest()[:12]


def ensure_benchmark(
    out_dir: str | Path,
    seed: int = 0,
    n_examples: int = DEFAULT_N_EXAMPLES,
    seq_length: int = NATIVE_SEQ_LENGTH,
) -> dict[tuple[str, str], Path]:
    """Generate the benchmark unless `out_dir` already holds it for these parameters and this
    version of the generator.

    The marker file is written (atomically) after every split, so an interrupted run is redone.
    """
    out = Path(out_dir)
    params = {
        "seed": seed,
        "n_examples": n_examples,
        "seq_length": seq_length,
        "generator": generator_version(),
    }
    marker = out / MARKER
    expected = {(t, s): out / t / f"{s}.parquet" for t, spec in builtin_tasks().items() for s in spec.splits}
    if (
        marker.exists()
        and json.loads(marker.read_text()) == params
        and all(p.exists() for p in expected.values())
    ):
        return expected
    paths = generate_benchmark(out, seed, n_examples, seq_length)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(params))
    os.replace(tmp, marker)
    return paths


def demo_models(models_dir: str | Path = ASSETS_MODELS) -> list[dict]:
    """The three shipped tiny models as config entries (512-bp context: sequences get cropped).
    tiny-caduceus is an RCPS Caduceus, run by the project's own implementation (no
    trust_remote_code)."""
    root = str(models_dir).rstrip("/")
    return [
        {"name": "tiny-mlm", "path": f"{root}/tiny-mlm", "type": "mlm", "context_length": 512},
        {
            "name": "tiny-clm",
            "path": f"{root}/tiny-clm",
            "type": "clm",
            "context_length": 512,
            "motif_inference_mode": "fwd_only",
        },
        {"name": "tiny-caduceus", "path": f"{root}/tiny-caduceus", "type": "mlm", "context_length": 512},
    ]


def demo_config(
    data_dir: str | Path,
    prefix: str,
    models_dir: str | Path = ASSETS_MODELS,
    seq_length: int = NATIVE_SEQ_LENGTH,
) -> dict:
    """The PlantCAD-format config (as a dict) for every synthetic split and the tiny models."""
    root = str(data_dir).rstrip("/")
    splits = [
        {"task": t, "split": s, "path": f"{root}/{t}/{s}.parquet", "seq_length": seq_length}
        for t, spec in builtin_tasks().items()
        for s in spec.splits
    ]
    return {
        "models": demo_models(models_dir),
        "splits": splits,
        "compute": {"device": "cpu", "batch_size": 16},
        "sampling": {"seed": 0},
        "executor": {"prefix": prefix},
    }


def write_demo_config(
    path: str | Path, data_dir: str | Path, prefix: str, models_dir: str | Path = ASSETS_MODELS
) -> Path:
    """Write `demo_config` as YAML at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# Synthetic PlantCAD2 benchmark x the shipped tiny models "
        "(generated by plantcad_flows.synthetic.write_demo_config)\n"
    )
    text += yaml.safe_dump(demo_config(data_dir, prefix, models_dir), sort_keys=False)
    path.write_text(text)
    return path
