"""The evaluation plan: one cell per (model, split), its content-addressed home and its status.

`plan_cells` is pure and cheap (no model, no data download): it validates every cell, decides
which are unsupported, and checks the storage for what is already complete or failed. The
dry run prints it; the flow executes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from pydantic import BaseModel, ConfigDict

from plantcad_flows.config import (
    ComputeConfig,
    EvalConfig,
    ModelConfig,
    SamplingConfig,
    SplitConfig,
    unsupported_reason,
)
from plantcad_flows.layout.hashing import cell_fields, short_hash, split_fields
from plantcad_flows.layout.sharding import parse_shard_filename, shard_filename
from plantcad_flows.layout.storage import (
    FAILED,
    SUCCESS,
    has_failed,
    is_complete,
    read_json,
    step_dir,
    to_path,
)


class CellStatus(str, Enum):
    CACHED = "cached"
    TO_RUN = "to run"
    FAILED_BEFORE = "failed before"
    UNSUPPORTED = "skipped (unsupported)"


class SplitJob(BaseModel):
    """A split to prepare: what to load and where its prepared examples live."""

    model_config = ConfigDict(frozen=True)
    split: SplitConfig
    sampling: SamplingConfig
    prefix: str

    @property
    def fields(self) -> dict:
        return split_fields(self.split, self.sampling)

    @property
    def key(self) -> str:
        return short_hash(self.fields)

    @property
    def dir(self) -> str:
        return str(
            step_dir(self.prefix, "prepare_split", f"{self.split.task}-{self.split.split}", self.fields)
        )


class Cell(BaseModel):
    """One (model, split) cell: everything a worker needs to score it."""

    model_config = ConfigDict(frozen=True)
    model: ModelConfig
    split: SplitConfig
    sampling: SamplingConfig
    compute: ComputeConfig
    prefix: str

    @property
    def id(self) -> str:
        return f"{self.model.label}/{self.split.task}/{self.split.split}"

    @property
    def fields(self) -> dict:
        return cell_fields(self.model, self.split, self.sampling, self.compute)

    @property
    def key(self) -> str:
        return short_hash(self.fields)

    @property
    def dir(self) -> str:
        # named after the model's path, not its display name: renaming a model must not move
        # its outputs (the name is not part of the content hash either)
        model = self.model.path.rstrip("/").rsplit("/", 1)[-1]
        label = f"{model}-{self.split.task}-{self.split.split}"
        return str(step_dir(self.prefix, "score_cell", label, self.fields))

    @property
    def split_job(self) -> SplitJob:
        return SplitJob(split=self.split, sampling=self.sampling, prefix=self.prefix)


@dataclass(frozen=True)
class PlannedCell:
    cell: Cell
    status: CellStatus
    reason: str | None = None


def build_cells(config: EvalConfig) -> list[Cell]:
    """Every (model, split) cell of the config, filtered by `only`, in config order."""
    cells = [
        Cell(
            model=m, split=s, sampling=config.sampling, compute=config.compute, prefix=config.executor.prefix
        )
        for m in config.models
        for s in config.splits
    ]
    if config.only:
        pattern = re.compile(config.only)
        cells = [c for c in cells if pattern.search(c.id)]
    return cells


def cell_is_complete(cell: Cell) -> bool:
    """Complete = marked complete and every shard it was merged from still exists.

    Shards are the ground truth: deleting one (or losing it with a preempted node) makes the
    cell incomplete, and the next run re-scores only that shard.
    """
    d = to_path(cell.dir)
    if not is_complete(d):
        return False
    count = int(read_json(d / SUCCESS).get("num_shards", 0))
    names = [shard_filename(i, count) for i in range(count)]
    return all((d / "shards" / n).exists() for n in names)


def completed_shard_count(cell: Cell) -> int | None:
    """The shard count the cell's files were written with, so a re-run reuses them: the count a
    complete cell was merged from, else the one its surviving shard files share.

    The default count follows the cluster's size, which may have changed since (a preempted node
    not replaced): planning anew would orphan every surviving shard and score them all again.
    """
    d = to_path(cell.dir)
    merged_from = read_json(d / SUCCESS).get("num_shards") if is_complete(d) else None
    if merged_from:
        return int(merged_from)
    shards = d / "shards"
    if not shards.exists():
        return None
    counts = {parsed[1] for p in shards.iterdir() if (parsed := parse_shard_filename(p.name))}
    return counts.pop() if len(counts) == 1 else None


def plan_cells(config: EvalConfig) -> list[PlannedCell]:
    """Status of every cell, from the storage alone (no model loads, no data reads)."""
    planned = []
    for cell in build_cells(config):
        reason = unsupported_reason(cell.model, cell.split)
        if reason:
            planned.append(PlannedCell(cell, CellStatus.UNSUPPORTED, reason))
            continue
        d = to_path(cell.dir)
        if cell_is_complete(cell) and not config.force:
            status = CellStatus.CACHED
        elif has_failed(d):
            planned.append(PlannedCell(cell, CellStatus.FAILED_BEFORE, failure_reason(d)))
            continue
        else:
            status = CellStatus.TO_RUN
        planned.append(PlannedCell(cell, status))
    return planned


def failure_reason(directory) -> str:
    """What the failure marker of a step directory says went wrong."""
    try:
        return str(read_json(directory / FAILED).get("error", "unknown error"))
    except (OSError, ValueError):
        return "unknown error (unreadable failure marker)"


def plan_hash(config: EvalConfig) -> str:
    """Identity of a config's set of cells: where its "latest" results and artifacts are keyed."""
    return short_hash(sorted(c.key for c in build_cells(config)))


def format_plan(planned: list[PlannedCell]) -> str:
    width = max((len(p.cell.id) for p in planned), default=10)
    lines = [f"{'cell':<{width}}  {'status':<22}  output"]
    for p in planned:
        extra = f"  ({p.reason})" if p.reason else ""
        lines.append(f"{p.cell.id:<{width}}  {p.status.value:<22}  {p.cell.dir}{extra}")
    counts = {s: sum(p.status == s for p in planned) for s in CellStatus}
    lines.append(", ".join(f"{n} {s.value}" for s, n in counts.items()))
    return "\n".join(lines)
