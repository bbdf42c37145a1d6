"""The evaluation plan: one cell per (model, context, split, strand), its content-addressed home
and its status. A model entry listing several contexts and a split scored on both strands give
one cell per combination; each is cached, resumed and reported like any other.

`plan_cells` is cheap (no model, no data download): it takes the config's resolution (every
model and split with its identity, `plantcad_flows.identity.resolve`, done once per run), builds
the cells, decides which are unsupported, and checks the storage for what is already complete or
failed. Each cell carries its resolved identities, so workers never resolve again. The dry run
prints the plan (and the checkpoints discovery found); the flow executes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from pydantic import BaseModel, ConfigDict

from plantcad_flows import CODE_VERSION
from plantcad_flows.config import (
    ComputeConfig,
    EvalConfig,
    ModelConfig,
    SamplingConfig,
    SplitConfig,
    Strand,
    unsupported_reason,
)
from plantcad_flows.errors import ValidationError
from plantcad_flows.identity.checkpoints import Discovery
from plantcad_flows.identity.records import Identity
from plantcad_flows.identity.resolve import Resolution, resolve
from plantcad_flows.layout.hashing import cell_fields, precision_fields, short_hash, split_fields
from plantcad_flows.layout.integrity import shard_ok, step_file_ok
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

PREDICTIONS = "predictions.parquet"  # a cell's merged shards, recorded in its _SUCCESS


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
    data_identity: Identity

    @property
    def fields(self) -> dict:
        return split_fields(self.split, self.sampling, self.data_identity)

    @property
    def key(self) -> str:
        return short_hash(self.fields)

    @property
    def dir(self) -> str:
        return str(
            step_dir(self.prefix, "prepare_split", f"{self.split.task}-{self.split.split}", self.fields)
        )


class Cell(BaseModel):
    """One (model, context, split, strand) cell: everything a worker needs to score it."""

    model_config = ConfigDict(frozen=True)
    model: ModelConfig  # hub revisions pinned to the commit they resolved to; one context
    split: SplitConfig
    sampling: SamplingConfig
    compute: ComputeConfig
    prefix: str
    model_identity: Identity  # resolved once, at plan time
    data_identity: Identity
    strand: Strand = "fwd"
    context_axis: bool = False  # the model entry lists several contexts: name the context in `id`

    @property
    def id(self) -> str:
        """`model/task/split`, then `/ctx{N}` when the model lists several contexts and `/rc`
        on the reverse strand (the forward cell of a single-context model keeps its old id)."""
        out = f"{self.model.label}/{self.split.task}/{self.split.split}"
        if self.context_axis:
            out += f"/ctx{self.model.context_length}"
        return out + ("/rc" if self.strand == "rc" else "")

    @property
    def fields(self) -> dict:
        return cell_fields(
            self.model,
            self.split,
            self.sampling,
            self.compute,
            self.model_identity,
            self.data_identity,
            self.strand,
        )

    @property
    def key(self) -> str:
        return short_hash(self.fields)

    @property
    def dir(self) -> str:
        # named after the model's path, not its display name: renaming a model must not move
        # its outputs (the name is not part of the content hash either)
        model = (self.model.subfolder or self.model.path).rstrip("/").rsplit("/", 1)[-1]
        label = f"{model}-{self.split.task}-{self.split.split}" + ("-rc" if self.strand == "rc" else "")
        return str(step_dir(self.prefix, "score_cell", label, self.fields))

    @property
    def split_job(self) -> SplitJob:
        return SplitJob(
            split=self.split, sampling=self.sampling, prefix=self.prefix, data_identity=self.data_identity
        )


@dataclass(frozen=True)
class PlannedCell:
    cell: Cell
    status: CellStatus
    reason: str | None = None


def build_cells(config: EvalConfig, resolution: Resolution | None = None) -> list[Cell]:
    """Every (model, context, split, strand) cell of the config, filtered by `only`, in config
    order (explicit models, then discovered checkpoints; each model's contexts as listed; each
    split's strands). Resolves the config unless `resolution` is given.

    Raises:
        ValidationError: a model, checkpoint run or split that cannot be resolved; `only`
            matching no cell (naming the plan's cells).
    """
    resolution = resolution if resolution is not None else resolve(config)
    cells = [
        Cell(
            model=m.model.at_context(context),
            split=s.split,
            sampling=config.sampling,
            compute=config.compute,
            prefix=config.executor.prefix,
            model_identity=m.identity,
            data_identity=s.identity,
            strand=strand,
            context_axis=len(m.model.contexts) > 1,
        )
        for m in resolution.models
        for context in m.model.contexts
        for s in resolution.splits
        for strand in config.strands_of(s.split)
    ]
    if config.only:
        pattern = re.compile(config.only)
        matched = [c for c in cells if pattern.search(c.id)]
        if not matched:
            # an empty run would exit 0 having done nothing: say what the plan holds instead
            listed = ", ".join(c.id for c in cells[:12]) + (
                f" and {len(cells) - 12} more" if len(cells) > 12 else ""
            )
            raise ValidationError("only", config.only, "matches no cell", f"the plan's cells: {listed}")
        cells = matched
    return cells


def cell_is_complete(cell: Cell) -> bool:
    """Complete = marked complete, every shard it was merged from still exists and matches its
    sidecar record, and its predictions match the record in `_SUCCESS` (`layout/integrity.py`).

    Shards are the ground truth: deleting one (or losing it with a preempted node, or a disk
    truncating it) makes the cell incomplete, and the next run re-scores only that shard.
    """
    d = to_path(cell.dir)
    if not is_complete(d):
        return False
    count = int(read_json(d / SUCCESS).get("num_shards", 0))
    names = [shard_filename(i, count) for i in range(count)]
    return all(shard_ok(d / "shards" / n) for n in names) and step_file_ok(d, PREDICTIONS)


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


def plan_cells(config: EvalConfig, resolution: Resolution | None = None) -> list[PlannedCell]:
    """Status of every cell, from the storage alone (no model loads, no data reads). Resolves
    the config unless `resolution` is given (pass it to resolve only once per run)."""
    planned = []
    for cell in build_cells(config, resolution):
        reason = unsupported_reason(cell.model, cell.split, cell.strand)
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
    """Identity of a config's set of cells as declared: where its "latest" results and artifacts
    are keyed. Declared, not resolved: a nightly run of the same config keeps one home while its
    models move on the hub and new checkpoints arrive (and nothing is resolved a second time)."""
    return short_hash(
        {
            "code_version": CODE_VERSION,
            # implementation: native, kernels and remote code compute the same function
            "models": [
                m.model_dump(exclude={"name", "trust_remote_code", "implementation"}) for m in config.models
            ],
            "checkpoints": [
                c.model_dump(exclude={"trust_remote_code", "implementation"}) for c in config.checkpoints
            ],
            # the axes enter only where set, so a config without them keeps its home
            "splits": [
                s.model_dump(exclude={"strands"} if s.strands is None else None) for s in config.splits
            ],
            **({"strands": list(config.strands)} if config.strands != ("fwd",) else {}),
            "sampling": config.sampling.model_dump(),
            "compute": precision_fields(config.compute),
            "only": config.only,
        }
    )


def format_plan(planned: list[PlannedCell], discoveries: list[Discovery] = ()) -> str:
    """The plan table (one line per cell, then the counts), followed, when the config has
    `checkpoints:` entries, by what discovery found: each checkpoint new, partly or fully
    scored, and each skipped one with its reason."""
    width = max((len(p.cell.id) for p in planned), default=10)
    lines = [f"{'cell':<{width}}  {'status':<22}  output"]
    for p in planned:
        extra = f"  ({p.reason})" if p.reason else ""
        lines.append(f"{p.cell.id:<{width}}  {p.status.value:<22}  {p.cell.dir}{extra}")
    counts = {s: sum(p.status == s for p in planned) for s in CellStatus}
    lines.append(", ".join(f"{n} {s.value}" for s, n in counts.items()))
    for d in discoveries:
        lines += format_discovery(d, planned)
    return "\n".join(lines)


def checkpoint_status(label: str, planned: list[PlannedCell]) -> str:
    """`new` (no complete cell yet), `k/n cells cached`, or `scored` for one model's cells."""
    cells = [p for p in planned if p.cell.model.label == label and p.status != CellStatus.UNSUPPORTED]
    done = sum(p.status == CellStatus.CACHED for p in cells)
    if done == 0:
        return "new"
    return "scored" if done == len(cells) else f"{done}/{len(cells)} cells cached"


def format_discovery(d: Discovery, planned: list[PlannedCell]) -> list[str]:
    statuses = [checkpoint_status(c.model.label, planned) for c in d.found]
    new = sum(s == "new" for s in statuses)
    thinned = f", {d.thinned} left out by every/last" if d.thinned else ""
    lines = [
        f"checkpoints {d.run} ({d.source}): {len(d.found)} found, {new} new, "
        f"{len(d.skipped)} skipped{thinned}"
    ]
    width = max((len(c.model.label) for c in d.found), default=0)
    width = max([width] + [len(c.name) for c in d.skipped])
    for c, status in zip(d.found, statuses):
        lines.append(f"  {c.model.label:<{width}}  {status}")
    for c in d.skipped:
        lines.append(f"  {c.name:<{width}}  skipped: {c.problem}")
    return lines
