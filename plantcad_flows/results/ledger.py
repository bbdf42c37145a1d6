"""The run's ledger: what each planned cell became, how far the run is, and what it reports.

The flow hands every outcome to a `RunLedger` (a result, an error, or "served from cache") and
asks it for the progress fraction, the ordered results and the failures; the flow itself keeps no
bookkeeping. Cells the plan found unsupported are recorded as skipped from the start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plantcad_flows.errors import PlantCADError
from plantcad_flows.layout.plan import Cell, CellStatus, PlannedCell
from plantcad_flows.results.table import CellResult, cell_result


class EvalFailed(PlantCADError):
    """Some cells failed; the others completed and their results were written. `results` holds
    (cell id, reason) per failed cell, for the CLI's one line per cell."""

    def __init__(
        self, message: str, results: list[tuple[str, str]] | None = None, report_error: str | None = None
    ):
        super().__init__(message)
        self.results = results or []
        self.report_error = report_error  # why the run's report could not be written, if it could not


@dataclass
class RunLedger:
    """`retry_failed` is `executor.force_run_failed`: without it, a cell whose last attempt
    failed is reported as failed (with that attempt's reason) instead of being run again."""

    planned: list[PlannedCell]
    retry_failed: bool = True
    results: dict[str, CellResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for p in self.planned:
            if p.status == CellStatus.UNSUPPORTED:
                self.results[p.cell.id] = cell_result(p.cell, "skipped", reason=p.reason)
            elif p.status == CellStatus.FAILED_BEFORE and not self.retry_failed:
                self.results[p.cell.id] = cell_result(
                    p.cell,
                    "failed",
                    reason=f"failed before, not retried (executor.force_run_failed=false): {p.reason}",
                )

    @property
    def runnable(self) -> list[Cell]:
        """Cells that will be finalised this run (everything but the unsupported)."""
        return [p.cell for p in self.planned if p.status != CellStatus.UNSUPPORTED]

    @property
    def to_score(self) -> list[Cell]:
        """Runnable cells the plan did not find complete: only these need data, shards and Ray."""
        return [
            p.cell
            for p in self.planned
            if p.cell.id not in self.results and p.status in (CellStatus.TO_RUN, CellStatus.FAILED_BEFORE)
        ]

    def record(
        self,
        cell: Cell,
        result: CellResult | None = None,
        error: BaseException | str | None = None,
        cached: bool = False,
    ) -> CellResult:
        """Note how a cell ended. A result served from Prefect's cache is labelled `cached` and
        carries no stage timings: those belong to the run that computed it."""
        if error is not None:
            reason = str(error) if isinstance(error, str) else f"{type(error).__name__}: {error}"
            recorded = cell_result(cell, "failed", reason=" ".join(reason.split()))
        elif result is None:
            raise ValueError(f"{cell.id}: a result or an error is required")
        elif cached or result.status == "cached":
            recorded = result.model_copy(update={"status": "cached", "timings": {}})
        else:
            recorded = result
        self.results[cell.id] = recorded
        return recorded

    @property
    def progress(self) -> float:
        """Percent of planned cells that have an outcome."""
        return 100.0 * len(self.results) / max(len(self.planned), 1)

    def ordered(self) -> list[CellResult]:
        """Results in plan order; a cell without an outcome (the run was cut short) is failed."""
        return [
            self.results.get(p.cell.id) or cell_result(p.cell, "failed", reason="no outcome recorded")
            for p in self.planned
        ]

    def timings(self) -> dict[str, float]:
        """Input-pipeline stage timings, summed over the shards this run scored."""
        total: dict[str, float] = {}
        for r in self.results.values():
            for k, v in r.timings.items():
                total[k] = total.get(k, 0) + v
        return total

    def raise_if_failed(self, report_error: BaseException | None = None) -> None:
        """Raise `EvalFailed` when cells failed. `report_error` is what stopped the run's report
        (results files, history) being written, when something did: the same outage often fails
        both, and the user needs the cells' causes as much as the report's."""
        failed = [r for r in self.ordered() if r.status == "failed"]
        if failed:
            report = None if report_error is None else f"{type(report_error).__name__}: {report_error}"
            raise EvalFailed(
                f"{len(failed)} cell(s) failed: "
                + "; ".join(f"{r.cell_id} ({r.reason})" for r in failed)
                + (f"; and the run's report was not written: {report}" if report else ""),
                [(r.cell_id, r.reason or "") for r in failed],
                report,
            )
