"""The synthetic PlantCAD2 benchmark: all 12 task splits in the public schema, deterministic by seed.

Every example is a window of the synthetic genome (`plantcad_flows.benchmark.genome`, whose docstring
describes the generative model) with one feature planted so that the benchmark's masked
positions (`SplitConfig.mask_positions`, centred) land on it:

* **Conservation** (`label` 1 = conserved): label 1 puts the centre base inside a conserved-element
  instance (library families 0-11 for `..._andropogoneae`, 12-23 for `..._poaceae_non_tis`; the
  centre base keeps its library value) or, for `..._poaceae_tis`, inside the Kozak-ATG-GC block
  of a TIS. Label 0 puts it in neutral background: 17 fresh background bases around the centre,
  or (`_tis`) a third codon position well inside a coding sequence after a TIS.
* **Motif recovery**: a canonical site with its core motif at the masks (TTS: the stop codon,
  which only the downstream poly-A signal determines); `label` is 1. About 1% of examples carry
  an `N` at a mask position, exercising the non-ACGT exclusion.
* **Core / non-core**: the same site contexts, label 1 with the canonical motif, label 0 with a
  non-canonical one (`genome.NONCANONICAL`).
* **Structural variant**: every variant is a presence/absence polymorphism: RefSeq holds the
  segment [left, right] (1-based, 10-150 bp, centred), MutSeq lacks it and is centred on the
  junction, so its central 2F bases are the F bases left and right of the segment. Label 1: the
  junction cuts a conserved-element instance (the F bases left of the segment are inside it).
  Label 0: the segment and 20 bases either side of it are neutral background.

Soft-masking: random stretches outside the central 800 bp are lower-cased (the
models' tokenizers lower-case everything); rare runs of `N` sit outside the central 800 bp.
Each split draws from `numpy.random.default_rng([seed, task#, split#])`, so the same seed gives
byte-identical parquet and splits are independent of one another and of `n_examples` ordering.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from plantcad_flows.benchmark import genome as g
from plantcad_flows.benchmark import registry
from plantcad_flows.benchmark.registry import (
    DEFAULT_SV_FLANKING,
    NATIVE_SEQ_LENGTH,
    TASKS,
    Family,
    centred_mask,
)
from plantcad_flows.errors import ValidationError

ASSETS_MODELS = Path(__file__).resolve().parents[1] / "assets" / "models"
MARKER = "_COMPLETE.json"
DEFAULT_N_EXAMPLES = 200
SPLIT_SPECIES = {"test_maize": "maize", "test_tomato": "tomato", "test": "maize"}
_HALF = g.NUM_ELEMENTS // 2
FRESH = 1536
POOL_LENGTH = 1 << 16


def _task_kind(task: str) -> str:
    return task.split("_")[0]


def _plant(seq: np.ndarray, seg: np.ndarray, start: int) -> None:
    seq[start : start + len(seg)] = seg


def _soft_mask_and_n(rng: np.random.Generator, seq: np.ndarray, protect: tuple[int, int]) -> str:
    """Lower-case a few stretches and add a rare N run, never inside `protect` (half-open)."""
    out = seq.copy()
    length = len(out)
    for _ in range(int(rng.integers(0, 4))):
        a = int(rng.integers(0, length))
        b = min(length, a + int(rng.integers(20, 200)))
        if b <= protect[0] or a >= protect[1]:
            out[a:b] |= 0x20  # ASCII letters: set the lower-case bit
    if rng.random() < 0.05:
        a = int(rng.integers(0, length - 50))
        if a + 50 <= protect[0] or a >= protect[1]:
            out[a : a + int(rng.integers(5, 50))] = ord("N")
    return g.to_str(out)


def _genome_window(rng, pool: np.ndarray, length: int, centre: int, species: str) -> np.ndarray:
    """`length` bases: a random window of the split's genome pool, with fresh genome drawn for
    the `FRESH` bases around `centre` (which is all a 512-bp model sees). Drawing all 8 kb fresh
    per example would make generation 10x slower for bases no shipped model reads."""
    start = int(rng.integers(0, len(pool)))
    seq = np.resize(np.roll(pool, -start), length)
    a = max(0, centre - FRESH // 2)
    fresh = g.sample_genome(rng, min(FRESH, length - a), species)
    seq[a : a + len(fresh)] = fresh
    return seq


def _protect(length: int, width: int = 400) -> tuple[int, int]:
    return max(0, length // 2 - width), min(length, length // 2 + width)


def _conservation_example(rng, pool, task: str, label: int, length: int, gc: float, species: str):
    centre = centred_mask(1, length)[0]
    seq = _genome_window(rng, pool, length, centre, species)
    if task.endswith("_tis"):
        s = g.site("tis", rng, gc)
        if label:  # centre inside GCCACC-ATG-GC: 6 + 3 + 2 positions before the codons
            offset = s.anchor - 6 + int(rng.integers(0, 11))
        else:  # a third codon position of codons 3..6 after the ATG
            offset = s.anchor + 5 + 3 * int(rng.integers(2, 6)) + 2
        _plant(seq, s.seq, centre - offset)
    elif label:
        family = int(rng.integers(0, _HALF)) + (_HALF if "non_tis" in task else 0)
        inst = g.element_instance(rng, family)
        offset = int(rng.integers(4, len(inst) - 4))
        inst[offset] = g.element_library()[family][offset]
        _plant(seq, inst, centre - offset)
    else:
        _plant(seq, g.background(rng, 17, gc), centre - 8)
    return seq


def _site_example(
    rng, pool, kind: str, canonical: bool, length: int, gc: float, species: str, masks: tuple[int, ...]
):
    seq = _genome_window(rng, pool, length, masks[0], species)
    s = g.site(kind, rng, gc, canonical=canonical)
    if s.motif_len != len(masks):
        raise ValidationError("synthetic.masks", list(masks), f"{kind} motif has {s.motif_len} bases")
    _plant(seq, s.seq, masks[0] - s.anchor)
    return seq


def _masked_split(rng, task: str, split: str, n: int, length: int) -> pd.DataFrame:
    spec = TASKS[task]
    species = SPLIT_SPECIES[split]
    gc = g.SPECIES_GC[species]
    masks = centred_mask(spec.num_masks, length)
    if spec.family == Family.MOTIF:
        labels = np.ones(n, dtype=np.int64)
    else:
        labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    seqs = []
    pool = g.sample_genome(rng, POOL_LENGTH, species)
    for label in labels:
        if spec.family == Family.CONSERVATION:
            seq = _conservation_example(rng, pool, task, int(label), length, gc, species)
        else:
            canonical = spec.family == Family.MOTIF or bool(label)
            seq = _site_example(rng, pool, _task_kind(task), canonical, length, gc, species, masks)
        if spec.family == Family.MOTIF and rng.random() < 0.01:
            seq[masks[int(rng.integers(len(masks)))]] = ord("N")
        seqs.append(_soft_mask_and_n(rng, seq, _protect(length)))
    return pd.DataFrame({"sequence": seqs, "label": labels})


def _sv_example(rng, pool, label: int, length: int, gc: float, flank: int = DEFAULT_SV_FLANKING):
    """(RefSeq, MutSeq, left, right) of one presence/absence variant; see the module docstring."""
    d = int(rng.integers(10, 151))
    s = length
    region = _genome_window(rng, pool, length * 2 + d, s, "maize")  # the variant occupies region[s : s + d]
    if label:
        family = int(rng.integers(g.NUM_ELEMENTS))
        inst = g.element_instance(rng, family)
        cut = int(rng.integers(flank + 3, len(inst) - 2))  # bases of inst left of the junction
        _plant(region, inst, s - cut)
    else:
        _plant(region, g.background(rng, d + 40, gc), s - 20)
    mut = np.concatenate([region[:s], region[s + d :]])
    mut_seq = mut[s - length // 2 : s + length // 2]
    c = s + d // 2
    ref_seq = region[c - length // 2 : c + length // 2]
    left = s - (c - length // 2) + 1
    return ref_seq, mut_seq, left, left + d - 1


def _sv_split(rng, n: int, length: int) -> pd.DataFrame:
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    rows = []
    pool = g.sample_genome(rng, POOL_LENGTH, "maize")
    for label in labels:
        ref, mut, left, right = _sv_example(rng, pool, int(label), length, g.SPECIES_GC["maize"])
        keep = (left - 1 - 40, right + 40)
        rows.append(
            (_soft_mask_and_n(rng, ref, keep), _soft_mask_and_n(rng, mut, _protect(length, 60)), left, right)
        )
    frame = pd.DataFrame(rows, columns=["RefSeq", "MutSeq", "left", "right"])
    frame["left"] = frame["left"].astype(np.int64)
    frame["right"] = frame["right"].astype(np.int64)
    frame["label"] = labels
    return frame


def build_split(
    task: str,
    split: str,
    seed: int = 0,
    n_examples: int = DEFAULT_N_EXAMPLES,
    seq_length: int = NATIVE_SEQ_LENGTH,
) -> pd.DataFrame:
    """One task split as a frame in the public schema (see the module docstring)."""
    if task not in TASKS or split not in TASKS[task].splits:
        raise ValidationError("synthetic.task", f"{task}/{split}", "not a benchmark task split")
    if seq_length % 2 or seq_length < 512:
        raise ValidationError("synthetic.seq_length", seq_length, "must be even and >= 512")
    if n_examples < 2:
        raise ValidationError("synthetic.n_examples", n_examples, "must be >= 2")
    names = list(TASKS)
    rng = np.random.default_rng([seed, names.index(task), TASKS[task].splits.index(split)])
    if TASKS[task].family == Family.STRUCTURAL_VARIANT:
        return _sv_split(rng, n_examples, seq_length)
    return _masked_split(rng, task, split, n_examples, seq_length)


def generate_benchmark(
    out_dir: str | Path,
    seed: int = 0,
    n_examples: int = DEFAULT_N_EXAMPLES,
    seq_length: int = NATIVE_SEQ_LENGTH,
) -> dict[tuple[str, str], Path]:
    """Write every task split to `{out_dir}/{task}/{split}.parquet`; returns their paths."""
    out = Path(out_dir)
    paths = {}
    for task, spec in TASKS.items():
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
    """The generator's version: a hash of its source (this module, the genome model and the task
    registry), so
    data written by an older generator is never taken for current data, with no number to bump.
    An edit that does not change the output regenerates the same bytes, which keep their cache
    keys (split files enter keys by content)."""
    h = hashlib.sha256()
    for module in (g.__file__, registry.__file__, __file__):
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
    expected = {(t, s): out / t / f"{s}.parquet" for t, spec in TASKS.items() for s in spec.splits}
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
    """The two shipped tiny models as config entries (512-bp context: sequences get cropped)."""
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
    ]


def demo_config(
    data_dir: str | Path,
    prefix: str,
    models_dir: str | Path = ASSETS_MODELS,
    seq_length: int = NATIVE_SEQ_LENGTH,
) -> dict:
    """The PlantCAD-format config (as a dict) for every synthetic split and both tiny models."""
    root = str(data_dir).rstrip("/")
    splits = [
        {"task": t, "split": s, "path": f"{root}/{t}/{s}.parquet", "seq_length": seq_length}
        for t, spec in TASKS.items()
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
