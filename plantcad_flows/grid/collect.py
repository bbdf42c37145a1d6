"""Picking up a grid's results: every results file of every cell, in one table.

`grid pickup DEST` first downloads each cell's outputs to `DEST/{cell}/` (layout/sync.py), then
`combine` reads what is there. Only complete cells count: a command cell whose `_SUCCESS` marker
was written (the run-command flow writes it last, after a zero exit and the upload), an eval cell
whose zero-shot-eval run wrote its results table.

A command cell's results files are its `.csv`, `.json` and `.parquet` files, except bookkeeping
(names starting with `.` or `_`, such as `_SUCCESS` and `.step_info.json`). JSON may be one object
(one row; nested objects flattened with dots) or a list of objects (one row each). An eval cell's
results file is the flow's own table, `latest/{plan hash}/results.parquet` (its shards and
predictions are parquet too, and are not results).

Each row is prefixed with where it came from and the cell's coordinates: `cell`, `model`,
`dataset`, `file`, then one column per hyper-parameter, named without the hiding `_` (hidden
hyper-parameters are still hyper-parameters). A results column with the name of one of those
columns is dropped when it holds the same value (a script that echoes its seed, an eval table's
`model`), and otherwise kept as `{name}.result`, so nothing is silently overwritten. An eval
table's own `dataset` (the data's path or repo) is `data_source`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from plantcad_flows.errors import ValidationError
from plantcad_flows.grid.expand import GridCell
from plantcad_flows.grid.spec import canonical

RESULT_SUFFIXES = (".csv", ".json", ".parquet")
ID_COLUMNS = ("cell", "model", "dataset", "file")


EVAL_RESULTS = "latest/*/results.parquet"
# An eval table's `dataset` is where the split's data came from (a path or a dataset repo), not
# the grid's dataset: it keeps its meaning under a name of its own instead of `dataset.result`.
EVAL_COLUMNS = {"dataset": "data_source"}


def download_filters(cell: GridCell) -> list[str]:
    """Include globs for downloading a cell's outputs: an eval cell's results table only."""
    return [EVAL_RESULTS] if cell.kind == "eval" else []


def is_complete(cell: GridCell, cell_dir: Path) -> bool:
    if cell.kind == "eval":
        return any(cell_dir.glob(EVAL_RESULTS))
    return (cell_dir / "_SUCCESS").is_file()


def results_files(cell: GridCell, cell_dir: Path) -> list[Path]:
    """The results files under one cell's downloaded outputs, sorted by path."""
    if not cell_dir.is_dir():
        return []
    if cell.kind == "eval":
        return sorted(cell_dir.glob(EVAL_RESULTS))
    return sorted(
        p
        for p in cell_dir.rglob("*")
        if p.is_file()
        and p.suffix.lower() in RESULT_SUFFIXES
        and not any(part.startswith((".", "_")) for part in p.relative_to(cell_dir).parts)
    )


def read_results_file(path: Path) -> pd.DataFrame:
    """One results file as a frame.

    Raises:
        ValidationError: a file that is not a table (naming it and why).
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        data = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise ValidationError("results file", str(path), f"cannot be read: {e}") from None
    if isinstance(data, dict):
        return pd.json_normalize(data)
    if isinstance(data, list) and all(isinstance(x, dict) for x in data):
        return pd.json_normalize(data)
    raise ValidationError("results file", str(path), "JSON must be an object or a list of objects")


def _text(value: object) -> str:
    """A value as text, the same for a YAML scalar and the numpy scalar a table holds."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        return repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _same(column: pd.Series, value: object) -> bool:
    return bool(column.map(_text).eq(_text(value)).all())


def cell_frame(cell: GridCell, cell_dir: Path) -> pd.DataFrame:
    """Every results row of one cell, with its coordinates and hyper-parameters as columns."""
    frames = []
    hparams = {canonical(k): v for k, v in cell.hparams.items()}
    for path in results_files(cell, cell_dir):
        frame = read_results_file(path)
        if cell.kind == "eval":
            frame = frame.rename(columns=EVAL_COLUMNS)
        ident = {"cell": cell.name, "model": cell.model, "dataset": cell.dataset}
        ident["file"] = path.relative_to(cell_dir).as_posix()
        known, renames = {**ident, **hparams}, {}
        for col in list(frame.columns):
            if col in known:
                if _same(frame[col], known[col]):
                    frame = frame.drop(columns=[col])
                else:
                    renames[col] = f"{col}.result"
        frame = frame.rename(columns=renames)
        head = pd.DataFrame([{**ident, **hparams}] * len(frame), index=frame.index)
        frames.append(pd.concat([head, frame], axis=1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def combine(cells: Sequence[GridCell], root: Path) -> tuple[pd.DataFrame, list[str]]:
    """All complete cells' results rows (in grid order), and the cells without complete results.

    Args:
        cells: the grid's cells.
        root: where each cell's outputs were downloaded, as `root/{cell}/`.
    """
    frames, missing = [], []
    for cell in cells:
        frame = cell_frame(cell, root / cell.name) if is_complete(cell, root / cell.name) else None
        if frame is None or frame.empty:
            missing.append(cell.name)
        else:
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(ID_COLUMNS)), missing
    return pd.concat(frames, ignore_index=True), missing
