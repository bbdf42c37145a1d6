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
    unsupported_reason,
    ComputeConfig,
    EvalConfig,
    ModelConfig,
    SamplingConfig,
    SplitConfig,
)
from plantcad_flows.hashing import cell_fields, short_hash, split_fields
from plantcad_flows.storage import has_failed, step_dir, to_path


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
        return str(step_dir(self.prefix, "prepare_split", f"{self.split.task}-{self.split.split}", self.fields))


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
        Cell(model=m, split=s, sampling=config.sampling, compute=config.compute,
             prefix=config.executor.prefix)
        for m in config.models
        for s in config.splits
    ]
    if config.only:
        pattern = re.compile(config.only)
        cells = [c for c in cells if pattern.search(c.id)]
    return cells


def plan_cells(config: EvalConfig) -> list[PlannedCell]:
    """Status of every cell, from the storage alone (no model loads, no data reads)."""
    from plantcad_flows.execution import cell_is_complete

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
            status = CellStatus.FAILED_BEFORE
        else:
            status = CellStatus.TO_RUN
        planned.append(PlannedCell(cell, status))
    return planned


def format_plan(planned: list[PlannedCell]) -> str:
    width = max((len(p.cell.id) for p in planned), default=10)
    lines = [f"{'cell':<{width}}  {'status':<22}  output"]
    for p in planned:
        extra = f"  ({p.reason})" if p.reason else ""
        lines.append(f"{p.cell.id:<{width}}  {p.status.value:<22}  {p.cell.dir}{extra}")
    counts = {s: sum(p.status == s for p in planned) for s in CellStatus}
    lines.append(", ".join(f"{n} {s.value}" for s, n in counts.items()))
    return "\n".join(lines)
