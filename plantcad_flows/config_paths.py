"""Relative paths in a config file are relative to that file, all of them, and made absolute once.

A user reads `path: data/test.parquet` in `~/evals/eval.yaml` as `~/evals/data/test.parquet`,
whichever directory the command runs from; and a config copied with its data keeps working.
So `load_config` makes every local path of the file absolute against the file's directory
before validation: task files, split paths, variant sets' VCF, table and FASTA, the storage
prefix, and local model and checkpoint directories. Errors then name the absolute path tried.
URLs (`s3://`, `hf://`, ...) are left alone. A model's `path` is also a hub id (`org/name`), so it
is taken as local only when it looks like one (`./x`, `../x`, `~/x`) or exists beside the config.
Command-line values (`--prefix`) are the shell's: relative to the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _local(value: object) -> bool:
    return isinstance(value, str) and bool(value) and "://" not in value


def anchored(value: object, base: Path) -> object:
    """`value` made absolute against `base` when it is a relative local path; else unchanged."""
    if not _local(value):
        return value
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (base / path).resolve())


def _model_path(value: object, base: Path) -> object:
    if not _local(value):
        return value
    looks_local = value.startswith((".", "/", "~")) or (base / value).exists()
    return anchored(value, base) if looks_local else value


def _each(entries: Any, keys: tuple[str, ...], fix) -> Any:
    if not isinstance(entries, list):
        return entries
    return [{**e, **{k: fix(e[k]) for k in keys if k in e}} if isinstance(e, dict) else e for e in entries]


def anchor_paths(data: dict, config_file: str | os.PathLike) -> dict:
    """The raw config `data` of `config_file` with its relative local paths made absolute."""
    base = Path(config_file).resolve().parent
    out = dict(data)
    if isinstance(out.get("task_files"), list):
        out["task_files"] = [anchored(f, base) for f in out["task_files"]]
    out["splits"] = _each(out.get("splits"), ("path",), lambda v: anchored(v, base))
    out["variants"] = _each(out.get("variants"), ("vcf", "table", "fasta"), lambda v: anchored(v, base))
    out["models"] = _each(out.get("models"), ("path",), lambda v: _model_path(v, base))
    out["checkpoints"] = _each(out.get("checkpoints"), ("path",), lambda v: _model_path(v, base))
    if isinstance(out.get("executor"), dict) and "prefix" in out["executor"]:
        out["executor"] = {**out["executor"], "prefix": anchored(out["executor"]["prefix"], base)}
    # keys absent from the file stay absent (their defaults, or an error naming them)
    return {k: v for k, v in out.items() if k in data}
