"""A training run's checkpoints of the tiny MLM, for the sweep demo and the tests, made in well
under a second each from the shipped model instead of shipped as assets.

These are **not** checkpoints saved during training. `step-N` holds the shipped tiny MLM's
weights blended with a fixed random initialisation, `w = b * trained + (1 - b) * init`, where
`b = 0.8 + 0.2 * min(1, N / final_step)`: quality increases with the step and
`step-{final_step}` is the shipped model exactly. The initialisation is what a fresh model starts
from (norm weights 1, biases 0, matrices drawn from N(0, 0.02), seeded per tensor). Blends below
0.8 score like an untrained model, so the schedule spends its range where quality moves:
measured on the synthetic benchmark (200 examples per split), conservation_within_andropogoneae
AUROC 0.558 / 0.595 / 0.643 / 0.745 and tis_recovery motif accuracy 0.000 / 0.015 / 0.183 /
0.635 at b = 0.80 / 0.85 / 0.90 / 1.00. Every byte is deterministic: a call writes the same files.

Each checkpoint is written into a temporary directory and renamed, so it is complete or absent;
`write_partial_checkpoint` makes the half-uploaded kind on purpose (a truncated weights file).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

TINY_MLM = Path(__file__).resolve().parents[1] / "assets" / "models" / "tiny-mlm"
WEIGHTS = "model.safetensors"
DEFAULT_STEPS = (1000, 2000, 3000, 4000)
FINAL_STEP = 4000
FLOOR = 0.8  # the blend at step 0
INIT_STD = 0.02  # the model config's initializer_range


def _init_like(name: str, tensor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if tensor.ndim == 1 and "norm" in name:
        return np.ones_like(tensor)
    if tensor.ndim == 1:
        return np.zeros_like(tensor)
    return rng.normal(0.0, INIT_STD, size=tensor.shape).astype(tensor.dtype)


def blended_weights(blend: float, seed: int = 0, source: Path = TINY_MLM) -> dict[str, np.ndarray]:
    """The shipped weights blended with a fixed initialisation (`blend` = share of trained)."""

    trained = load_file(str(source / WEIGHTS))
    out = {}
    for i, name in enumerate(sorted(trained)):
        w = trained[name]
        init = _init_like(name, w, np.random.default_rng([seed, i]))
        out[name] = (blend * w + (1.0 - blend) * init).astype(w.dtype)
    return out


def _write(directory: Path, weights: dict[str, np.ndarray], source: Path) -> None:
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in sorted(source.iterdir()):
        if f.is_file() and f.name != WEIGHTS:
            shutil.copyfile(f, tmp / f.name)
    save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


def blend_at(step: int, final_step: int = FINAL_STEP) -> float:
    """The share of trained weights in `step-{step}`."""
    if step < 0 or final_step <= 0:
        raise ValueError(f"step {step} and final_step {final_step} must be >= 0 and > 0")
    return FLOOR + (1.0 - FLOOR) * min(1.0, step / final_step)


def write_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    final_step: int = FINAL_STEP,
    seed: int = 0,
    source: Path = TINY_MLM,
) -> Path:
    """Write `{run_dir}/step-{step}`: the shipped model at blend `blend_at(step, final_step)`."""
    directory = Path(run_dir) / f"step-{step}"
    _write(directory, blended_weights(blend_at(step, final_step), seed, source), source)
    return directory


def write_sweep(
    run_dir: str | os.PathLike, steps: tuple[int, ...] = DEFAULT_STEPS, final_step: int = FINAL_STEP
) -> list[Path]:
    """Write one checkpoint per step (see the module docstring); returns their directories."""
    return [write_checkpoint(run_dir, step, final_step) for step in steps]


def write_partial_checkpoint(run_dir: str | os.PathLike, step: int, source: Path = TINY_MLM) -> Path:
    """`{run_dir}/step-{step}` as an interrupted upload leaves it: config and tokenizer, and a
    weights file cut to half its length. Discovery must skip it."""
    directory = Path(run_dir) / f"step-{step}"
    directory.mkdir(parents=True, exist_ok=True)
    for f in sorted(source.iterdir()):
        if f.is_file() and f.name != WEIGHTS:
            shutil.copyfile(f, directory / f.name)
    data = (source / WEIGHTS).read_bytes()
    (directory / WEIGHTS).write_bytes(data[: len(data) // 2])
    return directory
