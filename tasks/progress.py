"""The run's progress artifact, and how a finished task future reads to the run's ledger."""

from __future__ import annotations

import time
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture

from plantcad_flows.results.ledger import RunLedger

PROGRESS_KEY = "zero-shot-progress"


class Progress:
    """A progress artifact on the flow run that follows the ledger: cells finished / planned."""

    def __init__(self, ledger: RunLedger, key: str = PROGRESS_KEY, min_interval_s: float = 1.0):
        self.ledger = ledger
        self.min_interval_s = min_interval_s
        self._last = time.monotonic()
        self.id = create_progress_artifact(
            progress=ledger.progress, key=key, description="cells finished / cells planned"
        )

    def update(self) -> None:
        # At most one API call a second: cached cells finish by the dozen in a few milliseconds,
        # and one call per cell was most of a fully cached run's time in the flow.
        now = time.monotonic()
        if now - self._last >= self.min_interval_s:
            self._last = now
            update_progress_artifact(self.id, progress=self.ledger.progress)

    def finish(self) -> None:
        update_progress_artifact(self.id, progress=100.0)


def outcome(future: PrefectFuture) -> dict[str, Any]:
    """`RunLedger.record` keywords for a finished future: its result, or the error it ended with,
    and whether Prefect served it from cache."""
    future.wait()
    try:
        return {"result": future.result(), "cached": future.state.name == "Cached"}
    except Exception as e:
        return {"error": getattr(e, "reason", None) or e}
