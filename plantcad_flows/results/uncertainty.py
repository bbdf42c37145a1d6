"""A finished cell's 95% bootstrap intervals and standard errors, kept beside its predictions.

The intervals depend on the predictions and on how they are resampled (`metrics.bootstrap`,
`metrics.seed`), never the other way round: changing the number of resamples must not re-score
anything. So they are not part of the cell's identity; they live in their own file per
resampling, `{cell dir}/intervals-b{B}-s{seed}.json`, written atomically after the cell is
complete. A cell finalised in this run gets its intervals recomputed (its predictions may be
new); a cell served complete from storage reuses the file, or computes it once if absent.
"""

from __future__ import annotations

from plantcad_flows.families import get_family
from plantcad_flows.layout.storage import read_json, to_path, write_json_atomic
from plantcad_flows.results.bootstrap import LEVEL, cell_intervals, stderrs
from plantcad_flows.results.history import read_predictions
from plantcad_flows.results.table import CellResult


def intervals_path(cell_dir: str, resamples: int, seed: int):
    return to_path(cell_dir) / f"intervals-b{resamples}-s{seed}.json"


def with_intervals(result: CellResult, resamples: int, seed: int) -> CellResult:
    """`result` with its intervals and standard errors (unchanged when it has no metrics or
    `resamples` is 0)."""
    if resamples <= 0 or not result.metrics or not result.output_dir:
        return result
    path = intervals_path(result.output_dir, resamples, seed)
    data = read_json(path) if result.status == "cached" and path.exists() else None
    if data is None:
        family = get_family(result.family)
        frame = read_predictions(result.output_dir)
        data = {
            "resamples": resamples,
            "seed": seed,
            "level": LEVEL,
            "intervals": cell_intervals(family, frame, resamples, seed),
            "stderr": stderrs(family.metric_inputs(frame)),
        }
        write_json_atomic(path, data)
    return result.model_copy(update={"intervals": data["intervals"], "stderr": data["stderr"]})
