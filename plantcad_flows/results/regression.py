"""Regressions: a cell scored in this run against earlier revisions of the same model family.

Each cell this run scored (not one served from cache: that one was compared when it was scored)
is compared, on its task's main metric, with
* the previous scored revision of its family: the highest earlier checkpoint step (sweeps), else
  the latest earlier result (nightly runs of a model whose revision moved), and
* the best result so far of its family.
Both comparisons are paired bootstraps of the difference on the same examples (the same
resampled indices score both revisions; see `results.bootstrap`). A regression is a drop whose
interval lies wholly below -`min_drop` (the config's `alerts.min_drop`, 0 by default: below zero);
a difference inside the noise, or one the margin tolerates, is not one. A cell regresses at most
once, whatever it regressed against, so an alert names each regressed cell once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from plantcad_flows.errors import CorruptFileError
from plantcad_flows.families import get_family
from plantcad_flows.results.bootstrap import PairedDifference, paired_difference
from plantcad_flows.results.history import deduplicated, family_of, read_predictions, step_of
from plantcad_flows.results.table import CellResult

EVENT = "plantcad.eval.regression"


@dataclass(frozen=True)
class Comparison:
    """The cell against one earlier result of its family."""

    against: str  # previous | best
    old_model: str
    old_revision: str | None
    old_step: int | None
    old_cell_key: str
    difference: PairedDifference
    min_drop: float = 0.0

    @property
    def regressed(self) -> bool:
        return self.difference.drops_beyond(self.min_drop)

    def as_dict(self) -> dict[str, Any]:
        d = self.difference
        return {
            "against": self.against,
            "old_model": self.old_model,
            "old_revision": self.old_revision,
            "old_step": self.old_step,
            "old_value": d.old,
            "new_value": d.new,
            "difference": d.diff,
            "interval": [d.low, d.high],
            "regression": self.regressed,
        }


@dataclass(frozen=True)
class Regression:
    """A cell whose main metric dropped beyond the noise; `comparisons` are the ones that did."""

    cell_id: str
    cell_key: str | None
    model: str
    revision: str | None
    step: int | None
    task: str
    split: str
    metric: str
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def main(self) -> Comparison:
        """The comparison the alert leads with: the previous revision when it regressed."""
        return self.comparisons[0]

    def payload(self, resamples: int, seed: int) -> dict[str, Any]:
        """The `plantcad.eval.regression` event's payload (JSON values only)."""
        main = self.main.as_dict()
        return {
            "cell": self.cell_id,
            "cell_key": self.cell_key,
            "model": self.model,
            "family": family_of(self.model),
            "new_revision": self.revision,
            "new_step": self.step,
            "task": self.task,
            "split": self.split,
            "metric": self.metric,
            **{k: main[k] for k in ("against", "old_model", "old_revision", "old_step")},
            **{k: main[k] for k in ("old_value", "new_value", "difference", "interval")},
            "level": 0.95,
            "min_drop": self.main.min_drop,
            "resamples": resamples,
            "seed": seed,
            "comparisons": [c.as_dict() for c in self.comparisons],
        }

    def line(self) -> str:
        c = self.main
        d = c.difference
        return (
            f"{self.cell_id}: {self.metric} {d.old:.4f} -> {d.new:.4f} ({d.diff:+.4f}, 95% CI "
            f"[{d.low:+.4f}, {d.high:+.4f}]) against the {c.against} revision {c.old_model}"
            + (f", beyond the margin {c.min_drop:g}" if c.min_drop else "")
        )


def revision_of(result: CellResult) -> str | None:
    """What names a revision: the resolved model revision / fingerprint, else the cell key."""
    return result.model_revision or result.cell_key


def _earlier(candidates: pd.DataFrame, step: int | None, first_seen: pd.Timestamp | None) -> pd.DataFrame:
    if step is not None and candidates["step"].notna().any():
        return candidates[candidates["step"].notna() & (candidates["step"] < step)].sort_values("step")
    if first_seen is None:
        return candidates.sort_values("time")
    return candidates[candidates["time"] < first_seen].sort_values("time")


def _compare(
    result: CellResult, row: pd.Series, against: str, resamples: int, seed: int, min_drop: float
) -> Comparison | None:
    try:
        old = read_predictions(str(row["cell_dir"]))
        new = read_predictions(str(result.output_dir))
    except (CorruptFileError, FileNotFoundError):
        return None  # an earlier cell's files were removed or damaged: nothing to pair with
    diff = paired_difference(get_family(result.family), row["metric"], old, new, resamples, seed)
    if diff is None:
        return None
    step = row["step"]
    return Comparison(
        against,
        str(row["model"]),
        None if pd.isna(row["model_revision"]) else str(row["model_revision"]),
        None if pd.isna(step) else int(step),
        str(row["cell_key"]),
        diff,
        min_drop,
    )


def compare_cell(
    result: CellResult, first: pd.DataFrame, resamples: int, seed: int, min_drop: float = 0.0
) -> list[Comparison]:
    """The cell against the previous revision and the best so far (one comparison if they are
    the same result); empty when its family has no earlier result on the same examples.
    `first` is the de-duplicated history (`history.deduplicated`)."""
    metric = get_family(result.family).main_metric_of(result.metrics)
    fam = first[
        (first["family"] == family_of(result.model))
        & (first["task"] == result.task)
        & (first["split"] == result.split)
        & (first["strand"] == result.strand)
        & (first["context_bp"].isna() | (first["context_bp"] == result.context_bp))
        & (first["metric"] == metric)
        & (first["cell_key"] != result.cell_key)
        & first["value"].notna()
    ]
    mine = first[(first["cell_key"] == result.cell_key) & (first["metric"] == metric)]
    earlier = _earlier(fam, step_of(result), mine["time"].min() if not mine.empty else None)
    if earlier.empty:
        return []
    previous = earlier.iloc[-1]
    best = earlier.loc[earlier["value"].idxmax()]
    out = [c for c in [_compare(result, previous, "previous", resamples, seed, min_drop)] if c]
    if best["cell_key"] != previous["cell_key"]:
        out += [c for c in [_compare(result, best, "best", resamples, seed, min_drop)] if c]
    return out


def find_regressions(
    results: list[CellResult], history: pd.DataFrame, resamples: int, seed: int, min_drop: float = 0.0
) -> list[Regression]:
    """Regressed cells among those scored in this run (status `completed`), in result order: a
    drop whose interval lies wholly below -`min_drop`."""
    if resamples <= 0:
        return []
    found, first = [], deduplicated(history)
    for r in results:
        if r.status != "completed" or not r.metrics or r.output_dir is None:
            continue
        metric = get_family(r.family).main_metric_of(r.metrics)
        value = r.metrics.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        drops = [c for c in compare_cell(r, first, resamples, seed, min_drop) if c.regressed]
        if drops:
            found.append(
                Regression(
                    r.cell_id, r.cell_key, r.model, revision_of(r), step_of(r), r.task, r.split, metric, drops
                )
            )
    return found
