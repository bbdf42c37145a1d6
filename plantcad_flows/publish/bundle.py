"""One run's files, read from the prefix, as they will lie in the hub repo.

A run is `{prefix}/runs/{run}/` (results.json, results.parquet, summary.md, config.json when the
run wrote it, and a `leaderboard/` folder when the run has one). Its cells are the rows of its
history file, `{prefix}/history/{run}.parquet`: every finished cell the run reported, scored or
served from cache, with its key, directory and resolved identities. Failed and skipped cells
have no predictions and no history row.

The run's folder in the repo holds:

    results.json, results.parquet, summary.md, config.json    as the run wrote them
    identities.json                                            code version; per cell its key and
                                                               the model and data revisions
    leaderboard/...                                            the run's leaderboard files, if any
    cells/{cell dir}/predictions.parquet, metrics.json,        per cell, checked against the
                     step_info.json, intervals-*.json           record in its `_SUCCESS`

Every file's bytes are read once here; nothing in a bundle depends on when it is read.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

from plantcad_flows.errors import CorruptFileError, ValidationError
from plantcad_flows.layout.integrity import recorded
from plantcad_flows.layout.plan import PREDICTIONS
from plantcad_flows.layout.storage import STEP_INFO, to_path
from plantcad_flows.results import schema
from plantcad_flows.results.history import history_file

RUNS_DIR = "runs"
RUN_FILES = ("results.json", "results.parquet", "summary.md", "config.json")
LEADERBOARD_DIR = "leaderboard"
CELLS_DIR = "cells"
IDENTITIES = "identities.json"
IDENTITIES_VERSION = 1
# a cell's files besides its predictions; shards and plots stay under the prefix
CELL_JSON = ("metrics.json", STEP_INFO)
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class CellFiles:
    cell_id: str
    directory: str  # the cell's directory name under the prefix
    config_name: str  # its predictions' config in the card: model__task__split, sanitised


@dataclass
class RunBundle:
    """A run's files (path in the run's folder -> bytes) and what the card says about it."""

    run: str
    time: str | None  # when the run recorded its history (ISO, UTC); stable across publishes
    code_versions: list[str]
    plan: str | None
    steps: list[int]
    models: list[str]
    sampling: dict[str, Any] | None  # from config.json, when the run wrote one
    files: dict[str, bytes] = field(default_factory=dict)
    cells: list[CellFiles] = field(default_factory=list)

    def folder(self, template: str, field: str = "publish.path_in_repo") -> str:
        """The run's folder in the repo: `template` with its placeholders filled.

        Raises:
            ValidationError: a placeholder this run cannot fill ({step} of a run of several
            checkpoint steps, {seed} of a run without its config).
        """
        values: dict[str, object] = {"run": self.run, "plan": self.plan}
        if len(self.steps) == 1:
            values["step"] = self.steps[0]
        if self.sampling is not None:
            values["seed"] = self.sampling.get("seed")
            values["max_size"] = self.sampling.get("max_size")

        def fill(m: re.Match) -> str:
            value = values.get(m.group(1))
            if value is None:
                why = {
                    "step": f"needs a run of one checkpoint step; run {self.run} has {self.steps or 'none'}",
                    "plan": f"run {self.run} has no history to take its plan from",
                }.get(m.group(1), f"run {self.run} wrote no config.json (or its value is unset)")
                raise ValidationError(field, template, f"{{{m.group(1)}}} {why}")
            return safe_part(str(value))

        return _PLACEHOLDER.sub(fill, template).strip("/")


def safe_part(text: str) -> str:
    """A path segment the hub accepts: no `/`, no spaces."""
    return re.sub(r"[^A-Za-z0-9._@=-]+", "_", text).strip("_") or "_"


def config_name(text: str) -> str:
    """A card config or split name (`datasets` wants `\\w+`)."""
    return re.sub(r"\W+", "_", text).strip("_") or "run"


def list_runs(prefix: str) -> list[str]:
    """The runs under the prefix that wrote their results, by name."""
    root = to_path(prefix) / RUNS_DIR
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "results.json").exists())


def check_run(prefix: str, run: str | None) -> str:
    """The run to publish: `run`, or the newest under the prefix.

    Raises:
        ValidationError: no such run (the runs there are listed), or no run at all.
    """
    runs = list_runs(prefix)
    if run is None:
        if not runs:
            raise ValidationError("--prefix", prefix, "holds no run (no runs/*/results.json)")
        return max(runs, key=lambda r: (_run_time(prefix, r) or "", r))
    if run not in runs:
        listed = ", ".join(runs[-5:]) if runs else "none"
        raise ValidationError("--run", run, f"no such run under {prefix}", f"runs there: {listed}")
    return run


def _history(prefix: str, run: str):
    path = history_file(prefix, run)
    if not path.exists():
        return None
    with path.open("rb") as fh:
        frame, _ = schema.read_parquet(fh, str(path))
    return frame


def _run_time(prefix: str, run: str) -> str | None:
    frame = _history(prefix, run)
    if frame is None or frame.empty:
        return None
    return _iso(frame["time"].max())


def _iso(value: Any) -> str:
    return pd.Timestamp(value).isoformat()


def _plain(value: Any) -> Any:
    """A JSON value for a history cell (pandas NA and numpy scalars become plain Python)."""

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def collect_run(prefix: str, run: str | None) -> RunBundle:
    """Read every file of `run` (the newest run under the prefix when None) that is published.

    Raises:
        ValidationError: the run does not exist under the prefix.
        CorruptFileError: a cell's predictions do not match the record written with them.
    """
    run = check_run(prefix, run)
    run_dir = to_path(prefix) / RUNS_DIR / run
    files = {name: (run_dir / name).read_bytes() for name in RUN_FILES if (run_dir / name).exists()}
    board = run_dir / LEADERBOARD_DIR
    if board.exists():
        for p in sorted(board.rglob("*"), key=str):
            if p.is_file():
                rel = PurePosixPath(str(p)).relative_to(PurePosixPath(str(run_dir)))
                files[str(rel)] = p.read_bytes()
    sampling = None
    if "config.json" in files:
        sampling = json.loads(files["config.json"]).get("sampling")

    history = _history(prefix, run)
    cells: list[CellFiles] = []
    identities: list[dict[str, Any]] = []
    if history is not None and not history.empty:
        per_cell = history.drop_duplicates("cell_key").sort_values("cell_id", kind="stable")
        for _, row in per_cell.iterrows():
            directory = PurePosixPath(str(row["cell_dir"])).name
            files |= _cell_files(prefix, directory)
            name = config_name(str(row["cell_id"]).replace("/", "__"))
            if any(c.config_name == name for c in cells):  # labels that differ only in punctuation
                name = f"{name}_{str(row['cell_key'])[:8]}"
            cells.append(CellFiles(str(row["cell_id"]), directory, name))
            identities.append(
                {
                    "cell_id": row["cell_id"],
                    "cell_key": row["cell_key"],
                    "directory": f"{CELLS_DIR}/{directory}",
                    "model": row["model"],
                    "step": _plain(row["step"]),
                    "model_revision": _plain(row["model_revision"]),
                    "task": row["task"],
                    "split": row["split"],
                    "dataset_revision": _plain(row["dataset_revision"]),
                    "code_version": row["code_version"],
                    "status": row["status"],
                }
            )
    code_versions = sorted({str(i["code_version"]) for i in identities})
    steps = sorted({int(i["step"]) for i in identities if i["step"] is not None})
    plans = sorted({str(p) for p in history["plan"].dropna()}) if history is not None else []
    files[IDENTITIES] = _json_bytes(
        {
            "schema_version": IDENTITIES_VERSION,
            "run": run,
            "code_versions": code_versions,
            "plan": plans[0] if len(plans) == 1 else None,
            "cells": identities,
        }
    )
    return RunBundle(
        run=run,
        time=_iso(history["time"].max()) if history is not None and not history.empty else None,
        code_versions=code_versions,
        plan=plans[0] if len(plans) == 1 else None,
        steps=steps,
        models=sorted({str(i["model"]) for i in identities}),
        sampling=sampling,
        files=files,
        cells=cells,
    )


def _cell_files(prefix: str, directory: str) -> dict[str, bytes]:
    d = to_path(prefix) / directory
    data = (d / PREDICTIONS).read_bytes()
    record = recorded(d, PREDICTIONS)
    if record is None or hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise CorruptFileError(
            str(d / PREDICTIONS), "does not match the record in its _SUCCESS; not published"
        )
    out = {f"{CELLS_DIR}/{directory}/{PREDICTIONS}": data}
    names = [*CELL_JSON, *sorted(p.name for p in d.glob("intervals-*.json"))]
    for name in names:
        if (d / name).exists():
            out[f"{CELLS_DIR}/{directory}/{name.lstrip('.')}"] = (d / name).read_bytes()
    return out


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
