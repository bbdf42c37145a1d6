"""The run's progress: a UI progress artifact and a terminal line, both moved per shard.

`RunProgress` (plantcad_flows/results/progress.py) counts; this module feeds it from the flow's
futures and shows it. Shard futures call back as they finish (from the runner's threads), so the
artifact and the line move while one big cell is still scoring. The line goes to the
`plantcad.progress` logger: the CLI shows it live on the terminal; a deployment run has no handler
for it (root's level, WARNING, drops it) and shows the artifact only.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture

from plantcad_flows.results.ledger import RunLedger
from plantcad_flows.results.progress import PROGRESS_LOGGER, RunProgress

PROGRESS_KEY = "zero-shot-progress"
log = logging.getLogger(PROGRESS_LOGGER)


class Progress:
    """The progress artifact on the flow run and the terminal line, at most once a second each."""

    def __init__(self, ledger: RunLedger, key: str = PROGRESS_KEY, min_interval_s: float = 1.0):
        self.ledger = ledger
        self.counts = RunProgress(len(ledger.planned))
        for cell_id, result in ledger.results.items():  # skipped, or failed before and not retried
            self.counts.cell_done(cell_id, result.status)
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._lock = threading.Lock()
        self._warned = False
        self.id = create_progress_artifact(
            progress=self.counts.percent,
            key=key,
            description="cells finished / planned, moved by each shard's examples",
        )

    def track_shards(self, cell_id: str, futures: list[PrefectFuture], sizes: list[int]) -> None:
        """Count `cell_id`'s shards as planned, and each as done when its future finishes."""
        self.counts.shards_submitted(cell_id, sizes)
        for future, size in zip(futures, sizes, strict=True):
            future.add_done_callback(lambda f, size=size: self._shard_done(cell_id, f, size))

    def _shard_done(self, cell_id: str, future: PrefectFuture, size: int) -> None:
        try:  # a callback must never break the run
            self.counts.shard_done(cell_id, size, ok=future.state.is_completed())
            self.update()
        except Exception:  # said once, where warnings go (the console and the run's log file)
            if not self._warned:
                self._warned = True
                logging.getLogger(__name__).warning("progress not updated", exc_info=True)

    def cell_done(self, cell_id: str) -> None:
        result = self.ledger.results.get(cell_id)
        self.counts.cell_done(cell_id, result.status if result else "failed")
        self.update()

    def update(self, force: bool = False) -> None:
        # At most one API call a second: cached cells finish by the dozen in a few milliseconds,
        # and one call per cell was most of a fully cached run's time in the flow.
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < self.min_interval_s:
                return
            self._last = now
        log.info(self.counts.line())
        update_progress_artifact(self.id, progress=self.counts.percent)

    def finish(self) -> None:
        log.info(self.counts.line(), extra={"final": True})
        update_progress_artifact(self.id, progress=100.0)


def outcome(future: PrefectFuture) -> dict[str, Any]:
    """`RunLedger.record` keywords for a finished future: its result, or the error it ended with,
    and whether Prefect served it from cache."""
    future.wait()
    try:
        return {"result": future.result(), "cached": future.state.name == "Cached"}
    except Exception as e:
        return {"error": getattr(e, "reason", None) or e}
